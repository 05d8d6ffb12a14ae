//! `aws.iam.role`: a role named `<stack>-<step>` that a service assumes (the
//! ECS task execution role: pull from ECR, read the stack's secrets, write
//! logs), with managed policies attached and one inline policy kept as declared.

use ca_a2a_flow_engine::{
    DestroyOptions, KindDoc, Outputs, ParamProblem, Parameters, Plan, Step, StepContext, StepError, outputs,
};
use serde::Deserialize;
use serde_json::{Value as Json, json};

use super::owner::{Claim, Holder, Stack, claim, planned_claim};
use super::{AwsResult, Owner, built};

#[derive(Debug, Deserialize, Parameters)]
#[serde(deny_unknown_fields)]
#[kind(name = "aws.iam.role", step = Role)]
pub struct Params {
    #[param(doc = super::STACK)]
    pub stack: Stack,
    /// AWS region for the client (IAM itself is global)
    pub region: Option<String>,
    /// the principal, like ecs-tasks.amazonaws.com (required)
    pub service: String,
    /// policies to attach
    #[serde(default)]
    pub managed_policy_arns: Vec<String>,
    /// inline policy: { actions, resources } each
    #[serde(default)]
    pub statements: Vec<Statement>,
    /// also an instance profile of the same name holding the role (EC2)
    #[serde(default)]
    pub instance_profile: bool,
    #[param(doc = super::owner::TAKE_OVER)]
    #[serde(default)]
    pub take_over: bool,
}

/// The role `name` and whose it is, if it exists.
async fn found(
    iam: &aws_sdk_iam::Client,
    owner: &Owner,
    name: &str,
) -> Result<Option<(aws_sdk_iam::types::Role, Holder)>, StepError> {
    let got = iam.get_role().role_name(name).send().await.or_absent("iam:GetRole", &["NoSuchEntity"])?;
    Ok(got.and_then(|g| g.role().cloned()).map(|r| {
        let holder = owner.holder(r.tags().iter().map(|t| (t.key(), t.value())));
        (r, holder)
    }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Statement {
    pub actions: Vec<String>,
    pub resources: Vec<String>,
}

const INLINE: &str = "ca-a2a-flow";

impl Step for Role {
    async fn plan(&self, ctx: &StepContext, p: Params) -> Result<Plan, StepError> {
        let owner = Owner::new(&p.stack, ctx);
        let name = owner.short_name(64);
        let iam = aws_sdk_iam::Client::new(&super::config(p.region.as_deref()).await);
        let Some((_, holder)) = found(&iam, &owner, &name).await? else {
            return Ok(Plan::create());
        };
        let mut changes = match planned_claim(&owner, "role", &name, &holder, p.take_over) {
            Ok(changes) => changes,
            Err(conflict) => return Ok(conflict),
        };
        let attached = attached_policies(&iam, &name, false).await?;
        let missing = p.managed_policy_arns.iter().filter(|a| !attached.contains(a));
        changes.extend(missing.map(|a| format!("attach {a}")));
        if p.statements.is_empty() && has_inline(&iam, &name).await? {
            changes.push(format!("remove the inline policy {INLINE} (no statements declared)"));
        }
        Ok(Plan::changes(changes))
    }

    const DESTROYS: bool = true;

    async fn destroy(&self, ctx: &StepContext, p: Params, _o: &DestroyOptions) -> Result<Outputs, StepError> {
        let owner = Owner::new(&p.stack, ctx);
        let name = owner.short_name(64);
        let iam = aws_sdk_iam::Client::new(&super::config(p.region.as_deref()).await);
        match found(&iam, &owner, &name).await? {
            None => return Ok(super::removed(ctx, "role", &[])),
            Some((_, Holder::Ours)) => {}
            Some((_, holder)) => {
                ctx.log(format!("left alone: {}", owner.not_ours("role", &name, &holder)));
                return Ok(super::removed(ctx, "role", &[]));
            }
        }
        for policy in &attached_policies(&iam, &name, false).await? {
            iam.detach_role_policy()
                .role_name(&name)
                .policy_arn(policy)
                .send()
                .await
                .or_absent("iam:DetachRolePolicy", &["NoSuchEntity"])?;
        }
        let inline = iam.list_role_policies().role_name(&name).send().await.or_step_error("iam:ListRolePolicies")?;
        for policy in inline.policy_names() {
            iam.delete_role_policy()
                .role_name(&name)
                .policy_name(policy)
                .send()
                .await
                .or_absent("iam:DeleteRolePolicy", &["NoSuchEntity"])?;
        }
        let mut removed = Vec::new();
        if p.instance_profile
            && iam
                .get_instance_profile()
                .instance_profile_name(&name)
                .send()
                .await
                .or_absent("iam:GetInstanceProfile", &["NoSuchEntity"])?
                .is_some()
        {
            iam.remove_role_from_instance_profile()
                .instance_profile_name(&name)
                .role_name(&name)
                .send()
                .await
                .or_absent("iam:RemoveRoleFromInstanceProfile", &["NoSuchEntity"])?;
            iam.delete_instance_profile()
                .instance_profile_name(&name)
                .send()
                .await
                .or_absent("iam:DeleteInstanceProfile", &["NoSuchEntity"])?;
            removed.push(format!("instance profile {name}"));
        }
        iam.delete_role().role_name(&name).send().await.or_absent("iam:DeleteRole", &["NoSuchEntity"])?;
        removed.push(name);
        Ok(super::removed(ctx, "role", &removed))
    }

    const DOC: KindDoc = KindDoc {
        summary: "An IAM role named `<stack>-<step>` assumed by a service, with managed policies and one inline policy.",
        outputs: &[
            ("arn", "the role's ARN"),
            ("name", "its name"),
            ("account_id", "the AWS account (from the ARN)"),
            ("instance_profile", "the instance profile's name (empty without `instance_profile: true`)"),
            ("action", "`created`, `adopted` or `taken-over` (`take_over`)"),
        ],
        example: "- id: execution-role\n  uses: aws.iam.role\n  with:\n    stack: \"${{ inputs.stack }}\"\n    service: ecs-tasks.amazonaws.com\n    managed_policy_arns: [arn:aws:iam::aws:policy/service-role/AmazonECSTaskExecutionRolePolicy]\n",
    };

    fn problems(&self, p: &Params) -> Vec<ParamProblem> {
        let mut problems = Vec::new();
        if !p.service.ends_with(".amazonaws.com") && !p.service.contains("${{") {
            problems.push(ParamProblem::at(
                &["service"],
                format!("`{}` is not a service principal like ecs-tasks.amazonaws.com", p.service),
            ));
        }
        problems
    }

    async fn run(&self, ctx: &StepContext, p: Params) -> Result<Outputs, StepError> {
        let owner = Owner::new(&p.stack, ctx);
        let name = owner.short_name(64);
        let iam = aws_sdk_iam::Client::new(&super::config(p.region.as_deref()).await);
        let (arn, action) = match found(&iam, &owner, &name).await? {
            Some((r, holder)) => match claim(&owner, "role", &name, &holder, p.take_over)? {
                Claim::Adopt => (r.arn().to_string(), "adopted"),
                Claim::TakeOver => {
                    ctx.progress(format!("taking over role {name}: tagging it as stack {}'s", p.stack));
                    let mut tags = Vec::new();
                    for (k, v) in owner.tags() {
                        tags.push(built("tag", aws_sdk_iam::types::Tag::builder().key(k).value(v).build())?);
                    }
                    iam.tag_role().role_name(&name).set_tags(Some(tags)).send().await.or_step_error("iam:TagRole")?;
                    (r.arn().to_string(), "taken-over")
                }
            },
            None => {
                let trust = json!({
                    "Version": "2012-10-17",
                    "Statement": [{ "Effect": "Allow", "Principal": { "Service": p.service }, "Action": "sts:AssumeRole" }]
                });
                let mut tags = Vec::new();
                for (k, v) in owner.tags() {
                    tags.push(built("tag", aws_sdk_iam::types::Tag::builder().key(k).value(v).build())?);
                }
                ctx.progress(format!("creating role {name}"));
                let created = iam
                    .create_role()
                    .role_name(&name)
                    .assume_role_policy_document(trust.to_string())
                    .description(format!("ca-a2a-flow stack {} step {}", owner.stack, owner.step))
                    .set_tags(Some(tags))
                    .send()
                    .await
                    .or_step_error("iam:CreateRole")?;
                (created.role().map(|r| r.arn().to_string()).unwrap_or_default(), "created")
            }
        };
        let fresh = action == "created";
        let attached = attached_policies(&iam, &name, fresh).await?;
        for policy in &p.managed_policy_arns {
            if attached.contains(policy) {
                continue;
            }
            iam.attach_role_policy()
                .role_name(&name)
                .policy_arn(policy)
                .send()
                .await
                .or_step_error_created("iam:AttachRolePolicy", fresh)?;
            ctx.log(format!("{name}: attached {policy}"));
        }
        if !p.statements.is_empty() {
            let statements: Vec<Json> = p
                .statements
                .iter()
                .map(|s| json!({ "Effect": "Allow", "Action": s.actions, "Resource": s.resources }))
                .collect();
            let doc = json!({ "Version": "2012-10-17", "Statement": statements });
            iam.put_role_policy()
                .role_name(&name)
                .policy_name(INLINE)
                .policy_document(doc.to_string())
                .send()
                .await
                .or_step_error_created("iam:PutRolePolicy", fresh)?;
        } else if !fresh && has_inline(&iam, &name).await? {
            // Declared without statements: what an earlier declaration allowed goes.
            let removed = iam.delete_role_policy().role_name(&name).policy_name(INLINE).send().await;
            if removed.or_absent("iam:DeleteRolePolicy", &["NoSuchEntity"])?.is_some() {
                ctx.log(format!("{name}: inline policy {INLINE} removed (no statements declared)"));
            }
        }
        let profile = if p.instance_profile { instance_profile(ctx, &iam, &name, fresh).await? } else { String::new() };
        let account = arn.split(':').nth(4).unwrap_or_default().to_string();
        ctx.log(format!("{action} role {name}"));
        Ok(outputs! { arn, name, account_id: account, instance_profile: profile, action })
    }
}

/// Whether the role holds this kind's inline policy.
async fn has_inline(iam: &aws_sdk_iam::Client, name: &str) -> Result<bool, StepError> {
    let mut pages = iam.list_role_policies().role_name(name).into_paginator().send();
    while let Some(page) = pages.next().await {
        if page.or_step_error("iam:ListRolePolicies")?.policy_names().iter().any(|n| n == INLINE) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The instance profile named like the role, holding it: found, else made.
async fn instance_profile(
    ctx: &StepContext,
    iam: &aws_sdk_iam::Client,
    name: &str,
    fresh: bool,
) -> Result<String, StepError> {
    let found = iam
        .get_instance_profile()
        .instance_profile_name(name)
        .send()
        .await
        .or_absent("iam:GetInstanceProfile", &["NoSuchEntity"])?;
    let holds_role = match found.as_ref().and_then(|f| f.instance_profile()) {
        Some(profile) => profile.roles().iter().any(|r| r.role_name() == name),
        None => {
            iam.create_instance_profile()
                .instance_profile_name(name)
                .send()
                .await
                .or_step_error("iam:CreateInstanceProfile")?;
            ctx.log(format!("created instance profile {name}"));
            false
        }
    };
    if !holds_role {
        iam.add_role_to_instance_profile()
            .instance_profile_name(name)
            .role_name(name)
            .send()
            .await
            .or_step_error_created("iam:AddRoleToInstanceProfile", fresh || found.is_none())?;
    }
    Ok(name.to_string())
}

/// The ARNs of the managed policies attached to the role `name`, every page
/// of the answer (IAM answers 100 at a time).
async fn attached_policies(iam: &aws_sdk_iam::Client, name: &str, fresh: bool) -> Result<Vec<String>, StepError> {
    let mut pages = iam.list_attached_role_policies().role_name(name).into_paginator().send();
    let mut arns = Vec::new();
    while let Some(page) = pages.next().await {
        let page = page.or_step_error_created("iam:ListAttachedRolePolicies", fresh)?;
        arns.extend(page.attached_policies().iter().filter_map(|a| a.policy_arn().map(String::from)));
    }
    Ok(arns)
}

impl super::facts::Facts for Role {}
