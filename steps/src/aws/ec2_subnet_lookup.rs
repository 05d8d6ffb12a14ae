//! `aws.ec2.subnet_lookup`: finds a subnet to place something in, read-only:
//! the one named, or the default VPC's first default subnet (public IPs,
//! outbound through the default internet gateway). Creates nothing, destroys nothing.

use ca_a2a_flow_engine::{KindDoc, Outputs, Parameters, Plan, Step, StepContext, StepError, outputs};
use serde::Deserialize;

use super::AwsResult;

#[derive(Debug, Deserialize, Parameters)]
#[serde(deny_unknown_fields)]
#[kind(name = "aws.ec2.subnet_lookup", step = SubnetLookup)]
pub struct Params {
    #[param(doc = super::REGION)]
    pub region: Option<String>,
    /// this subnet; empty: the default VPC's first default subnet
    pub subnet_id: Option<String>,
}

impl Step for SubnetLookup {
    async fn plan(&self, _ctx: &StepContext, _p: Params) -> Result<Plan, StepError> {
        Ok(Plan::none("looks a subnet up"))
    }

    const DOC: KindDoc = KindDoc {
        summary: "Finds a subnet (the one named, or the default VPC's first default subnet) and its VPC; read-only.",
        outputs: &[("subnet_id", "the subnet"), ("vpc_id", "its VPC"), ("availability_zone", "its zone")],
        example: "- id: subnet\n  uses: aws.ec2.subnet_lookup\n  with: { subnet_id: \"${{ inputs.subnet_id }}\" }\n",
    };

    async fn run(&self, ctx: &StepContext, p: Params) -> Result<Outputs, StepError> {
        use aws_sdk_ec2::types::Filter;
        let ec2 = super::ec2(p.region.as_deref()).await;
        let wanted = p.subnet_id.filter(|s| !s.trim().is_empty());
        let mut ask = ec2.describe_subnets();
        ask = match &wanted {
            Some(id) => ask.subnet_ids(id),
            None => ask.filters(Filter::builder().name("default-for-az").values("true").build()),
        };
        let found = ask.send().await.or_absent("ec2:DescribeSubnets", &["InvalidSubnetID.NotFound"])?;
        let mut subnets: Vec<_> = found.map(|f| f.subnets().to_vec()).unwrap_or_default();
        subnets.sort_by(|a, b| a.availability_zone().cmp(&b.availability_zone()));
        let Some(subnet) = subnets.first() else {
            return Err(match wanted {
                Some(id) => StepError::fatal(format!("subnet {id} does not exist in this region"))
                    .with_hint("pass a subnet id of this region (for example a private subnet of the stack)"),
                None => StepError::fatal("this region has no default VPC, so no default subnet").with_hint(
                    "pass `--input subnet_id=subnet-...`: a subnet with outbound access (a NAT or a public IP)",
                ),
            });
        };
        let (id, vpc) = (subnet.subnet_id().unwrap_or_default(), subnet.vpc_id().unwrap_or_default());
        ctx.log(format!("subnet {id} in {vpc} ({})", subnet.availability_zone().unwrap_or_default()));
        Ok(outputs! { subnet_id: id, vpc_id: vpc, availability_zone: subnet.availability_zone().unwrap_or_default() })
    }
}

impl super::facts::Facts for SubnetLookup {}
