//! `aws.ecs.cluster`: a Fargate cluster named `<stack>-<step>` (`ca-a2a-cluster`).

use aws_sdk_ecs::types::ClusterSetting;
use ca_a2a_flow_engine::{DestroyOptions, KindDoc, Outputs, Parameters, Plan, Step, StepContext, StepError, outputs};
use serde::Deserialize;

use super::owner::{Claim, Holder, Stack, claim, planned_claim};
use super::{AwsResult, Owner};

#[derive(Debug, Deserialize, Parameters)]
#[serde(deny_unknown_fields)]
#[kind(name = "aws.ecs.cluster", step = Cluster)]
pub struct Params {
    #[param(doc = super::STACK)]
    pub stack: Stack,
    #[param(doc = super::REGION)]
    pub region: Option<String>,
    /// default false
    #[serde(default)]
    pub container_insights: bool,
    #[param(doc = super::owner::TAKE_OVER)]
    #[serde(default)]
    pub take_over: bool,
}

/// The ACTIVE cluster `name`, with its tags, and whose it is.
async fn active(
    ecs: &aws_sdk_ecs::Client,
    owner: &Owner,
    name: &str,
) -> Result<Option<(aws_sdk_ecs::types::Cluster, Holder)>, StepError> {
    let found = ecs
        .describe_clusters()
        .clusters(name)
        .include(aws_sdk_ecs::types::ClusterField::Tags)
        .send()
        .await
        .or_step_error("ecs:DescribeClusters")?;
    Ok(found.clusters().iter().find(|c| c.status() == Some("ACTIVE")).map(|c| {
        let holder = owner.holder(c.tags().iter().filter_map(|t| Some((t.key()?, t.value()?))));
        (c.clone(), holder)
    }))
}

impl Step for Cluster {
    async fn plan(&self, ctx: &StepContext, p: Params) -> Result<Plan, StepError> {
        let owner = Owner::new(&p.stack, ctx);
        let name = owner.name();
        let ecs = super::ecs(p.region.as_deref()).await;
        Ok(match active(&ecs, &owner, &name).await? {
            None => Plan::create(),
            Some((_, holder)) => match planned_claim(&owner, "cluster", &name, &holder, p.take_over) {
                Ok(changes) => Plan::changes(changes),
                Err(conflict) => conflict,
            },
        })
    }

    const DESTROYS: bool = true;

    async fn destroy(&self, ctx: &StepContext, p: Params, _o: &DestroyOptions) -> Result<Outputs, StepError> {
        let owner = Owner::new(&p.stack, ctx);
        let name = owner.name();
        let ecs = super::ecs(p.region.as_deref()).await;
        match active(&ecs, &owner, &name).await? {
            None => return Ok(super::removed(ctx, "cluster", &[])),
            Some((_, Holder::Ours)) => {}
            Some((_, holder)) => {
                ctx.log(format!("left alone: {}", owner.not_ours("cluster", &name, &holder)));
                return Ok(super::removed(ctx, "cluster", &[]));
            }
        }
        ecs.delete_cluster()
            .cluster(&name)
            .send()
            .await
            .or_absent("ecs:DeleteCluster", &["ClusterNotFoundException"])?;
        Ok(super::removed(ctx, "cluster", &[name]))
    }

    const DOC: KindDoc = KindDoc {
        summary: "An ECS cluster for Fargate named `<stack>-<step>`; adopted when it is ACTIVE and tagged as the stack's (one without tags is refused unless `take_over`).",
        outputs: &[
            ("arn", "the cluster's ARN"),
            ("name", "its name"),
            ("action", "`created`, `adopted`, or `taken-over` (`take_over`)"),
        ],
        example: "- id: cluster\n  uses: aws.ecs.cluster\n  with: { stack: \"${{ inputs.stack }}\" }\n",
    };

    async fn run(&self, ctx: &StepContext, p: Params) -> Result<Outputs, StepError> {
        let owner = Owner::new(&p.stack, ctx);
        let name = owner.name();
        let ecs = super::ecs(p.region.as_deref()).await;
        let (arn, action) = match active(&ecs, &owner, &name).await? {
            Some((c, holder)) => {
                let arn = c.cluster_arn().unwrap_or_default().to_string();
                match claim(&owner, "cluster", &name, &holder, p.take_over)? {
                    Claim::Adopt => (arn, "adopted"),
                    Claim::TakeOver => {
                        ctx.progress(format!("taking over cluster {name}: tagging it as stack {}'s", p.stack));
                        ecs.tag_resource()
                            .resource_arn(&arn)
                            .set_tags(Some(super::ecs_tags(&owner)))
                            .send()
                            .await
                            .or_step_error("ecs:TagResource")?;
                        (arn, "taken-over")
                    }
                }
            }
            None => {
                ctx.progress(format!("creating cluster {name}"));
                let insights = if p.container_insights { "enabled" } else { "disabled" };
                let created = ecs
                    .create_cluster()
                    .cluster_name(&name)
                    .capacity_providers("FARGATE")
                    .settings(ClusterSetting::builder().name("containerInsights".into()).value(insights).build())
                    .set_tags(Some(super::ecs_tags(&owner)))
                    .send()
                    .await
                    .or_step_error("ecs:CreateCluster")?;
                (created.cluster().and_then(|c| c.cluster_arn()).unwrap_or_default().to_string(), "created")
            }
        };
        ctx.log(format!("{action} cluster {name}"));
        Ok(outputs! { arn, name, action })
    }
}

impl super::facts::Facts for Cluster {
    fn console(o: &std::collections::BTreeMap<String, serde_json::Value>, r: &str) -> Option<String> {
        use super::facts::{console_in, output, url_part};
        let name = output(o, "name")?;
        console_in(r, &format!("ecs/v2/clusters/{}/services?region={r}", url_part(name)))
    }
}
