//! The day-2 commands' view of a deploy run: its ECS services, and `stop`/`start`.

#[allow(unused_imports)]
use super::*;

/// `stop` (desired 0) or `start` (the recorded desired counts) of a run's services.
pub(super) async fn scale_services(state: Option<&str>, run_id: &str, start: bool) -> Result<(), CliError> {
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
pub(super) async fn run_params(
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
pub(super) async fn deployed_services(store: &AnyStore, run_id: &str) -> Result<Vec<services::Service>, CliError> {
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
