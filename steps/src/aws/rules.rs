//! Rules across the steps of a workflow, applied by `validate` before any AWS
//! call: the traps of the bash deployment that one step's parameters cannot show.

use std::collections::BTreeSet;

use ca_a2a_flow_engine::template::{Ref, references};
use ca_a2a_flow_engine::{Finding, Kind, StepView};

use super::ecs_service::EcsService;
use super::elbv2_listener::Listener;
use super::elbv2_listener_rule::ListenerRule;
use serde_json::Value as Json;

/// What a parameter points at: the steps whose outputs it uses, or its literal text.
fn targets(value: Option<&Json>) -> Vec<String> {
    let Some(Json::String(s)) = value else { return Vec::new() };
    match references(s) {
        Ok(refs) if !refs.is_empty() => refs
            .into_iter()
            .filter_map(|r| match r {
                Ref::StepOutput { step, .. } => Some(format!("steps.{step}")),
                _ => None,
            })
            .collect(),
        _ => vec![s.clone()],
    }
}

/// Every ECS service's target group must be the target of a listener's default
/// action or of a listener rule; otherwise CreateService fails with "target group
/// ... does not have an associated load balancer" (the bash deployment's failure 6).
pub fn target_groups_are_reached(steps: &[StepView<'_>]) -> Vec<Finding> {
    let mut reached = BTreeSet::new();
    for s in steps {
        let param = match s.uses {
            Listener::KIND => "default_target_group_arn",
            ListenerRule::KIND => "target_group_arn",
            _ => continue,
        };
        reached.extend(targets(s.with.get(param)));
    }
    let mut found = Vec::new();
    for s in steps.iter().filter(|s| s.uses == EcsService::KIND) {
        for tg in targets(s.with.get("target_group_arn")) {
            if reached.contains(&tg) {
                continue;
            }
            found.push(Finding {
                step: s.id.to_string(),
                path: vec!["target_group_arn".into()],
                message: format!(
                    "target group `{tg}` is not the target of any listener's default action or listener rule, so ECS would refuse the service (\"target group does not have an associated load balancer\")"
                ),
                hint: Some(format!(
                    "add an `aws.elbv2.listener_rule` with `target_group_arn: \"${{{{ {tg}.outputs.arn }}}}\"`, or make it a listener's `default_target_group_arn`"
                )),
            });
        }
    }
    found
}

/// Subnets and security groups given to one resource must be in one VPC, when
/// the workflow says so statically (each made by a step with a `vpc_id`).
pub fn one_vpc_per_resource(steps: &[StepView<'_>]) -> Vec<Finding> {
    let vpc_of = |target: &str| -> Option<String> {
        let id = target.strip_prefix("steps.")?;
        let step = steps.iter().find(|s| s.id == id)?;
        targets(step.with.get("vpc_id")).into_iter().next()
    };
    let mut found = Vec::new();
    for s in steps {
        let mut vpcs: BTreeSet<String> = BTreeSet::new();
        for param in ["subnet_ids", "security_group_ids"] {
            if let Some(Json::Array(items)) = s.with.get(param) {
                for item in items {
                    for t in targets(Some(item)) {
                        vpcs.extend(vpc_of(&t));
                    }
                }
            }
        }
        if vpcs.len() > 1 {
            let list: Vec<&str> = vpcs.iter().map(String::as_str).collect();
            found.push(Finding {
                step: s.id.to_string(),
                path: vec!["security_group_ids".into()],
                message: format!("its subnets and security groups come from different VPCs: {}", list.join(", ")),
                hint: Some("AWS refuses to mix VPCs in one resource: use the subnets and groups of one VPC".into()),
            });
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn view<'a>(id: &'a str, uses: &'a str, with: &'a Json) -> StepView<'a> {
        StepView { id, uses, with }
    }

    #[test]
    fn a_service_whose_target_group_no_listener_uses_is_found() {
        let listener = json!({ "default_target_group_arn": "${{ steps.a-tg.outputs.arn }}" });
        let rule = json!({ "target_group_arn": "${{ steps.b-tg.outputs.arn }}" });
        let reached = json!({ "target_group_arn": "${{ steps.b-tg.outputs.arn }}" });
        let orphan = json!({ "target_group_arn": "${{ steps.c-tg.outputs.arn }}" });
        let steps = [
            view("http", "aws.elbv2.listener", &listener),
            view("rule", "aws.elbv2.listener_rule", &rule),
            view("b", "aws.ecs.service", &reached),
            view("c", "aws.ecs.service", &orphan),
        ];
        let found = target_groups_are_reached(&steps);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].step, "c");
        assert!(found[0].message.contains("`steps.c-tg`"));
    }

    #[test]
    fn subnets_and_groups_of_two_vpcs_in_one_resource_are_found() {
        let subnet = json!({ "vpc_id": "${{ steps.vpc.outputs.vpc_id }}" });
        let group = json!({ "vpc_id": "${{ steps.other-vpc.outputs.vpc_id }}" });
        let same = json!({ "vpc_id": "${{ steps.vpc.outputs.vpc_id }}" });
        let mixed = json!({
            "subnet_ids": ["${{ steps.subnet.outputs.subnet_id }}"],
            "security_group_ids": ["${{ steps.group.outputs.group_id }}"]
        });
        let fine = json!({
            "subnet_ids": ["${{ steps.subnet.outputs.subnet_id }}"],
            "security_group_ids": ["${{ steps.same.outputs.group_id }}"]
        });
        let steps = [
            view("subnet", "aws.ec2.subnet", &subnet),
            view("group", "aws.ec2.security_group", &group),
            view("same", "aws.ec2.security_group", &same),
            view("mixed", "aws.elbv2.load_balancer", &mixed),
            view("fine", "aws.elbv2.load_balancer", &fine),
        ];
        let found = one_vpc_per_resource(&steps);
        assert_eq!(found.iter().map(|f| f.step.as_str()).collect::<Vec<_>>(), ["mixed"]);
    }
}
