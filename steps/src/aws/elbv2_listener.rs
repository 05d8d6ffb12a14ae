//! `aws.elbv2.listener`: the load balancer's HTTP listener on a port, whose
//! default action forwards to a target group. Found by port; a default action
//! that drifted is put back.

use aws_sdk_elasticloadbalancingv2::types::{Action, ActionTypeEnum, ProtocolEnum};
use ca_a2a_flow_engine::{DestroyOptions, KindDoc, Outputs, Parameters, Plan, Step, StepContext, StepError, outputs};
use serde::Deserialize;

use super::owner::Stack;
use super::{AwsResult, Owner};

#[derive(Debug, Deserialize, Parameters)]
#[serde(deny_unknown_fields)]
#[kind(name = "aws.elbv2.listener", step = Listener)]
pub struct Params {
    #[param(doc = super::STACK)]
    pub stack: Stack,
    #[param(doc = super::REGION)]
    pub region: Option<String>,
    /// the load balancer (required)
    pub load_balancer_arn: String,
    /// default 80
    #[serde(default = "default_port")]
    pub port: u16,
    /// the default action's target group (required)
    pub default_target_group_arn: String,
}

fn default_port() -> u16 {
    80
}

impl Step for Listener {
    async fn plan(&self, _ctx: &StepContext, p: Params) -> Result<Plan, StepError> {
        let elb = super::elbv2(p.region.as_deref()).await;
        Ok(match on_port(&elb, &p, &["LoadBalancerNotFound", "ValidationError"]).await? {
            None => Plan::create(),
            Some(l) => {
                let now = l.default_actions().first().and_then(|a| a.target_group_arn()).unwrap_or("none");
                if now == p.default_target_group_arn {
                    Plan::adopt()
                } else {
                    Plan::changes(vec![format!("default target group: {now} -> {}", p.default_target_group_arn)])
                }
            }
        })
    }

    const DESTROYS: bool = true;

    async fn destroy(&self, ctx: &StepContext, p: Params, _o: &DestroyOptions) -> Result<Outputs, StepError> {
        let elb = super::elbv2(p.region.as_deref()).await;
        let found = on_port(&elb, &p, &["LoadBalancerNotFound", "ListenerNotFound"]).await?;
        let Some(arn) = found.and_then(|l| l.listener_arn().map(String::from)) else {
            return Ok(super::removed(ctx, "listener", &[]));
        };
        elb.delete_listener()
            .listener_arn(&arn)
            .send()
            .await
            .or_absent("elasticloadbalancing:DeleteListener", &["ListenerNotFound"])?;
        Ok(super::removed(ctx, "listener", &[arn]))
    }

    const DOC: KindDoc = KindDoc {
        summary: "An HTTP listener whose default action forwards to a target group; found by port, its default action kept.",
        outputs: &[("arn", "the listener's ARN"), ("action", "`created`, `adopted` or `updated`")],
        example: "- id: http\n  uses: aws.elbv2.listener\n  with:\n    stack: \"${{ inputs.stack }}\"\n    load_balancer_arn: \"${{ steps.alb.outputs.arn }}\"\n    default_target_group_arn: \"${{ steps.orchestrator-tg.outputs.arn }}\"\n",
    };

    async fn run(&self, ctx: &StepContext, p: Params) -> Result<Outputs, StepError> {
        let owner = Owner::new(&p.stack, ctx);
        let elb = super::elbv2(p.region.as_deref()).await;
        let forward =
            Action::builder().r#type(ActionTypeEnum::Forward).target_group_arn(&p.default_target_group_arn).build();
        let (arn, action) = match on_port(&elb, &p, &[]).await? {
            Some(l) => {
                let arn = l.listener_arn().unwrap_or_default().to_string();
                let current = l.default_actions().first().and_then(|a| a.target_group_arn());
                if current == Some(p.default_target_group_arn.as_str()) {
                    (arn, "adopted")
                } else {
                    elb.modify_listener()
                        .listener_arn(&arn)
                        .default_actions(forward)
                        .send()
                        .await
                        .or_step_error("elasticloadbalancing:ModifyListener")?;
                    ctx.log(format!(
                        "listener :{}: default action now forwards to {}",
                        p.port, p.default_target_group_arn
                    ));
                    (arn, "updated")
                }
            }
            None => {
                ctx.progress(format!("creating listener :{}", p.port));
                let created = elb
                    .create_listener()
                    .load_balancer_arn(&p.load_balancer_arn)
                    .protocol(ProtocolEnum::Http)
                    .port(i32::from(p.port))
                    .default_actions(forward)
                    .set_tags(Some(super::elbv2_tags(&owner)))
                    .send()
                    .await
                    .or_step_error("elasticloadbalancing:CreateListener")?;
                let arn = created.listeners().first().and_then(|l| l.listener_arn()).unwrap_or_default();
                (arn.to_string(), "created")
            }
        };
        ctx.log(format!("{action} listener HTTP:{} ({arn})", p.port));
        Ok(outputs! { arn, action })
    }
}

/// The load balancer's listener on the step's port; errors whose code is in
/// `absent` count as "none".
async fn on_port(
    elb: &aws_sdk_elasticloadbalancingv2::Client,
    p: &Params,
    absent: &[&str],
) -> Result<Option<aws_sdk_elasticloadbalancingv2::types::Listener>, StepError> {
    let found = elb
        .describe_listeners()
        .load_balancer_arn(&p.load_balancer_arn)
        .send()
        .await
        .or_absent("elasticloadbalancing:DescribeListeners", absent)?;
    Ok(found.and_then(|f| f.listeners().iter().find(|l| l.port() == Some(i32::from(p.port))).cloned()))
}

impl super::facts::Facts for Listener {}
