//! `aws.ecs.service`: a Fargate service named `<stack>-<step>` in private
//! subnets, registered in a target group. Created (with a client token derived
//! from its identity, so a repeated create returns the first one) or updated
//! (task definition, desired count), then waited for until stable: ACTIVE, one
//! deployment, running = desired. The deployment circuit breaker is on; a failed
//! rollout is reported with the stopped tasks' reasons.

use std::time::Duration;

use aws_sdk_ecs::types::{
    AssignPublicIp, AwsVpcConfiguration, DeploymentCircuitBreaker, DeploymentConfiguration, DeploymentRolloutState,
    DesiredStatus, LaunchType, LoadBalancer, NetworkConfiguration, PropagateTags, Service,
};
use ca_a2a_flow_engine::duration::HumanDuration;
use ca_a2a_flow_engine::{
    Deadline, DestroyOptions, KindDoc, Outputs, ParamProblem, Parameters, Plan, Step, StepContext, StepError, outputs,
};
use serde::Deserialize;

use super::owner::{Claim, Holder, Stack, claim, planned_claim};
use super::wait::{self, Poll};
use super::{AwsResult, Owner};

#[derive(Debug, Deserialize, Parameters)]
#[serde(deny_unknown_fields)]
#[kind(name = "aws.ecs.service", step = EcsService)]
pub struct Params {
    #[param(doc = super::STACK)]
    pub stack: Stack,
    #[param(doc = super::REGION)]
    pub region: Option<String>,
    /// the cluster's name or ARN (required)
    pub cluster: String,
    /// the revision to run (required)
    pub task_definition_arn: String,
    /// default 1
    #[serde(default = "one")]
    pub desired_count: u32,
    /// private subnets (required)
    pub subnet_ids: Vec<String>,
    /// the service's groups (required)
    pub security_group_ids: Vec<String>,
    /// default false
    #[serde(default)]
    pub assign_public_ip: bool,
    /// target group to register tasks in (with container_name, container_port)
    pub target_group_arn: Option<String>,
    /// the container the target group reaches
    pub container_name: Option<String>,
    /// its port
    pub container_port: Option<u16>,
    /// load balancer health check grace period
    pub health_check_grace: Option<HumanDuration>,
    /// deadline for a stable service (default 20m)
    pub wait: Option<HumanDuration>,
    #[param(doc = super::owner::TAKE_OVER)]
    #[serde(default)]
    pub take_over: bool,
}

/// Whose the service `s`, found by its name, is.
fn holder(owner: &Owner, s: &aws_sdk_ecs::types::Service) -> Holder {
    owner.holder(s.tags().iter().filter_map(|t| Some((t.key()?, t.value()?))))
}

fn one() -> u32 {
    1
}

impl Step for EcsService {
    /// A service waits up to 20 minutes (`wait`) for its tasks to run.
    const DEADLINE: Option<Deadline> = Some(Deadline::minutes(25, 22));

    async fn plan(&self, ctx: &StepContext, p: Params) -> Result<Plan, StepError> {
        let owner = Owner::new(&p.stack, ctx);
        let name = owner.name();
        let ecs = super::ecs(p.region.as_deref()).await;
        let found = describe(&ecs, &p.cluster, &name, &["ClusterNotFoundException"]).await?;
        Ok(match found.filter(|s| s.status() == Some("ACTIVE")) {
            None => Plan::create(),
            Some(s) => {
                let mut changes = match planned_claim(&owner, "service", &name, &holder(&owner, &s), p.take_over) {
                    Ok(changes) => changes,
                    Err(conflict) => return Ok(conflict),
                };
                if s.task_definition() != Some(p.task_definition_arn.as_str()) {
                    changes.push(format!(
                        "task definition: {} -> {}",
                        s.task_definition().unwrap_or("?"),
                        p.task_definition_arn
                    ));
                }
                if s.desired_count() != p.desired_count as i32 {
                    changes.push(format!("desired_count: {} -> {}", s.desired_count(), p.desired_count));
                }
                Plan::changes(changes)
            }
        })
    }

    const DESTROYS: bool = true;

    async fn destroy(&self, ctx: &StepContext, p: Params, _o: &DestroyOptions) -> Result<Outputs, StepError> {
        let owner = Owner::new(&p.stack, ctx);
        let name = owner.name();
        let ecs = super::ecs(p.region.as_deref()).await;
        let found = describe(&ecs, &p.cluster, &name, &["ClusterNotFoundException"]).await?;
        let active = found.as_ref().is_some_and(|s| s.status() == Some("ACTIVE"));
        if let Some(whose) = found.as_ref().filter(|_| active).map(|s| holder(&owner, s)).filter(|h| *h != Holder::Ours)
        {
            ctx.log(format!("left alone: {}", owner.not_ours("service", &name, &whose)));
            return Ok(super::removed(ctx, "service", &[]));
        }
        if active {
            ctx.progress(format!("deleting service {name}"));
            ecs.delete_service()
                .cluster(&p.cluster)
                .service(&name)
                .force(true)
                .send()
                .await
                .or_absent("ecs:DeleteService", &["ServiceNotFoundException", "ServiceNotActiveException"])?;
        }
        let limit = p.wait.map(|w| w.0).unwrap_or(Duration::from_secs(1200));
        wait::until(ctx, &format!("service {name}"), limit, wait::interval(Duration::from_secs(15)), || {
            let (ecs, cluster, name) = (ecs.clone(), p.cluster.clone(), name.clone());
            async move {
                let found = describe(&ecs, &cluster, &name, &["ClusterNotFoundException"]).await?;
                let status = found.and_then(|s| s.status().map(String::from));
                Ok(match status.as_deref() {
                    None | Some("INACTIVE") => Poll::Ready(()),
                    Some(s) => Poll::Pending(s.to_lowercase()),
                })
            }
        })
        .await?;
        Ok(super::removed(ctx, "service", &if active { vec![name] } else { Vec::new() }))
    }

    const DOC: KindDoc = KindDoc {
        summary: "A Fargate service (create or update), waited for until stable; a failed rollout reports the stopped tasks' reasons.",
        outputs: &[("arn", "the service's ARN"), ("name", "its name"), ("action", "`created`, `adopted` or `updated`")],
        example: "- id: orchestrator\n  uses: aws.ecs.service\n  with:\n    stack: \"${{ inputs.stack }}\"\n    cluster: \"${{ steps.cluster.outputs.name }}\"\n    task_definition_arn: \"${{ steps.orchestrator-task.outputs.arn }}\"\n    subnet_ids: [\"${{ steps.private-a.outputs.subnet_id }}\"]\n    security_group_ids: [\"${{ steps.orchestrator-sg.outputs.group_id }}\"]\n    target_group_arn: \"${{ steps.orchestrator-tg.outputs.arn }}\"\n    container_name: orchestrator\n    container_port: 8000\n",
    };

    fn problems(&self, p: &Params) -> Vec<ParamProblem> {
        let mut problems = Vec::new();
        if p.target_group_arn.is_some() != (p.container_name.is_some() && p.container_port.is_some()) {
            problems.push(ParamProblem::at(
                &["target_group_arn"],
                "give `target_group_arn`, `container_name` and `container_port` together",
            ));
        }
        if p.subnet_ids.is_empty() {
            problems.push(ParamProblem::at(&["subnet_ids"], "give at least one subnet"));
        }
        problems
    }

    async fn run(&self, ctx: &StepContext, p: Params) -> Result<Outputs, StepError> {
        let owner = Owner::new(&p.stack, ctx);
        let name = owner.name();
        let ecs = super::ecs(p.region.as_deref()).await;
        let found = describe(&ecs, &p.cluster, &name, &[]).await?;
        // A service of this name deleted since (INACTIVE): a token of before would answer it again.
        let ended = found
            .as_ref()
            .filter(|s| s.status() == Some("INACTIVE"))
            .map(|s| format!("{}@{:?}", s.service_arn().unwrap_or_default(), s.created_at()));
        let existing = found.filter(|s| s.status() != Some("INACTIVE"));
        let desired = p.desired_count as i32;
        let (arn, action) = match existing {
            Some(s) if s.status() == Some("DRAINING") => {
                return Err(StepError::retryable(format!("service {name} is draining (being deleted)"))
                    .with_hint("the next attempt creates it again once the old one is gone"));
            }
            Some(s) => {
                let arn = s.service_arn().unwrap_or_default().to_string();
                if claim(&owner, "service", &name, &holder(&owner, &s), p.take_over)? == Claim::TakeOver {
                    ctx.progress(format!("taking over service {name}: tagging it as stack {}'s", p.stack));
                    let tag = ecs.tag_resource().resource_arn(&arn).set_tags(Some(super::ecs_tags(&owner)));
                    tag.send().await.or_step_error("ecs:TagResource")?;
                }
                if s.task_definition() == Some(p.task_definition_arn.as_str()) && s.desired_count() == desired {
                    (arn, "adopted")
                } else {
                    ctx.progress(format!("updating service {name}"));
                    ecs.update_service()
                        .cluster(&p.cluster)
                        .service(&name)
                        .task_definition(&p.task_definition_arn)
                        .desired_count(desired)
                        .send()
                        .await
                        .or_step_error("ecs:UpdateService")?;
                    ctx.log(format!("service {name}: now {} x{desired}", p.task_definition_arn));
                    (arn, "updated")
                }
            }
            None => {
                let network = AwsVpcConfiguration::builder()
                    .set_subnets(Some(p.subnet_ids.clone()))
                    .set_security_groups(Some(p.security_group_ids.clone()))
                    .assign_public_ip(if p.assign_public_ip {
                        AssignPublicIp::Enabled
                    } else {
                        AssignPublicIp::Disabled
                    })
                    .build()
                    .map_err(|e| StepError::fatal(format!("network configuration: {e}")))?;
                let balancers = p.target_group_arn.as_ref().map(|tg| {
                    vec![
                        LoadBalancer::builder()
                            .target_group_arn(tg)
                            .set_container_name(p.container_name.clone())
                            .set_container_port(p.container_port.map(i32::from))
                            .build(),
                    ]
                });
                let breaker = DeploymentCircuitBreaker::builder().enable(true).rollback(true).build();
                ctx.progress(format!("creating service {name}"));
                let created = ecs
                    .create_service()
                    .cluster(&p.cluster)
                    .service_name(&name)
                    .task_definition(&p.task_definition_arn)
                    .desired_count(desired)
                    .launch_type(LaunchType::Fargate)
                    .network_configuration(NetworkConfiguration::builder().awsvpc_configuration(network).build())
                    .set_load_balancers(balancers)
                    .set_health_check_grace_period_seconds(p.health_check_grace.map(|g| g.0.as_secs() as i32))
                    .deployment_configuration(
                        DeploymentConfiguration::builder().deployment_circuit_breaker(breaker).build(),
                    )
                    .client_token(token(&owner, ended.as_deref()))
                    .propagate_tags(PropagateTags::Service)
                    .set_tags(Some(super::ecs_tags(&owner)))
                    .send()
                    .await
                    .or_step_error("ecs:CreateService")?;
                (created.service().and_then(|s| s.service_arn()).unwrap_or_default().to_string(), "created")
            }
        };
        let limit = p.wait.map(|w| w.0).unwrap_or(Duration::from_secs(1200));
        let what = format!("service {name}");
        wait::until(ctx, &what, limit, wait::interval(Duration::from_secs(15)), || {
            let (ecs, cluster, name) = (ecs.clone(), p.cluster.clone(), name.clone());
            async move {
                let d = ecs
                    .describe_services()
                    // Always with tags: moto decides per process, not per request, whether
                    // answers show tags, so a call without them can hide another's.
                    .include(aws_sdk_ecs::types::ServiceField::Tags)
                    .cluster(&cluster)
                    .services(&name)
                    .send()
                    .await
                    .or_step_error_created("ecs:DescribeServices", true)?;
                let Some(s) = d.services().first() else { return Ok(Poll::Pending("not visible yet".into())) };
                if s.deployments().iter().any(|d| d.rollout_state() == Some(&DeploymentRolloutState::Failed)) {
                    return Err(rollout_failed(&ecs, &cluster, s).await);
                }
                if stable(s, desired) {
                    return Ok(Poll::Ready(()));
                }
                Ok(Poll::Pending(format!(
                    "{}, {} deployment(s), running {}/{}, pending {}",
                    s.status().unwrap_or("?"),
                    s.deployments().len(),
                    s.running_count(),
                    desired,
                    s.pending_count()
                )))
            }
        })
        .await?;
        ctx.log(format!("{action} service {name}: stable, {desired} running"));
        Ok(outputs! { arn, name, action })
    }
}

fn stable(s: &Service, desired: i32) -> bool {
    s.status() == Some("ACTIVE") && s.deployments().len() == 1 && s.running_count() == desired
}

/// The client token of a service's creation: the same for every attempt of this
/// run (a resumed run gets the service a killed attempt asked for), another in
/// another run (its request carries other tags and maybe another revision: ECS
/// refuses a token with other parameters, "Creation of service was not
/// idempotent.") or once a service of this name ended (ECS would answer the
/// deleted one).
fn token(owner: &Owner, ended: Option<&str>) -> String {
    owner.client_token(&format!("service\n{}\n{}", owner.run, ended.unwrap_or("")))
}

/// The service `name` of `cluster` as ECS describes it (an INACTIVE one
/// included); `None` when there is none, or when the error's code is in `absent`.
pub(crate) async fn describe(
    ecs: &aws_sdk_ecs::Client,
    cluster: &str,
    name: &str,
    absent: &[&str],
) -> Result<Option<aws_sdk_ecs::types::Service>, StepError> {
    let found = ecs
        .describe_services()
        .cluster(cluster)
        .services(name)
        .include(aws_sdk_ecs::types::ServiceField::Tags)
        .send()
        .await
        .or_absent("ecs:DescribeServices", absent)?;
    Ok(found.and_then(|f| f.services().first().cloned()))
}

/// The circuit breaker stopped the rollout: say why, from the stopped tasks.
async fn rollout_failed(ecs: &aws_sdk_ecs::Client, cluster: &str, s: &Service) -> StepError {
    let name = s.service_name().unwrap_or("?");
    let reasons = stopped_reasons(ecs, cluster, name).await;
    StepError::fatal(format!("service {name}: the deployment circuit breaker stopped the rollout: {reasons}"))
        .with_hint("the service was rolled back to its previous revision; fix the image or the task definition (see `ca-a2a-flow logs`), then resume")
}

/// Why the service's last tasks stopped (up to 3), or "no stopped task found".
pub(super) async fn stopped_reasons(ecs: &aws_sdk_ecs::Client, cluster: &str, service: &str) -> String {
    let mut reasons = Vec::new();
    if let Ok(list) =
        ecs.list_tasks().cluster(cluster).service_name(service).desired_status(DesiredStatus::Stopped).send().await
    {
        if !list.task_arns().is_empty() {
            if let Ok(tasks) =
                ecs.describe_tasks().cluster(cluster).set_tasks(Some(list.task_arns().to_vec())).send().await
            {
                for t in tasks.tasks().iter().take(3) {
                    let mut reason = t.stopped_reason().unwrap_or("no reason").to_string();
                    for c in t.containers() {
                        if let Some(r) = c.reason() {
                            reason.push_str(&format!("; {}: {r}", c.name().unwrap_or("container")));
                        }
                    }
                    reasons.push(reason);
                }
            }
        }
    }
    if reasons.is_empty() { "no stopped task found".to_string() } else { reasons.join(" | ") }
}

use super::cost::{CostLine, Pricing};
use super::facts::Facts;

impl Facts for EcsService {
    fn console(o: &std::collections::BTreeMap<String, serde_json::Value>, r: &str) -> Option<String> {
        use super::facts::{console_in, output, url_part};
        // arn:aws:ecs:REGION:ACCOUNT:service/CLUSTER/SERVICE
        let (cluster, service) = output(o, "arn")?.split_once(":service/")?.1.split_once('/')?;
        console_in(
            r,
            &format!("ecs/v2/clusters/{}/services/{}/health?region={r}", url_part(cluster), url_part(service)),
        )
    }

    fn monthly(p: &Params, at: &Pricing) -> Result<Vec<CostLine>, String> {
        let (h, prices, count) = (at.hours, at.prices, p.desired_count as f64);
        let task: Option<super::ecs_task_definition::Params> = at.referenced("task_definition_arn");
        let cpu = task.as_ref().map_or(256.0, |t| t.cpu as f64) / 1024.0;
        let gb = task.as_ref().map_or(512.0, |t| t.memory as f64) / 1024.0;
        Ok(vec![CostLine::new(
            format!(
                "{count} task(s) x ({cpu} vCPU x ${} + {gb} GB x ${}) x {h} h",
                prices.fargate_vcpu_hour, prices.fargate_gb_hour
            ),
            count * h * (cpu * prices.fargate_vcpu_hour + gb * prices.fargate_gb_hour),
        )])
    }
}

#[cfg(test)]
mod token_tests {
    use super::*;

    fn owner(run: &str) -> Owner {
        Owner { stack: "s".into(), step: "orchestrator".into(), run: run.into() }
    }

    #[test]
    fn a_service_token_is_kept_on_resume_and_new_in_another_run_or_once_the_service_ended() {
        let first = token(&owner("r1"), None);
        assert_eq!(token(&owner("r1"), None), first);
        assert_ne!(token(&owner("r2"), None), first, "another run (the old constant token was refused there)");
        assert_ne!(token(&owner("r1"), Some("arn:s@1")), first, "a service of the name ended since");
    }
}
