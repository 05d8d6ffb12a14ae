//! `aws.ec2.vpc`: a VPC with DNS support and hostnames, found by its ownership
//! tags before anything is created, so a re-run or a resumed run adopts it.

use aws_sdk_ec2::types::{AttributeBooleanValue, Filter, ResourceType};
use ca_a2a_flow_engine::{
    DestroyOptions, KindDoc, Outputs, ParamProblem, Parameters, Plan, Step, StepContext, StepError, outputs,
};
use serde::Deserialize;
use serde_json::json;

use super::owner::{Stack, TAG_RUN, TAG_STACK, cidr_problems};
use super::{AwsFailure, AwsResult, Owner, classify, failure};

fn yes() -> bool {
    true
}

#[derive(Debug, Deserialize, Parameters)]
#[serde(deny_unknown_fields)]
#[kind(name = "aws.ec2.vpc", step = Vpc)]
pub struct Params {
    #[param(doc = super::STACK)]
    pub stack: Stack,
    #[param(doc = super::REGION)]
    pub region: Option<String>,
    /// IPv4 CIDR block, like 10.1.0.0/16 (required)
    pub cidr: String,
    /// enableDnsSupport (default true)
    #[serde(default = "yes")]
    pub dns_support: bool,
    /// enableDnsHostnames (default true)
    #[serde(default = "yes")]
    pub dns_hostnames: bool,
}

impl Step for Vpc {
    async fn plan(&self, ctx: &StepContext, p: Params) -> Result<Plan, StepError> {
        let owner = Owner::new(&p.stack, ctx);
        let ec2 = super::ec2(p.region.as_deref()).await;
        Ok(match super::owned::one::<aws_sdk_ec2::types::Vpc>(&ec2, &owner).await? {
            None => Plan::create(),
            Some(v) if v.cidr_block() != Some(p.cidr.as_str()) => Plan::conflict(format!(
                "cidr: {} -> {} (a VPC's CIDR cannot change)",
                v.cidr_block().unwrap_or("?"),
                p.cidr
            )),
            Some(_) => Plan::adopt(),
        })
    }

    const DESTROYS: bool = true;

    async fn destroy(&self, ctx: &StepContext, p: Params, _o: &DestroyOptions) -> Result<Outputs, StepError> {
        let ec2 = super::ec2(p.region.as_deref()).await;
        super::owned::delete_all::<aws_sdk_ec2::types::Vpc>(ctx, &ec2, &Owner::new(&p.stack, ctx)).await
    }

    const DOC: KindDoc = KindDoc {
        summary: "A VPC with DNS support and hostnames; adopted when this stack's step already owns one.",
        outputs: &[("vpc_id", "the VPC's id"), ("cidr", "its CIDR block"), ("action", "`created` or `adopted`")],
        example: "- id: vpc\n  uses: aws.ec2.vpc\n  with: { stack: \"${{ inputs.stack }}\", region: \"${{ inputs.region }}\", cidr: 10.1.0.0/16 }\n",
    };

    fn problems(&self, p: &Params) -> Vec<ParamProblem> {
        cidr_problems(&p.cidr, "10.1.0.0/16")
    }

    async fn run(&self, ctx: &StepContext, p: Params) -> Result<Outputs, StepError> {
        let owner = Owner::new(&p.stack, ctx);
        let ec2 = super::ec2(p.region.as_deref()).await;
        let owned = super::owned::one::<aws_sdk_ec2::types::Vpc>(&ec2, &owner).await?;
        let (vpc_id, action) = match owned {
            None => {
                ctx.progress(format!("creating VPC {} ({})", owner.name(), p.cidr));
                let created = ec2
                    .create_vpc()
                    .cidr_block(&p.cidr)
                    .tag_specifications(owner.ec2_tag_spec(ResourceType::Vpc))
                    .send()
                    .await;
                let created = match created {
                    Ok(c) => c,
                    Err(e) => {
                        let f = failure("ec2:CreateVpc", &e);
                        if f.code.as_deref() == Some("VpcLimitExceeded") {
                            return Err(vpc_limit(&ec2, &f, p.region.as_deref()).await);
                        }
                        return Err(classify(&f));
                    }
                };
                let id = created.vpc().and_then(|v| v.vpc_id()).unwrap_or_default().to_string();
                ctx.log(format!("created VPC {id} ({}) for stack {}", p.cidr, p.stack));
                super::owned::visible::<aws_sdk_ec2::types::Vpc>(ctx, &ec2, &owner, &id).await?;
                (id, "created")
            }
            Some(vpc) => {
                let id = vpc.vpc_id().unwrap_or_default().to_string();
                if vpc.cidr_block() != Some(p.cidr.as_str()) {
                    let detail =
                        format!("has CIDR {}, but the step asks for {}", vpc.cidr_block().unwrap_or("?"), p.cidr);
                    let hint = "a VPC's CIDR cannot change: keep the old CIDR, or destroy the stack's network first";
                    return Err(owner.conflict("VPC", &id, detail, hint));
                }
                ctx.log(format!("adopted VPC {id} ({}) owned by stack {}", p.cidr, p.stack));
                (id, "adopted")
            }
        };
        // DNS settings: set on creation, corrected on adoption if they drifted.
        for (attr, want) in [("enableDnsSupport", p.dns_support), ("enableDnsHostnames", p.dns_hostnames)] {
            let value = AttributeBooleanValue::builder().value(want).build();
            let mut call = ec2.modify_vpc_attribute().vpc_id(&vpc_id);
            call = if attr == "enableDnsSupport" {
                call.enable_dns_support(value)
            } else {
                call.enable_dns_hostnames(value)
            };
            call.send().await.or_step_error_created("ec2:ModifyVpcAttribute", action == "created")?;
        }
        Ok(outputs! { vpc_id, cidr: p.cidr, action })
    }
}

/// VpcLimitExceeded, with the numbers: how many VPCs the region has, and which
/// of them carry ca-a2a-flow's tags (leftovers of earlier stacks or attempts).
async fn vpc_limit(ec2: &aws_sdk_ec2::Client, f: &AwsFailure, region: Option<&str>) -> StepError {
    let mut error = classify(f);
    let Ok(all) = ec2.describe_vpcs().send().await else { return error };
    let tagged = ec2
        .describe_vpcs()
        .filters(Filter::builder().name("tag-key").values(TAG_STACK).build())
        .send()
        .await
        .map(|r| r.vpcs().to_vec())
        .unwrap_or_default();
    let ours: Vec<String> = tagged
        .iter()
        .map(|v| {
            let tag = |k: &str| v.tags().iter().find(|t| t.key() == Some(k)).and_then(|t| t.value()).unwrap_or("?");
            format!("{} (stack {}, run {})", v.vpc_id().unwrap_or("?"), tag(TAG_STACK), tag(TAG_RUN))
        })
        .collect();
    error.message = format!(
        "{}; the region{} has {} VPCs, {} of them tagged by ca-a2a-flow{}",
        error.message,
        region.map(|r| format!(" {r}")).unwrap_or_default(),
        all.vpcs().len(),
        ours.len(),
        if ours.is_empty() { String::new() } else { format!(": {}", ours.join(", ")) }
    );
    error
}

use super::facts::{Facts, Leftover, Sweep};

impl Facts for Vpc {
    fn console(o: &std::collections::BTreeMap<String, serde_json::Value>, r: &str) -> Option<String> {
        use super::facts::{console_in, output, url_part};
        let id = output(o, "vpc_id")?;
        console_in(r, &format!("vpcconsole/home?region={r}#VpcDetails:VpcId={}", url_part(id)))
    }

    async fn leftovers(at: &Sweep) -> Result<Vec<Leftover>, ca_a2a_flow_engine::StepError> {
        super::owned::leftovers(at, 0.0, |v: &aws_sdk_ec2::types::Vpc| json!({ "cidr": v.cidr_block() })).await
    }
}

#[cfg(test)]
mod tests {
    use super::super::owner::is_cidr;

    #[test]
    fn cidrs_are_checked_before_any_call() {
        assert!(is_cidr("10.1.0.0/16"));
        assert!(!is_cidr("10.1.0.0"));
        assert!(!is_cidr("10.1.0.0/33"));
        assert!(!is_cidr("10.1.0/16"));
    }
}
