//! `aws.elbv2.listener_rule`: a path-pattern rule at a priority of a listener,
//! forwarding to a target group. The priority is the rule's identity on its
//! listener: found there, adopted, or put back when its paths or target drifted.

use aws_sdk_elasticloadbalancingv2::types::{Action, ActionTypeEnum, PathPatternConditionConfig, Rule, RuleCondition};
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
    pub listener_arn: String,
    pub priority: u16,
    pub path_patterns: Vec<String>,
    pub target_group_arn: String,
}

pub struct ListenerRule;

impl Step for ListenerRule {
    type Params = Params;
    const KIND: &'static str = "aws.elbv2.listener_rule";

    async fn plan(&self, _ctx: &StepContext, p: Params) -> Result<Plan, StepError> {
        let elb = super::elbv2(p.region.as_deref()).await;
        let found = elb
            .describe_rules()
            .listener_arn(&p.listener_arn)
            .send()
            .await
            .or_absent("elasticloadbalancing:DescribeRules", &["ListenerNotFound", "ValidationError"])?;
        let priority = p.priority.to_string();
        let existing = found.and_then(|f| f.rules().iter().find(|r| r.priority() == Some(priority.as_str())).cloned());
        Ok(match existing {
            None => Plan::create(),
            Some(rule) => {
                let mut changes = Vec::new();
                if paths(&rule) != p.path_patterns {
                    changes.push(format!("path_patterns: {:?} -> {:?}", paths(&rule), p.path_patterns));
                }
                if target(&rule) != Some(p.target_group_arn.as_str()) {
                    changes.push(format!(
                        "target group: {} -> {}",
                        target(&rule).unwrap_or("none"),
                        p.target_group_arn
                    ));
                }
                Plan::changes(changes)
            }
        })
    }

    const DESTROYS: bool = true;

    async fn destroy(&self, ctx: &StepContext, p: Params, _o: &DestroyOptions) -> Result<Outputs, StepError> {
        let elb = super::elbv2(p.region.as_deref()).await;
        let found = elb
            .describe_rules()
            .listener_arn(&p.listener_arn)
            .send()
            .await
            .or_absent("elasticloadbalancing:DescribeRules", &["ListenerNotFound"])?;
        let priority = p.priority.to_string();
        let Some(arn) = found.and_then(|f| {
            f.rules()
                .iter()
                .find(|r| r.priority() == Some(priority.as_str()))
                .and_then(|r| r.rule_arn().map(String::from))
        }) else {
            return Ok(super::removed(ctx, "listener rule", &[]));
        };
        elb.delete_rule()
            .rule_arn(&arn)
            .send()
            .await
            .or_absent("elasticloadbalancing:DeleteRule", &["RuleNotFound"])?;
        Ok(super::removed(ctx, "listener rule", &[format!("{priority} ({arn})")]))
    }

    fn doc(&self) -> KindDoc {
        KindDoc {
            summary: "A listener rule forwarding path patterns to a target group at a priority; converged by priority.",
            params: super::stack_params(vec![
                ("listener_arn", "string", "the listener (required)"),
                ("priority", "integer", "1-50000, unique on the listener (required)"),
                ("path_patterns", "list", "like [/extract*] (required)"),
                ("target_group_arn", "string", "where matching requests go (required)"),
            ]),
            outputs: vec![("arn", "the rule's ARN"), ("action", "`created`, `adopted` or `updated`")],
            example: "- id: extract-rule\n  uses: aws.elbv2.listener_rule\n  with:\n    stack: \"${{ inputs.stack }}\"\n    listener_arn: \"${{ steps.http.outputs.arn }}\"\n    priority: 10\n    path_patterns: [/extract*]\n    target_group_arn: \"${{ steps.extractor-tg.outputs.arn }}\"\n",
        }
    }

    fn outputs(&self, _params: &Json) -> OutputSpec {
        OutputSpec::Fixed(vec!["arn", "action"])
    }

    fn problems(&self, p: &Params) -> Vec<ParamProblem> {
        let mut problems = stack_problems(&p.stack);
        if !(1..=50000).contains(&p.priority) {
            problems.push(ParamProblem::at(&["priority"], "must be 1 to 50000"));
        }
        if p.path_patterns.is_empty() || p.path_patterns.len() > 5 {
            problems.push(ParamProblem::at(&["path_patterns"], "give 1 to 5 path patterns"));
        }
        problems
    }

    async fn run(&self, ctx: &StepContext, p: Params) -> Result<Outputs, StepError> {
        let owner = Owner::new(&p.stack, ctx);
        let elb = super::elbv2(p.region.as_deref()).await;
        let forward = Action::builder().r#type(ActionTypeEnum::Forward).target_group_arn(&p.target_group_arn).build();
        let condition = RuleCondition::builder()
            .field("path-pattern")
            .path_pattern_config(
                PathPatternConditionConfig::builder().set_values(Some(p.path_patterns.clone())).build(),
            )
            .build();
        let found = elb
            .describe_rules()
            .listener_arn(&p.listener_arn)
            .send()
            .await
            .or_step_error("elasticloadbalancing:DescribeRules")?;
        let priority = p.priority.to_string();
        let existing = found.rules().iter().find(|r| r.priority() == Some(priority.as_str())).cloned();
        let (arn, action) = match existing {
            Some(rule) => {
                let arn = rule.rule_arn().unwrap_or_default().to_string();
                if paths(&rule) == p.path_patterns && target(&rule) == Some(p.target_group_arn.as_str()) {
                    (arn, "adopted")
                } else {
                    elb.modify_rule()
                        .rule_arn(&arn)
                        .conditions(condition)
                        .actions(forward)
                        .send()
                        .await
                        .or_step_error("elasticloadbalancing:ModifyRule")?;
                    ctx.log(format!("rule {priority}: paths or target drifted, put back"));
                    (arn, "updated")
                }
            }
            None => {
                ctx.progress(format!("creating rule {priority} {}", p.path_patterns.join(",")));
                let created = elb
                    .create_rule()
                    .listener_arn(&p.listener_arn)
                    .priority(i32::from(p.priority))
                    .conditions(condition)
                    .actions(forward)
                    .set_tags(Some(super::elbv2_tags(&owner)))
                    .send()
                    .await
                    .or_step_error("elasticloadbalancing:CreateRule")?;
                let arn = created.rules().first().and_then(|r| r.rule_arn()).unwrap_or_default();
                (arn.to_string(), "created")
            }
        };
        ctx.log(format!("{action} rule {priority}: {} -> {}", p.path_patterns.join(", "), p.target_group_arn));
        Ok(Outputs::from([("arn".into(), json!(arn)), ("action".into(), json!(action))]))
    }
}

fn paths(rule: &Rule) -> Vec<String> {
    rule.conditions()
        .iter()
        .flat_map(|c| {
            let from_config = c.path_pattern_config().map(|p| p.values().to_vec()).unwrap_or_default();
            if from_config.is_empty() { c.values().to_vec() } else { from_config }
        })
        .collect()
}

fn target(rule: &Rule) -> Option<&str> {
    rule.actions().first().and_then(|a| a.target_group_arn())
}

impl super::facts::Facts for ListenerRule {}
