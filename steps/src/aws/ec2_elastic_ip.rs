//! `aws.ec2.elastic_ip`: an Elastic IP for the VPC (the NAT gateway's), tagged at
//! allocation so that a re-run or a resumed run adopts it instead of allocating
//! another (unused Elastic IPs are billed).

use aws_sdk_ec2::types::{DomainType, ResourceType};
use ca_a2a_flow_engine::{DestroyOptions, KindDoc, Outputs, Parameters, Plan, Step, StepContext, StepError, outputs};
use serde::Deserialize;
use serde_json::json;

use super::owner::Stack;
use super::{AwsResult, Owner};

#[derive(Debug, Deserialize, Parameters)]
#[serde(deny_unknown_fields)]
#[kind(name = "aws.ec2.elastic_ip", step = ElasticIp)]
pub struct Params {
    #[param(doc = super::STACK)]
    pub stack: Stack,
    #[param(doc = super::REGION)]
    pub region: Option<String>,
}

impl Step for ElasticIp {
    async fn plan(&self, ctx: &StepContext, p: Params) -> Result<Plan, StepError> {
        let owner = Owner::new(&p.stack, ctx);
        let ec2 = super::ec2(p.region.as_deref()).await;
        Ok(match super::owned::one::<aws_sdk_ec2::types::Address>(&ec2, &owner).await? {
            None => Plan::create(),
            Some(_) => Plan::adopt(),
        })
    }

    const DESTROYS: bool = true;

    async fn destroy(&self, ctx: &StepContext, p: Params, _o: &DestroyOptions) -> Result<Outputs, StepError> {
        let ec2 = super::ec2(p.region.as_deref()).await;
        super::owned::delete_all::<aws_sdk_ec2::types::Address>(ctx, &ec2, &Owner::new(&p.stack, ctx)).await
    }

    const DOC: KindDoc = KindDoc {
        summary: "An Elastic IP in the VPC domain; adopted when this step already owns one.",
        outputs: &[
            ("allocation_id", "the allocation id (eipalloc-…)"),
            ("public_ip", "the address"),
            ("action", "`created` or `adopted`"),
        ],
        example: "- id: nat-ip\n  uses: aws.ec2.elastic_ip\n  with: { stack: \"${{ inputs.stack }}\" }\n",
    };

    async fn run(&self, ctx: &StepContext, p: Params) -> Result<Outputs, StepError> {
        let owner = Owner::new(&p.stack, ctx);
        let ec2 = super::ec2(p.region.as_deref()).await;
        let (allocation, ip, action) = match super::owned::one::<aws_sdk_ec2::types::Address>(&ec2, &owner).await? {
            Some(a) => (
                a.allocation_id().unwrap_or_default().to_string(),
                a.public_ip().unwrap_or_default().to_string(),
                "adopted",
            ),
            None => {
                ctx.progress(format!("allocating Elastic IP {}", owner.name()));
                let a = ec2
                    .allocate_address()
                    .domain(DomainType::Vpc)
                    .tag_specifications(owner.ec2_tag_spec(ResourceType::ElasticIp))
                    .send()
                    .await
                    .or_step_error("ec2:AllocateAddress")?;
                (
                    a.allocation_id().unwrap_or_default().to_string(),
                    a.public_ip().unwrap_or_default().to_string(),
                    "created",
                )
            }
        };
        ctx.log(format!("{action} Elastic IP {ip} ({allocation})"));
        Ok(outputs! { allocation_id: allocation, public_ip: ip, action })
    }
}

use super::cost::{CostLine, Pricing};
use super::facts::{Facts, Leftover, Sweep};

impl Facts for ElasticIp {
    const GC_RANK: u8 = 1;

    fn monthly(_: &Params, at: &Pricing) -> Result<Vec<CostLine>, String> {
        let (h, p) = (at.hours, at.prices);
        Ok(vec![CostLine::new(
            format!("1 public IPv4 address x {h} h x ${}", p.public_ipv4_hour),
            h * p.public_ipv4_hour,
        )])
    }

    /// An address used by a NAT gateway is billed with it: each is priced as idle.
    async fn leftovers(at: &Sweep) -> Result<Vec<Leftover>, ca_a2a_flow_engine::StepError> {
        let monthly = at.monthly(|p| p.public_ipv4_hour);
        super::owned::leftovers(at, monthly, |_: &aws_sdk_ec2::types::Address| json!({})).await
    }
}
