//! `aws.logs.log_group`: a CloudWatch Logs group with its retention kept.

use ca_a2a_flow_engine::{
    DestroyOptions, KindDoc, OutputSpec, Outputs, ParamProblem, Plan, Step, StepContext, StepError,
};
use serde::Deserialize;
use serde_json::{Value as Json, json};

use super::owner::stack_problems;
use super::{AwsResult, Owner};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    pub stack: String,
    #[serde(default)]
    pub region: Option<String>,
    /// Like /ecs/ca-a2a/orchestrator.
    pub name: String,
    #[serde(default = "seven")]
    pub retention_days: i32,
}

fn seven() -> i32 {
    7
}

const RETENTIONS: &[i32] =
    &[1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653];

pub struct LogGroup;

impl Step for LogGroup {
    type Params = Params;
    const KIND: &'static str = "aws.logs.log_group";

    async fn plan(&self, _ctx: &StepContext, p: Params) -> Result<Plan, StepError> {
        let logs = aws_sdk_cloudwatchlogs::Client::new(&super::config(p.region.as_deref()).await);
        let found = logs
            .describe_log_groups()
            .log_group_name_prefix(&p.name)
            .send()
            .await
            .or_step_error("logs:DescribeLogGroups")?;
        Ok(match found.log_groups().iter().find(|g| g.log_group_name() == Some(p.name.as_str())) {
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
        let logs = aws_sdk_cloudwatchlogs::Client::new(&super::config(p.region.as_deref()).await);
        let gone = logs
            .delete_log_group()
            .log_group_name(&p.name)
            .send()
            .await
            .or_absent("logs:DeleteLogGroup", &["ResourceNotFoundException"])?;
        Ok(super::removed(ctx, "log group", &gone.map(|_| vec![p.name.clone()]).unwrap_or_default()))
    }

    fn doc(&self) -> KindDoc {
        KindDoc {
            summary: "A CloudWatch Logs group; its retention is set and kept.",
            params: super::stack_params(vec![
                ("name", "string", "the group's name, like /ecs/ca-a2a/orchestrator (required)"),
                ("retention_days", "integer", "default 7"),
            ]),
            outputs: vec![
                ("name", "the group's name"),
                ("arn", "its ARN"),
                ("action", "`created`, `adopted` or `updated`"),
            ],
            example: "- id: orchestrator-logs\n  uses: aws.logs.log_group\n  with: { stack: \"${{ inputs.stack }}\", name: \"/ecs/${{ inputs.stack }}/orchestrator\" }\n",
        }
    }

    fn outputs(&self, _params: &Json) -> OutputSpec {
        OutputSpec::Fixed(vec!["name", "arn", "action"])
    }

    fn problems(&self, p: &Params) -> Vec<ParamProblem> {
        let mut problems = stack_problems(&p.stack);
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
        let found = logs
            .describe_log_groups()
            .log_group_name_prefix(&p.name)
            .send()
            .await
            .or_step_error("logs:DescribeLogGroups")?;
        let existing = found.log_groups().iter().find(|g| g.log_group_name() == Some(p.name.as_str())).cloned();
        let mut action = "adopted";
        let retention = match &existing {
            Some(g) => g.retention_in_days(),
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
        Ok(Outputs::from([
            ("name".into(), json!(p.name)),
            ("arn".into(), json!(arn)),
            ("action".into(), json!(action)),
        ]))
    }
}

use super::cost::{CostLine, Pricing};
use super::facts::Facts;

impl Facts for LogGroup {
    fn monthly(_: &Params, at: &Pricing) -> Result<Vec<CostLine>, String> {
        let (gb, price) = (at.assume.log_ingest_gb_per_group, at.prices.logs_ingest_gb);
        Ok(vec![CostLine::new(format!("{gb} GB ingested x ${price}"), gb * price)])
    }
}
