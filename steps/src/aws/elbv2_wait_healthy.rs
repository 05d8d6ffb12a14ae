//! `aws.elbv2.wait_healthy`: waits until a target group has at least
//! `min_healthy` healthy targets and none unhealthy, showing each target's state
//! and AWS's reason while it waits.

use std::time::Duration;

use aws_sdk_elasticloadbalancingv2::types::TargetHealthStateEnum;
use ca_a2a_flow_engine::duration::HumanDuration;
use ca_a2a_flow_engine::{Deadline, KindDoc, Outputs, Parameters, Step, StepContext, StepError, outputs};
use serde::Deserialize;

use super::AwsResult;
use super::wait::{self, Poll};

#[derive(Debug, Deserialize, Parameters)]
#[serde(deny_unknown_fields)]
#[kind(name = "aws.elbv2.wait_healthy", step = WaitHealthy)]
pub struct Params {
    #[param(doc = super::REGION)]
    pub region: Option<String>,
    /// the target group (required)
    pub target_group_arn: String,
    /// healthy targets needed (default 1; 0 checks only that none is unhealthy)
    #[serde(default = "one")]
    pub min_healthy: u32,
    /// deadline (default 10m)
    pub wait: Option<HumanDuration>,
}

fn one() -> u32 {
    1
}

impl Step for WaitHealthy {
    /// It waits up to 10 minutes (`wait`) for healthy targets.
    const DEADLINE: Option<Deadline> = Some(Deadline::minutes(15, 12));

    const DOC: KindDoc = KindDoc {
        summary: "Waits until a target group has `min_healthy` healthy targets and no unhealthy one.",
        outputs: &[("healthy", "how many targets were healthy"), ("target_group_arn", "the target group waited for")],
        example: "- id: keycloak-healthy\n  uses: aws.elbv2.wait_healthy\n  with: { target_group_arn: \"${{ steps.keycloak-tg.outputs.arn }}\" }\n",
    };

    async fn run(&self, ctx: &StepContext, p: Params) -> Result<Outputs, StepError> {
        let elb = super::elbv2(p.region.as_deref()).await;
        let limit = p.wait.map(|w| w.0).unwrap_or(Duration::from_secs(600));
        // arn:aws:elasticloadbalancing:REGION:ACCOUNT:targetgroup/NAME/ID
        let name = p.target_group_arn.split('/').nth(1).unwrap_or(&p.target_group_arn).to_string();
        let what = format!("target group {name}");
        let healthy = wait::until(ctx, &what, limit, wait::interval(Duration::from_secs(10)), || {
            let (elb, arn) = (elb.clone(), p.target_group_arn.clone());
            let min = p.min_healthy;
            async move {
                let d = elb
                    .describe_target_health()
                    .target_group_arn(&arn)
                    .send()
                    .await
                    .or_step_error("elasticloadbalancing:DescribeTargetHealth")?;
                let mut healthy = 0u32;
                let mut others = Vec::new();
                for t in d.target_health_descriptions() {
                    let h = t.target_health();
                    match h.and_then(|h| h.state()) {
                        Some(TargetHealthStateEnum::Healthy) => healthy += 1,
                        state => {
                            let id = t.target().and_then(|t| t.id()).unwrap_or("?");
                            let state = state.map(|s| s.as_str()).unwrap_or("unknown");
                            let reason = h.and_then(|h| h.description()).map(|d| format!(" ({d})")).unwrap_or_default();
                            others.push(format!("{id} {state}{reason}"));
                        }
                    }
                }
                if healthy >= min && others.is_empty() {
                    return Ok(Poll::Ready(healthy));
                }
                let mut state = format!("{healthy}/{min} healthy");
                if !others.is_empty() {
                    state.push_str(&format!("; {}", others.join(", ")));
                }
                Ok(Poll::Pending(state))
            }
        })
        .await?;
        ctx.log(format!("{what}: {healthy} healthy"));
        let target_group_arn = p.target_group_arn;
        Ok(outputs! { healthy, target_group_arn })
    }
}

impl super::facts::Facts for WaitHealthy {}
