//! `aws.ecs.cluster`: a Fargate cluster named `<stack>-<step>` (`ca-a2a-cluster`).

use aws_sdk_ecs::types::ClusterSetting;
use ca_a2a_flow_engine::{DestroyOptions, KindDoc, Outputs, Parameters, Plan, Step, StepContext, StepError, outputs};
use serde::Deserialize;

use super::owner::Stack;
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
}

impl Step for Cluster {
    async fn plan(&self, ctx: &StepContext, p: Params) -> Result<Plan, StepError> {
        let name = Owner::new(&p.stack, ctx).name();
        let ecs = super::ecs(p.region.as_deref()).await;
        let found = ecs.describe_clusters().clusters(&name).send().await.or_step_error("ecs:DescribeClusters")?;
        Ok(if found.clusters().iter().any(|c| c.status() == Some("ACTIVE")) { Plan::adopt() } else { Plan::create() })
    }

    const DESTROYS: bool = true;

    async fn destroy(&self, ctx: &StepContext, p: Params, _o: &DestroyOptions) -> Result<Outputs, StepError> {
        let owner = Owner::new(&p.stack, ctx);
        let name = owner.name();
        let ecs = super::ecs(p.region.as_deref()).await;
        let found = ecs.describe_clusters().clusters(&name).send().await.or_step_error("ecs:DescribeClusters")?;
        if !found.clusters().iter().any(|c| c.status() == Some("ACTIVE")) {
            return Ok(super::removed(ctx, "cluster", &[]));
        }
        ecs.delete_cluster()
            .cluster(&name)
            .send()
            .await
            .or_absent("ecs:DeleteCluster", &["ClusterNotFoundException"])?;
        Ok(super::removed(ctx, "cluster", &[name]))
    }

    const DOC: KindDoc = KindDoc {
        summary: "An ECS cluster for Fargate named `<stack>-<step>`; adopted when it is ACTIVE.",
        outputs: &[("arn", "the cluster's ARN"), ("name", "its name"), ("action", "`created` or `adopted`")],
        example: "- id: cluster\n  uses: aws.ecs.cluster\n  with: { stack: \"${{ inputs.stack }}\" }\n",
    };

    async fn run(&self, ctx: &StepContext, p: Params) -> Result<Outputs, StepError> {
        let owner = Owner::new(&p.stack, ctx);
        let name = owner.name();
        let ecs = super::ecs(p.region.as_deref()).await;
        let found = ecs.describe_clusters().clusters(&name).send().await.or_step_error("ecs:DescribeClusters")?;
        let active = found.clusters().iter().find(|c| c.status() == Some("ACTIVE")).cloned();
        let (arn, action) = match active {
            Some(c) => (c.cluster_arn().unwrap_or_default().to_string(), "adopted"),
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

impl super::facts::Facts for Cluster {}
