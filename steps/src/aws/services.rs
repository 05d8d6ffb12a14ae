//! Day-2 operations on a deployed stack's ECS services: `services` shows each
//! one's desired, running and pending tasks, its deployments and its target
//! health; `stop` sets every desired count to 0; `start` puts back the desired
//! counts the deploy run recorded. They act on what a run made, found by the
//! same identity (`<stack>-<step>`) the steps use.

use serde::Serialize;
use serde_json::Value as Json;

use std::collections::BTreeMap;

use ca_a2a_flow_engine::template::{Ref, references};
use ca_a2a_flow_engine::{Kind, StepError, Workflow};

use super::appautoscaling_ecs_service;
use super::ecs_service::{self, EcsService};
use super::ecs_task_definition::{self, TaskDefinition};
use super::owner::step_tag;
use super::secretsmanager_secret::{self, Secret};
use super::{AwsResult, Owner};

/// An ECS service a deploy run made, with the parameters it ran with.
#[derive(Debug, Clone)]
pub struct Service {
    pub step: String,
    pub name: String,
    pub cluster: String,
    pub region: Option<String>,
    /// The desired count the deploy recorded.
    pub desired: i32,
    pub target_group_arn: Option<String>,
}

/// The services among a run's steps, given as (step id, kind, resolved parameters).
pub fn services(steps: &[(String, String, Json)]) -> Vec<Service> {
    steps
        .iter()
        .filter(|(_, kind, _)| kind == EcsService::KIND)
        .filter_map(|(id, _, p)| {
            let p: ecs_service::Params = serde_json::from_value(p.clone()).ok()?;
            Some(Service {
                step: id.clone(),
                name: Owner { stack: p.stack.to_string(), step: step_tag(id), run: String::new() }.name(),
                cluster: p.cluster,
                region: p.region,
                desired: p.desired_count as i32,
                target_group_arn: p.target_group_arn,
            })
        })
        .collect()
}

/// A run's step that made a secret: the secret's name and region.
pub fn secret_of(step: &str, kind: &str, params: &Json) -> Result<(String, Option<String>), String> {
    if kind != Secret::KIND {
        return Err(format!("step `{step}` is a {kind}, not an {}", Secret::KIND));
    }
    let p: secretsmanager_secret::Params =
        serde_json::from_value(params.clone()).map_err(|e| format!("step `{step}`: {e}"))?;
    Ok((secretsmanager_secret::secret_name(&p.stack, step), p.region))
}

/// The steps of `definition` whose parameters use an output of step `of`.
fn readers_of<'a>(definition: &'a Workflow, of: &str, kind: Option<&str>) -> Vec<&'a str> {
    definition
        .steps
        .iter()
        .filter(|s| kind.is_none_or(|k| s.uses == k))
        .filter(|s| references_step(&s.with, of))
        .map(|s| s.id.as_str())
        .collect()
}

fn references_step(with: &Json, step: &str) -> bool {
    match with {
        Json::String(text) => references(text)
            .map(|refs| refs.iter().any(|r| matches!(r, Ref::StepOutput { step: s, .. } if s == step)))
            .unwrap_or(false),
        Json::Array(items) => items.iter().any(|v| references_step(v, step)),
        Json::Object(map) => map.values().any(|v| references_step(v, step)),
        _ => false,
    }
}

/// The services whose task definitions read the secret made by step `secret`.
pub fn readers_of_secret(definition: &Workflow, secret: &str, deployed: Vec<Service>) -> Vec<Service> {
    let tasks = readers_of(definition, secret, Some(TaskDefinition::KIND));
    deployed
        .into_iter()
        .filter(|svc| definition.step(&svc.step).is_some_and(|d| tasks.iter().any(|t| references_step(&d.with, t))))
        .collect()
}

/// Where service step `service` logs: its task definition's first container's
/// log group, in the service's region.
pub fn log_group_of(
    definition: &Workflow,
    params: &BTreeMap<String, (String, Json)>,
    service: &str,
) -> Option<(String, Option<String>)> {
    let with = &definition.step(service)?.with;
    let task = params.iter().find_map(|(id, (kind, p))| {
        (kind == TaskDefinition::KIND && references_step(with, id))
            .then(|| serde_json::from_value::<ecs_task_definition::Params>(p.clone()).ok())
            .flatten()
    })?;
    let region =
        params.get(service).and_then(|(_, p)| serde_json::from_value::<ecs_service::Params>(p.clone()).ok())?.region;
    Some((task.containers.first()?.log_group.clone()?, region))
}

#[derive(Debug, Clone, Serialize)]
pub struct ServiceState {
    pub step: String,
    pub name: String,
    pub status: String,
    pub recorded_desired: i32,
    pub desired: i32,
    pub running: i32,
    pub pending: i32,
    pub deployments: usize,
    /// The primary deployment's rollout state (IN_PROGRESS, COMPLETED, FAILED).
    pub rollout: Option<String>,
    pub healthy_targets: Option<usize>,
    pub targets: Option<usize>,
    /// Its autoscaling range (`1..5`), `suspended` while the stack is stopped.
    pub scaling: Option<String>,
}

/// The service's scalable target, if Application Auto Scaling scales it.
async fn scaling_target(
    config: &aws_config::SdkConfig,
    s: &Service,
) -> Result<Option<aws_sdk_applicationautoscaling::types::ScalableTarget>, StepError> {
    let aas = aws_sdk_applicationautoscaling::Client::new(config);
    // The cluster as a step names it: its name, or its ARN (`…:cluster/NAME`).
    let cluster = s.cluster.rsplit_once(":cluster/").map(|(_, n)| n).unwrap_or(&s.cluster);
    appautoscaling_ecs_service::target(&aas, &appautoscaling_ecs_service::resource_id(cluster, &s.name)).await
}

/// Each service as ECS and its target group see it now.
pub async fn states(list: &[Service]) -> Result<Vec<ServiceState>, StepError> {
    let mut out = Vec::new();
    for s in list {
        let config = super::config(s.region.as_deref()).await;
        let ecs = aws_sdk_ecs::Client::new(&config);
        let found = ecs_service::describe(&ecs, &s.cluster, &s.name, &[]).await?;
        let found = found.as_ref();
        let scaling = scaling_target(&config, s).await?.map(|t| {
            let range = format!("{}..{}", t.min_capacity(), t.max_capacity());
            if appautoscaling_ecs_service::suspended(&t) { format!("{range} suspended") } else { range }
        });
        let (healthy, targets) = match &s.target_group_arn {
            Some(tg) => {
                let (ok, all, _) = super::target_health(s.region.as_deref(), tg).await?;
                (Some(ok), Some(all))
            }
            None => (None, None),
        };
        out.push(ServiceState {
            step: s.step.clone(),
            name: s.name.clone(),
            status: found.and_then(|f| f.status()).unwrap_or("MISSING").to_string(),
            recorded_desired: s.desired,
            desired: found.map(|f| f.desired_count()).unwrap_or(0),
            running: found.map(|f| f.running_count()).unwrap_or(0),
            pending: found.map(|f| f.pending_count()).unwrap_or(0),
            deployments: found.map(|f| f.deployments().len()).unwrap_or(0),
            rollout: found
                .and_then(|f| f.deployments().iter().find(|d| d.status() == Some("PRIMARY")))
                .and_then(|d| d.rollout_state())
                .map(|r| r.as_str().to_string()),
            healthy_targets: healthy,
            targets,
            scaling,
        });
    }
    Ok(out)
}

/// Sets each service's desired count: 0 to stop, the recorded count to start.
/// A service that Application Auto Scaling scales has its scaling suspended
/// before it is stopped (else the scaling would start its minimum again) and
/// resumed once it is started. Returns (service, desired before, desired now).
pub async fn scale(list: &[Service], start: bool) -> Result<Vec<(String, i32, i32)>, StepError> {
    let mut changed = Vec::new();
    for s in list {
        let config = super::config(s.region.as_deref()).await;
        let ecs = aws_sdk_ecs::Client::new(&config);
        let found = ecs_service::describe(&ecs, &s.cluster, &s.name, &[]).await?;
        let Some(now) = found.filter(|x| x.status() == Some("ACTIVE")) else {
            return Err(StepError::fatal(format!("service {} does not exist (any more)", s.name))
                .with_hint("deploy the stack again (`ca-a2a-flow run`), or check the run id"));
        };
        let scaled = scaling_target(&config, s).await?;
        let aas = aws_sdk_applicationautoscaling::Client::new(&config);
        if let Some(t) = scaled.as_ref().filter(|_| !start) {
            appautoscaling_ecs_service::register(&aas, t.resource_id(), None, Some(true), None).await?;
        }
        let want = if start { s.desired } else { 0 };
        let before = now.desired_count();
        if before != want {
            ecs.update_service()
                .cluster(&s.cluster)
                .service(&s.name)
                .desired_count(want)
                .send()
                .await
                .or_step_error("ecs:UpdateService")?;
        }
        if let Some(t) = scaled.as_ref().filter(|_| start) {
            appautoscaling_ecs_service::register(&aas, t.resource_id(), None, Some(false), None).await?;
        }
        changed.push((s.name.clone(), before, want));
    }
    Ok(changed)
}

/// The steps of `definition` that are databases whose master password is the
/// secret of step `secret` (their `master_password_secret_arn` uses its output).
pub fn databases_of_secret<'a>(definition: &'a Workflow, secret: &str) -> Vec<&'a str> {
    readers_of(definition, secret, Some(super::rds_db_instance::DbInstance::KIND))
        .into_iter()
        .filter(|id| {
            definition
                .step(id)
                .and_then(|s| s.with.get("master_password_secret_arn"))
                .is_some_and(|v| references_step(v, secret))
        })
        .collect()
}

/// A database whose master password a secret holds.
#[derive(Debug, Clone)]
pub struct Database {
    pub identifier: String,
    pub region: Option<String>,
}

/// A new random value for a secret a run made (the same shape: `{"username",
/// "password"}` JSON keeps its username), generated inside AWS; set on
/// `databases` as their master password; then a new deployment of `services`
/// so their tasks read it. With databases, the value is staged first
/// (`AWSPENDING`), set on each database, and only then made current, as
/// Secrets Manager's own rotation does: a failure on the way leaves the current
/// value in place. Each look at a database's state goes to `progress`
/// ("database d taking its new master password: modifying 40s / 15m"). Returns
/// the new version id; the value itself never leaves AWS but to RDS.
pub async fn rotate_secret(
    region: Option<&str>,
    secret: &str,
    length: i64,
    databases: &[Database],
    services: &[Service],
    progress: &(dyn Fn(&str) + Sync),
) -> Result<String, StepError> {
    let config = super::config(region).await;
    let sm = aws_sdk_secretsmanager::Client::new(&config);
    let current =
        sm.get_secret_value().secret_id(secret).send().await.or_step_error("secretsmanager:GetSecretValue")?;
    let generated = sm
        .get_random_password()
        .password_length(length)
        .exclude_punctuation(true)
        .require_each_included_type(true)
        .send()
        .await
        .or_step_error("secretsmanager:GetRandomPassword")?;
    let password = generated.random_password().unwrap_or_default().to_string();
    let value = match current.secret_string().and_then(|v| serde_json::from_str::<Json>(v).ok()) {
        Some(Json::Object(mut m)) if m.contains_key("password") => {
            m.insert("password".into(), Json::String(password.clone()));
            Json::Object(m).to_string()
        }
        _ => password.clone(),
    };
    let staged = !databases.is_empty();
    let put = sm
        .put_secret_value()
        .secret_id(secret)
        .secret_string(value)
        .set_version_stages(staged.then(|| vec!["AWSPENDING".to_string()]))
        .send()
        .await
        .or_step_error("secretsmanager:PutSecretValue")?;
    let version = put.version_id().unwrap_or_default().to_string();
    for db in databases {
        let rds = aws_sdk_rds::Client::new(&super::config(db.region.as_deref().or(region)).await);
        rds.modify_db_instance()
            .db_instance_identifier(&db.identifier)
            .master_user_password(&password)
            .apply_immediately(true)
            .send()
            .await
            .or_step_error("rds:ModifyDBInstance")?;
        let what = format!("database {} taking its new master password", db.identifier);
        let every = super::wait::interval(std::time::Duration::from_secs(15));
        let limit = std::time::Duration::from_secs(15 * 60);
        let (start, fmt) = (std::time::Instant::now(), ca_a2a_flow_engine::duration::format);
        let deadline = start + limit;
        loop {
            let d = rds.describe_db_instances().db_instance_identifier(&db.identifier).send().await;
            let status = d
                .or_step_error("rds:DescribeDBInstances")?
                .db_instances()
                .first()
                .and_then(|i| i.db_instance_status().map(String::from));
            let state = status.as_deref().unwrap_or("not seen");
            progress(&format!("{what}: {state} {} / {}", fmt(start.elapsed()), fmt(limit)));
            match status.as_deref() {
                Some("available") => break,
                _ if std::time::Instant::now() >= deadline => {
                    return Err(StepError::fatal(format!("{what}: still `{}` after 15 minutes", status.unwrap_or_default()))
                        .with_hint("the new value is staged (AWSPENDING), not current: the services still read the old one; look at the instance's events, then rotate again"));
                }
                _ => tokio::time::sleep(every).await,
            }
        }
    }
    if staged {
        let current =
            sm.describe_secret().secret_id(secret).send().await.or_step_error("secretsmanager:DescribeSecret")?;
        let old = current.version_ids_to_stages().and_then(|m| {
            m.iter().find(|(_, stages)| stages.iter().any(|s| s == "AWSCURRENT")).map(|(v, _)| v.clone())
        });
        sm.update_secret_version_stage()
            .secret_id(secret)
            .version_stage("AWSCURRENT")
            .move_to_version_id(&version)
            .set_remove_from_version_id(old)
            .send()
            .await
            .or_step_error("secretsmanager:UpdateSecretVersionStage")?;
    }
    let ecs = aws_sdk_ecs::Client::new(&config);
    for s in services {
        ecs.update_service()
            .cluster(&s.cluster)
            .service(&s.name)
            .force_new_deployment(true)
            .send()
            .await
            .or_step_error("ecs:UpdateService")?;
    }
    Ok(version)
}

/// Log events of `group` since `since_ms`, oldest first: (timestamp ms, stream, message).
pub async fn log_events(
    region: Option<&str>,
    group: &str,
    since_ms: i64,
) -> Result<Vec<(i64, String, String)>, StepError> {
    let logs = aws_sdk_cloudwatchlogs::Client::new(&super::config(region).await);
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let page = logs
            .filter_log_events()
            .log_group_name(group)
            .start_time(since_ms)
            .set_next_token(token.clone())
            .send()
            .await
            .or_step_error("logs:FilterLogEvents")?;
        for e in page.events() {
            out.push((
                e.timestamp().unwrap_or_default(),
                e.log_stream_name().unwrap_or_default().to_string(),
                e.message().unwrap_or_default().trim_end().to_string(),
            ));
        }
        // An empty page with a token is not the end: AWS may still be searching
        // (FilterLogEvents API reference). A token given twice in a row is.
        let next = page.next_token().map(String::from);
        if next.is_none() || next == token {
            break;
        }
        token = next;
    }
    out.sort_by_key(|e| e.0);
    Ok(out)
}
