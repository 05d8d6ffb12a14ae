//! `aws.ec2.security_group_ingress`: ingress rules added to a security group
//! another step made. A group whose rule lets in another group has to wait for
//! that group; with the rule in a step of its own, the group is made at once,
//! and what uses it (a database, the longest wait of a deploy) is asked for
//! sooner, while the rule is added as soon as both groups exist. A rule is known
//! by what it says (protocol, port, source): one already there is adopted, a
//! missing one added (tagged with the stack). `destroy` revokes the rules it
//! declares, for AWS deletes no group while another group's rule lets it in.

use aws_sdk_ec2::types::{IpPermission, ResourceType, SecurityGroup};
use ca_a2a_flow_engine::{
    DestroyOptions, KindDoc, Outputs, ParamProblem, Parameters, Plan, Step, StepContext, StepError, outputs,
};

use super::ec2_security_group::{Ingress, adding, allows, permission, rule_problems, source};
use super::owner::Stack;
use super::{AwsResult, Owner};

#[derive(Debug, serde::Deserialize, Parameters)]
#[serde(deny_unknown_fields)]
#[kind(name = "aws.ec2.security_group_ingress", step = SecurityGroupIngress)]
pub struct Params {
    #[param(doc = super::STACK)]
    pub stack: Stack,
    #[param(doc = super::REGION)]
    pub region: Option<String>,
    /// the security group the rules are added to (required)
    pub group_id: String,
    /// { port, protocol (tcp), cidr | source_group_id, description } each (required)
    pub ingress: Vec<Ingress>,
}

const ABSENT: &[&str] = &["InvalidGroup.NotFound", "InvalidGroupId.Malformed"];

/// The group `id`, or `None` when AWS knows no such group.
async fn group(ec2: &aws_sdk_ec2::Client, id: &str) -> Result<Option<SecurityGroup>, StepError> {
    let found = ec2.describe_security_groups().group_ids(id).send().await;
    let found = found.or_absent("ec2:DescribeSecurityGroups", ABSENT)?;
    Ok(found.and_then(|f| f.security_groups().first().cloned()))
}

/// The rules of `p` that `existing` does not allow yet.
fn missing<'a>(p: &'a Params, existing: &'a [IpPermission]) -> impl Iterator<Item = &'a Ingress> {
    p.ingress.iter().filter(|r| !allows(existing, r))
}

impl Step for SecurityGroupIngress {
    async fn plan(&self, _ctx: &StepContext, p: Params) -> Result<Plan, StepError> {
        let ec2 = super::ec2(p.region.as_deref()).await;
        Ok(match group(&ec2, &p.group_id).await? {
            None => Plan::create(),
            Some(g) => {
                let changes: Vec<String> = missing(&p, g.ip_permissions()).map(adding).collect();
                if changes.len() == p.ingress.len() {
                    Plan { changes, ..Plan::create() }
                } else {
                    Plan::changes(changes)
                }
            }
        })
    }

    const DESTROYS: bool = true;

    async fn destroy(&self, ctx: &StepContext, p: Params, _o: &DestroyOptions) -> Result<Outputs, StepError> {
        let ec2 = super::ec2(p.region.as_deref()).await;
        let Some(g) = group(&ec2, &p.group_id).await? else {
            return Ok(super::removed(ctx, "ingress rule", &[]));
        };
        let present: Vec<&Ingress> = p.ingress.iter().filter(|r| allows(g.ip_permissions(), r)).collect();
        if !present.is_empty() {
            ctx.progress(format!("revoking {} ingress rule(s) of {}", present.len(), p.group_id));
            let revoke = ec2
                .revoke_security_group_ingress()
                .group_id(&p.group_id)
                .set_ip_permissions(Some(present.iter().map(|r| permission(r)).collect()));
            revoke.send().await.or_absent(
                "ec2:RevokeSecurityGroupIngress",
                &["InvalidGroup.NotFound", "InvalidPermission.NotFound"],
            )?;
        }
        let revoked: Vec<String> =
            present.iter().map(|r| format!("{}/{} from {} on {}", r.protocol, r.port, source(r), p.group_id)).collect();
        Ok(super::removed(ctx, "ingress rule", &revoked))
    }

    const DOC: KindDoc = KindDoc {
        summary: "Ingress rules added to a security group another step made (so that group need not wait for the groups its rules name); converged by what each rule says.",
        outputs: &[("group_id", "the group's id"), ("action", "`created` (rules added) or `adopted` (all there)")],
        example: "- id: rds-ingress\n  uses: aws.ec2.security_group_ingress\n  with:\n    stack: \"${{ inputs.stack }}\"\n    group_id: \"${{ steps.rds-sg.outputs.group_id }}\"\n    ingress: [{ port: 5432, source_group_id: \"${{ steps.keycloak-sg.outputs.group_id }}\" }]\n",
    };

    fn problems(&self, p: &Params) -> Vec<ParamProblem> {
        let mut problems = rule_problems(&p.ingress);
        if p.ingress.is_empty() {
            problems.push(ParamProblem::at(&["ingress"], "give at least one rule"));
        }
        problems
    }

    async fn run(&self, ctx: &StepContext, p: Params) -> Result<Outputs, StepError> {
        let owner = Owner::new(&p.stack, ctx);
        let ec2 = super::ec2(p.region.as_deref()).await;
        let Some(g) = group(&ec2, &p.group_id).await? else {
            return Err(StepError::fatal(format!("security group {} does not exist", p.group_id))
                .with_hint("the step that makes it must run first: name it in this step's `group_id`"));
        };
        let missing: Vec<IpPermission> = missing(&p, g.ip_permissions()).map(permission).collect();
        let action = if missing.is_empty() {
            "adopted"
        } else {
            let n = missing.len();
            ctx.progress(format!("adding {n} ingress rule(s) to {}", p.group_id));
            ec2.authorize_security_group_ingress()
                .group_id(&p.group_id)
                .set_ip_permissions(Some(missing))
                .tag_specifications(owner.ec2_tag_spec(ResourceType::SecurityGroupRule))
                .send()
                .await
                .or_step_error("ec2:AuthorizeSecurityGroupIngress")?;
            ctx.log(format!("{}: added {n} ingress rule(s)", p.group_id));
            "created"
        };
        Ok(outputs! { group_id: p.group_id.clone(), action })
    }
}

/// Free; nothing of its own for `gc` to find: its rules go with their group.
impl super::facts::Facts for SecurityGroupIngress {
    fn console(o: &std::collections::BTreeMap<String, serde_json::Value>, r: &str) -> Option<String> {
        <super::ec2_security_group::SecurityGroup as super::facts::Facts>::console(o, r)
    }
}
