//! What a run of a workflow would do, step by step, found with each kind's
//! read-only `plan` calls, wave by wave (`ca-a2a-flow plan`, and the counts the
//! preflight's quota checks need).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value as Json;

use crate::kind::{Plan, PlanAction, Registry, ReportSink, StepContext};
use crate::model::Workflow;
use crate::template::Scope;

/// Each step's plan, by step id.
pub type Plans = BTreeMap<String, Plan>;

/// How long one step's read-only calls may take.
const PLAN_DEADLINE: Duration = Duration::from_secs(120);

/// Plans `wf` run with `inputs`. `outputs` are the outputs of an earlier run of
/// the same stack (so that steps whose parameters use them can be planned too);
/// the steps of one wave are planned at once.
pub async fn plan_workflow(
    wf: &Workflow,
    inputs: &BTreeMap<String, Json>,
    registry: &Registry,
    outputs: &BTreeMap<String, BTreeMap<String, Json>>,
) -> Plans {
    let secret = |_: &str, _: &str| false;
    let env = |name: &str| std::env::var(name).ok();
    let scope = Scope { run_id: "plan", run_name: &wf.name, inputs, outputs, secret: &secret, env: &env };
    let mut plans = Plans::new();
    let skipped = crate::skipped_by_inputs(wf, inputs);
    let sink: ReportSink = Arc::new(|_: &str, _| {});
    for wave in wf.waves() {
        let mut planning = Vec::new();
        for s in wave {
            // `when:` false (or a needed step skipped): the step will not run.
            if skipped.contains(&s.id) {
                plans.insert(s.id.clone(), Plan::none("skipped: its `when` is false, or a step it needs is skipped"));
                continue;
            }
            let Some(kind) = registry.get(&s.uses).cloned() else { continue };
            let params = scope.resolve_partial(&s.with);
            let unresolved = params.to_string().contains("${{");
            let created_before =
                s.needs.iter().find(|n| plans.get(*n).is_some_and(|p| p.action == PlanAction::Create)).cloned();
            let followed: Vec<String> =
                s.needs.iter().filter(|n| plans.get(*n).is_some_and(|p| p.new_outputs)).cloned().collect();
            let ctx = StepContext::detached(&s.id, PLAN_DEADLINE, sink.clone());
            let task = tokio::spawn(async move {
                let mut plan = match created_before {
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
                plan
            });
            planning.push((s.id.clone(), task));
        }
        for (id, task) in planning {
            let plan = task.await.unwrap_or_else(|e| Plan::none(format!("could not check: its plan failed ({e})")));
            plans.insert(id, plan);
        }
    }
    plans
}
