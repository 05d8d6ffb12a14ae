//! `aws.ec2.internet_gateway`: an internet gateway, attached to the VPC. The NAT
//! gateway needs the attachment, so later steps take `igw_id` from here, and the
//! attachment is done before this step succeeds.

use aws_sdk_ec2::types::ResourceType;
use ca_a2a_flow_engine::{DestroyOptions, KindDoc, Outputs, Parameters, Plan, Step, StepContext, StepError, outputs};
use serde::Deserialize;
use serde_json::json;

use super::owner::Stack;
use super::{AwsResult, Owner};

#[derive(Debug, Deserialize, Parameters)]
#[serde(deny_unknown_fields)]
#[kind(name = "aws.ec2.internet_gateway", step = InternetGateway)]
pub struct Params {
    #[param(doc = super::STACK)]
    pub stack: Stack,
    #[param(doc = super::REGION)]
    pub region: Option<String>,
    /// the VPC to attach to (required)
    pub vpc_id: String,
}

impl Step for InternetGateway {
    async fn plan(&self, ctx: &StepContext, p: Params) -> Result<Plan, StepError> {
        let owner = Owner::new(&p.stack, ctx);
        let ec2 = super::ec2(p.region.as_deref()).await;
        Ok(match super::owned::one::<aws_sdk_ec2::types::InternetGateway>(&ec2, &owner).await? {
            None => Plan::create(),
            Some(g) if g.attachments().is_empty() => Plan::changes(vec![format!("attach to {}", p.vpc_id)]),
            Some(_) => Plan::adopt(),
        })
    }

    const DESTROYS: bool = true;

    async fn destroy(&self, ctx: &StepContext, p: Params, _o: &DestroyOptions) -> Result<Outputs, StepError> {
        let ec2 = &super::ec2(p.region.as_deref()).await;
        super::owned::delete_all_after(
            ctx,
            ec2,
            &Owner::new(&p.stack, ctx),
            |g: aws_sdk_ec2::types::InternetGateway, id| {
                Box::pin(async move {
                    for vpc in g.attachments().iter().filter_map(|a| a.vpc_id()) {
                        ctx.progress(format!("detaching {id} from {vpc}"));
                        let what = format!("detach of {id} from {vpc}");
                        let detach = ec2.detach_internet_gateway().internet_gateway_id(&id).vpc_id(vpc);
                        super::wait::until_released(ctx, &what, || {
                            let detach = detach.clone();
                            async move {
                                detach.send().await.or_held(
                                    "ec2:DetachInternetGateway",
                                    &["Gateway.NotAttached", "InvalidInternetGatewayID.NotFound"],
                                )
                            }
                        })
                        .await?;
                    }
                    Ok(())
                })
            },
        )
        .await
    }

    const DOC: KindDoc = KindDoc {
        summary: "An internet gateway attached to the VPC; adopted (and attached if needed) when this step owns one.",
        outputs: &[("igw_id", "the gateway's id"), ("action", "`created` or `adopted`")],
        example: "- id: igw\n  uses: aws.ec2.internet_gateway\n  with: { stack: \"${{ inputs.stack }}\", vpc_id: \"${{ steps.vpc.outputs.vpc_id }}\" }\n",
    };

    async fn run(&self, ctx: &StepContext, p: Params) -> Result<Outputs, StepError> {
        let owner = Owner::new(&p.stack, ctx);
        let ec2 = super::ec2(p.region.as_deref()).await;
        let owned = super::owned::one::<aws_sdk_ec2::types::InternetGateway>(&ec2, &owner).await?;
        let (igw, action) = match owned {
            Some(igw) => (igw, "adopted"),
            None => {
                ctx.progress(format!("creating internet gateway {}", owner.name()));
                let created = ec2
                    .create_internet_gateway()
                    .tag_specifications(owner.ec2_tag_spec(ResourceType::InternetGateway))
                    .send()
                    .await
                    .or_step_error("ec2:CreateInternetGateway")?;
                let id = created
                    .internet_gateway()
                    .and_then(|g| g.internet_gateway_id())
                    .ok_or_else(|| StepError::retryable("ec2:CreateInternetGateway answered without the resource"))?;
                (super::owned::visible(ctx, &ec2, &owner, id).await?, "created")
            }
        };
        let id = igw.internet_gateway_id().unwrap_or_default().to_string();
        let attached_to: Vec<&str> = igw.attachments().iter().filter_map(|a| a.vpc_id()).collect();
        match attached_to.as_slice() {
            [] => {
                ctx.progress(format!("attaching {id} to {}", p.vpc_id));
                ec2.attach_internet_gateway()
                    .internet_gateway_id(&id)
                    .vpc_id(&p.vpc_id)
                    .send()
                    .await
                    .or_step_error_created("ec2:AttachInternetGateway", action == "created")?;
                ctx.log(format!("{action} internet gateway {id}, attached to {}", p.vpc_id));
            }
            [vpc] if *vpc == p.vpc_id => ctx.log(format!("{action} internet gateway {id}, already attached to {vpc}")),
            other => {
                let detail = format!("is attached to {}, not to {}", other.join(", "), p.vpc_id);
                let hint = "the stack's VPC changed: destroy the old network first, or detach the gateway";
                return Err(owner.conflict("internet gateway", &id, detail, hint));
            }
        }
        Ok(outputs! { igw_id: id, action })
    }
}

use super::facts::{Facts, Leftover, Sweep};

impl Facts for InternetGateway {
    const GC_RANK: u8 = 1;

    async fn leftovers(at: &Sweep) -> Result<Vec<Leftover>, ca_a2a_flow_engine::StepError> {
        super::owned::leftovers(at, 0.0, |g: &aws_sdk_ec2::types::InternetGateway| {
            json!({ "vpc_id": g.attachments().first().and_then(|a| a.vpc_id()).unwrap_or("none") })
        })
        .await
    }
}
