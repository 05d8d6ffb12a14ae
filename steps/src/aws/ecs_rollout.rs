//! `aws.ecs.rollout`: moves an existing service to a new task-definition
//! revision and waits until the deployment completed and its target group has
//! healthy targets; if that does not happen before the deadline (or ECS says
//! the deployment failed), it puts the service back on the revision it ran
//! before and fails with the stopped tasks' reasons.
//!
//! The revision it replaces is written as a tag on the service before the
//! update, so a run killed in the middle of the wait still knows, on resume,
//! where to roll back to. It owns no resource (the service is someone
//! else's): `destroy` leaves it alone.

use std::time::Duration;

#[cfg(test)]
use aws_sdk_ecs::types::Deployment;
use aws_sdk_ecs::types::{DeploymentRolloutState, Service, Tag};
use ca_a2a_flow_engine::duration::parse as parse_duration;
use ca_a2a_flow_engine::{KindDoc, Outputs, ParamProblem, Parameters, Plan, Step, StepContext, StepError, outputs};
use serde::Deserialize;

use super::AwsResult;
use super::ecs_service::stopped_reasons;
use super::wait::{self, Poll};

/// The tag on the service that remembers the revision to roll back to.
pub const PREVIOUS_TAG: &str = "ca-a2a-flow:previous-task-definition";

fn one() -> u32 {
    1
}
fn default_deadline() -> String {
    "15m".into()
}
fn default_rollback_wait() -> String {
    "10m".into()
}

#[derive(Debug, Deserialize, Parameters)]
#[serde(deny_unknown_fields)]
#[kind(name = "aws.ecs.rollout", step = Rollout)]
pub struct Params {
    #[param(doc = super::REGION)]
    pub region: Option<String>,
    /// the cluster (required)
    pub cluster: String,
    /// the service's name (required)
    pub service: String,
    /// the new revision (required)
    pub task_definition_arn: String,
    /// its target group; healthy targets are waited for
    pub target_group_arn: Option<String>,
    /// healthy targets needed (default 1; 0 against an emulator)
    #[serde(default = "one")]
    pub healthy_targets: u32,
    /// how long the new revision has to become healthy (default 15m)
    #[param(ty = "duration")]
    #[serde(default = "default_deadline")]
    pub deadline: String,
    /// how long to wait for a rollback to settle (default 10m)
    #[param(ty = "duration")]
    #[serde(default = "default_rollback_wait")]
    pub rollback_wait: String,
}

impl Step for Rollout {
    const DOC: KindDoc = KindDoc {
        summary: "Moves a service to a new revision, waits for the deployment and healthy targets; rolls back to the previous revision on failure or deadline.",
        outputs: &[
            ("task_definition_arn", "the revision the service runs now"),
            ("previous_task_definition_arn", "the one it ran before"),
            ("action", "`rolled-out`, or `adopted` when it already ran this revision, healthy"),
        ],
        example: "- id: keycloak-cutover\n  uses: aws.ecs.rollout\n  approve: Keycloak moves from H2 to RDS\n  with:\n    cluster: ca-a2a-cluster\n    service: ca-a2a-keycloak\n    task_definition_arn: \"${{ steps.keycloak-rds-task.outputs.arn }}\"\n",
    };

    fn problems(&self, p: &Params) -> Vec<ParamProblem> {
        let mut problems = Vec::new();
        for (key, value) in [("deadline", &p.deadline), ("rollback_wait", &p.rollback_wait)] {
            if !value.contains("${{") && parse_duration(value).is_err() {
                problems.push(ParamProblem::at(&[key], format!("`{value}` is not a duration like 15m")));
            }
        }
        problems
    }

    async fn plan(&self, _ctx: &StepContext, p: Params) -> Result<Plan, StepError> {
        let ecs = super::ecs(p.region.as_deref()).await;
        let service = describe(&ecs, &p).await?;
        let now = service.task_definition().unwrap_or_default();
        Ok(if now == p.task_definition_arn {
            Plan::adopt()
        } else {
            Plan {
                new_outputs: true,
                ..Plan::changes(vec![format!("task definition: {now} -> {}", p.task_definition_arn)])
            }
        })
    }

    async fn run(&self, ctx: &StepContext, p: Params) -> Result<Outputs, StepError> {
        let ecs = super::ecs(p.region.as_deref()).await;
        let deadline = parse_duration(&p.deadline).map_err(StepError::fatal)?;
        let service = describe(&ecs, &p).await?;
        let arn = service.service_arn().unwrap_or_default().to_string();
        let current = service.task_definition().unwrap_or_default().to_string();
        let remembered =
            service.tags().iter().find(|t| t.key() == Some(PREVIOUS_TAG)).and_then(|t| t.value()).map(String::from);

        let (previous, action) = if current == p.task_definition_arn {
            ctx.log(format!("service {} already runs {current}", p.service));
            (remembered.filter(|r| *r != current), "adopted")
        } else {
            // Remembered in AWS before the update: a resumed attempt rolls back to it.
            ecs.tag_resource()
                .resource_arn(&arn)
                .tags(Tag::builder().key(PREVIOUS_TAG).value(&current).build())
                .send()
                .await
                .or_step_error("ecs:TagResource")?;
            ctx.log(format!("service {}: {current} -> {}", p.service, p.task_definition_arn));
            ecs.update_service()
                .cluster(&p.cluster)
                .service(&p.service)
                .task_definition(&p.task_definition_arn)
                .send()
                .await
                .or_step_error("ecs:UpdateService")?;
            (Some(current.clone()), "rolled-out")
        };

        let updated = std::time::Instant::now();
        let what = format!("service {} on {}", p.service, revision(&p.task_definition_arn));
        let waited = wait::until_deadline(ctx, &what, deadline, wait::interval(Duration::from_secs(10)), || async {
            let s = describe(&ecs, &p).await?;
            if let Some(waiting) = judge(&s, &p.task_definition_arn, previous.as_deref(), updated.elapsed())? {
                return Ok(Poll::Pending(waiting));
            }
            if !settled(&s) {
                let primary = s.deployments().iter().find(|d| d.status() == Some("PRIMARY"));
                return Ok(Poll::Pending(format!(
                    "deployment {}, {}/{} running, {} deployments",
                    primary
                        .and_then(|d| d.rollout_state())
                        .map(|r| r.as_str().to_lowercase())
                        .unwrap_or("starting".into()),
                    s.running_count(),
                    s.desired_count(),
                    s.deployments().len()
                )));
            }
            match &p.target_group_arn {
                Some(tg) if !tg.is_empty() && p.healthy_targets > 0 => {
                    let (healthy, _, state) = super::target_health(p.region.as_deref(), tg).await?;
                    Ok(if healthy >= p.healthy_targets as usize {
                        Poll::Ready(())
                    } else {
                        Poll::Pending(format!("{healthy}/{} targets healthy ({state})", p.healthy_targets))
                    })
                }
                _ => Ok(Poll::Ready(())),
            }
        })
        .await;

        match waited {
            Ok(wait::Waited::Ready(())) => {
                ctx.log(format!("{what}: deployment completed and healthy"));
                Ok(
                    outputs! { task_definition_arn: p.task_definition_arn, previous_task_definition_arn: previous.unwrap_or_default(), action },
                )
            }
            Ok(wait::Waited::Deadline { last, waited }) => {
                Err(roll_back(ctx, &ecs, &p, previous.as_deref(), &wait::deadline(&what, &last, waited)).await)
            }
            // A read that failed (throttled, an error on AWS's side) says nothing of the deployment: the next
            // attempt finds the revision this one set, and the one before in the service's tag, and waits again.
            Err(e) if e.class == ca_a2a_flow_engine::ErrorClass::Retryable => Err(e),
            Err(verdict) => Err(roll_back(ctx, &ecs, &p, previous.as_deref(), &verdict).await),
        }
    }
}

/// Puts the service back on `previous`, waits for it to settle, and says why.
async fn roll_back(
    ctx: &StepContext,
    ecs: &aws_sdk_ecs::Client,
    p: &Params,
    previous: Option<&str>,
    why: &StepError,
) -> StepError {
    let new = revision(&p.task_definition_arn);
    let reasons = stopped_reasons(ecs, &p.cluster, &p.service).await;
    let Some(previous) = previous else {
        return StepError::fatal(format!(
            "service {}: {new} did not become healthy ({}); no previous revision is known, so nothing was rolled back; stopped tasks: {reasons}",
            p.service, why.message
        ))
        .with_hint("fix the revision (see `ca-a2a-flow tail RUN SERVICE` for its logs), then resume");
    };
    ctx.log(format!("{new} did not become healthy: rolling service {} back to {}", p.service, revision(previous)));
    let rolled = ecs
        .update_service()
        .cluster(&p.cluster)
        .service(&p.service)
        .task_definition(previous)
        .send()
        .await
        .or_step_error("ecs:UpdateService");
    if let Err(e) = rolled {
        return StepError::fatal(format!(
            "service {}: {new} did not become healthy ({}) and the rollback to {previous} failed: {}",
            p.service, why.message, e.message
        ))
        .with_hint(format!(
            "roll back by hand: aws ecs update-service --cluster {} --service {} --task-definition {previous}",
            p.cluster, p.service
        ));
    }
    let limit = parse_duration(&p.rollback_wait).unwrap_or(Duration::from_secs(600));
    let what = format!("rollback of {} to {}", p.service, revision(previous));
    let settled_back = wait::until(ctx, &what, limit, wait::interval(Duration::from_secs(10)), || async {
        let s = describe(ecs, p).await?;
        Ok(if settled(&s) && s.task_definition() == Some(previous) {
            Poll::Ready(())
        } else {
            Poll::Pending(format!(
                "{}/{} running, {} deployments",
                s.running_count(),
                s.desired_count(),
                s.deployments().len()
            ))
        })
    })
    .await;
    let settled_note = match settled_back {
        Ok(()) => "it runs again".to_string(),
        Err(e) => format!("its rollback deployment has not settled yet: {}", e.message),
    };
    StepError::fatal(format!(
        "service {}: {new} did not become healthy ({}); rolled back to {} ({settled_note}); stopped tasks: {reasons}",
        p.service,
        why.message,
        revision(previous)
    ))
    .with_hint("the previous revision serves again; read the new revision's logs (`ca-a2a-flow tail RUN SERVICE`), fix it, then run again")
}

async fn describe(ecs: &aws_sdk_ecs::Client, p: &Params) -> Result<Service, StepError> {
    let found = ecs
        .describe_services()
        .cluster(&p.cluster)
        .services(&p.service)
        .include(aws_sdk_ecs::types::ServiceField::Tags)
        .send()
        .await
        .or_absent("ecs:DescribeServices", &["ClusterNotFoundException"])?;
    found.and_then(|f| f.services().iter().find(|s| s.status() != Some("INACTIVE")).cloned()).ok_or_else(|| {
        StepError::fatal(format!("service {} does not exist in cluster {}", p.service, p.cluster))
            .with_hint("check the `cluster` and `service` inputs: `aws ecs list-services --cluster CLUSTER`")
    })
}

/// How long a describe may still show the revision the service ran before the
/// update: ECS's reads are eventually consistent (ECS API reference, "Request
/// eventual consistency").
const STALE_READ_GRACE: Duration = Duration::from_secs(60);

/// Where the service stands against the revision being rolled out, `since` the
/// update: `Ok(None)` when it is on `wanted` (its deployment is checked next), a
/// wait while a read may still be stale, or why the rollout cannot succeed. A
/// failed deployment is looked for first: ECS's circuit breaker puts the old
/// revision back itself, which is not someone else's deploy.
fn judge(s: &Service, wanted: &str, previous: Option<&str>, since: Duration) -> Result<Option<String>, StepError> {
    let name = s.service_name().unwrap_or("the service");
    let failed = s.deployments().iter().find(|d| d.rollout_state() == Some(&DeploymentRolloutState::Failed));
    if let Some(failed) = failed {
        return Err(StepError::fatal(format!(
            "ECS says the deployment failed ({})",
            failed.rollout_state_reason().unwrap_or("no reason given")
        )));
    }
    let now = s.task_definition().unwrap_or("?");
    if now == wanted {
        return Ok(None);
    }
    if Some(now) == previous {
        if since < STALE_READ_GRACE {
            return Ok(Some(format!("ECS does not show the update to {} yet", revision(wanted))));
        }
        return Err(StepError::fatal(format!(
            "{name} is back on {} {} after the update to {}: ECS rolled the deployment back",
            revision(now),
            ca_a2a_flow_engine::duration::format(since),
            revision(wanted)
        ))
        .with_hint("the new revision did not start; read its stopped tasks (`aws ecs describe-services`) and logs, fix it, then run again"));
    }
    Err(StepError::fatal(format!("{name} was moved to {now} while this rollout waited"))
        .with_hint("someone else deploys this service: let them finish, then resume"))
}

/// One deployment left, all of its tasks running.
fn settled(s: &Service) -> bool {
    s.deployments().len() == 1
        && s.running_count() >= s.desired_count()
        && s.deployments()
            .first()
            .and_then(|d| d.rollout_state())
            .is_none_or(|r| *r == DeploymentRolloutState::Completed)
}

/// `family:revision` of a task definition ARN, for messages.
fn revision(arn: &str) -> String {
    arn.rsplit('/').next().unwrap_or(arn).to_string()
}

impl super::facts::Facts for Rollout {}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_revision_is_named_by_family_and_number() {
        assert_eq!(revision("arn:aws:ecs:eu-west-3:1:task-definition/s-keycloak:7"), "s-keycloak:7");
    }

    const OLD: &str = "arn:aws:ecs:eu-west-3:1:task-definition/s-keycloak:6";
    const NEW: &str = "arn:aws:ecs:eu-west-3:1:task-definition/s-keycloak:7";

    fn deployment(status: &str, revision: &str, state: DeploymentRolloutState, reason: &str) -> Deployment {
        Deployment::builder()
            .status(status)
            .task_definition(revision)
            .rollout_state(state)
            .rollout_state_reason(reason)
            .build()
    }

    fn service_on(revision: &str, deployments: Vec<Deployment>) -> Service {
        Service::builder().task_definition(revision).set_deployments(Some(deployments)).build()
    }

    #[test]
    fn a_deployment_the_circuit_breaker_failed_is_reported_as_failed_after_ecs_put_the_old_revision_back() {
        let rolled_back_by_ecs = service_on(
            OLD,
            vec![
                deployment("PRIMARY", OLD, DeploymentRolloutState::InProgress, "rolling back"),
                deployment("ACTIVE", NEW, DeploymentRolloutState::Failed, "tasks failed to start"),
            ],
        );
        let e = judge(&rolled_back_by_ecs, NEW, Some(OLD), Duration::from_secs(300)).unwrap_err();
        assert!(e.message.contains("deployment failed (tasks failed to start)"), "{}", e.message);
    }

    #[test]
    fn a_read_right_after_the_update_that_still_shows_the_old_revision_is_waited_on() {
        let stale = service_on(OLD, vec![deployment("PRIMARY", OLD, DeploymentRolloutState::Completed, "")]);
        match judge(&stale, NEW, Some(OLD), Duration::from_secs(5)) {
            Ok(Some(waiting)) => assert!(waiting.contains("does not show"), "{waiting}"),
            other => panic!("expected a wait, got {other:?}"),
        }
    }

    #[test]
    fn a_service_back_on_the_old_revision_long_after_the_update_was_rolled_back_by_ecs() {
        let back = service_on(OLD, vec![deployment("PRIMARY", OLD, DeploymentRolloutState::Completed, "")]);
        let e = judge(&back, NEW, Some(OLD), Duration::from_secs(300)).unwrap_err();
        assert!(e.message.contains("back on s-keycloak:6"), "{}", e.message);
    }

    #[test]
    fn a_service_moved_to_a_third_revision_is_someone_elses_deploy() {
        let other = "arn:aws:ecs:eu-west-3:1:task-definition/s-keycloak:8";
        let moved = service_on(other, vec![deployment("PRIMARY", other, DeploymentRolloutState::InProgress, "")]);
        let e = judge(&moved, NEW, Some(OLD), Duration::from_secs(5)).unwrap_err();
        assert!(e.message.contains("was moved to"), "{}", e.message);
        assert!(e.hint.unwrap().contains("someone else"));
    }

    #[test]
    fn a_service_on_the_new_revision_goes_on_to_the_settle_check() {
        let on_it = service_on(NEW, vec![deployment("PRIMARY", NEW, DeploymentRolloutState::InProgress, "")]);
        assert!(matches!(judge(&on_it, NEW, Some(OLD), Duration::from_secs(5)), Ok(None)));
    }

    #[test]
    fn deadlines_must_be_durations() {
        let p: Params = serde_json::from_value(json!({
            "cluster": "c", "service": "s", "task_definition_arn": "a", "deadline": "soon"
        }))
        .unwrap();
        assert_eq!(Rollout.problems(&p)[0].path, ["deadline"]);
    }
}
