//! `aws.ec2.subnet`: a subnet in one AZ of a VPC, found by its ownership tags
//! before anything is created.

use aws_sdk_ec2::types::{AttributeBooleanValue, ResourceType};
use ca_a2a_flow_engine::{
    DestroyOptions, KindDoc, Outputs, ParamProblem, Parameters, Plan, Step, StepContext, StepError, outputs,
};
use serde::Deserialize;
use serde_json::json;

use super::owner::{Stack, cidr_problems};
use super::{AwsResult, Owner};

#[derive(Debug, Deserialize, Parameters)]
#[serde(deny_unknown_fields)]
#[kind(name = "aws.ec2.subnet", step = Subnet)]
pub struct Params {
    #[param(doc = super::STACK)]
    pub stack: Stack,
    #[param(doc = super::REGION)]
    pub region: Option<String>,
    /// the VPC, usually ${{ steps.vpc.outputs.vpc_id }} (required)
    pub vpc_id: String,
    /// IPv4 CIDR inside the VPC's, like 10.1.1.0/24 (required)
    pub cidr: String,
    /// like eu-west-3a (required)
    pub availability_zone: String,
    /// public IPs for what starts here (default false)
    #[serde(default)]
    pub map_public_ip: bool,
}

impl Step for Subnet {
    async fn plan(&self, ctx: &StepContext, p: Params) -> Result<Plan, StepError> {
        let owner = Owner::new(&p.stack, ctx);
        let ec2 = super::ec2(p.region.as_deref()).await;
        Ok(match super::owned::one::<aws_sdk_ec2::types::Subnet>(&ec2, &owner).await? {
            None => Plan::create(),
            Some(s)
                if s.cidr_block() != Some(p.cidr.as_str())
                    || s.availability_zone() != Some(p.availability_zone.as_str()) =>
            {
                Plan::conflict(format!(
                    "{} in {} -> {} in {} (a subnet cannot move)",
                    s.cidr_block().unwrap_or("?"),
                    s.availability_zone().unwrap_or("?"),
                    p.cidr,
                    p.availability_zone
                ))
            }
            Some(s) => {
                let have = s.map_public_ip_on_launch().unwrap_or(false);
                let mut changes = Vec::new();
                if have != p.map_public_ip {
                    changes.push(format!("map_public_ip: {have} -> {}", p.map_public_ip));
                }
                Plan::changes(changes)
            }
        })
    }

    const DESTROYS: bool = true;

    async fn destroy(&self, ctx: &StepContext, p: Params, _o: &DestroyOptions) -> Result<Outputs, StepError> {
        let ec2 = super::ec2(p.region.as_deref()).await;
        super::owned::delete_all::<aws_sdk_ec2::types::Subnet>(ctx, &ec2, &Owner::new(&p.stack, ctx)).await
    }

    const DOC: KindDoc = KindDoc {
        summary: "A subnet in one availability zone of a VPC; adopted when this stack's step already owns one.",
        outputs: &[
            ("subnet_id", "the subnet's id"),
            ("availability_zone", "its AZ"),
            ("action", "`created` or `adopted`"),
        ],
        example: "- id: public-a\n  uses: aws.ec2.subnet\n  with:\n    stack: \"${{ inputs.stack }}\"\n    vpc_id: \"${{ steps.vpc.outputs.vpc_id }}\"\n    cidr: 10.1.1.0/24\n    availability_zone: eu-west-3a\n    map_public_ip: true\n",
    };

    fn problems(&self, p: &Params) -> Vec<ParamProblem> {
        cidr_problems(&p.cidr, "10.1.1.0/24")
    }

    async fn run(&self, ctx: &StepContext, p: Params) -> Result<Outputs, StepError> {
        let owner = Owner::new(&p.stack, ctx);
        let ec2 = super::ec2(p.region.as_deref()).await;
        let owned = super::owned::one::<aws_sdk_ec2::types::Subnet>(&ec2, &owner).await?;
        let (subnet_id, map_now, action) = match owned {
            None => {
                ctx.progress(format!("creating subnet {} ({} in {})", owner.name(), p.cidr, p.availability_zone));
                let created = ec2
                    .create_subnet()
                    .vpc_id(&p.vpc_id)
                    .cidr_block(&p.cidr)
                    .availability_zone(&p.availability_zone)
                    .tag_specifications(owner.ec2_tag_spec(ResourceType::Subnet))
                    .send()
                    .await
                    .or_step_error("ec2:CreateSubnet")?;
                let subnet = created.subnet();
                let id = subnet.and_then(|s| s.subnet_id()).unwrap_or_default().to_string();
                ctx.log(format!("created subnet {id} ({} in {}) in {}", p.cidr, p.availability_zone, p.vpc_id));
                super::owned::visible::<aws_sdk_ec2::types::Subnet>(ctx, &ec2, &owner, &id).await?;
                (id, subnet.and_then(|s| s.map_public_ip_on_launch()).unwrap_or(false), "created")
            }
            Some(subnet) => {
                let id = subnet.subnet_id().unwrap_or_default().to_string();
                let conflict = [
                    ("VPC", subnet.vpc_id(), p.vpc_id.as_str()),
                    ("CIDR", subnet.cidr_block(), p.cidr.as_str()),
                    ("availability zone", subnet.availability_zone(), p.availability_zone.as_str()),
                ]
                .into_iter()
                .find(|(_, have, want)| *have != Some(*want));
                if let Some((what, have, want)) = conflict {
                    let detail = format!("has {what} {}, but the step asks for {want}", have.unwrap_or("?"));
                    let hint = "a subnet cannot move: destroy the stack's network first, or restore the old setting";
                    return Err(owner.conflict("subnet", &id, detail, hint));
                }
                ctx.log(format!("adopted subnet {id} ({} in {})", p.cidr, p.availability_zone));
                (id, subnet.map_public_ip_on_launch().unwrap_or(false), "adopted")
            }
        };
        if map_now != p.map_public_ip {
            ec2.modify_subnet_attribute()
                .subnet_id(&subnet_id)
                .map_public_ip_on_launch(AttributeBooleanValue::builder().value(p.map_public_ip).build())
                .send()
                .await
                .or_step_error_created("ec2:ModifySubnetAttribute", action == "created")?;
        }
        Ok(outputs! { subnet_id, availability_zone: p.availability_zone, action })
    }
}

use super::facts::{Facts, Leftover, Sweep};

impl Facts for Subnet {
    fn console(o: &std::collections::BTreeMap<String, serde_json::Value>, r: &str) -> Option<String> {
        use super::facts::{console_in, output, url_part};
        let id = output(o, "subnet_id")?;
        console_in(r, &format!("vpcconsole/home?region={r}#SubnetDetails:subnetId={}", url_part(id)))
    }

    const GC_RANK: u8 = 2;

    async fn leftovers(at: &Sweep) -> Result<Vec<Leftover>, ca_a2a_flow_engine::StepError> {
        super::owned::leftovers(at, 0.0, |s: &aws_sdk_ec2::types::Subnet| {
            json!({ "vpc_id": s.vpc_id(), "cidr": s.cidr_block(), "availability_zone": s.availability_zone() })
        })
        .await
    }
}
