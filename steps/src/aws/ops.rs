//! Day-2 operations on a deployed stack's ECS services: `services` shows each
//! one's desired, running and pending tasks, its deployments and its target
//! health; `stop` sets every desired count to 0; `start` puts back the desired
//! counts the deploy run recorded. They act on what a run made, found by the
//! same identity (`<stack>-<step>`) the steps use.

use serde::Serialize;
use serde_json::Value as Json;

use super::AwsResult;
use ca_a2a_flow_engine::StepError;

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
        .filter(|(_, kind, _)| kind == "aws.ecs.service")
        .filter_map(|(id, _, p)| {
            let stack = p.get("stack")?.as_str()?;
            Some(Service {
                step: id.clone(),
                name: format!("{stack}-{id}"),
                cluster: p.get("cluster")?.as_str()?.to_string(),
                region: p.get("region").and_then(Json::as_str).map(String::from),
                desired: p.get("desired_count").and_then(Json::as_i64).unwrap_or(1) as i32,
                target_group_arn: p.get("target_group_arn").and_then(Json::as_str).map(String::from),
            })
        })
        .collect()
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
}

/// Each service as ECS and its target group see it now.
pub async fn states(list: &[Service]) -> Result<Vec<ServiceState>, StepError> {
    let mut out = Vec::new();
    for s in list {
        let config = super::config(s.region.as_deref()).await;
        let ecs = aws_sdk_ecs::Client::new(&config);
        let d = ecs
            .describe_services()
            .cluster(&s.cluster)
            .services(&s.name)
            .send()
            .await
            .or_step_error("ecs:DescribeServices")?;
        let found = d.services().first();
        let (healthy, targets) = match &s.target_group_arn {
            Some(tg) => {
                let elb = aws_sdk_elasticloadbalancingv2::Client::new(&config);
                let h = elb
                    .describe_target_health()
                    .target_group_arn(tg)
                    .send()
                    .await
                    .or_step_error("elasticloadbalancing:DescribeTargetHealth")?;
                let all = h.target_health_descriptions();
                let ok = all
                    .iter()
                    .filter(|t| t.target_health().and_then(|h| h.state()).is_some_and(|st| st.as_str() == "healthy"))
                    .count();
                (Some(ok), Some(all.len()))
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
        });
    }
    Ok(out)
}

/// Sets each service's desired count: 0 to stop, the recorded count to start.
/// Returns (service, desired before, desired now).
pub async fn scale(list: &[Service], start: bool) -> Result<Vec<(String, i32, i32)>, StepError> {
    let mut changed = Vec::new();
    for s in list {
        let ecs = aws_sdk_ecs::Client::new(&super::config(s.region.as_deref()).await);
        let d = ecs
            .describe_services()
            .cluster(&s.cluster)
            .services(&s.name)
            .send()
            .await
            .or_step_error("ecs:DescribeServices")?;
        let Some(now) = d.services().iter().find(|x| x.status() == Some("ACTIVE")) else {
            return Err(StepError::fatal(format!("service {} does not exist (any more)", s.name))
                .with_hint("deploy the stack again (`ca-a2a-flow run`), or check the run id"));
        };
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
        changed.push((s.name.clone(), before, want));
    }
    Ok(changed)
}
