//! `aws.appautoscaling.ecs_service`: an ECS service's task count scaled by
//! Application Auto Scaling between `min` and `max`, with a target-tracking
//! policy that keeps the service's average CPU at `cpu_target` percent. The
//! scalable target is the service itself (`service/<cluster>/<service>`), so its
//! identity is the service's, which a step of this stack made; the policy is
//! `<stack>-<step>-cpu`. Registering and putting a policy replace what is
//! there: a re-run converges bounds and target that drifted. `ca-a2a-flow stop`
//! suspends the scaling before it sets the count to 0, and `start` resumes it.

use aws_sdk_applicationautoscaling::types::{
    MetricType, PolicyType, PredefinedMetricSpecification, ScalableDimension, ScalableTarget, ScalingPolicy,
    ServiceNamespace, SuspendedState, TargetTrackingScalingPolicyConfiguration,
};
use ca_a2a_flow_engine::{
    DestroyOptions, KindDoc, Outputs, ParamProblem, Parameters, Plan, Step, StepContext, StepError, outputs,
};
use serde::Deserialize;

use super::owner::Stack;
use super::{AwsResult, Owner};

#[derive(Debug, Deserialize, Parameters)]
#[serde(deny_unknown_fields)]
#[kind(name = "aws.appautoscaling.ecs_service", step = EcsScaling)]
pub struct Params {
    #[param(doc = super::STACK)]
    pub stack: Stack,
    #[param(doc = super::REGION)]
    pub region: Option<String>,
    /// the cluster's name (required)
    pub cluster: String,
    /// the service's name (required)
    pub service: String,
    /// fewest tasks (default 1)
    #[serde(default = "one")]
    pub min: i32,
    /// most tasks (default 5)
    #[serde(default = "five")]
    pub max: i32,
    /// the average CPU percentage the policy keeps (default 70)
    #[serde(default = "seventy")]
    pub cpu_target: f64,
    /// seconds after a scale-in before the next (default 300)
    #[serde(default = "three_hundred")]
    pub scale_in_cooldown: i32,
    /// seconds after a scale-out before the next (default 60)
    #[serde(default = "sixty")]
    pub scale_out_cooldown: i32,
}

fn one() -> i32 {
    1
}
fn five() -> i32 {
    5
}
fn seventy() -> f64 {
    70.0
}
fn three_hundred() -> i32 {
    300
}
fn sixty() -> i32 {
    60
}

/// The scalable target's id: the service.
pub fn resource_id(cluster: &str, service: &str) -> String {
    format!("service/{cluster}/{service}")
}

fn policy_name(owner: &Owner) -> String {
    format!("{}-cpu", owner.name())
}

type Client = aws_sdk_applicationautoscaling::Client;

/// The service's scalable target, if one is registered.
pub async fn target(aas: &Client, resource: &str) -> Result<Option<ScalableTarget>, StepError> {
    let found = aas
        .describe_scalable_targets()
        .service_namespace(ServiceNamespace::Ecs)
        .scalable_dimension(ScalableDimension::EcsServiceDesiredCount)
        .resource_ids(resource)
        .send()
        .await
        .or_step_error("application-autoscaling:DescribeScalableTargets")?;
    Ok(found.scalable_targets().iter().find(|t| t.resource_id() == resource).cloned())
}

async fn policy(aas: &Client, resource: &str, name: &str) -> Result<Option<ScalingPolicy>, StepError> {
    let found = aas
        .describe_scaling_policies()
        .service_namespace(ServiceNamespace::Ecs)
        .resource_id(resource)
        .scalable_dimension(ScalableDimension::EcsServiceDesiredCount)
        .policy_names(name)
        .send()
        .await
        .or_step_error("application-autoscaling:DescribeScalingPolicies")?;
    Ok(found.scaling_policies().iter().find(|s| s.policy_name() == name).cloned())
}

/// Registers the target (bounds, and whether scaling is suspended).
pub async fn register(
    aas: &Client,
    resource: &str,
    bounds: Option<(i32, i32)>,
    suspended: Option<bool>,
    tags: Option<Vec<(String, String)>>,
) -> Result<(), StepError> {
    let state = suspended.map(|s| {
        SuspendedState::builder()
            .dynamic_scaling_in_suspended(s)
            .dynamic_scaling_out_suspended(s)
            .scheduled_scaling_suspended(s)
            .build()
    });
    aas.register_scalable_target()
        .service_namespace(ServiceNamespace::Ecs)
        .scalable_dimension(ScalableDimension::EcsServiceDesiredCount)
        .resource_id(resource)
        .set_min_capacity(bounds.map(|b| b.0))
        .set_max_capacity(bounds.map(|b| b.1))
        .set_suspended_state(state)
        .set_tags(tags.map(|t| t.into_iter().collect()))
        .send()
        .await
        .or_step_error("application-autoscaling:RegisterScalableTarget")?;
    Ok(())
}

/// Whether a target's dynamic scaling is suspended.
pub fn suspended(t: &ScalableTarget) -> bool {
    t.suspended_state().is_some_and(|s| s.dynamic_scaling_in_suspended() == Some(true))
}

fn policy_drift(found: Option<&ScalingPolicy>, p: &Params) -> Vec<String> {
    let Some(c) = found.and_then(|s| s.target_tracking_scaling_policy_configuration()) else {
        return vec![format!("CPU target-tracking policy: none -> {}%", p.cpu_target)];
    };
    let mut changes = Vec::new();
    if c.target_value() != p.cpu_target {
        changes.push(format!("CPU target: {}% -> {}%", c.target_value(), p.cpu_target));
    }
    let cooldowns = (c.scale_in_cooldown(), c.scale_out_cooldown());
    if cooldowns != (Some(p.scale_in_cooldown), Some(p.scale_out_cooldown)) {
        changes.push(format!(
            "cooldowns (in, out): {:?} -> ({}, {})",
            cooldowns, p.scale_in_cooldown, p.scale_out_cooldown
        ));
    }
    changes
}

fn target_drift(found: Option<&ScalableTarget>, p: &Params) -> Vec<String> {
    match found {
        None => vec![format!("scaling: none -> {}..{} tasks", p.min, p.max)],
        Some(t) if (t.min_capacity(), t.max_capacity()) != (p.min, p.max) => {
            vec![format!("scaling: {}..{} -> {}..{} tasks", t.min_capacity(), t.max_capacity(), p.min, p.max)]
        }
        Some(_) => Vec::new(),
    }
}

impl Step for EcsScaling {
    async fn plan(&self, ctx: &StepContext, p: Params) -> Result<Plan, StepError> {
        let owner = Owner::new(&p.stack, ctx);
        let aas = Client::new(&super::config(p.region.as_deref()).await);
        let resource = resource_id(&p.cluster, &p.service);
        let Some(t) = target(&aas, &resource).await? else { return Ok(Plan::create()) };
        let mut changes = target_drift(Some(&t), &p);
        changes.extend(policy_drift(policy(&aas, &resource, &policy_name(&owner)).await?.as_ref(), &p));
        Ok(Plan::changes(changes))
    }

    const DESTROYS: bool = true;

    async fn destroy(&self, ctx: &StepContext, p: Params, _o: &DestroyOptions) -> Result<Outputs, StepError> {
        let aas = Client::new(&super::config(p.region.as_deref()).await);
        let resource = resource_id(&p.cluster, &p.service);
        // Deregistering the target deletes its policies.
        let gone = aas
            .deregister_scalable_target()
            .service_namespace(ServiceNamespace::Ecs)
            .scalable_dimension(ScalableDimension::EcsServiceDesiredCount)
            .resource_id(&resource)
            .send()
            .await
            .or_absent("application-autoscaling:DeregisterScalableTarget", &["ObjectNotFoundException"])?;
        Ok(super::removed(ctx, "scalable target", &gone.map(|_| vec![resource]).unwrap_or_default()))
    }

    const DOC: KindDoc = KindDoc {
        summary: "An ECS service's task count scaled between min and max by a CPU target-tracking policy (70% by default); `stop`/`start` suspend and resume it.",
        outputs: &[
            ("resource_id", "`service/<cluster>/<service>`"),
            ("policy", "the target-tracking policy's name"),
            ("range", "like `1..5`"),
            ("action", "`created`, `adopted` or `updated`"),
        ],
        example: "- id: orchestrator-scaling\n  uses: aws.appautoscaling.ecs_service\n  with:\n    stack: \"${{ inputs.stack }}\"\n    cluster: \"${{ steps.cluster.outputs.name }}\"\n    service: \"${{ steps.orchestrator.outputs.name }}\"\n    min: 1\n    max: 5\n",
    };

    fn problems(&self, p: &Params) -> Vec<ParamProblem> {
        let mut problems = Vec::new();
        if p.min < 0 || p.max < 1 || p.min > p.max {
            problems
                .push(ParamProblem::at(&["max"], format!("{}..{}: need 0 <= min <= max and max >= 1", p.min, p.max)));
        }
        if !(p.cpu_target > 0.0 && p.cpu_target <= 100.0) {
            problems.push(ParamProblem::at(
                &["cpu_target"],
                format!("{}: a percentage above 0, at most 100", p.cpu_target),
            ));
        }
        problems
    }

    async fn run(&self, ctx: &StepContext, p: Params) -> Result<Outputs, StepError> {
        let owner = Owner::new(&p.stack, ctx);
        let aas = Client::new(&super::config(p.region.as_deref()).await);
        let resource = resource_id(&p.cluster, &p.service);
        let name = policy_name(&owner);
        let found = target(&aas, &resource).await?;
        let mut changes = target_drift(found.as_ref(), &p);
        if !changes.is_empty() {
            ctx.progress(format!("scaling {resource} between {} and {} tasks", p.min, p.max));
            // A suspended target (the stack is stopped) stays suspended.
            register(&aas, &resource, Some((p.min, p.max)), None, found.is_none().then(|| owner.tags())).await?;
        }
        let policy_changes = policy_drift(policy(&aas, &resource, &name).await?.as_ref(), &p);
        if !policy_changes.is_empty() {
            let metric = PredefinedMetricSpecification::builder()
                .predefined_metric_type(MetricType::EcsServiceAverageCpuUtilization);
            let config = TargetTrackingScalingPolicyConfiguration::builder()
                .target_value(p.cpu_target)
                .predefined_metric_specification(super::built("metric", metric.build())?)
                .scale_in_cooldown(p.scale_in_cooldown)
                .scale_out_cooldown(p.scale_out_cooldown);
            aas.put_scaling_policy()
                .policy_name(&name)
                .service_namespace(ServiceNamespace::Ecs)
                .scalable_dimension(ScalableDimension::EcsServiceDesiredCount)
                .resource_id(&resource)
                .policy_type(PolicyType::TargetTrackingScaling)
                .target_tracking_scaling_policy_configuration(super::built("policy", config.build())?)
                .send()
                .await
                .or_step_error_created("application-autoscaling:PutScalingPolicy", found.is_none())?;
        }
        let action = match (found.is_none(), changes.is_empty() && policy_changes.is_empty()) {
            (true, _) => "created",
            (false, true) => "adopted",
            (false, false) => "updated",
        };
        changes.extend(policy_changes);
        if action == "updated" {
            ctx.log(format!("{resource}: {}", changes.join("; ")));
        }
        let range = format!("{}..{}", p.min, p.max);
        ctx.log(format!("{action} scaling of {resource}: {range} tasks, CPU {}%", p.cpu_target));
        Ok(outputs! { resource_id: resource, policy: name, range, action })
    }
}

/// No leftovers of its own: a scalable target cannot outlive its ECS service
/// (deleting the service deregisters it and deletes its policies), so `gc`
/// removes it with the service. It is free while it stays.
impl super::facts::Facts for EcsScaling {
    fn console(o: &std::collections::BTreeMap<String, serde_json::Value>, r: &str) -> Option<String> {
        use super::facts::{console_in, output, url_part};
        let id = output(o, "resource_id")?;
        let mut parts = id.strip_prefix("service/")?.splitn(2, '/');
        let (cluster, service) = (parts.next()?, parts.next()?);
        console_in(
            r,
            &format!("ecs/v2/clusters/{}/services/{}/autoscaling?region={r}", url_part(cluster), url_part(service)),
        )
    }
}
