//! `aws.logs.log_group`: a CloudWatch Logs group with its retention kept.

use ca_a2a_flow_engine::{
    DestroyOptions, KindDoc, Outputs, ParamProblem, Parameters, Plan, Step, StepContext, StepError, outputs,
};
use serde::Deserialize;

use super::owner::{Claim, Holder, Stack, claim, planned_claim};
use super::{AwsResult, Owner};

#[derive(Debug, Deserialize, Parameters)]
#[serde(deny_unknown_fields)]
#[kind(name = "aws.logs.log_group", step = LogGroup)]
pub struct Params {
    #[param(doc = super::STACK)]
    pub stack: Stack,
    #[param(doc = super::REGION)]
    pub region: Option<String>,
    /// the group's name, like /ecs/ca-a2a/orchestrator (required)
    pub name: String,
    /// default 7
    #[serde(default = "seven")]
    pub retention_days: i32,
    #[param(doc = super::owner::TAKE_OVER)]
    #[serde(default)]
    pub take_over: bool,
}

fn seven() -> i32 {
    7
}

const RETENTIONS: &[i32] =
    &[1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653];

impl Step for LogGroup {
    async fn plan(&self, ctx: &StepContext, p: Params) -> Result<Plan, StepError> {
        let owner = Owner::new(&p.stack, ctx);
        let logs = aws_sdk_cloudwatchlogs::Client::new(&super::config(p.region.as_deref()).await);
        let found = find(&logs, &p.name).await?;
        if found.is_some() {
            match planned_claim(&owner, "log group", &p.name, &holder(&logs, &owner, &p.name).await?, p.take_over) {
                Ok(changes) if !changes.is_empty() => return Ok(Plan::changes(changes)),
                Ok(_) => {}
                Err(conflict) => return Ok(conflict),
            }
        }
        Ok(match found {
            None => Plan::create(),
            Some(g) if g.retention_in_days() != Some(p.retention_days) => Plan::changes(vec![format!(
                "retention_days: {} -> {}",
                g.retention_in_days().map(|d| d.to_string()).unwrap_or("never expire".into()),
                p.retention_days
            )]),
            Some(_) => Plan::adopt(),
        })
    }

    const DESTROYS: bool = true;

    async fn destroy(&self, ctx: &StepContext, p: Params, _o: &DestroyOptions) -> Result<Outputs, StepError> {
        let owner = Owner::new(&p.stack, ctx);
        let logs = aws_sdk_cloudwatchlogs::Client::new(&super::config(p.region.as_deref()).await);
        if find(&logs, &p.name).await?.is_none() {
            return Ok(super::removed(ctx, "log group", &[]));
        }
        let holder = holder(&logs, &owner, &p.name).await?;
        if holder != Holder::Ours {
            ctx.log(format!("left alone: {}", owner.not_ours("log group", &p.name, &holder)));
            return Ok(super::removed(ctx, "log group", &[]));
        }
        let gone = logs
            .delete_log_group()
            .log_group_name(&p.name)
            .send()
            .await
            .or_absent("logs:DeleteLogGroup", &["ResourceNotFoundException"])?;
        Ok(super::removed(ctx, "log group", &gone.map(|_| vec![p.name.clone()]).unwrap_or_default()))
    }

    const DOC: KindDoc = KindDoc {
        summary: "A CloudWatch Logs group; its retention is set and kept.",
        outputs: &[
            ("name", "the group's name"),
            ("arn", "its ARN"),
            ("action", "`created`, `adopted`, `updated` or `taken-over`"),
        ],
        example: "- id: orchestrator-logs\n  uses: aws.logs.log_group\n  with: { stack: \"${{ inputs.stack }}\", name: \"/ecs/${{ inputs.stack }}/orchestrator\" }\n",
    };

    fn problems(&self, p: &Params) -> Vec<ParamProblem> {
        let mut problems = Vec::new();
        if !RETENTIONS.contains(&p.retention_days) {
            problems.push(ParamProblem::at(
                &["retention_days"],
                format!("{}: CloudWatch Logs takes one of {RETENTIONS:?}", p.retention_days),
            ));
        }
        problems
    }

    async fn run(&self, ctx: &StepContext, p: Params) -> Result<Outputs, StepError> {
        let owner = Owner::new(&p.stack, ctx);
        let logs = aws_sdk_cloudwatchlogs::Client::new(&super::config(p.region.as_deref()).await);
        let existing = find(&logs, &p.name).await?;
        let mut action = "adopted";
        let retention = match &existing {
            Some(g) => {
                if claim(&owner, "log group", &p.name, &holder(&logs, &owner, &p.name).await?, p.take_over)?
                    == Claim::TakeOver
                {
                    ctx.progress(format!("taking over log group {}: tagging it as stack {}'s", p.name, p.stack));
                    let arn = g.arn().unwrap_or_default().trim_end_matches(":*").to_string();
                    logs.tag_resource()
                        .resource_arn(arn)
                        .set_tags(Some(owner.tags().into_iter().collect()))
                        .send()
                        .await
                        .or_step_error("logs:TagResource")?;
                    action = "taken-over";
                }
                g.retention_in_days()
            }
            None => {
                ctx.progress(format!("creating log group {}", p.name));
                let mut create = logs.create_log_group().log_group_name(&p.name);
                for (k, v) in owner.tags() {
                    create = create.tags(k, v);
                }
                create.send().await.or_step_error("logs:CreateLogGroup")?;
                action = "created";
                None
            }
        };
        if retention != Some(p.retention_days) {
            logs.put_retention_policy()
                .log_group_name(&p.name)
                .retention_in_days(p.retention_days)
                .send()
                .await
                .or_step_error_created("logs:PutRetentionPolicy", action == "created")?;
            if action == "adopted" {
                action = "updated";
            }
        }
        let arn = existing.and_then(|g| g.arn().map(String::from)).unwrap_or_default();
        ctx.log(format!("{action} log group {} ({} days)", p.name, p.retention_days));
        Ok(outputs! { name: p.name, arn, action })
    }
}

/// Whose the log group `name` is, from its tags.
async fn holder(logs: &aws_sdk_cloudwatchlogs::Client, owner: &Owner, name: &str) -> Result<Holder, StepError> {
    #[allow(deprecated)] // ListTagsForResource needs the ARN; this reads by name, as moto and AWS both answer.
    let tags = logs.list_tags_log_group().log_group_name(name).send().await.or_step_error("logs:ListTagsLogGroup")?;
    let tags = tags.tags().map(|t| t.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect::<Vec<_>>());
    Ok(owner.holder(tags.unwrap_or_default()))
}

/// The log group `name`, if it exists (the first of the groups it prefixes).
async fn find(
    logs: &aws_sdk_cloudwatchlogs::Client,
    name: &str,
) -> Result<Option<aws_sdk_cloudwatchlogs::types::LogGroup>, StepError> {
    let found =
        logs.describe_log_groups().log_group_name_prefix(name).send().await.or_step_error("logs:DescribeLogGroups")?;
    Ok(found.log_groups().iter().find(|g| g.log_group_name() == Some(name)).cloned())
}

use super::cost::{CostLine, Pricing};
use super::facts::Facts;

impl Facts for LogGroup {
    fn console(o: &std::collections::BTreeMap<String, serde_json::Value>, r: &str) -> Option<String> {
        use super::facts::{console_in, output, url_part};
        // The console writes the group's name percent-encoded twice.
        let name = url_part(&url_part(output(o, "name")?));
        console_in(r, &format!("cloudwatch/home?region={r}#logsV2:log-groups/log-group/{name}"))
    }

    fn monthly(_: &Params, at: &Pricing) -> Result<Vec<CostLine>, String> {
        let (gb, price) = (at.assume.log_ingest_gb_per_group, at.prices.logs_ingest_gb);
        Ok(vec![CostLine::new(format!("{gb} GB ingested x ${price}"), gb * price)])
    }
}
