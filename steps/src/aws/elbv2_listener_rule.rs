//! `aws.elbv2.listener_rule`: a path-pattern rule at a priority of a listener,
//! forwarding to a target group. The priority is the rule's identity on its
//! listener: found there, adopted, or put back when its paths or target drifted.

use aws_sdk_elasticloadbalancingv2::types::{Action, ActionTypeEnum, PathPatternConditionConfig, Rule, RuleCondition};
use ca_a2a_flow_engine::{
    DestroyOptions, KindDoc, Outputs, ParamProblem, Parameters, Plan, Step, StepContext, StepError, outputs,
};
use serde::Deserialize;

use super::owner::Stack;
use super::{AwsResult, Owner};

#[derive(Debug, Deserialize, Parameters)]
#[serde(deny_unknown_fields)]
#[kind(name = "aws.elbv2.listener_rule", step = ListenerRule)]
pub struct Params {
    #[param(doc = super::STACK)]
    pub stack: Stack,
    #[param(doc = super::REGION)]
    pub region: Option<String>,
    /// the listener (required)
    pub listener_arn: String,
    /// 1-50000, unique on the listener (required)
    pub priority: u16,
    /// like [/extract*] (required)
    pub path_patterns: Vec<String>,
    /// where matching requests go (required)
    pub target_group_arn: String,
}

impl Step for ListenerRule {
    async fn plan(&self, _ctx: &StepContext, p: Params) -> Result<Plan, StepError> {
        let elb = super::elbv2(p.region.as_deref()).await;
        Ok(match at_priority(&elb, &p, &["ListenerNotFound", "ValidationError"]).await? {
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
        let priority = p.priority;
        let found = at_priority(&elb, &p, &["ListenerNotFound"]).await?;
        let Some(arn) = found.and_then(|r| r.rule_arn().map(String::from)) else {
            return Ok(super::removed(ctx, "listener rule", &[]));
        };
        elb.delete_rule()
            .rule_arn(&arn)
            .send()
            .await
            .or_absent("elasticloadbalancing:DeleteRule", &["RuleNotFound"])?;
        Ok(super::removed(ctx, "listener rule", &[format!("{priority} ({arn})")]))
    }

    const DOC: KindDoc = KindDoc {
        summary: "A listener rule forwarding path patterns to a target group at a priority; converged by priority.",
        outputs: &[("arn", "the rule's ARN"), ("action", "`created`, `adopted` or `updated`")],
        example: "- id: extract-rule\n  uses: aws.elbv2.listener_rule\n  with:\n    stack: \"${{ inputs.stack }}\"\n    listener_arn: \"${{ steps.http.outputs.arn }}\"\n    priority: 10\n    path_patterns: [/extract*]\n    target_group_arn: \"${{ steps.extractor-tg.outputs.arn }}\"\n",
    };

    fn problems(&self, p: &Params) -> Vec<ParamProblem> {
        let mut problems = Vec::new();
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
        let priority = p.priority;
        let (arn, action) = match at_priority(&elb, &p, &[]).await? {
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
        Ok(outputs! { arn, action })
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

/// The listener's rule at the step's priority; errors whose code is in
/// `absent` count as "none".
async fn at_priority(
    elb: &aws_sdk_elasticloadbalancingv2::Client,
    p: &Params,
    absent: &[&str],
) -> Result<Option<aws_sdk_elasticloadbalancingv2::types::Rule>, StepError> {
    let found = elb
        .describe_rules()
        .listener_arn(&p.listener_arn)
        .send()
        .await
        .or_absent("elasticloadbalancing:DescribeRules", absent)?;
    let priority = p.priority.to_string();
    Ok(found.and_then(|f| f.rules().iter().find(|r| r.priority() == Some(priority.as_str())).cloned()))
}

impl super::facts::Facts for ListenerRule {}
