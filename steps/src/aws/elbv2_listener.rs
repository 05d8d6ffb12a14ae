//! `aws.elbv2.listener`: the load balancer's HTTP listener on a port, whose
//! default action forwards to a target group. Found by port; a default action
//! that drifted is put back.

use aws_sdk_elasticloadbalancingv2::types::{Action, ActionTypeEnum, ProtocolEnum};
use ca_a2a_flow_engine::{
    DestroyOptions, KindDoc, OutputSpec, Outputs, ParamProblem, Plan, Step, StepContext, StepError,
};
use serde::Deserialize;
use serde_json::{Value as Json, json};

use super::owner::stack_problems;
use super::{AwsResult, Owner};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    pub stack: String,
    #[serde(default)]
    pub region: Option<String>,
    pub load_balancer_arn: String,
    #[serde(default = "default_port")]
    pub port: u16,
    /// Where requests no rule matches go.
    pub default_target_group_arn: String,
}

fn default_port() -> u16 {
    80
}

pub struct Listener;

impl Step for Listener {
    type Params = Params;
    const KIND: &'static str = "aws.elbv2.listener";

    async fn plan(&self, _ctx: &StepContext, p: Params) -> Result<Plan, StepError> {
        let elb = super::elbv2(p.region.as_deref()).await;
        let found = elb
            .describe_listeners()
            .load_balancer_arn(&p.load_balancer_arn)
            .send()
            .await
            .or_absent("elasticloadbalancing:DescribeListeners", &["LoadBalancerNotFound", "ValidationError"])?;
        let existing = found.and_then(|f| f.listeners().iter().find(|l| l.port() == Some(i32::from(p.port))).cloned());
        Ok(match existing {
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
        let found = elb
            .describe_listeners()
            .load_balancer_arn(&p.load_balancer_arn)
            .send()
            .await
            .or_absent("elasticloadbalancing:DescribeListeners", &["LoadBalancerNotFound", "ListenerNotFound"])?;
        let Some(arn) = found.and_then(|f| {
            f.listeners()
                .iter()
                .find(|l| l.port() == Some(i32::from(p.port)))
                .and_then(|l| l.listener_arn().map(String::from))
        }) else {
            return Ok(super::removed(ctx, "listener", &[]));
        };
        elb.delete_listener()
            .listener_arn(&arn)
            .send()
            .await
            .or_absent("elasticloadbalancing:DeleteListener", &["ListenerNotFound"])?;
        Ok(super::removed(ctx, "listener", &[arn]))
    }

    fn doc(&self) -> KindDoc {
        KindDoc {
            summary: "An HTTP listener whose default action forwards to a target group; found by port, its default action kept.",
            params: super::stack_params(vec![
                ("load_balancer_arn", "string", "the load balancer (required)"),
                ("port", "integer", "default 80"),
                ("default_target_group_arn", "string", "the default action's target group (required)"),
            ]),
            outputs: vec![("arn", "the listener's ARN"), ("action", "`created`, `adopted` or `updated`")],
            example: "- id: http\n  uses: aws.elbv2.listener\n  with:\n    stack: \"${{ inputs.stack }}\"\n    load_balancer_arn: \"${{ steps.alb.outputs.arn }}\"\n    default_target_group_arn: \"${{ steps.orchestrator-tg.outputs.arn }}\"\n",
        }
    }

    fn outputs(&self, _params: &Json) -> OutputSpec {
        OutputSpec::Fixed(vec!["arn", "action"])
    }

    fn problems(&self, p: &Params) -> Vec<ParamProblem> {
        stack_problems(&p.stack)
    }

    async fn run(&self, ctx: &StepContext, p: Params) -> Result<Outputs, StepError> {
        let owner = Owner::new(&p.stack, ctx);
        let elb = super::elbv2(p.region.as_deref()).await;
        let forward =
            Action::builder().r#type(ActionTypeEnum::Forward).target_group_arn(&p.default_target_group_arn).build();
        let found = elb
            .describe_listeners()
            .load_balancer_arn(&p.load_balancer_arn)
            .send()
            .await
            .or_step_error("elasticloadbalancing:DescribeListeners")?;
        let existing = found.listeners().iter().find(|l| l.port() == Some(i32::from(p.port))).cloned();
        let (arn, action) = match existing {
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
        Ok(Outputs::from([("arn".into(), json!(arn)), ("action".into(), json!(action))]))
    }
}

impl super::facts::Facts for Listener {}
