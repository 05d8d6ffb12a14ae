//! `aws.elbv2.load_balancer`: an internet-facing Application Load Balancer,
//! found by its deterministic name `<stack>-<step>`, waited for until `active`.

use std::time::Duration;

use aws_sdk_elasticloadbalancingv2::types::{LoadBalancerSchemeEnum, LoadBalancerStateEnum, LoadBalancerTypeEnum};
use ca_a2a_flow_engine::duration::HumanDuration;
use ca_a2a_flow_engine::{
    Deadline, DestroyOptions, KindDoc, Outputs, ParamProblem, Parameters, Plan, Step, StepContext, StepError, outputs,
};
use serde::Deserialize;

use super::owner::Stack;
use super::wait::{self, Poll};
use super::{AwsResult, Owner};

#[derive(Debug, Deserialize, Parameters)]
#[serde(deny_unknown_fields)]
#[kind(name = "aws.elbv2.load_balancer", step = LoadBalancer)]
pub struct Params {
    #[param(doc = super::STACK)]
    pub stack: Stack,
    #[param(doc = super::REGION)]
    pub region: Option<String>,
    /// subnets in two AZs or more (required)
    pub subnet_ids: Vec<String>,
    /// its security groups (required)
    pub security_group_ids: Vec<String>,
    /// `internet-facing` (default) or `internal`
    pub scheme: Option<String>,
    /// deadline for `active` (default 10m)
    pub wait: Option<HumanDuration>,
    #[param(doc = super::owner::TAKE_OVER)]
    #[serde(default)]
    pub take_over: bool,
}

impl Step for LoadBalancer {
    /// A load balancer waits up to 10 minutes (`wait`) for `active`.
    const DEADLINE: Option<Deadline> = Some(Deadline::minutes(15, 12));

    async fn plan(&self, ctx: &StepContext, p: Params) -> Result<Plan, StepError> {
        let owner = Owner::new(&p.stack, ctx);
        let name = owner.short_name(32);
        let elb = super::elbv2(p.region.as_deref()).await;
        let Some(lb) = by_name(&elb, &name).await? else { return Ok(Plan::create()) };
        let holder = super::elbv2_holder(&elb, &owner, lb.load_balancer_arn().unwrap_or_default()).await?;
        Ok(match super::owner::claim(&owner, "load balancer", &name, &holder, p.take_over) {
            Ok(super::owner::Claim::Adopt) => Plan::adopt(),
            Ok(super::owner::Claim::TakeOver) => {
                Plan::changes(vec![format!("take over load balancer {name} (tag it)")])
            }
            Err(refused) => Plan::conflict(refused.message),
        })
    }

    const DESTROYS: bool = true;

    async fn destroy(&self, ctx: &StepContext, p: Params, _o: &DestroyOptions) -> Result<Outputs, StepError> {
        let owner = Owner::new(&p.stack, ctx);
        let name = owner.short_name(32);
        let elb = super::elbv2(p.region.as_deref()).await;
        let Some(arn) = by_name(&elb, &name).await?.and_then(|l| l.load_balancer_arn().map(String::from)) else {
            return Ok(super::removed(ctx, "load balancer", &[]));
        };
        let holder = super::elbv2_holder(&elb, &owner, &arn).await?;
        if holder != super::owner::Holder::Ours {
            ctx.log(format!("left alone: {}", owner.not_ours("load balancer", &name, &holder)));
            return Ok(super::removed(ctx, "load balancer", &[]));
        }
        ctx.progress(format!("deleting load balancer {name}"));
        elb.delete_load_balancer()
            .load_balancer_arn(&arn)
            .send()
            .await
            .or_absent("elasticloadbalancing:DeleteLoadBalancer", &["LoadBalancerNotFound"])?;
        let limit = p.wait.map(|w| w.0).unwrap_or(Duration::from_secs(600));
        wait::until(ctx, &format!("load balancer {name}"), limit, wait::interval(Duration::from_secs(10)), || {
            let (elb, name) = (elb.clone(), name.clone());
            async move {
                Ok(match by_name(&elb, &name).await? {
                    None => Poll::Ready(()),
                    Some(_) => Poll::Pending("deleting".into()),
                })
            }
        })
        .await?;
        Ok(super::removed(ctx, "load balancer", &[name]))
    }

    const DOC: KindDoc = KindDoc {
        summary: "An Application Load Balancer named `<stack>-<step>`, waited for until active.",
        outputs: &[
            ("arn", "the load balancer's ARN"),
            ("dns_name", "its DNS name"),
            ("name", "its name"),
            ("action", "`created`, `adopted` or `taken-over` (`take_over`)"),
        ],
        example: "- id: alb\n  uses: aws.elbv2.load_balancer\n  with:\n    stack: \"${{ inputs.stack }}\"\n    subnet_ids: [\"${{ steps.public-a.outputs.subnet_id }}\", \"${{ steps.public-b.outputs.subnet_id }}\"]\n    security_group_ids: [\"${{ steps.alb-sg.outputs.group_id }}\"]\n",
    };

    fn problems(&self, p: &Params) -> Vec<ParamProblem> {
        let mut problems = Vec::new();
        if p.subnet_ids.len() < 2 {
            problems.push(ParamProblem::at(
                &["subnet_ids"],
                "an Application Load Balancer needs subnets in two AZs or more",
            ));
        }
        if let Some(s) = &p.scheme {
            if s != "internet-facing" && s != "internal" {
                problems.push(ParamProblem::at(&["scheme"], format!("`{s}`: use `internet-facing` or `internal`")));
            }
        }
        problems
    }

    async fn run(&self, ctx: &StepContext, p: Params) -> Result<Outputs, StepError> {
        let owner = Owner::new(&p.stack, ctx);
        let name = owner.short_name(32);
        let elb = super::elbv2(p.region.as_deref()).await;
        let (lb, action) = match by_name(&elb, &name).await? {
            Some(lb) => {
                let arn = lb.load_balancer_arn().unwrap_or_default().to_string();
                let taken = super::elbv2_claim(ctx, &elb, &owner, "load balancer", &name, &arn, p.take_over).await?;
                (lb, if taken { "taken-over" } else { "adopted" })
            }
            None => {
                ctx.progress(format!("creating load balancer {name}"));
                let scheme = LoadBalancerSchemeEnum::from(p.scheme.as_deref().unwrap_or("internet-facing"));
                let created = elb
                    .create_load_balancer()
                    .name(&name)
                    .r#type(LoadBalancerTypeEnum::Application)
                    .scheme(scheme)
                    .set_subnets(Some(p.subnet_ids.clone()))
                    .set_security_groups(Some(p.security_group_ids.clone()))
                    .set_tags(Some(super::elbv2_tags(&owner)))
                    .send()
                    .await
                    .or_step_error("elasticloadbalancing:CreateLoadBalancer")?;
                let lb = created.load_balancers().first().cloned().ok_or_else(|| {
                    StepError::retryable("elasticloadbalancing:CreateLoadBalancer answered without the resource")
                })?;
                (lb, "created")
            }
        };
        let arn = lb.load_balancer_arn().unwrap_or_default().to_string();
        let limit = p.wait.map(|w| w.0).unwrap_or(Duration::from_secs(600));
        let what = format!("load balancer {name}");
        let lb = wait::until(ctx, &what, limit, wait::interval(Duration::from_secs(10)), || {
            let (elb, arn, what) = (elb.clone(), arn.clone(), what.clone());
            async move {
                let d = elb
                    .describe_load_balancers()
                    .load_balancer_arns(&arn)
                    .send()
                    .await
                    .or_step_error_created("elasticloadbalancing:DescribeLoadBalancers", true)?;
                let Some(lb) = d.load_balancers().first().cloned() else {
                    return Ok(Poll::Pending("not visible yet".into()));
                };
                match lb.state().and_then(|s| s.code()) {
                    Some(LoadBalancerStateEnum::Active) => Ok(Poll::Ready(lb)),
                    Some(LoadBalancerStateEnum::Failed) => {
                        let reason = lb.state().and_then(|s| s.reason()).unwrap_or("no reason given").to_string();
                        Err(StepError::fatal(format!("{what} failed: {reason}")).with_hint(
                            "delete the load balancer, fix the cause (subnets, security groups), then resume",
                        ))
                    }
                    other => Ok(Poll::Pending(other.map(|c| c.as_str().to_string()).unwrap_or("provisioning".into()))),
                }
            }
        })
        .await?;
        let dns = lb.dns_name().unwrap_or_default().to_string();
        ctx.log(format!("{action} load balancer {name} ({dns})"));
        Ok(outputs! { arn, dns_name: dns, name, action })
    }
}

/// The load balancer called `name` (`None`: there is none).
async fn by_name(
    elb: &aws_sdk_elasticloadbalancingv2::Client,
    name: &str,
) -> Result<Option<aws_sdk_elasticloadbalancingv2::types::LoadBalancer>, StepError> {
    let found = elb.describe_load_balancers().names(name).send().await;
    let found = found.or_absent("elasticloadbalancing:DescribeLoadBalancers", &["LoadBalancerNotFound"])?;
    Ok(found.and_then(|f| f.load_balancers().first().cloned()))
}

use super::cost::{CostLine, Pricing};
use super::facts::Facts;

impl Facts for LoadBalancer {
    fn console(o: &std::collections::BTreeMap<String, serde_json::Value>, r: &str) -> Option<String> {
        use super::facts::{console_in, output, url_part};
        let arn = output(o, "arn")?;
        console_in(r, &format!("ec2/home?region={r}#LoadBalancer:loadBalancerArn={}", url_part(arn)))
    }

    fn monthly(p: &Params, at: &Pricing) -> Result<Vec<CostLine>, String> {
        let (h, prices, a) = (at.hours, at.prices, at.assume);
        // One public address per subnet the load balancer is in.
        let ips = p.subnet_ids.len() as f64;
        Ok(vec![CostLine::new(
            format!(
                "{h} h x ${} + {} LCU x ${} + {ips} public IPv4 x ${}",
                prices.alb_hour, a.alb_lcu, prices.alb_lcu_hour, prices.public_ipv4_hour
            ),
            h * (prices.alb_hour + a.alb_lcu * prices.alb_lcu_hour + ips * prices.public_ipv4_hour),
        )])
    }
}
