//! `aws.rds.db_subnet_group`: the DB subnet group `<stack>-<step>`. One that
//! exists with subnets of another VPC (left by an earlier attempt, as in the
//! bash deployment) is a fatal error with the fix; nothing is created or changed then.

use std::collections::BTreeSet;

use ca_a2a_flow_engine::{
    DestroyOptions, KindDoc, Outputs, ParamProblem, Parameters, Plan, Step, StepContext, StepError, outputs,
};
use serde::Deserialize;
use serde_json::json;

use super::owner::{Claim, Holder, Stack, claim, planned_claim};
use super::{AwsResult, Owner};

#[derive(Debug, Deserialize, Parameters)]
#[serde(deny_unknown_fields)]
#[kind(name = "aws.rds.db_subnet_group", step = DbSubnetGroup)]
pub struct Params {
    #[param(doc = super::STACK)]
    pub stack: Stack,
    #[param(doc = super::REGION)]
    pub region: Option<String>,
    /// subnets in two AZs or more, one VPC (required)
    pub subnet_ids: Vec<String>,
    /// free text
    pub description: Option<String>,
    #[param(doc = super::owner::TAKE_OVER)]
    #[serde(default)]
    pub take_over: bool,
}

impl Step for DbSubnetGroup {
    async fn plan(&self, ctx: &StepContext, p: Params) -> Result<Plan, StepError> {
        let owner = Owner::new(&p.stack, ctx);
        let name = owner.name();
        let config = super::config(p.region.as_deref()).await;
        let rds = aws_sdk_rds::Client::new(&config);
        let Some(g) = find(&rds, &name).await? else { return Ok(Plan::create()) };
        let changes =
            match planned_claim(&owner, "DB subnet group", &name, &holder(&rds, &owner, &g).await?, p.take_over) {
                Ok(changes) => changes,
                Err(conflict) => return Ok(conflict),
            };
        if p.subnet_ids.iter().any(|s| s.contains("${{")) {
            return Ok(Plan::conflict(format!(
                "DB subnet group {name} already exists (in {}) while the stack's subnets do not: it was left by an earlier deployment",
                g.vpc_id().unwrap_or("?")
            )));
        }
        let ec2 = aws_sdk_ec2::Client::new(&config);
        let subnets = subnets(&ec2, &p.subnet_ids).await?;
        let vpc = subnets.first().and_then(|s| s.vpc_id()).unwrap_or_default();
        Ok(if g.vpc_id() == Some(vpc) {
            Plan::changes(changes)
        } else {
            Plan::conflict(format!("DB subnet group {name} is in {}, the subnets in {vpc}", g.vpc_id().unwrap_or("?")))
        })
    }

    const DESTROYS: bool = true;

    async fn destroy(&self, ctx: &StepContext, p: Params, _o: &DestroyOptions) -> Result<Outputs, StepError> {
        let owner = Owner::new(&p.stack, ctx);
        let name = owner.name();
        let rds = aws_sdk_rds::Client::new(&super::config(p.region.as_deref()).await);
        if let Some(g) = find(&rds, &name).await? {
            let whose = holder(&rds, &owner, &g).await?;
            if whose != Holder::Ours {
                ctx.log(format!("left alone: {}", owner.not_ours("DB subnet group", &name, &whose)));
                return Ok(super::removed(ctx, "DB subnet group", &[]));
            }
        }
        let gone = rds
            .delete_db_subnet_group()
            .db_subnet_group_name(&name)
            .send()
            .await
            .or_absent("rds:DeleteDBSubnetGroup", &["DBSubnetGroupNotFoundFault"])?;
        Ok(super::removed(ctx, "DB subnet group", &gone.map(|_| vec![name]).unwrap_or_default()))
    }

    const DOC: KindDoc = KindDoc {
        summary: "A DB subnet group `<stack>-<step>`; one found in another VPC is a fatal error with the fix; adopted only with the stack's tags (one without them is refused unless `take_over`).",
        outputs: &[
            ("name", "the group's name"),
            ("vpc_id", "its VPC"),
            ("action", "`created`, `adopted` or `updated`"),
        ],
        example: "- id: db-subnets\n  uses: aws.rds.db_subnet_group\n  with:\n    stack: \"${{ inputs.stack }}\"\n    subnet_ids: [\"${{ steps.private-a.outputs.subnet_id }}\", \"${{ steps.private-b.outputs.subnet_id }}\"]\n",
    };

    fn problems(&self, p: &Params) -> Vec<ParamProblem> {
        let mut problems = Vec::new();
        if p.subnet_ids.len() < 2 {
            problems.push(ParamProblem::at(&["subnet_ids"], "RDS needs subnets in two AZs or more"));
        }
        problems
    }

    async fn run(&self, ctx: &StepContext, p: Params) -> Result<Outputs, StepError> {
        let owner = Owner::new(&p.stack, ctx);
        let name = owner.name();
        let config = super::config(p.region.as_deref()).await;
        let rds = aws_sdk_rds::Client::new(&config);
        let ec2 = aws_sdk_ec2::Client::new(&config);
        let subnets = subnets(&ec2, &p.subnet_ids).await?;
        let vpcs: BTreeSet<&str> = subnets.iter().filter_map(|s| s.vpc_id()).collect();
        if vpcs.len() != 1 {
            return Err(StepError::fatal(format!(
                "the subnets {} are in {} VPCs ({}); a DB subnet group takes one",
                p.subnet_ids.join(", "),
                vpcs.len(),
                vpcs.iter().copied().collect::<Vec<_>>().join(", ")
            ))
            .with_hint("give the private subnets of the stack's VPC"));
        }
        let vpc = vpcs.into_iter().next().unwrap_or_default().to_string();
        let description = p.description.clone().unwrap_or_else(|| format!("ca-a2a-flow stack {}", owner.stack));
        let found = find(&rds, &name).await?;
        if let Some(g) = &found {
            if claim(&owner, "DB subnet group", &name, &holder(&rds, &owner, g).await?, p.take_over)? == Claim::TakeOver
            {
                ctx.progress(format!("taking over DB subnet group {name}: tagging it as stack {}'s", p.stack));
                let tags =
                    owner.tags().into_iter().map(|(k, v)| aws_sdk_rds::types::Tag::builder().key(k).value(v).build());
                rds.add_tags_to_resource()
                    .resource_name(g.db_subnet_group_arn().unwrap_or_default())
                    .set_tags(Some(tags.collect()))
                    .send()
                    .await
                    .or_step_error("rds:AddTagsToResource")?;
            }
        }
        let action = match found {
            Some(g) if g.vpc_id() != Some(vpc.as_str()) => {
                let old = g.vpc_id().unwrap_or("?");
                return Err(StepError::fatal(format!(
                    "DB subnet group {name} already exists in {old}, but this stack's subnets are in {vpc}; nothing was created"
                ))
                .with_hint(format!(
                    "it was left by an earlier deployment: delete it (and any DB instance still in it) with `aws rds delete-db-subnet-group --db-subnet-group-name {name}`, or `ca-a2a-flow destroy` that run, then resume"
                )));
            }
            Some(g) => {
                let have: BTreeSet<&str> = g.subnets().iter().filter_map(|s| s.subnet_identifier()).collect();
                let want: BTreeSet<&str> = p.subnet_ids.iter().map(String::as_str).collect();
                if have == want {
                    "adopted"
                } else {
                    rds.modify_db_subnet_group()
                        .db_subnet_group_name(&name)
                        .db_subnet_group_description(&description)
                        .set_subnet_ids(Some(p.subnet_ids.clone()))
                        .send()
                        .await
                        .or_step_error("rds:ModifyDBSubnetGroup")?;
                    "updated"
                }
            }
            None => {
                ctx.progress(format!("creating DB subnet group {name}"));
                let tags =
                    owner.tags().into_iter().map(|(k, v)| aws_sdk_rds::types::Tag::builder().key(k).value(v).build());
                rds.create_db_subnet_group()
                    .db_subnet_group_name(&name)
                    .db_subnet_group_description(&description)
                    .set_subnet_ids(Some(p.subnet_ids.clone()))
                    .set_tags(Some(tags.collect()))
                    .send()
                    .await
                    .or_step_error("rds:CreateDBSubnetGroup")?;
                "created"
            }
        };
        ctx.log(format!("{action} DB subnet group {name} in {vpc}"));
        Ok(outputs! { name, vpc_id: vpc, action })
    }
}

use super::facts::{Facts, Leftover, Sweep};

/// Whose the group `g`, found by its name, is (DescribeDBSubnetGroups shows no tags).
async fn holder(
    rds: &aws_sdk_rds::Client,
    owner: &Owner,
    g: &aws_sdk_rds::types::DbSubnetGroup,
) -> Result<Holder, StepError> {
    let arn = g.db_subnet_group_arn().unwrap_or_default();
    let listed =
        rds.list_tags_for_resource().resource_name(arn).send().await.or_step_error("rds:ListTagsForResource")?;
    Ok(owner.holder(listed.tag_list().iter().filter_map(|t| Some((t.key()?, t.value()?)))))
}

/// The DB subnet group `name`, if it exists.
async fn find(rds: &aws_sdk_rds::Client, name: &str) -> Result<Option<aws_sdk_rds::types::DbSubnetGroup>, StepError> {
    let found = rds
        .describe_db_subnet_groups()
        .db_subnet_group_name(name)
        .send()
        .await
        .or_absent("rds:DescribeDBSubnetGroups", &["DBSubnetGroupNotFoundFault"])?;
    Ok(found.and_then(|f| f.db_subnet_groups().first().cloned()))
}

/// The subnets `ids`, as EC2 describes them.
async fn subnets(ec2: &aws_sdk_ec2::Client, ids: &[String]) -> Result<Vec<aws_sdk_ec2::types::Subnet>, StepError> {
    let found =
        ec2.describe_subnets().set_subnet_ids(Some(ids.to_vec())).send().await.or_step_error("ec2:DescribeSubnets")?;
    Ok(found.subnets().to_vec())
}

impl Facts for DbSubnetGroup {
    const GC_RANK: u8 = 0;

    /// DB subnet groups carry no tag filter: each group's tags are asked for.
    async fn leftovers(at: &Sweep) -> Result<Vec<Leftover>, ca_a2a_flow_engine::StepError> {
        let rds = aws_sdk_rds::Client::new(&at.config);
        let mut pages = rds.describe_db_subnet_groups().into_paginator().send();
        let mut found = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| super::classify(&super::failure("rds:DescribeDBSubnetGroups", &e)))?;
            for g in page.db_subnet_groups() {
                let Some(arn) = g.db_subnet_group_arn() else { continue };
                let Ok(listed) = rds.list_tags_for_resource().resource_name(arn).send().await else { continue };
                let tags = listed
                    .tag_list()
                    .iter()
                    .filter_map(|t| Some((t.key()?.to_string(), t.value()?.to_string())))
                    .collect();
                let subnets: Vec<&str> = g.subnets().iter().filter_map(|s| s.subnet_identifier()).collect();
                found.push(Leftover::new(tags, g.db_subnet_group_name(), 0.0, json!({ "subnet_ids": subnets })));
            }
        }
        Ok(found)
    }
}
