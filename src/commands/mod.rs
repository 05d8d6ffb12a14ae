//! What each subcommand does: the dispatch here, and the larger commands in a
//! file each. Errors come back as [`CliError`] and are rendered in one place
//! ([`main`]).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use ca_a2a_flow_engine::duration::format as fmt_duration;
use ca_a2a_flow_engine::store::{AnyStore, EventRecord, Holder, RunRecord, RunsQuery, StepRecord};
use ca_a2a_flow_engine::{
    DESTROY_PREFIX, DestroyOptions, Engine, EngineConfig, Event, Plan, Registry, RunStatus, StepDef, StepStatus, Stop,
    Store, Workflow, format_timestamp, load, now_ms, resolve_inputs,
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

mod confirm;
mod cost;
mod deployed;
mod destroy;
mod graph;
mod logs;
mod plan;
mod queue;
mod status;
mod steps;
mod ui;

use cost::*;
use deployed::*;
use destroy::*;
use graph::*;
use logs::*;
use plan::*;
use queue::*;
use status::*;
use steps::*;

pub fn main(cli: Cli) -> i32 {
    init_tracing(cli.verbose);
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

/// ca-a2a-flow's own warnings; the libraries' (the AWS SDK's retries, its
/// credential chain's attempts, as Debug structs) only with `-v` or `RUST_LOG`:
/// what went wrong is said once, by the step or the preflight, with its fix.
fn init_tracing(verbose: u8) {
    use tracing_subscriber::EnvFilter;
    let default = match verbose {
        0 => "off,ca_a2a_flow=warn,ca_a2a_flow_engine=warn,ca_a2a_flow_steps=warn",
        1 => "warn",
        _ => "debug",
    };
    let filter = EnvFilter::try_from_env("RUST_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}

async fn dispatch(cli: Cli) -> Result<(), CliError> {
    let registry = ca_a2a_flow_steps::registry();
    let state = cli.state.clone();
    let ttl = cli.lease_ttl;
    match cli.command {
        Command::Validate { file } => {
            let wf = load_file(&file, &registry)?;
            // With its defaults, when every input has one: what they give is held to each kind's rules too.
            if resolve_inputs(&wf, &[]).is_ok() {
                inputs_of(&wf, &[], &registry)?;
            }
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
            let inputs = inputs_of(&wf, &inputs, &registry)?;
            let (plans, checks) = if offline {
                (BTreeMap::new(), Vec::new())
            } else {
                let store = open_store(state.as_deref()).await.ok();
                let plans = plan_steps(&wf, &inputs, &registry, store.as_ref()).await;
                let (known, recorded) = match &store {
                    Some(s) => (known_stacks(s).await, recorded_account(s, &inputs).await),
                    None => Default::default(),
                };
                let checks = preflight::checks(&wf, &inputs, &plans, &[], &known, &recorded).await;
                (plans, checks)
            };
            out!("{}", render_plan(&wf, &plans, &checks, format).trim_end());
            Ok(())
        }
        Command::Cost { file, inputs, region, output } => {
            let wf = load_file(&file, &registry)?;
            let inputs = inputs_of(&wf, &inputs, &registry)?;
            let region = region
                .or_else(|| inputs.get("region").and_then(|r| r.as_str()).map(String::from))
                .or_else(|| std::env::var("AWS_REGION").ok())
                .ok_or_else(|| CliError::Usage("no region to price: pass --region or --input region=...".into()))?;
            let estimate = ca_a2a_flow_steps::aws::cost::estimate(&wf, &inputs, &region).map_err(CliError::Usage)?;
            print_cost(&estimate, output);
            Ok(())
        }
        Command::Run { file, inputs, parallelism, skip_preflight, yes } => {
            let wf = load_file(&file, &registry)?;
            let inputs = inputs_of(&wf, &inputs, &registry)?;
            if !approved(&wf.steps.iter().collect::<Vec<_>>(), yes)? {
                return Ok(());
            }
            let store = open_store(state.as_deref()).await?;
            preflight_or_stop(&wf, &inputs, &registry, &store, skip_preflight).await?;
            stack_free(&store, ca_a2a_flow_engine::stack_of(&inputs)).await?;
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
            // The destroy changes the deploy's stack: never both at once.
            let stack = store.run(&run_id).await?.stack;
            stack_free(&store, stack.as_deref()).await?;
            let (engine, renderer) = engine(store, registry, parallelism, ttl);
            let destroy_id = engine.create_with(&wf, &BTreeMap::new(), stack.as_deref(), false).await?;
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
                return Err(CliError::NotConfirmed {
                    what: "gc --delete removes these resources".into(),
                    listed: Vec::new(),
                });
            }
            let stacks: std::collections::BTreeSet<String> = orphans.iter().map(|o| o.stack.clone()).collect();
            for s in stacks {
                let wf = ca_a2a_flow_steps::aws::gc::workflow(&s, &orphans, &DestroyOptions::default());
                let store = open_store(state.as_deref()).await?;
                let (engine, renderer) = engine(store, registry.clone(), 8, ttl);
                let id = engine.create_with(&wf, &BTreeMap::new(), Some(&s), false).await?;
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
                "{:<16} {:<28} {:<8} {:>7} {:>7} {:>7} {:>5}  {:<12} {:<14} {}",
                "STEP",
                "SERVICE",
                "STATUS",
                "DESIRED",
                "RUNNING",
                "PENDING",
                "DEPL",
                "ROLLOUT",
                "SCALING",
                "TARGETS"
            );
            for s in &states {
                let targets = match (s.healthy_targets, s.targets) {
                    (Some(h), Some(t)) => format!("{h}/{t} healthy"),
                    _ => "-".into(),
                };
                out!(
                    "{:<16} {:<28} {:<8} {:>7} {:>7} {:>7} {:>5}  {:<12} {:<14} {targets}",
                    s.step,
                    s.name,
                    s.status,
                    s.desired,
                    s.running,
                    s.pending,
                    s.deployments,
                    s.rollout.as_deref().unwrap_or("-"),
                    s.scaling.as_deref().unwrap_or("-")
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
            let (name, region) = services::secret_of(&step, kind, p).map_err(CliError::Usage)?;
            let region = region.as_deref();
            let deployed = deployed_services(&store, &run_id).await.unwrap_or_default();
            let services = services::readers_of_secret(&run.definition, &step, deployed);
            // Databases whose master password it is: the value is set on them before anything reads it.
            let steps = store.steps(&run_id).await?;
            let databases: Vec<services::Database> = services::databases_of_secret(&run.definition, &step)
                .into_iter()
                .filter_map(|db| {
                    let outputs = steps.iter().find(|s| s.step_id == db)?.outputs.as_ref()?;
                    let identifier = outputs.get("identifier")?.as_str()?.to_string();
                    let region = params.get(db).and_then(|(_, p)| p.get("region")?.as_str().map(String::from));
                    Some(services::Database { identifier, region })
                })
                .collect();
            let version =
                services::rotate_secret(region, &name, length, &databases, &services, &|line| eprintln!("{line}"))
                    .await
                    .map_err(CliError::Cloud)?;
            eprintln!("secret {name}: new version {version} (its value stays in Secrets Manager)");
            for db in &databases {
                eprintln!("database {}: its master password is the new value", db.identifier);
            }
            for s in &services {
                eprintln!("{}: new deployment started, its tasks read the new value", s.name);
            }
            Ok(())
        }
        Command::Tail { run_id, service, follow, since } => {
            let store = open_store(state.as_deref()).await?;
            let (run, params) = run_params(&store, &run_id).await?;
            let (group, region) = services::log_group_of(&run.definition, &params, &service).ok_or_else(|| {
                CliError::Usage(format!("step `{service}` of run {run_id} is not an ECS service with a log group"))
            })?;
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
        Command::Submit { file, inputs, skip_preflight, yes, wait } => {
            let submission = Submission { file, inputs, skip_preflight, yes, wait };
            submit(submission, state.as_deref(), &registry, ttl).await
        }
        Command::Worker { concurrency, parallelism } => {
            worker(state.as_deref(), registry, concurrency, parallelism, ttl).await
        }
        Command::Cancel { run_id } => {
            let store = open_store(state.as_deref()).await?;
            cancel(store, registry, &run_id, ttl).await
        }
        Command::Ui { listen, token, token_file, allow_actions } => {
            let token =
                match token_file {
                    Some(path) => Some(std::fs::read_to_string(&path).map_err(|e| {
                        CliError::Usage(format!("ui: cannot read the token file {}: {e}", path.display()))
                    })?),
                    None => token,
                };
            let state_url = state.clone().unwrap_or_else(default_state);
            let store = open_store(Some(&state_url)).await?;
            ui::serve(store, ui::UiOptions { listen, token, allow_actions, state_url }).await
        }
    }
}

/// The preflight checks of a workflow that has any (AWS's): warnings are
/// printed, a failed check stops the command before anything is recorded.
async fn preflight_or_stop(
    wf: &Workflow,
    inputs: &BTreeMap<String, serde_json::Value>,
    registry: &Registry,
    store: &AnyStore,
    mut skip_preflight: Vec<String>,
) -> Result<(), CliError> {
    skip_preflight.retain(|n| !n.is_empty());
    if let Some(unknown) = skip_preflight.iter().find(|n| !preflight::NAMES.contains(&n.as_str())) {
        return Err(CliError::Usage(format!(
            "--skip-preflight {unknown}: the checks are {}",
            preflight::NAMES.join(", ")
        )));
    }
    if !preflight::applies(wf) {
        return Ok(());
    }
    // The quota checks count what the run creates: only they need the plan's calls.
    let quotas = ["vpc-quota", "eip-quota"].iter().any(|q| !skip_preflight.iter().any(|s| s == q));
    let plans = if quotas { plan_steps(wf, inputs, registry, Some(store)).await } else { BTreeMap::new() };
    let known = known_stacks(store).await;
    let recorded = recorded_account(store, inputs).await;
    let checks = preflight::checks(wf, inputs, &plans, &skip_preflight, &known, &recorded).await;
    let failed: Vec<(String, String)> = checks
        .iter()
        .filter(|c| c.status == preflight::Status::Fail)
        .map(|c| (c.name.to_string(), c.message.clone()))
        .collect();
    for c in checks.iter().filter(|c| c.status == preflight::Status::Warn) {
        eprintln!("preflight `{}`: warning: {}", c.name, c.message);
    }
    if !failed.is_empty() {
        return Err(CliError::PreflightFailed { failed });
    }
    Ok(())
}

/// Refuses, before a run is recorded, to start one on a stack another run
/// drives now (the lease would refuse it anyway, leaving a run that never ran).
async fn stack_free(store: &AnyStore, stack: Option<&str>) -> Result<(), CliError> {
    let Some(stack) = stack else { return Ok(()) };
    let held = store.held_runs().await?;
    let live = |r: &&RunRecord| r.lease.as_ref().is_some_and(|l| l.expires_at > now_ms() && !l.holder_is_gone());
    match held.iter().filter(|r| r.stack.as_deref() == Some(stack) && !r.cancel_requested).find(live) {
        Some(other) => Err(ca_a2a_flow_engine::StoreError::StackHeld {
            run: String::new(),
            stack: stack.to_string(),
            by: other.id.clone(),
            holder: other.lease.clone().expect("a live lease"),
        }
        .into()),
        None => Ok(()),
    }
}

/// Asks once, before anything runs, for the steps marked `approve:` among
/// `steps`: `--yes` approves them, a terminal is asked, anything else refuses.
/// `Ok(false)`: declined, nothing was done.
fn approved(steps: &[&StepDef], yes: bool) -> Result<bool, CliError> {
    let list: Vec<String> =
        steps.iter().filter_map(|s| Some(format!("{} ({}): {}", s.id, s.source, s.approve.as_deref()?))).collect();
    if list.is_empty() {
        return Ok(true);
    }
    confirm::confirm("this run has steps that cannot be undone and need approval", list, "yes", yes)
}

/// The run's inputs, given as `--input NAME=VALUE`, and each step's parameters
/// held to its kind's rules once they are known.
fn inputs_of(
    wf: &Workflow,
    given: &[(String, String)],
    registry: &Registry,
) -> Result<BTreeMap<String, serde_json::Value>, CliError> {
    let inputs = resolve_inputs(wf, given).map_err(|errors| CliError::Inputs(errors.join("\n       ")))?;
    let problems = ca_a2a_flow_engine::problems_with_inputs(wf, &inputs, registry);
    if !problems.is_empty() {
        return Err(CliError::Params(problems));
    }
    Ok(inputs)
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
    let diff = current.redefinition_of(&run.definition);
    if diff.is_empty() {
        return Ok(None);
    }
    let source = |id: &String| current.step(id).map(|s| s.source.clone()).unwrap_or_default();
    let lines: Vec<String> = (diff.added.iter().map(|id| format!("+ {id} (new step, {})", source(id))))
        .chain(diff.changed.iter().map(|id| format!("~ {id} (changed, {})", source(id))))
        .chain(diff.removed.iter().map(|id| format!("- {id} (removed)")))
        .collect();
    if !accept {
        return Err(CliError::Changed { run_id: run.id.clone(), file: run.workflow_file.clone(), changes: lines });
    }
    let changed: Vec<String> = diff.added.iter().chain(&diff.changed).cloned().collect();
    let reset = current.with_dependents(&changed);
    eprintln!("accepting changes: re-running {}", reset.join(", "));
    Ok(Some((current, reset, diff.removed)))
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
    match engine.drive(run_id, None, rx).await {
        // A worker took the run since: it sees the request and stops it.
        Err(ca_a2a_flow_engine::EngineError::Store(ca_a2a_flow_engine::StoreError::LeaseHeld { holder, .. })) => {
            eprintln!("cancel requested; the process that took run {run_id} ({holder}) stops it within a few seconds");
        }
        other => {
            other?;
            eprintln!("run {run_id} cancelled");
        }
    }
    Ok(())
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
    fn a_postgres_password_never_appears_in_the_resume_command() {
        assert_eq!(redact_url("postgres://flow:s3cret@db:5432/state"), "postgres://flow:***@db:5432/state");
        assert_eq!(redact_url("/tmp/state.db"), "/tmp/state.db");
    }
}
