//! A destroy run: the reverse of a deploy run, itself a durable run like any
//! other (checkpointed, resumable, killed at any instant without harm). Each
//! step of the deploy that started and whose kind destroys becomes a step
//! `destroy:<kind>` with the same id and the parameters the deploy resolved;
//! it runs after the destroy of every step that depended on it.

use std::collections::BTreeMap;

use serde_json::{Value as Json, json};

use crate::kind::{DESTROY_PREFIX, DestroyOptions, Registry};
use crate::model::{StepDef, Workflow};
use crate::store::{RunRecord, RunStatus, StepRecord, StepStatus};
use crate::template::Scope;

/// The parameters each step of `run` ran with: its `with`, resolved against the
/// run's inputs and the outputs its steps recorded (for `destroy` and the day-2
/// operations, which act on what a deploy made).
pub fn resolved_params(run: &RunRecord, steps: &[StepRecord]) -> BTreeMap<String, Result<Json, String>> {
    resolve_params(run, steps, false)
}

/// As [`resolved_params`]; with `keep_env`, `${{ env.* }}` stays a template.
fn resolve_params(run: &RunRecord, steps: &[StepRecord], keep_env: bool) -> BTreeMap<String, Result<Json, String>> {
    let def = &run.definition;
    let outputs: BTreeMap<String, BTreeMap<String, Json>> = steps
        .iter()
        .filter(|s| s.status == StepStatus::Succeeded)
        .filter_map(|s| s.outputs.clone().map(|o| (s.step_id.clone(), o)))
        .collect();
    let secret = |step: &str, key: &str| def.step(step).is_some_and(|s| s.secret_outputs.iter().any(|k| k == key));
    let env = |name: &str| std::env::var(name).ok();
    let scope = Scope {
        run_id: &run.id,
        run_name: &run.workflow_name,
        inputs: &run.inputs,
        outputs: &outputs,
        secret: &secret,
        env: &env,
    };
    def.steps
        .iter()
        .map(|s| (s.id.clone(), if keep_env { scope.resolve_but_env(&s.with) } else { scope.resolve(&s.with) }))
        .collect()
}

/// The destroy workflow of `run`, or why one cannot be made.
pub fn plan(
    run: &RunRecord,
    steps: &[StepRecord],
    registry: &Registry,
    options: &DestroyOptions,
) -> Result<Workflow, Vec<String>> {
    let def = &run.definition;
    // A skipped step (`when:` false) made nothing.
    let started: std::collections::HashSet<&str> = steps
        .iter()
        .filter(|s| s.first_started_at.is_some())
        .filter(|s| !s.outputs.as_ref().is_some_and(crate::executor::was_skipped))
        .map(|s| s.step_id.as_str())
        .collect();
    // The destroy run is stored: values from the environment are resolved
    // when its attempts start, never written into its definition.
    let mut resolved = resolve_params(run, steps, true);
    let destroys =
        |s: &StepDef| started.contains(&s.id.as_str()) && registry.get(&s.uses).is_some_and(|k| k.destroys());
    // Each step is destroyed after the nearest destroying steps built on it
    // (through steps that destroy nothing), so after all of them in turn.
    // Dependents first: reverse waves. Linear in steps and dependencies.
    let index = def.index();
    let dependents = def.dependents();
    let mut nearest: Vec<std::collections::BTreeSet<usize>> = vec![Default::default(); def.steps.len()];
    for step in def.waves().into_iter().rev().flatten() {
        let i = index[step.id.as_str()];
        let mut set = std::collections::BTreeSet::new();
        for &d in &dependents[i] {
            if destroys(&def.steps[d]) {
                set.insert(d);
            } else {
                set.extend(nearest[d].iter().copied());
            }
        }
        nearest[i] = set;
    }
    let mut errors = Vec::new();
    let mut out = Vec::new();
    for (i, s) in def.steps.iter().enumerate().filter(|(_, s)| destroys(s)) {
        let params = match resolved.remove(&s.id).unwrap_or_else(|| Err("no parameters".into())) {
            Ok(p) => p,
            Err(e) => {
                errors.push(format!("step `{}`: {e}", s.id));
                continue;
            }
        };
        if let Some(why) = registry.get(&s.uses).and_then(|k| k.destroy_refused(&params, options)) {
            errors.push(format!("step `{}`: {why}", s.id));
            continue;
        }
        // Destroyed after everything that was built on it.
        let needs: Vec<String> = nearest[i].iter().map(|&d| def.steps[d].id.clone()).collect();
        let mut retry = s.retry.clone();
        retry.max_attempts = retry.max_attempts.max(5);
        out.push(StepDef {
            id: s.id.clone(),
            uses: format!("{DESTROY_PREFIX}{}", s.uses),
            description: Some(format!("destroy what `{}` ({}) made", s.id, s.uses)),
            with: json!({ "params": params, "options": options }),
            needs,
            timeout: s.timeout,
            attempt_timeout: s.attempt_timeout,
            retry,
            secret_outputs: Vec::new(),
            approve: None,
            when: None,
            otherwise: None,
            source: format!("destroy of run {} ({})", run.id, s.source),
            loc: Default::default(),
        });
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(Workflow {
        name: format!("destroy {}", run.workflow_name),
        description: Some(format!("destroy of run {}", run.id)),
        file: String::new(),
        inputs: BTreeMap::new(),
        steps: out,
        destroy_of: Some(run.id.clone()),
    })
}

/// The run a run's definition destroys, if it is a destroy run. Runs recorded
/// before `destroy_of` existed said it only in their description.
pub fn destroyed_run(run: &RunRecord) -> Option<&str> {
    run.definition.destroyed_run()
}

/// The stacks that have a run in this store which no successful destroy undid:
/// what carries their tags is not an orphan.
pub fn live_stacks(runs: &[RunRecord]) -> std::collections::BTreeSet<String> {
    let destroyed: std::collections::BTreeSet<&str> =
        runs.iter().filter(|r| r.status == RunStatus::Succeeded).filter_map(destroyed_run).collect();
    runs.iter()
        .filter(|r| !destroyed.contains(r.id.as_str()) && destroyed_run(r).is_none())
        .filter_map(|r| r.inputs.get("stack").and_then(|s| s.as_str()).map(String::from))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kind::{Kind, KindDoc, Outputs, Step, StepContext, StepError};
    use crate::store::RunStatus;

    struct Made;

    impl Kind for Made {
        type Params = Json;
        const KIND: &'static str = "test.made";
    }

    impl Step for Made {
        const DESTROYS: bool = true;
        const DOC: KindDoc = KindDoc { summary: "", outputs: &[], example: "" };
        async fn run(&self, _ctx: &StepContext, _params: Json) -> Result<Outputs, StepError> {
            Ok(Outputs::new())
        }
    }

    fn run_record(id: &str, stack: Option<&str>, status: RunStatus, definition: Workflow) -> RunRecord {
        let inputs = stack.map(|s| BTreeMap::from([("stack".to_string(), json!(s))])).unwrap_or_default();
        RunRecord::ended(id, definition, inputs, status)
    }

    fn definition(description: Option<&str>, destroy_of: Option<&str>) -> Workflow {
        Workflow {
            name: "w".into(),
            description: description.map(String::from),
            file: String::new(),
            inputs: BTreeMap::new(),
            steps: Vec::new(),
            destroy_of: destroy_of.map(String::from),
        }
    }

    #[test]
    fn a_stack_is_live_until_a_destroy_of_its_run_succeeds() {
        let deploy = |id: &str, stack: &str| run_record(id, Some(stack), RunStatus::Succeeded, definition(None, None));
        let destroy = |of: &str, status| run_record(&format!("d-{of}"), None, status, definition(None, Some(of)));
        let runs = vec![
            deploy("r-1", "gone"),
            destroy("r-1", RunStatus::Succeeded),
            deploy("r-2", "half"),
            destroy("r-2", RunStatus::Failed),
            deploy("r-3", "live"),
        ];
        let live: Vec<String> = live_stacks(&runs).into_iter().collect();
        assert_eq!(live, ["half", "live"]);
        let planned = plan(&runs[0], &[], &Registry::new(), &DestroyOptions::default()).unwrap();
        assert_eq!(planned.destroy_of.as_deref(), Some("r-1"), "a destroy run says which run it destroys, as data");
    }

    #[test]
    fn a_destroy_run_recorded_before_destroy_of_existed_is_still_read() {
        let old = run_record("d-old", None, RunStatus::Succeeded, definition(Some("destroy of run r-9"), None));
        assert_eq!(destroyed_run(&old), Some("r-9"));
        let runs = vec![run_record("r-9", Some("old"), RunStatus::Succeeded, definition(None, None)), old];
        assert!(live_stacks(&runs).is_empty());
    }

    #[test]
    fn a_destroy_definition_keeps_environment_templates_unresolved() {
        let var = format!("FLOW_DESTROY_TEST_{}", std::process::id());
        // SAFETY: this test alone reads or writes this variable.
        unsafe { std::env::set_var(&var, "value-from-the-environment") };
        let step: StepDef = serde_json::from_value(json!({
            "id": "made", "uses": "test.made", "needs": [], "timeout": 1000, "attempt_timeout": 1000,
            "retry": {"max_attempts": 1, "initial_delay": 1, "max_delay": 1, "multiplier": 1.0, "jitter": false},
            "with": {"token": format!("${{{{ env.{var} }}}}"), "name": "${{ inputs.stack }}-${{ env.X_UNSET }}"},
            "source": "test"
        }))
        .unwrap();
        let mut definition = definition(None, None);
        definition.steps = vec![step];
        let run = run_record("r-1", Some("ca-a2a"), RunStatus::Succeeded, definition);
        let steps = vec![StepRecord::succeeded("made", "test.made", 0)];
        let registry = Registry::new().register(Made);
        let wf = plan(&run, &steps, &registry, &DestroyOptions::default()).unwrap();
        let stored = serde_json::to_string(&wf).unwrap();
        assert!(!stored.contains("value-from-the-environment"), "{stored}");
        assert_eq!(wf.steps[0].with["params"]["token"], json!(format!("${{{{ env.{var} }}}}")));
        assert_eq!(wf.steps[0].with["params"]["name"], json!("ca-a2a-${{ env.X_UNSET }}"));
    }
}
