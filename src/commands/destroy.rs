//! `destroy`: the destroy workflow of a deploy run, asked for first; which stacks are live.

#[allow(unused_imports)]
use super::*;

/// The stacks with a deploy run in this state store that no successful destroy
/// undid: their resources are not orphans.
pub(super) async fn alive_stacks(store: &AnyStore) -> Result<std::collections::BTreeSet<String>, CliError> {
    // Every run, however many: a stack whose run was past a cut would be called an orphan.
    Ok(ca_a2a_flow_engine::destroy::live_stacks(&store.list_runs(&RunsQuery::newest(i64::MAX)).await?))
}

/// The destroy workflow of a deploy run, after the user said yes; `None` when
/// there is nothing to destroy.
pub(super) async fn destroy_plan(
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
    let mut listed: Vec<String> =
        wf.steps.iter().rev().map(|s| format!("{:<24} {}", s.id, s.uses.trim_start_matches(DESTROY_PREFIX))).collect();
    // What each kind keeps with these options, once per kind.
    let mut said = std::collections::BTreeSet::new();
    for s in &wf.steps {
        if let Some(kept) = registry.get(&s.uses).and_then(|k| k.kept_on_destroy(options)) {
            if said.insert(kept) {
                listed.push(kept.to_string());
            }
        }
    }
    let what = format!("destroy of run {run_id} ({}), in reverse dependency order, deletes", run.workflow_name);
    if !confirm::confirm(&what, listed, "destroy", yes)? {
        return Ok(None);
    }
    Ok(Some(wf))
}
