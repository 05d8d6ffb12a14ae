//! `plan`: each step's plan, wave by wave, with read-only calls only, and how it is shown.

#[allow(unused_imports)]
use super::*;

/// The stacks this state store has runs of (their resources are not orphans).
pub(super) async fn known_stacks(store: &AnyStore) -> std::collections::BTreeSet<String> {
    let runs = store.list_runs(i64::MAX).await.unwrap_or_default();
    runs.iter().filter_map(|r| r.inputs.get("stack").and_then(|s| s.as_str()).map(String::from)).collect()
}

/// Outputs of the newest run of this workflow for the same stack: with them,
/// steps whose parameters use earlier steps' outputs can be checked too.
pub(super) async fn last_outputs(
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
pub(super) async fn plan_steps(
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
pub(super) async fn futures_join<F: std::future::Future>(futures: Vec<F>) -> Vec<F::Output>
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

pub(super) fn render_plan(
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
        PlanFormat::Mermaid => out = mermaid(wf, |s| Some(action(&s.id))),
        PlanFormat::Dot => out = dot(wf, |s| Some(action(&s.id))),
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
