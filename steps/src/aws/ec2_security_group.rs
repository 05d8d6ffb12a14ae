//! `aws.ec2.security_group`: a security group with its ingress rules (from CIDR
//! blocks or from other groups), converged: missing rules are added; rules it
//! does not declare are reported, not revoked (a person may have added them).

use aws_sdk_ec2::types::{IpPermission, IpRange, ResourceType, UserIdGroupPair};
use ca_a2a_flow_engine::{
    DestroyOptions, KindDoc, Outputs, ParamProblem, Parameters, Plan, Step, StepContext, StepError, outputs,
};
use serde::Deserialize;
use serde_json::json;

use super::owner::Stack;
use super::{AwsResult, Owner};

fn tcp() -> String {
    "tcp".into()
}

#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct Ingress {
    pub port: u16,
    #[serde(default = "tcp")]
    pub protocol: String,
    /// Allow from this CIDR block...
    pub cidr: Option<String>,
    /// ...or from this security group.
    pub source_group_id: Option<String>,
    pub description: Option<String>,
}

#[derive(Debug, Deserialize, Parameters)]
#[serde(deny_unknown_fields)]
#[kind(name = "aws.ec2.security_group", step = SecurityGroup)]
pub struct Params {
    #[param(doc = super::STACK)]
    pub stack: Stack,
    #[param(doc = super::REGION)]
    pub region: Option<String>,
    /// the VPC (required)
    pub vpc_id: String,
    /// group description (default: its name)
    pub description: Option<String>,
    /// { port, protocol (tcp), cidr | source_group_id, description } each
    #[serde(default)]
    pub ingress: Vec<Ingress>,
}

/// Whether `perms` already allow `rule`.
pub(crate) fn allows(perms: &[IpPermission], rule: &Ingress) -> bool {
    perms.iter().any(|p| {
        p.ip_protocol() == Some(rule.protocol.as_str())
            && p.from_port() == Some(i32::from(rule.port))
            && p.to_port() == Some(i32::from(rule.port))
            && match (&rule.cidr, &rule.source_group_id) {
                (Some(cidr), _) => p.ip_ranges().iter().any(|r| r.cidr_ip() == Some(cidr.as_str())),
                (_, Some(group)) => p.user_id_group_pairs().iter().any(|g| g.group_id() == Some(group.as_str())),
                _ => false,
            }
    })
}

pub(crate) fn permission(rule: &Ingress) -> IpPermission {
    let b = IpPermission::builder()
        .ip_protocol(&rule.protocol)
        .from_port(i32::from(rule.port))
        .to_port(i32::from(rule.port));
    match (&rule.cidr, &rule.source_group_id) {
        (Some(cidr), _) => {
            b.ip_ranges(IpRange::builder().cidr_ip(cidr).set_description(rule.description.clone()).build())
        }
        (_, Some(group)) => b.user_id_group_pairs(
            UserIdGroupPair::builder().group_id(group).set_description(rule.description.clone()).build(),
        ),
        _ => b,
    }
    .build()
}

/// Where a rule lets traffic in from: its CIDR block or its group.
pub(crate) fn source(rule: &Ingress) -> &str {
    rule.cidr.as_deref().or(rule.source_group_id.as_deref()).unwrap_or_default()
}

/// A rule to add, as a plan says it.
pub(crate) fn adding(rule: &Ingress) -> String {
    format!("add ingress {}/{} from {}", rule.protocol, rule.port, source(rule))
}

/// What is wrong with rules as written, each at `ingress.N`.
pub(crate) fn rule_problems(ingress: &[Ingress]) -> Vec<ParamProblem> {
    let mut problems = Vec::new();
    for (i, r) in ingress.iter().enumerate() {
        let i = i.to_string();
        if r.cidr.is_some() == r.source_group_id.is_some() {
            problems
                .push(ParamProblem::at(&["ingress", &i], "a rule needs exactly one of `cidr` and `source_group_id`"));
        }
        if !matches!(r.protocol.as_str(), "tcp" | "udp") {
            problems.push(ParamProblem::at(&["ingress", &i, "protocol"], "use tcp or udp"));
        }
    }
    problems
}

impl Step for SecurityGroup {
    async fn plan(&self, ctx: &StepContext, p: Params) -> Result<Plan, StepError> {
        let owner = Owner::new(&p.stack, ctx);
        let ec2 = super::ec2(p.region.as_deref()).await;
        Ok(match super::owned::one::<aws_sdk_ec2::types::SecurityGroup>(&ec2, &owner).await? {
            None => Plan::create(),
            Some(g) => {
                let missing = p.ingress.iter().filter(|r| !allows(g.ip_permissions(), r));
                Plan::changes(missing.map(adding).collect())
            }
        })
    }

    const DESTROYS: bool = true;

    async fn destroy(&self, ctx: &StepContext, p: Params, _o: &DestroyOptions) -> Result<Outputs, StepError> {
        let ec2 = super::ec2(p.region.as_deref()).await;
        super::owned::delete_all::<aws_sdk_ec2::types::SecurityGroup>(ctx, &ec2, &Owner::new(&p.stack, ctx)).await
    }

    const DOC: KindDoc = KindDoc {
        summary: "A security group (named <stack>-<step>) with ingress from CIDRs or other groups; missing rules are added.",
        outputs: &[("group_id", "the group's id"), ("action", "`created` or `adopted`")],
        example: "- id: alb-sg\n  uses: aws.ec2.security_group\n  with:\n    stack: \"${{ inputs.stack }}\"\n    vpc_id: \"${{ steps.vpc.outputs.vpc_id }}\"\n    ingress: [{ port: 80, cidr: 0.0.0.0/0 }, { port: 443, cidr: 0.0.0.0/0 }]\n",
    };

    fn problems(&self, p: &Params) -> Vec<ParamProblem> {
        rule_problems(&p.ingress)
    }

    async fn run(&self, ctx: &StepContext, p: Params) -> Result<Outputs, StepError> {
        let owner = Owner::new(&p.stack, ctx);
        let ec2 = super::ec2(p.region.as_deref()).await;
        let description = p.description.clone().unwrap_or_else(|| owner.name());
        let (id, action) = converge(ctx, &ec2, &owner, &p.vpc_id, &description, &p.ingress).await?;
        Ok(outputs! { group_id: id, action })
    }
}

/// The security group `owner` owns in `vpc_id`, made if there is none, with
/// every rule of `ingress` (missing ones added; undeclared ones reported and
/// kept): its id, and whether it was `created` or `adopted`. Another step's
/// own group (a drill's scratch access) is made the same way.
pub(crate) async fn converge(
    ctx: &StepContext,
    ec2: &aws_sdk_ec2::Client,
    owner: &Owner,
    vpc_id: &str,
    description: &str,
    ingress: &[Ingress],
) -> Result<(String, &'static str), StepError> {
    let owned = super::owned::one::<aws_sdk_ec2::types::SecurityGroup>(ec2, owner).await?;
    let (id, existing, action) = match owned {
        Some(g) if g.vpc_id() != Some(vpc_id) => {
            let detail = format!("is in {}, not in {vpc_id}", g.vpc_id().unwrap_or("?"));
            let hint = "the stack's VPC changed: destroy the old network first";
            return Err(owner.conflict("security group", g.group_id().unwrap_or("?"), detail, hint));
        }
        Some(g) => (g.group_id().unwrap_or_default().to_string(), g.ip_permissions().to_vec(), "adopted"),
        None => {
            ctx.progress(format!("creating security group {}", owner.name()));
            let created = ec2
                .create_security_group()
                .group_name(owner.name())
                .description(description)
                .vpc_id(vpc_id)
                .tag_specifications(owner.ec2_tag_spec(ResourceType::SecurityGroup))
                .send()
                .await
                .or_step_error("ec2:CreateSecurityGroup")?;
            let id = created.group_id().unwrap_or_default().to_string();
            super::owned::visible::<aws_sdk_ec2::types::SecurityGroup>(ctx, ec2, owner, &id).await?;
            (id, Vec::new(), "created")
        }
    };
    let missing: Vec<IpPermission> = ingress.iter().filter(|r| !allows(&existing, r)).map(permission).collect();
    if !missing.is_empty() {
        let n = missing.len();
        ec2.authorize_security_group_ingress()
            .group_id(&id)
            .set_ip_permissions(Some(missing))
            .send()
            .await
            .or_step_error_created("ec2:AuthorizeSecurityGroupIngress", action == "created")?;
        ctx.log(format!("{id}: added {n} ingress rule(s)"));
    }
    let undeclared = existing
        .iter()
        .filter(|perm| {
            !ingress
                .iter()
                .any(|r| perm.from_port() == Some(i32::from(r.port)) && perm.ip_protocol() == Some(r.protocol.as_str()))
        })
        .count();
    if undeclared > 0 {
        ctx.log(format!("{id}: {undeclared} ingress rule(s) not in the workflow were left in place"));
    }
    ctx.log(format!("{action} security group {id} ({})", owner.name()));
    Ok((id, action))
}

use super::facts::{Facts, Leftover, Sweep};

impl Facts for SecurityGroup {
    fn console(o: &std::collections::BTreeMap<String, serde_json::Value>, r: &str) -> Option<String> {
        use super::facts::{console_in, output, url_part};
        let id = output(o, "group_id")?;
        console_in(r, &format!("ec2/home?region={r}#SecurityGroup:groupId={}", url_part(id)))
    }

    const GC_RANK: u8 = 1;

    async fn leftovers(at: &Sweep) -> Result<Vec<Leftover>, ca_a2a_flow_engine::StepError> {
        super::owned::leftovers(at, 0.0, |g: &aws_sdk_ec2::types::SecurityGroup| json!({ "vpc_id": g.vpc_id() })).await
    }
}
