//! `plan`: each step's plan, wave by wave, with read-only calls only, and how it is shown.

#[allow(unused_imports)]
use super::*;

/// The stacks this state store has runs of (their resources are not orphans).
pub(super) async fn known_stacks(store: &AnyStore) -> std::collections::BTreeSet<String> {
    let runs = store.list_runs(&RunsQuery::newest(i64::MAX)).await.unwrap_or_default();
    runs.iter().filter_map(|r| r.inputs.get("stack").and_then(|s| s.as_str()).map(String::from)).collect()
}

/// The account the newest run of this stack recorded (any step's `account_id`
/// output), with that run's id: a run with other credentials is stopped at preflight.
pub(super) async fn recorded_account(
    store: &AnyStore,
    inputs: &BTreeMap<String, serde_json::Value>,
) -> ca_a2a_flow_steps::aws::preflight::Recorded {
    let stack = inputs.get("stack")?;
    let runs = store.list_runs(&RunsQuery::newest(i64::MAX)).await.ok()?;
    for run in runs.iter().filter(|r| r.inputs.get("stack") == Some(stack)) {
        let steps = store.steps(&run.id).await.ok()?;
        let account = steps
            .iter()
            .filter(|s| s.status == StepStatus::Succeeded)
            .find_map(|s| s.outputs.as_ref()?.get("account_id")?.as_str().map(String::from));
        if let Some(account) = account.filter(|a| !a.is_empty()) {
            return Some((account, run.id.clone()));
        }
    }
    None
}

/// Outputs of the newest run of this workflow for the same stack: with them,
/// steps whose parameters use earlier steps' outputs can be checked too.
pub(super) async fn last_outputs(
    store: Option<&AnyStore>,
    wf: &Workflow,
    inputs: &BTreeMap<String, serde_json::Value>,
) -> BTreeMap<String, BTreeMap<String, serde_json::Value>> {
    let Some(store) = store else { return BTreeMap::new() };
    let Ok(runs) = store.list_runs(&RunsQuery::newest(i64::MAX)).await else { return BTreeMap::new() };
    let same = runs.iter().find(|r| r.workflow_file == wf.file && r.inputs.get("stack") == inputs.get("stack"));
    let Some(run) = same else { return BTreeMap::new() };
    let Ok(steps) = store.steps(&run.id).await else { return BTreeMap::new() };
    steps
        .into_iter()
        .filter(|s| s.status == StepStatus::Succeeded)
        .filter_map(|s| s.outputs.map(|o| (s.step_id, o)))
        .collect()
}

/// Each step's plan, wave by wave, with read-only calls only; steps using
/// outputs are planned with those of the newest run of the same stack.
pub(super) async fn plan_steps(
    wf: &Workflow,
    inputs: &BTreeMap<String, serde_json::Value>,
    registry: &Registry,
    store: Option<&AnyStore>,
) -> ca_a2a_flow_engine::plan::Plans {
    let outputs = last_outputs(store, wf, inputs).await;
    ca_a2a_flow_engine::plan::plan_workflow(wf, inputs, registry, &outputs).await
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
