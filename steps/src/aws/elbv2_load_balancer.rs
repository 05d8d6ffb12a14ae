//! `aws.elbv2.load_balancer`: an internet-facing Application Load Balancer,
//! found by its deterministic name `<stack>-<step>`, waited for until `active`.

use std::time::Duration;

use aws_sdk_elasticloadbalancingv2::types::{LoadBalancerSchemeEnum, LoadBalancerStateEnum, LoadBalancerTypeEnum};
use ca_a2a_flow_engine::duration::HumanDuration;
use ca_a2a_flow_engine::{
    Deadline, DestroyOptions, KindDoc, OutputSpec, Outputs, ParamProblem, Plan, Step, StepContext, StepError,
};
use serde::Deserialize;
use serde_json::{Value as Json, json};

use super::owner::stack_problems;
use super::wait::{self, Poll};
use super::{AwsResult, Owner};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    pub stack: String,
    #[serde(default)]
    pub region: Option<String>,
    /// Public subnets in at least two AZs.
    pub subnet_ids: Vec<String>,
    pub security_group_ids: Vec<String>,
    /// `internet-facing` (default) or `internal`.
    #[serde(default)]
    pub scheme: Option<String>,
    #[serde(default)]
    pub wait: Option<HumanDuration>,
}

pub struct LoadBalancer;

impl Step for LoadBalancer {
    type Params = Params;
    const KIND: &'static str = "aws.elbv2.load_balancer";
    /// A load balancer waits up to 10 minutes (`wait`) for `active`.
    const DEADLINE: Option<Deadline> = Some(Deadline::minutes(15, 12));

    async fn plan(&self, ctx: &StepContext, p: Params) -> Result<Plan, StepError> {
        let name = Owner::new(&p.stack, ctx).short_name(32);
        let elb = super::elbv2(p.region.as_deref()).await;
        let found = by_name(&elb, &name).await?;
        Ok(if found.is_some_and(|f| !f.load_balancers().is_empty()) { Plan::adopt() } else { Plan::create() })
    }

    const DESTROYS: bool = true;

    async fn destroy(&self, ctx: &StepContext, p: Params, _o: &DestroyOptions) -> Result<Outputs, StepError> {
        let owner = Owner::new(&p.stack, ctx);
        let name = owner.short_name(32);
        let elb = super::elbv2(p.region.as_deref()).await;
        let found = by_name(&elb, &name).await?;
        let Some(arn) =
            found.and_then(|f| f.load_balancers().first().and_then(|l| l.load_balancer_arn().map(String::from)))
        else {
            return Ok(super::removed(ctx, "load balancer", &[]));
        };
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
                let d = by_name(&elb, &name).await?;
                Ok(match d.and_then(|d| d.load_balancers().first().cloned()) {
                    None => Poll::Ready(()),
                    Some(_) => Poll::Pending("deleting".into()),
                })
            }
        })
        .await?;
        Ok(super::removed(ctx, "load balancer", &[name]))
    }

    fn doc(&self) -> KindDoc {
        KindDoc {
            summary: "An Application Load Balancer named `<stack>-<step>`, waited for until active.",
            params: super::stack_params(vec![
                ("subnet_ids", "list", "subnets in two AZs or more (required)"),
                ("security_group_ids", "list", "its security groups (required)"),
                ("scheme", "string", "`internet-facing` (default) or `internal`"),
                ("wait", "duration", "deadline for `active` (default 10m)"),
            ]),
            outputs: vec![
                ("arn", "the load balancer's ARN"),
                ("dns_name", "its DNS name"),
                ("name", "its name"),
                ("action", "`created` or `adopted`"),
            ],
            example: "- id: alb\n  uses: aws.elbv2.load_balancer\n  with:\n    stack: \"${{ inputs.stack }}\"\n    subnet_ids: [\"${{ steps.public-a.outputs.subnet_id }}\", \"${{ steps.public-b.outputs.subnet_id }}\"]\n    security_group_ids: [\"${{ steps.alb-sg.outputs.group_id }}\"]\n",
        }
    }

    fn outputs(&self, _params: &Json) -> OutputSpec {
        OutputSpec::Fixed(vec!["arn", "dns_name", "name", "action"])
    }

    fn problems(&self, p: &Params) -> Vec<ParamProblem> {
        let mut problems = stack_problems(&p.stack);
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
        let found = by_name(&elb, &name).await?;
        let existing = found.and_then(|f| f.load_balancers().first().cloned());
        let (lb, action) = match existing {
            Some(lb) => (lb, "adopted"),
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
        Ok(Outputs::from([
            ("arn".into(), json!(arn)),
            ("dns_name".into(), json!(dns)),
            ("name".into(), json!(name)),
            ("action".into(), json!(action)),
        ]))
    }
}

/// The load balancer called `name`, as DescribeLoadBalancers answers (`None`: there is none).
async fn by_name(
    elb: &aws_sdk_elasticloadbalancingv2::Client,
    name: &str,
) -> Result<
    Option<aws_sdk_elasticloadbalancingv2::operation::describe_load_balancers::DescribeLoadBalancersOutput>,
    StepError,
> {
    elb.describe_load_balancers()
        .names(name)
        .send()
        .await
        .or_absent("elasticloadbalancing:DescribeLoadBalancers", &["LoadBalancerNotFound"])
}

use super::cost::{CostLine, Pricing};
use super::facts::Facts;

impl Facts for LoadBalancer {
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
