//! What every AWS step kind shares: the SDK configuration (standard credential
//! chain, region, `AWS_ENDPOINT_URL`, a deadline on every call), ownership tags,
//! and the one error classifier.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};

pub mod classify;
pub mod cost;
pub mod facts;
pub mod gc;
pub mod owned;
pub mod owner;
pub mod preflight;
pub mod rules;
pub mod services;
pub mod wait;

pub use classify::{AwsFailure, AwsResult, FailureKind, classify, failure};
pub use owner::Owner;

/// How long one AWS API call may take, retries of throttling included, unless
/// `CA_A2A_FLOW_AWS_CALL_TIMEOUT` says otherwise. No call can hang a run.
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(30);

pub fn call_timeout() -> Duration {
    std::env::var("CA_A2A_FLOW_AWS_CALL_TIMEOUT")
        .ok()
        .and_then(|v| ca_a2a_flow_engine::duration::parse(&v).ok())
        .unwrap_or(DEFAULT_CALL_TIMEOUT)
}

static CONFIGS: Mutex<Option<HashMap<String, SdkConfig>>> = Mutex::new(None);

/// The SDK configuration for `region` (or the standard chain's region when
/// `None`), loaded once per region: profiles, SSO, environment variables,
/// instance metadata on the EC2 builder, `AWS_ENDPOINT_URL` for the emulator.
pub async fn config(region: Option<&str>) -> SdkConfig {
    let key = region.unwrap_or("").to_string();
    if let Some(found) = CONFIGS.lock().unwrap_or_else(|e| e.into_inner()).as_ref().and_then(|m| m.get(&key)) {
        return found.clone();
    }
    let timeout = call_timeout();
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(5).min(timeout))
        .operation_attempt_timeout(timeout)
        .operation_timeout(timeout)
        .build();
    let mut loader = aws_config::defaults(BehaviorVersion::latest()).timeout_config(timeouts);
    if let Some(r) = region {
        loader = loader.region(Region::new(r.to_string()));
    }
    let loaded = loader.load().await;
    CONFIGS.lock().unwrap_or_else(|e| e.into_inner()).get_or_insert_with(HashMap::new).insert(key, loaded.clone());
    loaded
}

/// What a describe-by-owner-tags found: nothing (create it), one (adopt it),
/// or several, which is a fatal error naming them (something duplicated them).
pub fn one_owned<T>(
    found: Vec<T>,
    id: impl Fn(&T) -> Option<&str>,
    what: &str,
    owner: &Owner,
) -> Result<Option<T>, ca_a2a_flow_engine::StepError> {
    match found.len() {
        0 => Ok(None),
        1 => Ok(found.into_iter().next()),
        n => {
            let ids: Vec<&str> = found.iter().filter_map(&id).collect();
            Err(ca_a2a_flow_engine::StepError::fatal(format!(
                "{n} {what}s are tagged as owned by stack `{}` step `{}`: {}",
                owner.stack,
                owner.step,
                ids.join(", ")
            ))
            .with_hint("keep one: delete the others (left by an older tool or by hand), then resume"))
        }
    }
}

pub async fn ec2(region: Option<&str>) -> aws_sdk_ec2::Client {
    aws_sdk_ec2::Client::new(&config(region).await)
}

pub async fn elbv2(region: Option<&str>) -> aws_sdk_elasticloadbalancingv2::Client {
    aws_sdk_elasticloadbalancingv2::Client::new(&config(region).await)
}

pub async fn ecs(region: Option<&str>) -> aws_sdk_ecs::Client {
    aws_sdk_ecs::Client::new(&config(region).await)
}

/// A target group's healthy targets, all its targets, and what the unhealthy
/// ones say ("initial: Target registration is in progress"), for progress lines.
pub async fn target_health(
    region: Option<&str>,
    tg: &str,
) -> Result<(usize, usize, String), ca_a2a_flow_engine::StepError> {
    let elb = aws_sdk_elasticloadbalancingv2::Client::new(&config(region).await);
    let h = elb
        .describe_target_health()
        .target_group_arn(tg)
        .send()
        .await
        .or_step_error("elasticloadbalancing:DescribeTargetHealth")?;
    let all = h.target_health_descriptions();
    let state = |t: &aws_sdk_elasticloadbalancingv2::types::TargetHealthDescription| {
        t.target_health().and_then(|h| h.state()).map(|s| s.as_str().to_string()).unwrap_or_default()
    };
    let ok = all.iter().filter(|t| state(t) == "healthy").count();
    let others: Vec<String> = all
        .iter()
        .filter(|t| state(t) != "healthy")
        .map(|t| {
            let why = t.target_health().and_then(|h| h.description()).unwrap_or_default();
            if why.is_empty() { state(t) } else { format!("{}: {why}", state(t)) }
        })
        .collect();
    let said = if all.is_empty() { "no target registered yet".to_string() } else { others.join(", ") };
    Ok((ok, all.len(), said))
}

/// What a `destroy` returns: what it deleted (or found already gone), logged.
/// An AWS time as milliseconds since the epoch, as the engine counts time.
pub fn epoch_ms(t: &aws_smithy_types::DateTime) -> i64 {
    t.secs() * 1000 + i64::from(t.subsec_nanos() / 1_000_000)
}

pub fn removed(ctx: &ca_a2a_flow_engine::StepContext, what: &str, ids: &[String]) -> ca_a2a_flow_engine::Outputs {
    if ids.is_empty() {
        ctx.log(format!("{what}: nothing to delete (already gone)"));
    } else {
        ctx.log(format!("deleted {what} {}", ids.join(", ")));
    }
    ca_a2a_flow_engine::outputs! { deleted: ids }
}

/// What a `destroy` kept on purpose (data, images), logged with the flag that deletes it.
pub fn kept(ctx: &ca_a2a_flow_engine::StepContext, what: &str, flag: &str) -> ca_a2a_flow_engine::Outputs {
    ctx.log(format!("kept {what} (pass {flag} to delete it)"));
    ca_a2a_flow_engine::outputs! { kept: what }
}

/// The partition of an ARN (`aws` in `arn:aws:iam::1:user/dev`, `aws-cn`, `aws-us-gov`).
pub fn partition_of(arn: &str) -> Option<&str> {
    arn.strip_prefix("arn:")?.split(':').next().filter(|p| !p.is_empty())
}

/// The partition the credentials belong to, read from the caller's identity
/// (never assumed: ARNs in China and GovCloud start `arn:aws-cn`, `arn:aws-us-gov`).
pub async fn partition(config: &aws_config::SdkConfig) -> Result<String, ca_a2a_flow_engine::StepError> {
    let me =
        aws_sdk_sts::Client::new(config).get_caller_identity().send().await.or_step_error("sts:GetCallerIdentity")?;
    let arn = me.arn().unwrap_or_default();
    partition_of(arn).map(String::from).ok_or_else(|| {
        ca_a2a_flow_engine::StepError::fatal(format!(
            "sts:GetCallerIdentity answered an ARN without a partition: `{arn}`"
        ))
    })
}

/// An SDK builder's result: a missing required field is a bug of the step
/// kind, reported as fatal.
pub fn built<T, E: std::fmt::Display>(what: &str, r: Result<T, E>) -> Result<T, ca_a2a_flow_engine::StepError> {
    r.map_err(|e| ca_a2a_flow_engine::StepError::fatal(format!("could not build the {what} request: {e}")))
}

/// ECS tags: ownership plus `Name`.
pub fn ecs_tags(owner: &Owner) -> Vec<aws_sdk_ecs::types::Tag> {
    owner.tags().into_iter().map(|(k, v)| aws_sdk_ecs::types::Tag::builder().key(k).value(v).build()).collect()
}

/// Whose a load balancer or target group found by its name is, from its tags.
pub async fn elbv2_holder(
    elb: &aws_sdk_elasticloadbalancingv2::Client,
    owner: &Owner,
    arn: &str,
) -> Result<owner::Holder, ca_a2a_flow_engine::StepError> {
    let tags =
        elb.describe_tags().resource_arns(arn).send().await.or_step_error("elasticloadbalancing:DescribeTags")?;
    let pairs = tags.tag_descriptions().iter().flat_map(|d| d.tags()).filter_map(|t| Some((t.key()?, t.value()?)));
    Ok(owner.holder(pairs))
}

/// Adopts, takes over (tags it as `owner`'s) or refuses the load balancer or
/// target group `name` found by its name; whether it was taken over.
pub async fn elbv2_claim(
    ctx: &ca_a2a_flow_engine::StepContext,
    elb: &aws_sdk_elasticloadbalancingv2::Client,
    owner: &Owner,
    what: &str,
    name: &str,
    arn: &str,
    take_over: bool,
) -> Result<bool, ca_a2a_flow_engine::StepError> {
    let holder = elbv2_holder(elb, owner, arn).await?;
    match owner::claim(owner, what, name, &holder, take_over)? {
        owner::Claim::Adopt => Ok(false),
        owner::Claim::TakeOver => {
            ctx.progress(format!("taking over {what} {name}: tagging it as stack {}'s", owner.stack));
            let tag = elb.add_tags().resource_arns(arn).set_tags(Some(elbv2_tags(owner)));
            tag.send().await.or_step_error("elasticloadbalancing:AddTags")?;
            Ok(true)
        }
    }
}

/// ELBv2 tags: ownership plus `Name`.
pub fn elbv2_tags(owner: &Owner) -> Vec<aws_sdk_elasticloadbalancingv2::types::Tag> {
    owner
        .tags()
        .into_iter()
        .map(|(k, v)| aws_sdk_elasticloadbalancingv2::types::Tag::builder().key(k).value(v).build())
        .collect()
}

pub mod acm_certificate;
pub mod appautoscaling_ecs_service;
pub mod cloudwatch_alarm;
pub mod ec2_elastic_ip;
pub mod ec2_instance;
pub mod ec2_internet_gateway;
pub mod ec2_nat_gateway;
pub mod ec2_route_table;
pub mod ec2_security_group;
pub mod ec2_security_group_ingress;
pub mod ec2_subnet;
pub mod ec2_subnet_lookup;
pub mod ec2_vpc;
pub mod ecr_repository;
pub mod ecs_cluster;
pub mod ecs_rollout;
pub mod ecs_service;
pub mod ecs_service_network;
pub mod ecs_task_definition;
pub mod elbv2_listener;
pub mod elbv2_listener_rule;
pub mod elbv2_load_balancer;
pub mod elbv2_target_group;
pub mod elbv2_wait_healthy;
pub mod iam_role;
pub mod logs_log_group;
pub mod rds_db_instance;
pub mod rds_db_snapshot;
pub mod rds_db_subnet_group;
pub mod rds_restore_drill;
pub mod s3_bucket;
pub mod s3_object;
pub mod secretsmanager_secret;
pub mod sns_topic;
pub mod ssm_parameter;
pub mod ssm_run_command;
pub mod sts_caller_identity;
pub mod wafv2_web_acl;

/// How `stack` is documented on every kind whose resource a stack owns.
pub const STACK: &str =
    "stack name: 1-32 lowercase letters, digits, `-`; a letter first, no `--`, no final `-` (required)";
/// How `region` is documented on every AWS kind.
pub const REGION: &str = "AWS region (default: the SDK's chain, e.g. AWS_REGION)";
