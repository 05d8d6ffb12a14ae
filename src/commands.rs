//! What each subcommand does. Errors come back as [`CliError`] and are
//! rendered in one place ([`main`]).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use ca_a2a_flow_engine::duration::format as fmt_duration;
use ca_a2a_flow_engine::store::{AnyStore, EventRecord, Holder, RunRecord, StepRecord};
use ca_a2a_flow_engine::{
    DESTROY_PREFIX, DestroyOptions, Engine, EngineConfig, Event, Plan, PlanAction, Registry, RunStatus, StepDef,
    StepStatus, Stop, Store, Workflow, format_timestamp, load, now_ms, resolve_inputs,
};
use serde_json::json;
use tokio::sync::watch;

use ca_a2a_flow_steps::aws::{preflight, services};

use crate::cli::{Cli, Command, GraphFormat, Output, PlanFormat, StepsCommand};

/// `println!` for results on stdout, except that a reader that went away
/// (`ca-a2a-flow logs RUN | head`) ends the program quietly instead of a panic.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = writeln!(std::io::stdout().lock(), $($arg)*) {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                std::process::exit(0);
            }
        }
    }};
}
use crate::error::{CliError, exit};

pub fn main(cli: Cli) -> i32 {
    init_tracing();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return exit::STATE;
        }
    };
    match runtime.block_on(dispatch(cli)) {
        Ok(()) => exit::OK,
        Err(e) => e.report(),
    }
}

fn init_tracing() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("RUST_LOG").unwrap_or_else(|_| EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}

async fn dispatch(cli: Cli) -> Result<(), CliError> {
    let registry = ca_a2a_flow_steps::registry();
    let state = cli.state.clone();
    let ttl = cli.lease_ttl;
    match cli.command {
        Command::Validate { file } => {
            let wf = load_file(&file, &registry)?;
            eprintln!("{}: valid ({} steps, {} inputs)", file.display(), wf.steps.len(), wf.inputs.len());
            Ok(())
        }
        Command::Graph { file, format } => {
            let wf = load_file(&file, &registry)?;
            out!("{}", graph(&wf, format).trim_end());
            Ok(())
        }
        Command::Steps { what } => steps_command(&registry, what),
        Command::Plan { file, inputs, format, offline } => {
            let wf = load_file(&file, &registry)?;
            let inputs = resolve_inputs(&wf, &inputs).map_err(|errors| CliError::Inputs(errors.join("\n       ")))?;
            let (plans, checks) = if offline {
                (BTreeMap::new(), Vec::new())
            } else {
                let store = open_store(state.as_deref()).await.ok();
                let plans = plan_steps(&wf, &inputs, &registry, store.as_ref()).await;
                let known = match &store {
                    Some(s) => known_stacks(s).await,
                    None => Default::default(),
                };
                let checks = preflight::checks(&wf, &inputs, &plans, &[], &known).await;
                (plans, checks)
            };
            out!("{}", render_plan(&wf, &plans, &checks, format).trim_end());
            Ok(())
        }
        Command::Cost { file, inputs, region, output } => {
            let wf = load_file(&file, &registry)?;
            let inputs = resolve_inputs(&wf, &inputs).map_err(|errors| CliError::Inputs(errors.join("\n       ")))?;
            let region = region
                .or_else(|| inputs.get("region").and_then(|r| r.as_str()).map(String::from))
                .or_else(|| std::env::var("AWS_REGION").ok())
                .ok_or_else(|| CliError::Usage("no region to price: pass --region or --input region=...".into()))?;
            let estimate = ca_a2a_flow_steps::aws::cost::estimate(&wf, &inputs, &region).map_err(CliError::Usage)?;
            print_cost(&estimate, output);
            Ok(())
        }
        Command::Run { file, inputs, parallelism, mut skip_preflight, yes } => {
            skip_preflight.retain(|n| !n.is_empty());
            let wf = load_file(&file, &registry)?;
            let inputs = resolve_inputs(&wf, &inputs).map_err(|errors| CliError::Inputs(errors.join("\n       ")))?;
            if !approved(&wf.steps.iter().collect::<Vec<_>>(), yes)? {
                return Ok(());
            }
            if let Some(unknown) = skip_preflight.iter().find(|n| !preflight::NAMES.contains(&n.as_str())) {
                return Err(CliError::Usage(format!(
                    "--skip-preflight {unknown}: the checks are {}",
                    preflight::NAMES.join(", ")
                )));
            }
            let store = open_store(state.as_deref()).await?;
            if wf.steps.iter().any(|s| s.uses.starts_with("aws.")) {
                // The quota checks count what the run creates: only they need the plan's calls.
                let quotas = ["vpc-quota", "eip-quota"].iter().any(|q| !skip_preflight.iter().any(|s| s == q));
                let plans =
                    if quotas { plan_steps(&wf, &inputs, &registry, Some(&store)).await } else { BTreeMap::new() };
                let known = known_stacks(&store).await;
                let checks = preflight::checks(&wf, &inputs, &plans, &skip_preflight, &known).await;
                let failed: Vec<String> = checks
                    .iter()
                    .filter(|c| c.status == preflight::Status::Fail)
                    .map(|c| format!("preflight `{}` failed: {}", c.name, c.message))
                    .collect();
                for c in checks.iter().filter(|c| c.status == preflight::Status::Warn) {
                    eprintln!("preflight `{}`: warning: {}", c.name, c.message);
                }
                if !failed.is_empty() {
                    return Err(CliError::Usage(format!(
                        "{}\n  = nothing was created; fix the cause, or pass --skip-preflight NAME to go on anyway",
                        failed.join("\n       ")
                    )));
                }
            }
            let (engine, renderer) = engine(store, registry, parallelism, ttl);
            let run_id = engine.create(&wf, &inputs).await?;
            drive(engine, renderer, &run_id, None, state.as_deref()).await
        }
        Command::Resume { run_id, accept_changes, parallelism, yes } => {
            let store = open_store(state.as_deref()).await?;
            let run = store.run(&run_id).await?;
            let done: Vec<String> = store
                .steps(&run_id)
                .await?
                .into_iter()
                .filter(|s| s.status == StepStatus::Succeeded)
                .map(|s| s.step_id)
                .collect();
            let redefine = changes(&run, &registry, accept_changes)?;
            // Approval covers the definition that will run: with accepted changes,
            // new and changed steps (and those reset with them) included.
            let (definition, reset): (&Workflow, &[String]) = match &redefine {
                Some((wf, reset, _)) => (wf, reset),
                None => (&run.definition, &[]),
            };
            let pending: Vec<&StepDef> =
                definition.steps.iter().filter(|s| !done.contains(&s.id) || reset.contains(&s.id)).collect();
            if !approved(&pending, yes)? {
                return Ok(());
            }
            if run.status == RunStatus::Succeeded && redefine.is_none() {
                eprintln!("run {run_id} already succeeded; nothing to do");
                return Ok(());
            }
            let (engine, renderer) = engine(store, registry, parallelism, ttl);
            drive(engine, renderer, &run_id, redefine, state.as_deref()).await
        }
        Command::Status { run_id, output } => {
            let store = open_store(state.as_deref()).await?;
            status(&store, &run_id, output).await
        }
        Command::List { output, limit } => {
            let store = open_store(state.as_deref()).await?;
            list(&store, output, limit).await
        }
        Command::Logs { run_id, step, follow } => {
            let store = open_store(state.as_deref()).await?;
            logs(&store, &run_id, step.as_deref(), follow).await
        }
        Command::Destroy {
            run_id,
            yes,
            delete_data,
            delete_images,
            force_delete_secrets,
            skip_final_snapshot,
            parallelism,
        } => {
            let options = DestroyOptions { delete_data, delete_images, force_delete_secrets, skip_final_snapshot };
            let store = open_store(state.as_deref()).await?;
            let Some(wf) = destroy_plan(&store, &registry, &run_id, &options, yes).await? else {
                return Ok(());
            };
            let (engine, renderer) = engine(store, registry, parallelism, ttl);
            let destroy_id = engine.create(&wf, &BTreeMap::new()).await?;
            eprintln!("destroy run {destroy_id} (of {run_id})");
            drive(engine, renderer, &destroy_id, None, state.as_deref()).await
        }
        Command::Gc { stack, region, delete, yes, output } => {
            let store = open_store(state.as_deref()).await?;
            let alive = alive_stacks(&store).await?;
            let orphans = ca_a2a_flow_steps::aws::gc::find(region.as_deref(), &alive, stack.as_deref())
                .await
                .map_err(CliError::Cloud)?;
            if output == Output::Json && !delete {
                out!("{}", serde_json::to_string_pretty(&orphans).unwrap_or_default());
                return Ok(());
            }
            if orphans.is_empty() {
                eprintln!("no orphan: every resource tagged by ca-a2a-flow belongs to a stack of this state store");
                return Ok(());
            }
            out!("{:<20} {:<18} {:<26} {:<28} {:>10} {:>8}", "STACK", "STEP", "KIND", "ID", "AGE", "MONTHLY");
            for o in &orphans {
                let age = o.age.as_deref().unwrap_or("?");
                out!("{:<20} {:<18} {:<26} {:<28} {:>10} {:>8.2}", o.stack, o.step, o.kind, o.id, age, o.monthly);
            }
            let total: f64 = orphans.iter().map(|o| o.monthly).sum();
            out!("{} orphan(s), about ${total:.2}/month", orphans.len());
            if !delete {
                eprintln!(
                    "to remove them: ca-a2a-flow gc{} --delete --yes",
                    stack.map(|s| format!(" --stack {s}")).unwrap_or_default()
                );
                return Ok(());
            }
            if !yes {
                return Err(CliError::Usage("gc --delete removes these resources; pass --yes to go on".into()));
            }
            let stacks: std::collections::BTreeSet<String> = orphans.iter().map(|o| o.stack.clone()).collect();
            for s in stacks {
                let wf = ca_a2a_flow_steps::aws::gc::workflow(&s, &orphans, &DestroyOptions::default());
                let store = open_store(state.as_deref()).await?;
                let (engine, renderer) = engine(store, registry.clone(), 8, ttl);
                let id = engine.create(&wf, &BTreeMap::new()).await?;
                eprintln!("gc run {id} removes the orphans of stack {s}");
                drive(engine, renderer, &id, None, state.as_deref()).await?;
            }
            Ok(())
        }
        Command::Services { run_id, output } => {
            let store = open_store(state.as_deref()).await?;
            let list = deployed_services(&store, &run_id).await?;
            let states = services::states(&list).await.map_err(CliError::Cloud)?;
            if output == Output::Json {
                out!("{}", serde_json::to_string_pretty(&states).unwrap_or_default());
                return Ok(());
            }
            out!(
                "{:<16} {:<28} {:<8} {:>7} {:>7} {:>7} {:>5}  {:<12} {}",
                "STEP",
                "SERVICE",
                "STATUS",
                "DESIRED",
                "RUNNING",
                "PENDING",
                "DEPL",
                "ROLLOUT",
                "TARGETS"
            );
            for s in &states {
                let targets = match (s.healthy_targets, s.targets) {
                    (Some(h), Some(t)) => format!("{h}/{t} healthy"),
                    _ => "-".into(),
                };
                out!(
                    "{:<16} {:<28} {:<8} {:>7} {:>7} {:>7} {:>5}  {:<12} {targets}",
                    s.step,
                    s.name,
                    s.status,
                    s.desired,
                    s.running,
                    s.pending,
                    s.deployments,
                    s.rollout.as_deref().unwrap_or("-")
                );
            }
            Ok(())
        }
        Command::RotateSecret { run_id, step, length } => {
            let store = open_store(state.as_deref()).await?;
            let (run, params) = run_params(&store, &run_id).await?;
            let Some((kind, p)) = params.get(&step) else {
                return Err(CliError::Usage(format!("run {run_id} has no step `{step}` that ran")));
            };
            if kind != "aws.secretsmanager.secret" {
                return Err(CliError::Usage(format!("step `{step}` is a {kind}, not an aws.secretsmanager.secret")));
            }
            let stack = p.get("stack").and_then(|v| v.as_str()).unwrap_or_default();
            let name = format!("{stack}/{step}");
            let region = p.get("region").and_then(|v| v.as_str());
            // The services whose task definitions read this secret.
            let readers: Vec<String> = run
                .definition
                .steps
                .iter()
                .filter(|s| {
                    s.uses == "aws.ecs.task_definition" && s.with.to_string().contains(&format!("steps.{step}.outputs"))
                })
                .map(|s| s.id.clone())
                .collect();
            let services: Vec<services::Service> = deployed_services(&store, &run_id)
                .await
                .unwrap_or_default()
                .into_iter()
                .filter(|svc| {
                    run.definition.step(&svc.step).is_some_and(|d| {
                        readers.iter().any(|r| d.with.to_string().contains(&format!("steps.{r}.outputs")))
                    })
                })
                .collect();
            let version = services::rotate_secret(region, &name, length, &services).await.map_err(CliError::Cloud)?;
            eprintln!("secret {name}: new version {version} (its value stays in Secrets Manager)");
            for s in &services {
                eprintln!("{}: new deployment started, its tasks read the new value", s.name);
            }
            Ok(())
        }
        Command::Tail { run_id, service, follow, since } => {
            let store = open_store(state.as_deref()).await?;
            let (run, params) = run_params(&store, &run_id).await?;
            let task = run
                .definition
                .step(&service)
                .and_then(|s| ca_a2a_flow_engine::template::references(&s.with.to_string()).ok())
                .and_then(|refs| {
                    refs.into_iter().find_map(|r| match r {
                        ca_a2a_flow_engine::template::Ref::StepOutput { step, .. }
                            if params.get(&step).is_some_and(|(k, _)| k == "aws.ecs.task_definition") =>
                        {
                            Some(step)
                        }
                        _ => None,
                    })
                });
            let group = task
                .and_then(|t| params.get(&t))
                .and_then(|(_, p)| p.get("containers")?.get(0)?.get("log_group")?.as_str().map(String::from))
                .ok_or_else(|| {
                    CliError::Usage(format!("step `{service}` of run {run_id} is not an ECS service with a log group"))
                })?;
            let region = params.get(&service).and_then(|(_, p)| p.get("region")?.as_str().map(String::from));
            let mut since_ms = now_ms() - since.as_millis() as i64;
            loop {
                let events =
                    services::log_events(region.as_deref(), &group, since_ms).await.map_err(CliError::Cloud)?;
                for (at, stream, message) in &events {
                    out!("{} {stream} {message}", format_timestamp(*at));
                    since_ms = since_ms.max(at + 1);
                }
                if !follow {
                    return Ok(());
                }
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
        Command::Stop { run_id } => scale_services(state.as_deref(), &run_id, false).await,
        Command::Start { run_id } => scale_services(state.as_deref(), &run_id, true).await,
        Command::Cancel { run_id } => {
            let store = open_store(state.as_deref()).await?;
            cancel(store, registry, &run_id, ttl).await
        }
    }
}

/// The stacks with a deploy run in this state store that no successful destroy
/// undid: their resources are not orphans.
async fn alive_stacks(store: &AnyStore) -> Result<std::collections::BTreeSet<String>, CliError> {
    // Every run, however many: a stack whose run was past a cut would be called an orphan.
    Ok(ca_a2a_flow_engine::destroy::live_stacks(&store.list_runs(i64::MAX).await?))
}

/// `stop` (desired 0) or `start` (the recorded desired counts) of a run's services.
async fn scale_services(state: Option<&str>, run_id: &str, start: bool) -> Result<(), CliError> {
    let store = open_store(state).await?;
    let list = deployed_services(&store, run_id).await?;
    for (name, before, now) in services::scale(&list, start).await.map_err(CliError::Cloud)? {
        eprintln!("{name}: desired count {before} -> {now}");
    }
    let how = if start { "started" } else { "stopped" };
    eprintln!("{how} {} service(s); `ca-a2a-flow services {run_id}` shows them", list.len());
    Ok(())
}

/// A run and each of its steps that ran: (kind, resolved parameters).
async fn run_params(
    store: &AnyStore,
    run_id: &str,
) -> Result<(RunRecord, BTreeMap<String, (String, serde_json::Value)>), CliError> {
    let run = store.run(run_id).await?;
    let steps = store.steps(run_id).await?;
    let resolved = ca_a2a_flow_engine::destroy::resolved_params(&run, &steps);
    let params = run
        .definition
        .steps
        .iter()
        .filter_map(|s| Some((s.id.clone(), (s.uses.clone(), resolved.get(&s.id)?.as_ref().ok()?.clone()))))
        .collect();
    Ok((run, params))
}

/// The ECS services a deploy run made, with the parameters it ran them with.
async fn deployed_services(store: &AnyStore, run_id: &str) -> Result<Vec<services::Service>, CliError> {
    let run = store.run(run_id).await?;
    let steps = store.steps(run_id).await?;
    let params = ca_a2a_flow_engine::destroy::resolved_params(&run, &steps);
    let list: Vec<(String, String, serde_json::Value)> = run
        .definition
        .steps
        .iter()
        .filter_map(|s| Some((s.id.clone(), s.uses.clone(), params.get(&s.id)?.as_ref().ok()?.clone())))
        .collect();
    let services = services::services(&list);
    if services.is_empty() {
        return Err(CliError::Usage(format!("run {run_id} made no ECS service (or none of them ran)")));
    }
    Ok(services)
}

/// The stacks this state store has runs of (their resources are not orphans).
async fn known_stacks(store: &AnyStore) -> std::collections::BTreeSet<String> {
    let runs = store.list_runs(i64::MAX).await.unwrap_or_default();
    runs.iter().filter_map(|r| r.inputs.get("stack").and_then(|s| s.as_str()).map(String::from)).collect()
}

/// Outputs of the newest run of this workflow for the same stack: with them,
/// steps whose parameters use earlier steps' outputs can be checked too.
async fn last_outputs(
    store: Option<&AnyStore>,
    wf: &Workflow,
    inputs: &BTreeMap<String, serde_json::Value>,
) -> BTreeMap<String, BTreeMap<String, serde_json::Value>> {
    let Some(store) = store else { return BTreeMap::new() };
    let Ok(runs) = store.list_runs(i64::MAX).await else { return BTreeMap::new() };
    let same = runs.iter().find(|r| r.workflow_file == wf.file && r.inputs.get("stack") == inputs.get("stack"));
    let Some(run) = same else { return BTreeMap::new() };
    let Ok(steps) = store.steps(&run.id).await else { return BTreeMap::new() };
    steps
        .into_iter()
        .filter(|s| s.status == StepStatus::Succeeded)
        .filter_map(|s| s.outputs.map(|o| (s.step_id, o)))
        .collect()
}

/// Each step's plan, wave by wave, with read-only calls only.
async fn plan_steps(
    wf: &Workflow,
    inputs: &BTreeMap<String, serde_json::Value>,
    registry: &Registry,
    store: Option<&AnyStore>,
) -> BTreeMap<String, Plan> {
    let outputs = last_outputs(store, wf, inputs).await;
    let secret = |_: &str, _: &str| false;
    let env = |name: &str| std::env::var(name).ok();
    let scope = ca_a2a_flow_engine::template::Scope {
        run_id: "plan",
        run_name: &wf.name,
        inputs,
        outputs: &outputs,
        secret: &secret,
        env: &env,
    };
    let mut plans: BTreeMap<String, Plan> = BTreeMap::new();
    let skipped = ca_a2a_flow_engine::skipped_by_inputs(wf, inputs);
    let sink: ca_a2a_flow_engine::kind::ReportSink = std::sync::Arc::new(|_: &str, _| {});
    for wave in wf.waves() {
        let mut checks = Vec::new();
        for s in wave {
            // `when:` false (or a needed step skipped): the step will not run.
            if skipped.contains(&s.id) {
                plans.insert(s.id.clone(), Plan::none("skipped: its `when` is false, or a step it needs is skipped"));
                continue;
            }
            let params = scope.resolve_partial(&s.with);
            let created_before: Vec<&String> =
                s.needs.iter().filter(|n| plans.get(*n).is_some_and(|p| p.action == PlanAction::Create)).collect();
            let unresolved = params.to_string().contains("${{");
            let Some(kind) = registry.get(&s.uses).cloned() else { continue };
            let id = s.id.clone();
            let followed: Vec<String> =
                s.needs.iter().filter(|n| plans.get(*n).is_some_and(|p| p.new_outputs)).cloned().collect();
            let first_created = created_before.first().map(|n| n.to_string());
            let sink = sink.clone();
            checks.push(async move {
                let ctx = ca_a2a_flow_engine::StepContext::detached(&id, Duration::from_secs(120), sink);
                let mut plan = match first_created {
                    // Nothing can exist under what does not exist yet: no call needed.
                    Some(dep) if unresolved && kind.destroys() => Plan {
                        action: PlanAction::Create,
                        changes: vec![format!("after `{dep}` is created")],
                        new_outputs: false,
                    },
                    _ => match kind.execute_plan(&ctx, params).await {
                        Ok(p) => p,
                        Err(e) => Plan::none(format!("could not check: {}", e.message)),
                    },
                };
                if plan.action == PlanAction::Adopt && !followed.is_empty() {
                    plan.action = PlanAction::Update;
                    for dep in &followed {
                        plan.changes.push(format!("follows `{dep}`, whose outputs change"));
                    }
                }
                (id, plan)
            });
        }
        for (id, plan) in futures_join(checks).await {
            plans.insert(id, plan);
        }
    }
    plans
}

/// Runs the checks of one wave at once.
async fn futures_join<F: std::future::Future>(futures: Vec<F>) -> Vec<F::Output>
where
    F: Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        if let Ok(v) = h.await {
            out.push(v);
        }
    }
    out
}

fn render_plan(
    wf: &Workflow,
    plans: &BTreeMap<String, Plan>,
    checks: &[preflight::Check],
    format: PlanFormat,
) -> String {
    let action =
        |id: &str| plans.get(id).map(|p| format!("{:?}", p.action).to_lowercase()).unwrap_or_else(|| "?".into());
    let waves = wf.waves();
    let mut out = String::new();
    match format {
        PlanFormat::Json => {
            let steps: Vec<serde_json::Value> = waves
                .iter()
                .enumerate()
                .flat_map(|(i, w)| w.iter().map(move |s| (i, s)))
                .map(|(i, s)| {
                    let p = plans.get(&s.id);
                    json!({
                        "id": s.id, "kind": s.uses, "wave": i + 1, "needs": s.needs, "with": s.with,
                        "action": p.map(|p| serde_json::to_value(p.action).unwrap_or_default()),
                        "changes": p.map(|p| p.changes.clone()).unwrap_or_default(),
                    })
                })
                .collect();
            let waves: Vec<Vec<&str>> = waves.iter().map(|w| w.iter().map(|s| s.id.as_str()).collect()).collect();
            out = serde_json::to_string_pretty(
                &json!({ "workflow": wf.name, "waves": waves, "steps": steps, "preflight": checks }),
            )
            .unwrap_or_default();
        }
        PlanFormat::Mermaid => {
            out.push_str("flowchart TD\n");
            for s in &wf.steps {
                out.push_str(&format!("  {}[\"{} ({}): {}\"]\n", node_id(&s.id), s.id, s.uses, action(&s.id)));
            }
            for s in &wf.steps {
                for n in &s.needs {
                    out.push_str(&format!("  {} --> {}\n", node_id(n), node_id(&s.id)));
                }
            }
        }
        PlanFormat::Dot => {
            out.push_str(&format!("digraph \"{}\" {{\n  rankdir=TB;\n", wf.name));
            for s in &wf.steps {
                out.push_str(&format!("  \"{}\" [label=\"{}\\n{}\\n{}\"];\n", s.id, s.id, s.uses, action(&s.id)));
            }
            for s in &wf.steps {
                for n in &s.needs {
                    out.push_str(&format!("  \"{n}\" -> \"{}\";\n", s.id));
                }
            }
            out.push_str("}\n");
        }
        PlanFormat::Text => {
            for (i, w) in waves.iter().enumerate() {
                out.push_str(&format!("wave {} ({} step(s), run in parallel)\n", i + 1, w.len()));
                for s in w {
                    let p = plans.get(&s.id);
                    out.push_str(&format!("  {:<9} {:<24} {}\n", action(&s.id), s.id, s.uses));
                    for c in p.map(|p| p.changes.as_slice()).unwrap_or_default() {
                        out.push_str(&format!("            {c}\n"));
                    }
                }
            }
            if !plans.is_empty() {
                let mut counts: BTreeMap<String, usize> = BTreeMap::new();
                for p in plans.values() {
                    *counts.entry(format!("{:?}", p.action).to_lowercase()).or_default() += 1;
                }
                let summary: Vec<String> = counts.iter().map(|(a, n)| format!("{n} {a}")).collect();
                out.push_str(&format!("\nplan: {}\n", summary.join(", ")));
            }
            if !checks.is_empty() {
                out.push_str("\npreflight\n");
                for c in checks {
                    let status = format!("{:?}", c.status).to_lowercase();
                    out.push_str(&format!("  {status:<8} {:<12} {}\n", c.name, c.message));
                }
            }
        }
    }
    out
}

fn print_cost(e: &ca_a2a_flow_steps::aws::cost::Estimate, output: Output) {
    if output == Output::Json {
        out!("{}", serde_json::to_string_pretty(e).unwrap_or_default());
        return;
    }
    out!("monthly estimate, {} (prices checked {}), USD", e.region, e.prices_checked);
    out!("");
    out!("{:<22} {:<26} {:>9}  {}", "STEP", "KIND", "MONTHLY", "HOW");
    for l in &e.lines {
        out!("{:<22} {:<26} {:>9.2}  {}", l.step, l.kind, l.monthly, l.detail);
    }
    out!("");
    out!("{:<49} {:>9.2}", "total", e.total);
    out!("{:<49} {:>9.2}", "total without the database", e.total_without_databases);
    let a = &e.assumptions;
    out!("");
    out!(
        "assumed usage: NAT {} GB/month processed, {} ALB LCU on average, S3 {} GB, {} GB logs per group, {} GB per image repository",
        a.nat_data_gb,
        a.alb_lcu,
        a.s3_gb,
        a.log_ingest_gb_per_group,
        a.ecr_gb_per_repository
    );
    out!("prices: {}", e.prices_source);
}

/// The destroy workflow of a deploy run, after the user said yes; `None` when
/// there is nothing to destroy.
async fn destroy_plan(
    store: &AnyStore,
    registry: &Registry,
    run_id: &str,
    options: &DestroyOptions,
    yes: bool,
) -> Result<Option<Workflow>, CliError> {
    let run = store.run(run_id).await?;
    if run.definition.steps.iter().any(|s| s.uses.starts_with(DESTROY_PREFIX)) {
        return Err(CliError::Usage(format!(
            "run {run_id} is a destroy run; to finish it: ca-a2a-flow resume {run_id}"
        )));
    }
    if let Some(l) = &run.lease {
        if l.expires_at > now_ms() && !run.status.is_terminal() && !l.holder_is_gone() {
            return Err(CliError::Usage(format!(
                "run {run_id} is running ({l}); stop it first: ca-a2a-flow cancel {run_id}"
            )));
        }
    }
    let steps = store.steps(run_id).await?;
    let wf = ca_a2a_flow_engine::destroy::plan(&run, &steps, registry, options)
        .map_err(|errors| CliError::Usage(format!("cannot plan the destroy: {}", errors.join("; "))))?;
    if wf.steps.is_empty() {
        eprintln!("run {run_id} made nothing that ca-a2a-flow can destroy");
        return Ok(None);
    }
    eprintln!("destroy of run {run_id} ({}), in reverse dependency order:", run.workflow_name);
    for s in wf.steps.iter().rev() {
        eprintln!("  - {:<24} {}", s.id, s.uses.trim_start_matches(DESTROY_PREFIX));
    }
    // What each kind keeps with these options, once per kind.
    let mut said = std::collections::BTreeSet::new();
    for s in &wf.steps {
        if let Some(kept) = registry.get(&s.uses).and_then(|k| k.kept_on_destroy(options)) {
            if said.insert(kept) {
                eprintln!("  {kept}");
            }
        }
    }
    if !yes {
        use std::io::{BufRead, IsTerminal, Write};
        if !std::io::stdin().is_terminal() {
            return Err(CliError::Usage(
                "destroy asks for confirmation on a terminal; pass --yes to go on without one".into(),
            ));
        }
        eprint!("Type `destroy` to delete these resources: ");
        let _ = std::io::stderr().flush();
        let mut answer = String::new();
        let _ = std::io::stdin().lock().read_line(&mut answer);
        if answer.trim() != "destroy" {
            eprintln!("nothing was deleted");
            return Ok(None);
        }
    }
    Ok(Some(wf))
}

/// Asks once, before anything runs, for the steps marked `approve:` among
/// `steps`: `--yes` approves them, a terminal is asked, anything else refuses.
/// `Ok(false)`: declined, nothing was done.
fn approved(steps: &[&StepDef], yes: bool) -> Result<bool, CliError> {
    let marked: Vec<&&StepDef> = steps.iter().filter(|s| s.approve.is_some()).collect();
    if marked.is_empty() {
        return Ok(true);
    }
    let list: Vec<String> = marked
        .iter()
        .map(|s| format!("  - {} ({}): {}", s.id, s.source, s.approve.as_deref().unwrap_or_default()))
        .collect();
    if yes {
        eprintln!("approved with --yes:\n{}", list.join("\n"));
        return Ok(true);
    }
    use std::io::{BufRead, IsTerminal, Write};
    if !std::io::stdin().is_terminal() {
        return Err(CliError::Usage(format!(
            "this run has steps that cannot be undone and need approval:\n{}\n  = nothing was done; pass --yes to approve them, or run on a terminal to be asked",
            list.join("\n")
        )));
    }
    eprintln!("this run has steps that cannot be undone:\n{}", list.join("\n"));
    eprint!("Type `yes` to go on: ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    let _ = std::io::stdin().lock().read_line(&mut answer);
    if answer.trim() != "yes" {
        eprintln!("not approved: nothing was done");
        return Ok(false);
    }
    Ok(true)
}

fn load_file(file: &Path, registry: &Registry) -> Result<Workflow, CliError> {
    load(file, registry).map_err(CliError::Invalid)
}

/// The default state file: `$XDG_STATE_HOME/ca-a2a-flow/state.db`.
fn default_state() -> String {
    let base = std::env::var_os("XDG_STATE_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".local/state")))
        .unwrap_or_else(|| std::path::PathBuf::from("."));
    base.join("ca-a2a-flow").join("state.db").display().to_string()
}

async fn open_store(state: Option<&str>) -> Result<AnyStore, CliError> {
    let url = state.map(String::from).unwrap_or_else(default_state);
    Ok(AnyStore::open(&url).await?)
}

fn engine(
    store: AnyStore,
    registry: Registry,
    parallelism: usize,
    ttl: Duration,
) -> (Engine<AnyStore>, tokio::task::JoinHandle<()>) {
    let (observer, renderer) = crate::progress::start();
    let config = EngineConfig { parallelism, lease_ttl: ttl, holder: Holder::this_process() };
    (Engine::new(store, registry, config, observer), renderer)
}

fn resume_command(run_id: &str, state: Option<&str>) -> String {
    match state {
        Some(s) if std::env::var("CA_A2A_FLOW_STATE").ok().as_deref() != Some(s) => {
            format!("ca-a2a-flow --state '{}' resume {run_id}", redact_url(s))
        }
        _ => format!("ca-a2a-flow resume {run_id}"),
    }
}

/// Hides a password in a `postgres://user:password@host` URL.
fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let creds = &url[scheme + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

/// Drives a run with SIGINT/SIGTERM handling, then turns its end into an exit.
async fn drive(
    engine: Engine<AnyStore>,
    renderer: tokio::task::JoinHandle<()>,
    run_id: &str,
    redefine: Option<(Workflow, Vec<String>, Vec<String>)>,
    state: Option<&str>,
) -> Result<(), CliError> {
    let (stop_tx, stop_rx) = watch::channel(None);
    let notice = engine.observer();
    let signals = tokio::spawn(async move {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut int), Ok(mut term)) = (signal(SignalKind::interrupt()), signal(SignalKind::terminate())) else {
            return;
        };
        tokio::select! { _ = int.recv() => {}, _ = term.recv() => {} }
        notice(Event::Notice("stopping: recording the run as interrupted (press Ctrl-C again to quit at once)".into()));
        let _ = stop_tx.send(Some(Stop::Interrupt));
        tokio::select! { _ = int.recv() => {}, _ = term.recv() => {} }
        std::process::exit(exit::INTERRUPTED);
    });
    // The engine runs on the runtime's workers, not on this thread: its tasks
    // then hand each other work without waking a thread outside the pool.
    let run = run_id.to_string();
    let driving = tokio::spawn(async move {
        let outcome = engine.drive(&run, redefine, stop_rx).await;
        (engine, outcome)
    });
    let (engine, outcome) = match driving.await {
        Ok(done) => done,
        Err(e) => std::panic::resume_unwind(e.into_panic()),
    };
    signals.abort();
    // The renderer ends once the engine (its only sender) is gone: let it print
    // the last events before the summary.
    drop(engine);
    let _ = renderer.await;
    let outcome = outcome?;
    let resume = resume_command(run_id, state);
    match outcome.status {
        RunStatus::Succeeded => {
            eprintln!("run {run_id} succeeded; `ca-a2a-flow status {run_id}` shows each step");
            Ok(())
        }
        RunStatus::Interrupted => Err(CliError::Interrupted { run_id: run_id.into(), resume }),
        RunStatus::Cancelled => Err(CliError::Cancelled { run_id: run_id.into() }),
        _ => Err(CliError::RunFailed { run_id: run_id.into(), error: outcome.error.unwrap_or_default(), resume }),
    }
}

/// For `resume`: compares the workflow file with the stored definition.
fn changes(
    run: &RunRecord,
    registry: &Registry,
    accept: bool,
) -> Result<Option<(Workflow, Vec<String>, Vec<String>)>, CliError> {
    if run.workflow_file.is_empty() {
        // A destroy run: its definition was made from a deploy run, not read from a file.
        return Ok(None);
    }
    let path = Path::new(&run.workflow_file);
    if !path.exists() {
        eprintln!("note: {} no longer exists; resuming with the definition stored in the run", path.display());
        return Ok(None);
    }
    let current = load_file(path, registry)?;
    let stored = &run.definition;
    let mut changed = Vec::new();
    let mut lines = Vec::new();
    for step in &current.steps {
        match stored.step(&step.id) {
            None => {
                changed.push(step.id.clone());
                lines.push(format!("+ {} (new step, {})", step.id, step.source));
            }
            Some(old) if old.hash() != step.hash() => {
                changed.push(step.id.clone());
                lines.push(format!("~ {} (changed, {})", step.id, step.source));
            }
            Some(_) => {}
        }
    }
    let removed: Vec<String> =
        stored.steps.iter().filter(|s| current.step(&s.id).is_none()).map(|s| s.id.clone()).collect();
    lines.extend(removed.iter().map(|id| format!("- {id} (removed)")));
    if lines.is_empty() {
        return Ok(None);
    }
    if !accept {
        return Err(CliError::Changed { run_id: run.id.clone(), file: run.workflow_file.clone(), changes: lines });
    }
    let reset = current.with_dependents(&changed);
    eprintln!("accepting changes: re-running {}", reset.join(", "));
    Ok(Some((current, reset, removed)))
}

async fn cancel(store: AnyStore, registry: Registry, run_id: &str, ttl: Duration) -> Result<(), CliError> {
    let run = store.run(run_id).await?;
    if run.status.is_terminal() {
        eprintln!("run {run_id} already ended ({})", run.status);
        return Ok(());
    }
    let live = run.lease.as_ref().is_some_and(|l| l.expires_at > now_ms());
    store.request_cancel(run_id).await?;
    if live {
        eprintln!("cancel requested; the process driving run {run_id} stops it within a few seconds");
        return Ok(());
    }
    // Nobody drives it: take the lease and record the cancellation ourselves.
    let (observer, _) = crate::progress::start();
    let config = EngineConfig { parallelism: 1, lease_ttl: ttl, holder: Holder::this_process() };
    let engine = Engine::new(store, registry, config, observer);
    let (_tx, rx) = watch::channel(Some(Stop::Cancel));
    engine.drive(run_id, None, rx).await?;
    eprintln!("run {run_id} cancelled");
    Ok(())
}

fn steps_command(registry: &Registry, what: Option<StepsCommand>) -> Result<(), CliError> {
    match what {
        None => {
            for name in registry.names() {
                let doc = registry.get(name).expect("listed").doc();
                out!("{name:<24} {}", doc.summary);
            }
            Ok(())
        }
        Some(StepsCommand::Describe { kind }) => {
            let Some(k) = registry.get(&kind) else {
                let names: Vec<&str> = registry.names().collect();
                let hint = ca_a2a_flow_engine::diag::closest(&kind, names.iter().copied())
                    .map(|c| format!(" (did you mean `{c}`?)"))
                    .unwrap_or_default();
                return Err(CliError::Usage(format!("unknown step kind `{kind}`{hint}; known: {}", names.join(", "))));
            };
            let doc = k.doc();
            out!("{kind}: {}\n\nparameters:", doc.summary);
            for (name, ty, desc) in &doc.params {
                out!("  {name:<18} {ty:<9} {desc}");
            }
            if doc.params.is_empty() {
                out!("  (none)");
            }
            out!("\noutputs:");
            for (name, desc) in &doc.outputs {
                out!("  {name:<18} {desc}");
            }
            if doc.outputs.is_empty() {
                out!("  (none)");
            }
            out!("\nexample:\n{}", doc.example.lines().map(|l| format!("  {l}")).collect::<Vec<_>>().join("\n"));
            Ok(())
        }
    }
}

fn graph(wf: &Workflow, format: GraphFormat) -> String {
    let mut out = String::new();
    match format {
        GraphFormat::Mermaid => {
            out.push_str("flowchart TD\n");
            for s in &wf.steps {
                out.push_str(&format!("  {}[\"{} ({})\"]\n", node_id(&s.id), s.id, s.uses));
            }
            for s in &wf.steps {
                for n in &s.needs {
                    out.push_str(&format!("  {} --> {}\n", node_id(n), node_id(&s.id)));
                }
            }
        }
        GraphFormat::Dot => {
            out.push_str(&format!("digraph \"{}\" {{\n  rankdir=TB;\n", wf.name));
            for s in &wf.steps {
                out.push_str(&format!("  \"{}\" [label=\"{}\\n{}\"];\n", s.id, s.id, s.uses));
            }
            for s in &wf.steps {
                for n in &s.needs {
                    out.push_str(&format!("  \"{n}\" -> \"{}\";\n", s.id));
                }
            }
            out.push_str("}\n");
        }
    }
    out
}

/// Mermaid node ids cannot contain `-` nor the brackets of a `for_each` step.
fn node_id(id: &str) -> String {
    id.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect()
}

fn step_duration(s: &StepRecord) -> Option<i64> {
    let start = s.first_started_at?;
    Some(s.finished_at.unwrap_or_else(now_ms) - start)
}

async fn status(store: &AnyStore, run_id: &str, output: Output) -> Result<(), CliError> {
    let run = store.run(run_id).await?;
    let steps = store.steps(run_id).await?;
    // Attempts are shown by the JSON view only.
    let attempts = if output == Output::Json { store.attempts(run_id).await? } else { Vec::new() };
    let mut attempts_of: std::collections::HashMap<&str, Vec<&ca_a2a_flow_engine::store::AttemptRecord>> =
        std::collections::HashMap::new();
    for a in &attempts {
        attempts_of.entry(a.step_id.as_str()).or_default().push(a);
    }
    let max_attempts: BTreeMap<&str, u32> =
        run.definition.steps.iter().map(|s| (s.id.as_str(), s.retry.max_attempts)).collect();
    // What each running step reported last: the state of what it waits for.
    let mut progress: BTreeMap<&str, String> = BTreeMap::new();
    for s in steps.iter().filter(|s| s.status == StepStatus::Running) {
        if let Some(p) = latest_progress(store, run_id, &s.step_id).await? {
            progress.insert(s.step_id.as_str(), p);
        }
    }
    if output == Output::Json {
        let doc = json!({
            "run": {
                "id": run.id,
                "workflow": run.workflow_name,
                "file": run.workflow_file,
                "status": run.status,
                "error": run.error,
                "created_at": run.created_at,
                "finished_at": run.finished_at,
                "inputs": run.inputs,
                "lease": run.lease,
            },
            "steps": steps.iter().map(|s| json!({
                "id": s.step_id,
                "kind": s.kind,
                "status": s.status,
                "attempt": s.attempt,
                "max_attempts": max_attempts.get(s.step_id.as_str()),
                "started_at": s.first_started_at,
                "finished_at": s.finished_at,
                "duration_ms": step_duration(s),
                "deadline_at": s.deadline_at,
                "next_attempt_at": s.next_attempt_at,
                "progress": progress.get(s.step_id.as_str()),
                "outputs": s.outputs,
                "error": s.error,
                "attempts": attempts_of.get(s.step_id.as_str()).into_iter().flatten().map(|a| json!({
                    "attempt": a.attempt,
                    "outcome": a.outcome,
                    "started_at": a.started_at,
                    "finished_at": a.finished_at,
                    "retry_delay_ms": a.retry_delay_ms,
                    "error": a.error.as_ref().map(|e| &e.message),
                })).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
        });
        out!("{}", serde_json::to_string_pretty(&doc).expect("json"));
        return Ok(());
    }
    let took = run.finished_at.unwrap_or_else(now_ms) - run.created_at;
    out!("run      {}", run.id);
    out!("workflow {} ({})", run.workflow_name, run.workflow_file);
    out!("status   {}", run.status);
    out!("started  {} ({} ago, ran {})", format_timestamp(run.created_at), ago(run.created_at), fmt_ms(took));
    if let Some(l) = &run.lease {
        if l.expires_at > now_ms() && !run.status.is_terminal() {
            out!("driver   {l}");
        }
    }
    if let Some(e) = &run.error {
        out!("error    {e}");
    }
    out!();
    let id_w = steps.iter().map(|s| s.step_id.len()).max().unwrap_or(0).max(4);
    let kind_w = steps.iter().map(|s| s.kind.len()).max().unwrap_or(0).max(4);
    // The table is written at once: stdout writes each line by itself.
    let mut table = format!(
        "{:<id_w$} {:<kind_w$} {:<12} {:>8} {:>9}  {}\n",
        "STEP", "KIND", "STATE", "ATTEMPTS", "DURATION", "NOTE"
    );
    for s in &steps {
        let max = max_attempts.get(s.step_id.as_str()).copied().unwrap_or(1);
        let note = match s.status {
            StepStatus::Running => {
                let deadline = s.deadline_at.map(|d| format!("deadline in {}", fmt_ms(d - now_ms())));
                match (progress.get(s.step_id.as_str()), deadline) {
                    (Some(p), Some(d)) => format!("{p} · step {d}"),
                    (Some(p), None) => p.clone(),
                    (None, Some(d)) => d,
                    (None, None) => String::new(),
                }
            }
            StepStatus::RetryWait => {
                let next = s.next_attempt_at.map(|t| fmt_ms(t - now_ms())).unwrap_or_default();
                format!(
                    "next attempt in {next}; last error: {}",
                    s.error.as_ref().map(|e| first_line(&e.message)).unwrap_or("")
                )
            }
            _ if s.outputs.as_ref().is_some_and(ca_a2a_flow_engine::was_skipped) => {
                "skipped (`when` is false, or a step it needs was skipped)".to_string()
            }
            _ => s.error.as_ref().map(|e| first_line(&e.message).to_string()).unwrap_or_default(),
        };
        let state =
            if s.outputs.as_ref().is_some_and(ca_a2a_flow_engine::was_skipped) { "skipped" } else { s.status.as_str() };
        use std::fmt::Write as _;
        let _ = writeln!(
            table,
            "{:<id_w$} {:<kind_w$} {:<12} {:>8} {:>9}  {}",
            s.step_id,
            s.kind,
            state,
            format!("{}/{}", s.attempt, max),
            step_duration(s).map(fmt_ms).unwrap_or_default(),
            note
        );
    }
    out!("{}", table.trim_end_matches('\n'));
    Ok(())
}

/// The last progress a step reported ("NAT gateway nat-0ab…: pending 1m02s / 10m").
async fn latest_progress(store: &AnyStore, run_id: &str, step: &str) -> Result<Option<String>, CliError> {
    let mut after = 0;
    let mut last = None;
    loop {
        let page = store.events(run_id, Some(step), after, 500).await?;
        let Some(end) = page.last().map(|e| e.id) else { break };
        if let Some(p) = page.iter().rev().find(|e| e.level == "progress") {
            last = Some(p.message.clone());
        }
        after = end;
        if page.len() < 500 {
            break;
        }
    }
    Ok(last)
}

async fn list(store: &AnyStore, output: Output, limit: i64) -> Result<(), CliError> {
    let mut runs = store.list_runs(limit.saturating_add(1)).await?;
    // Never cut silently: say that older runs exist.
    let more = runs.len() as i64 > limit;
    runs.truncate(limit.max(0) as usize);
    if more {
        eprintln!("showing the newest {limit} runs; older ones exist (`--limit N` shows more)");
    }
    if output == Output::Json {
        let doc: Vec<_> = runs
            .iter()
            .map(|r| {
                json!({
                    "id": r.id,
                    "workflow": r.workflow_name,
                    "file": r.workflow_file,
                    "status": r.status,
                    "error": r.error,
                    "created_at": r.created_at,
                    "finished_at": r.finished_at,
                })
            })
            .collect();
        out!("{}", serde_json::to_string_pretty(&doc).expect("json"));
        return Ok(());
    }
    if runs.is_empty() {
        eprintln!("no runs yet; start one with `ca-a2a-flow run workflows/demo.yaml`");
        return Ok(());
    }
    out!("{:<26} {:<16} {:<12} {:<21} {:>9}  {}", "RUN", "WORKFLOW", "STATUS", "STARTED", "DURATION", "ERROR");
    for r in runs {
        let took = r.finished_at.unwrap_or_else(now_ms) - r.created_at;
        out!(
            "{:<26} {:<16} {:<12} {:<21} {:>9}  {}",
            r.id,
            r.workflow_name,
            r.status.as_str(),
            format_timestamp(r.created_at),
            fmt_ms(took),
            r.error.as_deref().map(first_line).unwrap_or("")
        );
    }
    Ok(())
}

/// One line of `logs`: from the event log (step output, run events) or from
/// the attempts table (each attempt's start and end).
struct LogLine {
    at: i64,
    step: Option<String>,
    level: &'static str,
    message: String,
}

/// What happened since the last call: new events, attempts that ended, and
/// attempts that started. `seen` remembers what was already returned.
async fn new_log_lines(
    store: &AnyStore,
    run: &RunRecord,
    step: Option<&str>,
    after_event: &mut EventCursor,
    seen: &mut std::collections::HashSet<(String, u32, &'static str, i64)>,
) -> Result<Vec<LogLine>, CliError> {
    let max: BTreeMap<&str, u32> = run.definition.steps.iter().map(|s| (s.id.as_str(), s.retry.max_attempts)).collect();
    let wanted = |id: &str| step.is_none_or(|s| s == id);
    let mut out = Vec::new();
    let mut fresh = |key: (String, u32, &'static str, i64)| seen.insert(key);
    for a in store.attempts(&run.id).await?.iter().filter(|a| wanted(&a.step_id)) {
        let m = max.get(a.step_id.as_str()).copied().unwrap_or(1);
        if fresh((a.step_id.clone(), a.attempt, "start", a.started_at)) {
            let message = format!("attempt {}/{m} started", a.attempt);
            out.push(LogLine { at: a.started_at, step: Some(a.step_id.clone()), level: "info", message });
        }
        let Some(end) = a.finished_at else { continue };
        if !fresh((a.step_id.clone(), a.attempt, "end", a.started_at)) {
            continue;
        }
        let why = a.error.as_ref().map(|e| first_line(&e.message).to_string()).unwrap_or_default();
        let (level, message) = match a.outcome.as_str() {
            "succeeded" => ("info", format!("succeeded on attempt {} in {}", a.attempt, fmt_ms(end - a.started_at))),
            "retry" => (
                "warn",
                format!(
                    "attempt {}/{m} failed: {why}; retrying in {}",
                    a.attempt,
                    fmt_ms(a.retry_delay_ms.unwrap_or(0))
                ),
            ),
            "failed" => ("error", format!("failed on attempt {}/{m}: {why}", a.attempt)),
            other => ("warn", format!("attempt {} {other}", a.attempt)),
        };
        out.push(LogLine { at: end, step: Some(a.step_id.clone()), level, message });
    }
    for s in store.steps(&run.id).await?.iter().filter(|s| s.status == StepStatus::Running && wanted(&s.step_id)) {
        let at = s.attempt_started_at.unwrap_or_default();
        if fresh((s.step_id.clone(), s.attempt, "start", at)) {
            let m = max.get(s.step_id.as_str()).copied().unwrap_or(1);
            let message = format!("attempt {}/{m} started", s.attempt);
            out.push(LogLine { at, step: Some(s.step_id.clone()), level: "info", message });
        }
    }
    let mut from = after_event.watermark;
    loop {
        let batch: Vec<EventRecord> = store.events(&run.id, step, from, 1000).await?;
        for e in &batch {
            from = e.id;
            if !after_event.fresh(e.id) {
                continue;
            }
            let level = match e.level.as_str() {
                "log" => "log",
                "progress" => "progress",
                "warn" => "warn",
                "error" => "error",
                _ => "info",
            };
            out.push(LogLine { at: e.at, step: e.step_id.clone(), level, message: e.message.clone() });
        }
        if batch.len() < 1000 {
            break;
        }
    }
    after_event.advance();
    // Same time: the run's own lines, then attempts starting, output, attempts ending.
    out.sort_by_key(|l| l.at);
    Ok(out)
}

async fn logs(store: &AnyStore, run_id: &str, step: Option<&str>, follow: bool) -> Result<(), CliError> {
    let run = store.run(run_id).await?;
    let mut after_event = EventCursor::default();
    let mut seen = std::collections::HashSet::new();
    let print = |lines: Vec<LogLine>| {
        for l in lines {
            let who = l.step.as_deref().unwrap_or("run");
            out!("{} {:<8} {:<20} {}", format_timestamp(l.at), l.level, who, l.message);
        }
    };
    loop {
        print(new_log_lines(store, &run, step, &mut after_event, &mut seen).await?);
        if !follow {
            return Ok(());
        }
        let now = store.run(run_id).await?;
        let still_driven = now.lease.as_ref().is_some_and(|l| l.expires_at > now_ms());
        if now.status.is_terminal() || (now.status == RunStatus::Interrupted && !still_driven) {
            // One last look for lines written while we read.
            print(new_log_lines(store, &run, step, &mut after_event, &mut seen).await?);
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Where `logs -f` reads the event log from. Event ids are handed out when a
/// line is inserted but become visible when its transaction commits, so on
/// Postgres a smaller id can appear after a larger one: the cursor re-reads
/// from the highest id below which it has seen every line, and passes over a
/// hole only once it has stayed empty for a while (an id given to a
/// transaction that rolled back).
#[derive(Default)]
struct EventCursor {
    /// Every id up to here was printed, or given up on.
    watermark: i64,
    /// Ids printed above the watermark.
    above: std::collections::BTreeSet<i64>,
    /// A hole just above the watermark, and since when it is there.
    hole_since: Option<std::time::Instant>,
}

impl EventCursor {
    const HOLE_PATIENCE: Duration = Duration::from_secs(10);

    /// Whether `id` is new (and records it).
    fn fresh(&mut self, id: i64) -> bool {
        id > self.watermark && self.above.insert(id)
    }

    fn advance(&mut self) {
        loop {
            if self.above.remove(&(self.watermark + 1)) {
                self.watermark += 1;
                self.hole_since = None;
                continue;
            }
            let Some(&next) = self.above.iter().next() else {
                self.hole_since = None;
                return;
            };
            let since = *self.hole_since.get_or_insert_with(std::time::Instant::now);
            if since.elapsed() < Self::HOLE_PATIENCE {
                return;
            }
            // An id nobody committed: skip to the next printed one.
            self.watermark = next - 1;
            self.hole_since = None;
        }
    }
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
}

fn fmt_ms(ms: i64) -> String {
    fmt_duration(Duration::from_millis(ms.max(0) as u64))
}

fn ago(t: i64) -> String {
    fmt_ms(now_ms() - t)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_event_cursor_waits_for_a_smaller_id_committed_late() {
        let mut cursor = EventCursor::default();
        assert!(cursor.fresh(1) && cursor.fresh(3));
        cursor.advance();
        assert_eq!(cursor.watermark, 1, "2 is not committed yet: the next read starts above 1");
        assert!(!cursor.fresh(3), "3 is not printed twice");
        assert!(cursor.fresh(2), "2, committed late, is printed");
        cursor.advance();
        assert_eq!(cursor.watermark, 3);
    }

    #[test]
    fn a_postgres_password_never_appears_in_the_resume_command() {
        assert_eq!(redact_url("postgres://flow:s3cret@db:5432/state"), "postgres://flow:***@db:5432/state");
        assert_eq!(redact_url("/tmp/state.db"), "/tmp/state.db");
    }
}
