//! `aws.elbv2.target_group`: an HTTP target group of type `ip` (what Fargate
//! tasks register in), named `<stack>-<step>`, with its health check converged.

use aws_sdk_elasticloadbalancingv2::types::{self, Matcher, ProtocolEnum, TargetGroupAttribute, TargetTypeEnum};
use ca_a2a_flow_engine::{
    DestroyOptions, KindDoc, Outputs, ParamProblem, Parameters, Plan, Step, StepContext, StepError, outputs,
};
use serde::Deserialize;

use super::owner::Stack;
use super::{AwsResult, Owner};

#[derive(Debug, Deserialize, Parameters)]
#[serde(deny_unknown_fields)]
#[kind(name = "aws.elbv2.target_group", step = TargetGroup)]
pub struct Params {
    #[param(doc = super::STACK)]
    pub stack: Stack,
    #[param(doc = super::REGION)]
    pub region: Option<String>,
    /// the VPC (required)
    pub vpc_id: String,
    /// the targets' port (required)
    pub port: u16,
    /// default /health
    #[serde(default = "default_path")]
    pub health_check_path: String,
    /// seconds, default 30
    #[serde(default = "default_interval")]
    pub health_check_interval: u16,
    /// seconds, default 5
    #[serde(default = "default_timeout")]
    pub health_check_timeout: u16,
    /// HTTP codes that count as healthy, default 200-399
    #[serde(default = "default_matcher")]
    pub healthy_codes: String,
    /// consecutive passed checks before a target is healthy, 2 to 10, default 5 (AWS's);
    /// a new task serves after about interval × this
    #[serde(default = "default_threshold")]
    pub healthy_threshold: u8,
    /// seconds a leaving target keeps its connections (draining), 0 to 3600, default 300 (AWS's);
    /// every rollout and every destroy of a service waits this long
    #[serde(default = "default_delay")]
    pub deregistration_delay: u16,
    #[param(doc = super::owner::TAKE_OVER)]
    #[serde(default)]
    pub take_over: bool,
}

fn default_path() -> String {
    "/health".into()
}
fn default_interval() -> u16 {
    30
}
fn default_timeout() -> u16 {
    5
}
fn default_matcher() -> String {
    "200-399".into()
}
fn default_threshold() -> u8 {
    5
}
fn default_delay() -> u16 {
    300
}

/// The target group attribute holding the deregistration delay.
const DELAY: &str = "deregistration_delay.timeout_seconds";

impl Step for TargetGroup {
    async fn plan(&self, ctx: &StepContext, p: Params) -> Result<Plan, StepError> {
        let owner = Owner::new(&p.stack, ctx);
        let name = owner.short_name(32);
        let elb = super::elbv2(p.region.as_deref()).await;
        let Some(tg) = by_name(&elb, &name).await? else { return Ok(Plan::create()) };
        let holder = super::elbv2_holder(&elb, &owner, tg.target_group_arn().unwrap_or_default()).await?;
        if let Err(refused) = super::owner::claim(&owner, "target group", &name, &holder, p.take_over) {
            return Ok(Plan::conflict(refused.message));
        }
        if tg.port() != Some(i32::from(p.port)) {
            return Ok(Plan::conflict(format!("port: {} -> {} (cannot change)", tg.port().unwrap_or(0), p.port)));
        }
        let mut changes = Vec::new();
        if tg.health_check_path() != Some(p.health_check_path.as_str()) {
            changes.push(format!(
                "health_check_path: {} -> {}",
                tg.health_check_path().unwrap_or("?"),
                p.health_check_path
            ));
        }
        if tg.health_check_interval_seconds() != Some(i32::from(p.health_check_interval)) {
            changes.push(format!(
                "health_check_interval: {} -> {}",
                tg.health_check_interval_seconds().unwrap_or(0),
                p.health_check_interval
            ));
        }
        if tg.health_check_timeout_seconds() != Some(i32::from(p.health_check_timeout)) {
            changes.push(format!(
                "health_check_timeout: {} -> {}",
                tg.health_check_timeout_seconds().unwrap_or(0),
                p.health_check_timeout
            ));
        }
        if tg.healthy_threshold_count() != Some(i32::from(p.healthy_threshold)) {
            let now = tg.healthy_threshold_count().unwrap_or(0);
            changes.push(format!("healthy_threshold: {now} -> {}", p.healthy_threshold));
        }
        let arn = tg.target_group_arn().unwrap_or_default();
        let delay = deregistration_delay(&elb, arn).await?;
        if delay != Some(p.deregistration_delay) {
            let now = delay.map(|d| d.to_string()).unwrap_or_else(|| "?".into());
            changes.push(format!("deregistration_delay: {now} -> {}", p.deregistration_delay));
        }
        Ok(Plan::changes(changes))
    }

    const DESTROYS: bool = true;

    async fn destroy(&self, ctx: &StepContext, p: Params, _o: &DestroyOptions) -> Result<Outputs, StepError> {
        let owner = Owner::new(&p.stack, ctx);
        let name = owner.short_name(32);
        let elb = super::elbv2(p.region.as_deref()).await;
        let Some(arn) = by_name(&elb, &name).await?.and_then(|t| t.target_group_arn().map(String::from)) else {
            return Ok(super::removed(ctx, "target group", &[]));
        };
        let holder = super::elbv2_holder(&elb, &owner, &arn).await?;
        if holder != super::owner::Holder::Ours {
            ctx.log(format!("left alone: {}", owner.not_ours("target group", &name, &holder)));
            return Ok(super::removed(ctx, "target group", &[]));
        }
        elb.delete_target_group()
            .target_group_arn(&arn)
            .send()
            .await
            .or_absent("elasticloadbalancing:DeleteTargetGroup", &["TargetGroupNotFound"])?;
        Ok(super::removed(ctx, "target group", &[name]))
    }

    const DOC: KindDoc = KindDoc {
        summary: "An HTTP target group of type ip named `<stack>-<step>`; its health check is updated when it drifts.",
        outputs: &[
            ("arn", "the target group's ARN"),
            ("name", "its name"),
            ("action", "`created`, `adopted`, `updated` or `taken-over` (`take_over`)"),
        ],
        example: "- id: orchestrator-tg\n  uses: aws.elbv2.target_group\n  with:\n    stack: \"${{ inputs.stack }}\"\n    vpc_id: \"${{ steps.vpc.outputs.vpc_id }}\"\n    port: 8000\n    health_check_path: /health\n",
    };

    fn problems(&self, p: &Params) -> Vec<ParamProblem> {
        let mut problems = Vec::new();
        if !p.health_check_path.starts_with('/') {
            problems.push(ParamProblem::at(&["health_check_path"], "must start with `/`"));
        }
        if !(5..=300).contains(&p.health_check_interval) {
            problems.push(ParamProblem::at(&["health_check_interval"], "must be 5 to 300 seconds"));
        }
        if !(2..=120).contains(&p.health_check_timeout) || p.health_check_timeout >= p.health_check_interval {
            problems.push(ParamProblem::at(
                &["health_check_timeout"],
                "must be 2 to 120 seconds and less than the interval",
            ));
        }
        if !(2..=10).contains(&p.healthy_threshold) {
            problems.push(ParamProblem::at(&["healthy_threshold"], "must be 2 to 10 checks"));
        }
        if p.deregistration_delay > 3600 {
            problems.push(ParamProblem::at(&["deregistration_delay"], "must be 0 to 3600 seconds"));
        }
        problems
    }

    async fn run(&self, ctx: &StepContext, p: Params) -> Result<Outputs, StepError> {
        let owner = Owner::new(&p.stack, ctx);
        let name = owner.short_name(32);
        let elb = super::elbv2(p.region.as_deref()).await;
        let (arn, action) = match by_name(&elb, &name).await? {
            Some(tg) => {
                if tg.vpc_id() != Some(p.vpc_id.as_str()) || tg.port() != Some(i32::from(p.port)) {
                    let detail = format!(
                        "is in {} on port {}, but the step asks for {} on port {}",
                        tg.vpc_id().unwrap_or("?"),
                        tg.port().unwrap_or(0),
                        p.vpc_id,
                        p.port
                    );
                    return Err(owner.conflict("target group", &name, detail, "a target group's VPC and port cannot change: delete it (and the listener rules using it) first"));
                }
                let arn = tg.target_group_arn().unwrap_or_default().to_string();
                let taken = super::elbv2_claim(ctx, &elb, &owner, "target group", &name, &arn, p.take_over).await?;
                if taken {
                    (arn, "taken-over")
                } else if health_drifted(&tg, &p) {
                    elb.modify_target_group()
                        .target_group_arn(&arn)
                        .health_check_path(&p.health_check_path)
                        .health_check_interval_seconds(i32::from(p.health_check_interval))
                        .health_check_timeout_seconds(i32::from(p.health_check_timeout))
                        .healthy_threshold_count(i32::from(p.healthy_threshold))
                        .matcher(Matcher::builder().http_code(&p.healthy_codes).build())
                        .send()
                        .await
                        .or_step_error("elasticloadbalancing:ModifyTargetGroup")?;
                    ctx.log(format!("{name}: health check updated"));
                    (arn, "updated")
                } else {
                    (arn, "adopted")
                }
            }
            None => {
                ctx.progress(format!("creating target group {name}"));
                let created = elb
                    .create_target_group()
                    .name(&name)
                    .protocol(ProtocolEnum::Http)
                    .port(i32::from(p.port))
                    .vpc_id(&p.vpc_id)
                    .target_type(TargetTypeEnum::Ip)
                    .health_check_path(&p.health_check_path)
                    .health_check_interval_seconds(i32::from(p.health_check_interval))
                    .health_check_timeout_seconds(i32::from(p.health_check_timeout))
                    .healthy_threshold_count(i32::from(p.healthy_threshold))
                    .matcher(Matcher::builder().http_code(&p.healthy_codes).build())
                    .set_tags(Some(super::elbv2_tags(&owner)))
                    .send()
                    .await
                    .or_step_error("elasticloadbalancing:CreateTargetGroup")?;
                let arn = created.target_groups().first().and_then(|t| t.target_group_arn()).unwrap_or_default();
                (arn.to_string(), "created")
            }
        };
        // The delay is an attribute, not a field: set after the group exists, and
        // checked on every run (a changed one is an update, not a new group).
        let action = match deregistration_delay(&elb, &arn).await? {
            Some(d) if d == p.deregistration_delay => action,
            _ => {
                let delay =
                    TargetGroupAttribute::builder().key(DELAY).value(p.deregistration_delay.to_string()).build();
                elb.modify_target_group_attributes()
                    .target_group_arn(&arn)
                    .attributes(delay)
                    .send()
                    .await
                    .or_step_error_created("elasticloadbalancing:ModifyTargetGroupAttributes", action == "created")?;
                if action == "adopted" { "updated" } else { action }
            }
        };
        ctx.log(format!("{action} target group {name} (port {}, health {})", p.port, p.health_check_path));
        Ok(outputs! { arn, name, action })
    }
}

fn health_drifted(tg: &types::TargetGroup, p: &Params) -> bool {
    tg.health_check_path() != Some(p.health_check_path.as_str())
        || tg.health_check_interval_seconds() != Some(i32::from(p.health_check_interval))
        || tg.health_check_timeout_seconds() != Some(i32::from(p.health_check_timeout))
        || tg.matcher().and_then(|m| m.http_code()) != Some(p.healthy_codes.as_str())
        || tg.healthy_threshold_count() != Some(i32::from(p.healthy_threshold))
}

/// The group's deregistration delay in seconds, as AWS holds it.
async fn deregistration_delay(
    elb: &aws_sdk_elasticloadbalancingv2::Client,
    arn: &str,
) -> Result<Option<u16>, StepError> {
    let attributes = elb
        .describe_target_group_attributes()
        .target_group_arn(arn)
        .send()
        .await
        .or_step_error_created("elasticloadbalancing:DescribeTargetGroupAttributes", true)?;
    let delay = attributes.attributes().iter().find(|a| a.key() == Some(DELAY)).and_then(|a| a.value());
    Ok(delay.and_then(|v| v.parse().ok()))
}

/// The target group called `name` (`None`: there is none).
async fn by_name(
    elb: &aws_sdk_elasticloadbalancingv2::Client,
    name: &str,
) -> Result<Option<aws_sdk_elasticloadbalancingv2::types::TargetGroup>, StepError> {
    let found = elb.describe_target_groups().names(name).send().await;
    let found = found.or_absent("elasticloadbalancing:DescribeTargetGroups", &["TargetGroupNotFound"])?;
    Ok(found.and_then(|f| f.target_groups().first().cloned()))
}

impl super::facts::Facts for TargetGroup {
    fn console(o: &std::collections::BTreeMap<String, serde_json::Value>, r: &str) -> Option<String> {
        use super::facts::{console_in, output, url_part};
        let arn = output(o, "arn")?;
        console_in(r, &format!("ec2/home?region={r}#TargetGroup:targetGroupArn={}", url_part(arn)))
    }
}
