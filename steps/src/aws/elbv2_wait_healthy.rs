//! `aws.elbv2.wait_healthy`: waits until a target group has at least
//! `min_healthy` healthy targets and none unhealthy, showing each target's state
//! and AWS's reason while it waits.

use std::time::Duration;

use aws_sdk_elasticloadbalancingv2::types::TargetHealthStateEnum;
use ca_a2a_flow_engine::duration::HumanDuration;
use ca_a2a_flow_engine::{Deadline, KindDoc, OutputSpec, Outputs, ParamProblem, Step, StepContext, StepError};
use serde::Deserialize;
use serde_json::{Value as Json, json};

use super::AwsResult;
use super::wait::{self, Poll};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    #[serde(default)]
    pub region: Option<String>,
    pub target_group_arn: String,
    #[serde(default = "one")]
    pub min_healthy: u32,
    #[serde(default)]
    pub wait: Option<HumanDuration>,
}

fn one() -> u32 {
    1
}

pub struct WaitHealthy;

impl Step for WaitHealthy {
    type Params = Params;
    const KIND: &'static str = "aws.elbv2.wait_healthy";
    /// It waits up to 10 minutes (`wait`) for healthy targets.
    const DEADLINE: Option<Deadline> = Some(Deadline::minutes(15, 12));

    fn doc(&self) -> KindDoc {
        KindDoc {
            summary: "Waits until a target group has `min_healthy` healthy targets and no unhealthy one.",
            params: super::region_params(vec![
                ("target_group_arn", "string", "the target group (required)"),
                ("min_healthy", "integer", "healthy targets needed (default 1; 0 checks only that none is unhealthy)"),
                ("wait", "duration", "deadline (default 10m)"),
            ]),
            outputs: vec![("healthy", "how many targets were healthy")],
            example: "- id: keycloak-healthy\n  uses: aws.elbv2.wait_healthy\n  with: { target_group_arn: \"${{ steps.keycloak-tg.outputs.arn }}\" }\n",
        }
    }

    fn outputs(&self, _params: &Json) -> OutputSpec {
        OutputSpec::Fixed(vec!["healthy"])
    }

    fn problems(&self, _p: &Params) -> Vec<ParamProblem> {
        Vec::new()
    }

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
        Ok(Outputs::from([("healthy".into(), json!(healthy))]))
    }
}

impl super::facts::Facts for WaitHealthy {}
