//! `aws.ec2.instance`: one EC2 instance (the image builder), found by its
//! ownership tags before anything is launched; launched with a client token
//! derived from its owner and run, so a launch repeated after a crash returns
//! the first one. The image may be a public SSM parameter (the current Amazon
//! Linux), resolved at launch. Waits until the instance runs and, when asked,
//! until it is online in SSM (its agent registered), with progress and a deadline.

use std::time::Duration;

use aws_sdk_ec2::types::{
    BlockDeviceMapping, EbsBlockDevice, IamInstanceProfileSpecification, Instance, InstanceStateName, InstanceType,
    ResourceType, VolumeType,
};
use ca_a2a_flow_engine::duration::parse as parse_duration;
use ca_a2a_flow_engine::{
    Deadline, DestroyOptions, KindDoc, Outputs, ParamProblem, Parameters, Plan, Step, StepContext, StepError, outputs,
};
use serde::Deserialize;
use serde_json::json;

use super::owner::Stack;
use super::wait::{self, Poll};
use super::{AwsResult, Owner, one_owned};

fn default_type() -> String {
    "t3.large".into()
}
fn default_volume() -> i32 {
    60
}
fn default_ami() -> String {
    "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64".into()
}

#[derive(Debug, Deserialize, Parameters)]
#[serde(deny_unknown_fields)]
#[kind(name = "aws.ec2.instance", step = Ec2Instance)]
pub struct Params {
    #[param(doc = super::STACK)]
    pub stack: Stack,
    #[param(doc = super::REGION)]
    pub region: Option<String>,
    /// where it runs; it needs outbound access (required)
    pub subnet_id: String,
    /// its security groups
    #[serde(default)]
    pub security_group_ids: Vec<String>,
    /// default t3.large
    #[serde(default = "default_type")]
    pub instance_type: String,
    /// an AMI id or a public SSM parameter (default: current Amazon Linux 2023)
    #[serde(default = "default_ami")]
    pub ami: String,
    /// encrypted gp3 root volume (default 60)
    #[serde(default = "default_volume")]
    pub volume_size_gib: i32,
    /// instance profile name
    pub instance_profile: Option<String>,
    /// first-boot script
    pub user_data: Option<String>,
    /// wait until its SSM agent is online, at most this long
    #[param(ty = "duration")]
    pub wait_ssm_online: Option<String>,
}

const LIVE: &[&str] = &["pending", "running", "stopping", "stopped"];

async fn owned(ec2: &aws_sdk_ec2::Client, owner: &Owner) -> Result<Option<Instance>, StepError> {
    let mut filters = owner.ec2_filters();
    filters.push(
        aws_sdk_ec2::types::Filter::builder()
            .name("instance-state-name")
            .set_values(Some(LIVE.iter().map(|s| s.to_string()).collect()))
            .build(),
    );
    let found =
        ec2.describe_instances().set_filters(Some(filters)).send().await.or_step_error("ec2:DescribeInstances")?;
    let instances: Vec<Instance> = found
        .reservations()
        .iter()
        .flat_map(|r| r.instances().iter().cloned())
        .filter(|i| owner.owns_ec2(i.tags()))
        .filter(|i| i.state().and_then(|s| s.name()).is_some_and(|n| LIVE.contains(&n.as_str())))
        .collect();
    one_owned(instances, |i| i.instance_id(), "instance", owner)
}

fn state(i: &Instance) -> InstanceStateName {
    i.state().and_then(|s| s.name()).cloned().unwrap_or(InstanceStateName::Pending)
}

impl Step for Ec2Instance {
    /// An instance waits up to 10 minutes to run, then for SSM (`wait_ssm_online`).
    const DEADLINE: Option<Deadline> = Some(Deadline::minutes(30, 20));

    const DOC: KindDoc = KindDoc {
        summary: "An EC2 instance found by its ownership tags, launched once (client token), waited for until running (and online in SSM).",
        outputs: &[
            ("instance_id", "the instance"),
            ("private_ip", "its private address"),
            ("ami", "the image it runs"),
            ("action", "`created` or `adopted`"),
        ],
        example: "- id: builder\n  uses: aws.ec2.instance\n  with:\n    stack: \"${{ inputs.stack }}\"\n    subnet_id: \"${{ steps.subnet.outputs.subnet_id }}\"\n    instance_profile: \"${{ steps.builder-role.outputs.instance_profile }}\"\n    wait_ssm_online: 10m\n",
    };

    fn problems(&self, p: &Params) -> Vec<ParamProblem> {
        let mut problems = Vec::new();
        if !(8..=16384).contains(&p.volume_size_gib) {
            problems.push(ParamProblem::at(&["volume_size_gib"], "gp3 takes 8 to 16384 GiB"));
        }
        if let Some(w) = &p.wait_ssm_online {
            if !w.contains("${{") && parse_duration(w).is_err() {
                problems.push(ParamProblem::at(&["wait_ssm_online"], format!("`{w}` is not a duration like 10m")));
            }
        }
        problems
    }

    async fn plan(&self, ctx: &StepContext, p: Params) -> Result<Plan, StepError> {
        let owner = Owner::new(&p.stack, ctx);
        let ec2 = super::ec2(p.region.as_deref()).await;
        Ok(match owned(&ec2, &owner).await? {
            None => Plan::create(),
            Some(i) => {
                let mut changes = Vec::new();
                let now = i.instance_type().map(|t| t.as_str().to_string()).unwrap_or_default();
                if now != p.instance_type {
                    changes.push(format!(
                        "instance_type: {now} -> {} (not applied: replace the builder)",
                        p.instance_type
                    ));
                }
                if state(&i) == InstanceStateName::Stopped {
                    changes.push("stopped -> started".into());
                }
                if changes.is_empty() { Plan::adopt() } else { Plan::changes(changes) }
            }
        })
    }

    async fn run(&self, ctx: &StepContext, p: Params) -> Result<Outputs, StepError> {
        let owner = Owner::new(&p.stack, ctx);
        let ec2 = super::ec2(p.region.as_deref()).await;
        let (instance, action) = match owned(&ec2, &owner).await? {
            Some(i) => {
                if state(&i) == InstanceStateName::Stopped || state(&i) == InstanceStateName::Stopping {
                    ctx.log(format!("starting {}, found {}", i.instance_id().unwrap_or_default(), state(&i).as_str()));
                    ec2.start_instances()
                        .instance_ids(i.instance_id().unwrap_or_default())
                        .send()
                        .await
                        .or_step_error("ec2:StartInstances")?;
                }
                (i, "adopted")
            }
            None => (launch(ctx, &ec2, &owner, &p).await?, "created"),
        };
        let id = instance.instance_id().unwrap_or_default().to_string();
        let running = wait::until(ctx, &format!("instance {id}"), Duration::from_secs(600), wait::interval(Duration::from_secs(5)), || async {
            let found = ec2.describe_instances().instance_ids(&id).send().await.or_step_error_created("ec2:DescribeInstances", action == "created")?;
            let Some(i) = found.reservations().iter().flat_map(|r| r.instances()).next().cloned() else {
                return Ok(Poll::Pending("not visible yet".into()));
            };
            Ok(match state(&i) {
                InstanceStateName::Running => Poll::Ready(i),
                InstanceStateName::Terminated | InstanceStateName::ShuttingDown => {
                    let reason = i.state_reason().and_then(|r| r.message()).unwrap_or("no reason given").to_string();
                    return Err(StepError::retryable(format!("instance {id} is {} ({reason})", state(&i).as_str()))
                        .with_hint("the next attempt launches a new one; check the instance type's availability in the subnet's zone and the account's vCPU quota"));
                }
                other => Poll::Pending(other.as_str().to_string()),
            })
        })
        .await?;
        if let Some(limit) = &p.wait_ssm_online {
            wait_ssm_online(ctx, p.region.as_deref(), &id, parse_duration(limit).map_err(StepError::fatal)?).await?;
        }
        ctx.log(format!("{action} instance {id} ({})", running.private_ip_address().unwrap_or("no address")));
        Ok(
            outputs! { instance_id: id, private_ip: running.private_ip_address().unwrap_or_default(), ami: running.image_id().unwrap_or_default(), action },
        )
    }

    const DESTROYS: bool = true;

    async fn destroy(&self, ctx: &StepContext, p: Params, _o: &DestroyOptions) -> Result<Outputs, StepError> {
        let owner = Owner::new(&p.stack, ctx);
        let ec2 = super::ec2(p.region.as_deref()).await;
        let Some(found) = owned(&ec2, &owner).await? else { return Ok(super::removed(ctx, "instance", &[])) };
        let id = found.instance_id().unwrap_or_default().to_string();
        ec2.terminate_instances()
            .instance_ids(&id)
            .send()
            .await
            .or_absent("ec2:TerminateInstances", &["InvalidInstanceID.NotFound"])?;
        wait::until(
            ctx,
            &format!("instance {id}"),
            Duration::from_secs(600),
            wait::interval(Duration::from_secs(5)),
            || async {
                let found = ec2
                    .describe_instances()
                    .instance_ids(&id)
                    .send()
                    .await
                    .or_absent("ec2:DescribeInstances", &["InvalidInstanceID.NotFound"])?;
                let state = found
                    .as_ref()
                    .and_then(|f| f.reservations().iter().flat_map(|r| r.instances()).next().map(state))
                    .unwrap_or(InstanceStateName::Terminated);
                Ok(if state == InstanceStateName::Terminated {
                    Poll::Ready(())
                } else {
                    Poll::Pending(state.as_str().into())
                })
            },
        )
        .await?;
        Ok(super::removed(ctx, "instance", &[id]))
    }
}

async fn launch(
    ctx: &StepContext,
    ec2: &aws_sdk_ec2::Client,
    owner: &Owner,
    p: &Params,
) -> Result<Instance, StepError> {
    let ami = if p.ami.starts_with("ami-") {
        p.ami.clone()
    } else {
        let ssm = aws_sdk_ssm::Client::new(&super::config(p.region.as_deref()).await);
        let got =
            ssm.get_parameter().name(&p.ami).send().await.or_absent("ssm:GetParameter", &["ParameterNotFound"])?;
        let Some(value) = got.and_then(|g| g.parameter().and_then(|x| x.value().map(String::from))) else {
            return Err(StepError::fatal(format!("the SSM parameter {} does not exist in this region", p.ami))
                .with_hint("use an AMI id, or a public parameter under /aws/service/ami-amazon-linux-latest/"));
        };
        ctx.log(format!("{} is {value}", p.ami));
        value
    };
    let mut run = ec2
        .run_instances()
        .image_id(&ami)
        .instance_type(InstanceType::from(p.instance_type.as_str()))
        .min_count(1)
        .max_count(1)
        .subnet_id(&p.subnet_id)
        .set_security_group_ids(Some(p.security_group_ids.clone()))
        .block_device_mappings(
            BlockDeviceMapping::builder()
                .device_name("/dev/xvda")
                .ebs(
                    EbsBlockDevice::builder()
                        .volume_size(p.volume_size_gib)
                        .volume_type(VolumeType::Gp3)
                        .encrypted(true)
                        .delete_on_termination(true)
                        .build(),
                )
                .build(),
        )
        .metadata_options(
            aws_sdk_ec2::types::InstanceMetadataOptionsRequest::builder()
                .http_tokens(aws_sdk_ec2::types::HttpTokensState::Required)
                .build(),
        )
        .tag_specifications(owner.ec2_tag_spec(ResourceType::Instance))
        .tag_specifications(owner.ec2_tag_spec(ResourceType::Volume))
        .client_token(owner.client_token(&format!("instance {}", owner.run)));
    if let Some(profile) = &p.instance_profile {
        run = run.iam_instance_profile(IamInstanceProfileSpecification::builder().name(profile).build());
    }
    if let Some(data) = &p.user_data {
        run = run.user_data(aws_smithy_types::base64::encode(data.as_bytes()));
    }
    ctx.progress(format!("launching a {} instance from {ami}", p.instance_type));
    let launched = run.send().await.or_step_error("ec2:RunInstances")?;
    launched
        .instances()
        .first()
        .cloned()
        .ok_or_else(|| StepError::retryable("ec2:RunInstances answered without an instance"))
}

/// Waits until the instance's SSM agent has registered and pings (Online).
async fn wait_ssm_online(ctx: &StepContext, region: Option<&str>, id: &str, limit: Duration) -> Result<(), StepError> {
    let ssm = aws_sdk_ssm::Client::new(&super::config(region).await);
    let what = format!("instance {id} in SSM");
    wait::until(ctx, &what, limit, wait::interval(Duration::from_secs(10)), || async {
        let found = ssm
            .describe_instance_information()
            .filters(
                aws_sdk_ssm::types::InstanceInformationStringFilter::builder()
                    .key("InstanceIds")
                    .values(id)
                    .build()
                    .map_err(|e| StepError::fatal(e.to_string()))?,
            )
            .send()
            .await
            .or_step_error("ssm:DescribeInstanceInformation")?;
        let ping =
            found.instance_information_list().first().and_then(|i| i.ping_status()).map(|s| s.as_str().to_string());
        Ok(match ping.as_deref() {
            Some("Online") => Poll::Ready(()),
            Some(other) => Poll::Pending(other.to_lowercase()),
            None => Poll::Pending(
                "not registered yet (the agent starts at boot; the role needs AmazonSSMManagedInstanceCore)".into(),
            ),
        })
    })
    .await
}

use super::cost::{CostLine, Pricing};
use super::facts::{Facts, Leftover, Sweep, ec2_tags};

impl Facts for Ec2Instance {
    fn console(o: &std::collections::BTreeMap<String, serde_json::Value>, r: &str) -> Option<String> {
        use super::facts::{console_in, output, url_part};
        let id = output(o, "instance_id")?;
        console_in(r, &format!("ec2/home?region={r}#InstanceDetails:instanceId={}", url_part(id)))
    }

    const GC_RANK: u8 = 0;

    fn monthly(p: &Params, at: &Pricing) -> Result<Vec<CostLine>, String> {
        let (h, prices, kind, gib) = (at.hours, at.prices, &p.instance_type, p.volume_size_gib as f64);
        Ok(vec![match prices.ec2_hour.get(kind) {
            Some(hour) => CostLine::new(
                format!("{h} h x ${hour} ({kind}) + {gib} GB gp3 x ${}", prices.ebs_gp3_gb_month),
                h * hour + gib * prices.ebs_gp3_gb_month,
            ),
            None => CostLine::new(
                format!("{kind}: not in the price file; {gib} GB gp3 only"),
                gib * prices.ebs_gp3_gb_month,
            ),
        }])
    }

    /// A forgotten builder bills by the hour: the costliest leftover there is.
    async fn leftovers(at: &Sweep) -> Result<Vec<Leftover>, ca_a2a_flow_engine::StepError> {
        let ours = aws_sdk_ec2::types::Filter::builder().name("tag-key").values(super::owner::TAG_STACK).build();
        let live = aws_sdk_ec2::types::Filter::builder()
            .name("instance-state-name")
            .values("pending")
            .values("running")
            .values("stopping")
            .values("stopped")
            .build();
        let mut pages = at.ec2.describe_instances().filters(ours).filters(live).into_paginator().send();
        let mut found = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.or_step_error("ec2:DescribeInstances")?;
            for i in page.reservations().iter().flat_map(|r| r.instances()) {
                let kind = i.instance_type().map(|t| t.as_str().to_string()).unwrap_or_default();
                let volume = default_volume() as f64;
                let monthly = at.prices.as_ref().map_or(0.0, |p| {
                    let hour = p.ec2_hour.get(&kind).copied().unwrap_or(0.0);
                    super::cost::round(p.hours_per_month * hour + volume * p.ebs_gp3_gb_month)
                });
                found.push(Leftover::new(
                    ec2_tags(i.tags()),
                    i.instance_id(),
                    monthly,
                    json!({ "subnet_id": i.subnet_id() }),
                ));
            }
        }
        Ok(found)
    }
}
