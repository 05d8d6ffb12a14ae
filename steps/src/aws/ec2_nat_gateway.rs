//! `aws.ec2.nat_gateway`: a public NAT gateway in a public subnet, with an
//! Elastic IP. It waits (deadline, progress) until the gateway is `available`.
//! Known traps: the VPC's internet gateway must be attached first (checked, and
//! retried until it is); a gateway that ends `failed` is reported with AWS's
//! failure code and message, deleted, and recreated once with a fresh Elastic IP
//! that this step allocates and owns.

use std::time::Duration;

use aws_sdk_ec2::types::{self, DomainType, Filter, NatGatewayState, ResourceType};
use ca_a2a_flow_engine::duration::HumanDuration;
use ca_a2a_flow_engine::{
    Deadline, DestroyOptions, KindDoc, Outputs, Parameters, Plan, Step, StepContext, StepError, outputs,
};
use serde::Deserialize;
use serde_json::json;

use super::owner::Stack;
use super::wait::{self, Poll};
use super::{AwsResult, Owner, one_owned};

#[derive(Debug, Deserialize, Parameters)]
#[serde(deny_unknown_fields)]
#[kind(name = "aws.ec2.nat_gateway", step = NatGateway)]
pub struct Params {
    #[param(doc = super::STACK)]
    pub stack: Stack,
    #[param(doc = super::REGION)]
    pub region: Option<String>,
    /// a public subnet whose VPC has an attached internet gateway (required)
    pub subnet_id: String,
    /// the Elastic IP's allocation id (required)
    pub allocation_id: String,
    /// deadline for `available` (default 10m)
    pub wait: Option<HumanDuration>,
}

const DEFAULT_WAIT: Duration = Duration::from_secs(600);

impl Step for NatGateway {
    /// A NAT gateway waits up to 10 minutes (`wait`) for `available`.
    const DEADLINE: Option<Deadline> = Some(Deadline::minutes(15, 12));

    async fn plan(&self, ctx: &StepContext, p: Params) -> Result<Plan, StepError> {
        let owner = Owner::new(&p.stack, ctx);
        let ec2 = super::ec2(p.region.as_deref()).await;
        let ours = owned(&ec2, &owner, &["pending", "available", "failed"]).await?;
        Ok(match one_owned(ours, |n| n.nat_gateway_id(), "NAT gateway", &owner)? {
            None => Plan::create(),
            Some(n) if n.state() == Some(&NatGatewayState::Failed) => {
                Plan::changes(vec![format!("recreate: {} is failed", n.nat_gateway_id().unwrap_or("?"))])
            }
            Some(_) => Plan::adopt(),
        })
    }

    const DESTROYS: bool = true;

    async fn destroy(&self, ctx: &StepContext, p: Params, _o: &DestroyOptions) -> Result<Outputs, StepError> {
        let owner = Owner::new(&p.stack, ctx);
        let ec2 = super::ec2(p.region.as_deref()).await;
        let ours: Vec<String> = owned(&ec2, &owner, &["pending", "available", "failed", "deleting"])
            .await?
            .iter()
            .filter_map(|n| n.nat_gateway_id().map(String::from))
            .collect();
        for id in &ours {
            ctx.progress(format!("deleting NAT gateway {id}"));
            ec2.delete_nat_gateway()
                .nat_gateway_id(id)
                .send()
                .await
                .or_absent("ec2:DeleteNatGateway", &["NatGatewayNotFound"])?;
        }
        let limit = p.wait.map(|w| w.0).unwrap_or(DEFAULT_WAIT);
        for id in &ours {
            let what = format!("NAT gateway {id}");
            wait::until(ctx, &what, limit, wait::interval(Duration::from_secs(10)), || {
                let (ec2, id) = (ec2.clone(), id.clone());
                async move {
                    let d = ec2.describe_nat_gateways().nat_gateway_ids(&id).send().await;
                    let d = d.or_absent("ec2:DescribeNatGateways", &["NatGatewayNotFound"])?;
                    let state = d.as_ref().and_then(|d| d.nat_gateways().first()).and_then(|n| n.state().cloned());
                    Ok(match state {
                        None | Some(NatGatewayState::Deleted) => Poll::Ready(()),
                        Some(s) => Poll::Pending(s.as_str().to_string()),
                    })
                }
            })
            .await?;
        }
        // The fresh Elastic IP of a recreation belongs to this step.
        super::owned::delete_all::<aws_sdk_ec2::types::Address>(ctx, &ec2, &owner).await?;
        Ok(super::removed(ctx, "NAT gateway", &ours))
    }

    const DOC: KindDoc = KindDoc {
        summary: "A public NAT gateway, waited for until available; a failed one is reported, deleted and recreated once with a fresh Elastic IP.",
        outputs: &[
            ("nat_gateway_id", "the gateway's id (nat-…)"),
            ("allocation_id", "the Elastic IP it uses (a fresh one after a recreation)"),
            ("public_ip", "its public address"),
            ("action", "`created`, `adopted` or `recreated`"),
        ],
        example: "- id: nat\n  uses: aws.ec2.nat_gateway\n  needs: [igw]\n  with:\n    stack: \"${{ inputs.stack }}\"\n    subnet_id: \"${{ steps.public-a.outputs.subnet_id }}\"\n    allocation_id: \"${{ steps.nat-ip.outputs.allocation_id }}\"\n",
    };

    async fn run(&self, ctx: &StepContext, p: Params) -> Result<Outputs, StepError> {
        let owner = Owner::new(&p.stack, ctx);
        let ec2 = super::ec2(p.region.as_deref()).await;
        let limit = p.wait.map(|w| w.0).unwrap_or(DEFAULT_WAIT);
        let ours = owned(&ec2, &owner, &["pending", "available", "failed"]).await?;
        let mut action = "adopted";
        let mut nat = match one_owned(ours, |n| n.nat_gateway_id(), "NAT gateway", &owner)? {
            Some(n) if n.subnet_id() != Some(p.subnet_id.as_str()) => {
                let detail = format!("is in subnet {}, not in {}", n.subnet_id().unwrap_or("?"), p.subnet_id);
                let hint = "the stack's network changed: destroy the old NAT gateway first";
                return Err(owner.conflict("NAT gateway", n.nat_gateway_id().unwrap_or("?"), detail, hint));
            }
            Some(n) => n,
            None => {
                action = "created";
                create(ctx, &ec2, &owner, &p.subnet_id, &p.allocation_id).await?
            }
        };
        loop {
            let id = nat.nat_gateway_id().unwrap_or_default().to_string();
            let what = format!("NAT gateway {id}");
            let ended = wait::until(ctx, &what, limit, wait::interval(Duration::from_secs(10)), || {
                let (ec2, id, what) = (ec2.clone(), id.clone(), what.clone());
                async move {
                    let d = ec2.describe_nat_gateways().nat_gateway_ids(&id).send().await;
                    let d = d.or_step_error_created("ec2:DescribeNatGateways", true)?;
                    let Some(n) = d.nat_gateways().first().cloned() else {
                        return Ok(Poll::Pending("not visible yet".into()));
                    };
                    Ok(match n.state() {
                        Some(NatGatewayState::Available) | Some(NatGatewayState::Failed) => Poll::Ready(n),
                        Some(NatGatewayState::Deleting) | Some(NatGatewayState::Deleted) => {
                            return Err(StepError::retryable(format!("{what} is being deleted by someone else"))
                                .with_hint("the next attempt creates a new one"));
                        }
                        other => Poll::Pending(other.map(|s| s.as_str().to_string()).unwrap_or("pending".into())),
                    })
                }
            })
            .await?;
            if ended.state() != Some(&NatGatewayState::Failed) {
                nat = ended;
                break;
            }
            let code = ended.failure_code().unwrap_or("no failure code");
            let message = ended.failure_message().unwrap_or("no message");
            ctx.log(format!("NAT gateway {id} failed: {code}: {message}"));
            let used = allocation_of(&ended).unwrap_or_default();
            let fresh = owned_address(&ec2, &owner).await?;
            if fresh.as_ref().is_some_and(|(a, _)| *a == used) {
                return Err(StepError::fatal(format!(
                    "NAT gateway {id} failed again after its recreation with a fresh Elastic IP: {code}: {message}"
                ))
                .with_hint("check that the subnet is public (its route table sends 0.0.0.0/0 to an attached internet gateway) and that the Elastic IP is not associated elsewhere, then resume"));
            }
            ctx.progress(format!("deleting failed NAT gateway {id}"));
            ec2.delete_nat_gateway().nat_gateway_id(&id).send().await.or_step_error("ec2:DeleteNatGateway")?;
            let allocation = match fresh {
                Some((a, _)) => a,
                None => {
                    let a = ec2
                        .allocate_address()
                        .domain(DomainType::Vpc)
                        .tag_specifications(owner.ec2_tag_spec(ResourceType::ElasticIp))
                        .send()
                        .await
                        .or_step_error("ec2:AllocateAddress")?;
                    a.allocation_id().unwrap_or_default().to_string()
                }
            };
            ctx.log(format!("recreating the NAT gateway with the fresh Elastic IP {allocation}"));
            action = "recreated";
            nat = create(ctx, &ec2, &owner, &p.subnet_id, &allocation).await?;
        }
        let id = nat.nat_gateway_id().unwrap_or_default().to_string();
        let allocation = allocation_of(&nat).unwrap_or_else(|| p.allocation_id.clone());
        let ip = nat.nat_gateway_addresses().first().and_then(|a| a.public_ip()).unwrap_or_default().to_string();
        ctx.log(format!("{action} NAT gateway {id} ({ip}), available"));
        Ok(outputs! { nat_gateway_id: id, allocation_id: allocation, public_ip: ip, action })
    }
}

fn allocation_of(n: &types::NatGateway) -> Option<String> {
    n.nat_gateway_addresses().first().and_then(|a| a.allocation_id()).map(String::from)
}

/// The fresh Elastic IP this step allocated for a recreation, if any.
async fn owned_address(ec2: &aws_sdk_ec2::Client, owner: &Owner) -> Result<Option<(String, String)>, StepError> {
    let a = super::owned::one::<aws_sdk_ec2::types::Address>(ec2, owner).await?;
    Ok(a.map(|a| (a.allocation_id().unwrap_or_default().to_string(), a.public_ip().unwrap_or_default().to_string())))
}

/// The client token of a NAT gateway's creation: the same for every attempt of
/// this run while nothing changes (a resumed run gets the gateway a killed
/// attempt asked for), another once a gateway of the step has ended (deleted
/// behind the stack's back, or failed) or in another run, whose request carries
/// other tags: AWS answers a token with the first request's gateway, even
/// deleted, and refuses it with other parameters (`IdempotentParameterMismatch`).
fn token(owner: &Owner, allocation: &str, ended: &[String]) -> String {
    let mut ended = ended.to_vec();
    ended.sort();
    owner.client_token(&format!("{allocation}\n{}\n{}", owner.run, ended.join(",")))
}

async fn create(
    ctx: &StepContext,
    ec2: &aws_sdk_ec2::Client,
    owner: &Owner,
    subnet: &str,
    allocation: &str,
) -> Result<types::NatGateway, StepError> {
    // The trap of the bash deployment: a NAT gateway made before the internet gateway is
    // attached ends `failed`. Check first; retry until the attachment exists.
    let subnets = ec2.describe_subnets().subnet_ids(subnet).send().await.or_step_error("ec2:DescribeSubnets")?;
    let vpc = subnets.subnets().first().and_then(|s| s.vpc_id()).unwrap_or_default().to_string();
    let igws = ec2
        .describe_internet_gateways()
        .filters(Filter::builder().name("attachment.vpc-id").values(&vpc).build())
        .send()
        .await
        .or_step_error("ec2:DescribeInternetGateways")?;
    let attached = igws.internet_gateways().iter().flat_map(|g| g.attachments()).any(|a| {
        a.vpc_id() == Some(vpc.as_str())
            && a.state().is_some_and(|s| s.as_str() == "available" || s.as_str() == "attached")
    });
    if !attached {
        return Err(StepError::retryable(format!("VPC {vpc} has no attached internet gateway yet"))
            .with_hint("a NAT gateway created before the attachment ends `failed`; the step waits for the `aws.ec2.internet_gateway` step (add it to `needs`)"));
    }
    ctx.progress(format!("creating NAT gateway {} in {subnet}", owner.name()));
    let ended: Vec<String> = owned(ec2, owner, &["deleting", "deleted", "failed"])
        .await?
        .iter()
        .filter_map(|n| n.nat_gateway_id().map(String::from))
        .collect();
    let created = ec2
        .create_nat_gateway()
        .subnet_id(subnet)
        .allocation_id(allocation)
        .client_token(token(owner, allocation, &ended))
        .tag_specifications(owner.ec2_tag_spec(ResourceType::Natgateway))
        .send()
        .await
        .or_step_error("ec2:CreateNatGateway")?;
    created
        .nat_gateway()
        .cloned()
        .ok_or_else(|| StepError::retryable("ec2:CreateNatGateway answered without the resource"))
}

/// The NAT gateways this step owns, in one of `states`. moto ignores tag filters
/// on DescribeNatGateways, so the tags are checked here too.
async fn owned(ec2: &aws_sdk_ec2::Client, owner: &Owner, states: &[&str]) -> Result<Vec<types::NatGateway>, StepError> {
    let live = Filter::builder().name("state").set_values(Some(states.iter().map(|s| s.to_string()).collect())).build();
    let mut filters = owner.ec2_filters();
    filters.push(live);
    let found =
        ec2.describe_nat_gateways().set_filter(Some(filters)).send().await.or_step_error("ec2:DescribeNatGateways")?;
    Ok(found.nat_gateways().iter().filter(|n| owner.owns_ec2(n.tags())).cloned().collect())
}

use super::cost::{CostLine, Pricing};
use super::facts::{Facts, Leftover, Sweep, ec2_tags};

impl Facts for NatGateway {
    fn console(o: &std::collections::BTreeMap<String, serde_json::Value>, r: &str) -> Option<String> {
        use super::facts::{console_in, output, url_part};
        let id = output(o, "nat_gateway_id")?;
        console_in(r, &format!("vpcconsole/home?region={r}#NatGatewayDetails:natGatewayId={}", url_part(id)))
    }

    const GC_RANK: u8 = 0;

    fn monthly(_: &Params, at: &Pricing) -> Result<Vec<CostLine>, String> {
        let (h, p, a) = (at.hours, at.prices, at.assume);
        Ok(vec![CostLine::new(
            format!("{h} h x ${} + {} GB processed x ${}", p.nat_gateway_hour, a.nat_data_gb, p.nat_gateway_gb),
            h * p.nat_gateway_hour + a.nat_data_gb * p.nat_gateway_gb,
        )])
    }

    async fn leftovers(at: &Sweep) -> Result<Vec<Leftover>, ca_a2a_flow_engine::StepError> {
        // moto ignores tag filters on NAT gateways: gc reads the tags itself.
        let live = Filter::builder().name("state").values("pending").values("available").values("failed").build();
        let mut pages = at.ec2.describe_nat_gateways().filter(live).into_paginator().send();
        let mut found = Vec::new();
        while let Some(page) = pages.next().await {
            for n in page.or_step_error("ec2:DescribeNatGateways")?.nat_gateways() {
                let allocation = n.nat_gateway_addresses().first().and_then(|a| a.allocation_id()).unwrap_or("?");
                found.push(Leftover::new(
                    ec2_tags(n.tags()),
                    n.nat_gateway_id(),
                    at.monthly(|p| p.nat_gateway_hour),
                    json!({ "subnet_id": n.subnet_id(), "allocation_id": allocation }),
                ));
            }
        }
        Ok(found)
    }
}

#[cfg(test)]
mod token_tests {
    use super::*;

    fn owner(run: &str) -> Owner {
        Owner { stack: "s".into(), step: "nat".into(), run: run.into() }
    }

    #[test]
    fn a_token_is_the_same_on_resume_and_new_once_a_gateway_ended_or_in_another_run() {
        let first = token(&owner("r1"), "eipalloc-1", &[]);
        assert_eq!(token(&owner("r1"), "eipalloc-1", &[]), first, "a resumed attempt asks for the same gateway");
        assert_ne!(token(&owner("r1"), "eipalloc-1", &["nat-1".into()]), first, "a gateway ended since");
        assert_ne!(token(&owner("r2"), "eipalloc-1", &[]), first, "another run sends other tags");
        assert_eq!(
            token(&owner("r1"), "eipalloc-1", &["nat-2".into(), "nat-1".into()]),
            token(&owner("r1"), "eipalloc-1", &["nat-1".into(), "nat-2".into()]),
            "whatever order AWS lists them in"
        );
    }
}
