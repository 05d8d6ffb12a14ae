//! `aws.ec2.subnet_lookup`: finds a subnet to place something in, read-only:
//! the one named, or the default VPC's first default subnet (public IPs,
//! outbound through the default internet gateway). Creates nothing, destroys nothing.

use ca_a2a_flow_engine::{KindDoc, OutputSpec, Outputs, Plan, Step, StepContext, StepError};
use serde::Deserialize;
use serde_json::{Value as Json, json};

use super::AwsResult;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    #[serde(default)]
    pub region: Option<String>,
    /// This subnet; empty or absent: the default VPC's first default subnet.
    #[serde(default)]
    pub subnet_id: Option<String>,
}

pub struct SubnetLookup;

impl Step for SubnetLookup {
    type Params = Params;
    const KIND: &'static str = "aws.ec2.subnet_lookup";

    fn doc(&self) -> KindDoc {
        KindDoc {
            summary: "Finds a subnet (the one named, or the default VPC's first default subnet) and its VPC; read-only.",
            params: vec![
                ("subnet_id", "string", "this subnet; empty: the default VPC's first default subnet"),
                ("region", "string", "AWS region (default: the SDK's chain)"),
            ],
            outputs: vec![("subnet_id", "the subnet"), ("vpc_id", "its VPC"), ("availability_zone", "its zone")],
            example: "- id: subnet\n  uses: aws.ec2.subnet_lookup\n  with: { subnet_id: \"${{ inputs.subnet_id }}\" }\n",
        }
    }

    fn outputs(&self, _params: &Json) -> OutputSpec {
        OutputSpec::Fixed(vec!["subnet_id", "vpc_id", "availability_zone"])
    }

    async fn plan(&self, _ctx: &StepContext, _p: Params) -> Result<Plan, StepError> {
        Ok(Plan::none("looks a subnet up"))
    }

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
        Ok(Outputs::from([
            ("subnet_id".into(), json!(id)),
            ("vpc_id".into(), json!(vpc)),
            ("availability_zone".into(), json!(subnet.availability_zone().unwrap_or_default())),
        ]))
    }
}

impl super::facts::Facts for SubnetLookup {}
