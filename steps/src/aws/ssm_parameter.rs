//! `aws.ssm.parameter`: a plain-text SSM parameter `/<stack>/<name>` holding a
//! value other tools read (the load balancer's address, an image reference),
//! kept as declared. It carries the ownership tags from its creation; one of
//! that name that this stack does not own is a conflict, never overwritten.
//! Secret values belong in `aws.secretsmanager.secret`, never here.

use aws_sdk_ssm::types::{ParameterStringFilter, ParameterTier, ParameterType, ResourceTypeForTagging, Tag};
use ca_a2a_flow_engine::{
    DestroyOptions, KindDoc, Outputs, ParamProblem, Parameters, Plan, Step, StepContext, StepError, outputs,
};
use serde::Deserialize;
use serde_json::json;

use super::facts::{Facts, Leftover, Sweep};
use super::owner::{Stack, TAG_STACK, name_problems};
use super::{AwsResult, Owner, built};

#[derive(Debug, Deserialize, Parameters)]
#[serde(deny_unknown_fields)]
#[kind(name = "aws.ssm.parameter", step = SsmParameter)]
pub struct Params {
    #[param(doc = super::STACK)]
    pub stack: Stack,
    #[param(doc = super::REGION)]
    pub region: Option<String>,
    /// the name below the stack's path: `alb-dns` is the parameter /<stack>/alb-dns (required)
    pub name: String,
    /// the value, plain text up to 4 KB (required; never a secret)
    pub value: String,
    /// what the value is for
    pub description: Option<String>,
}

/// Standard parameters hold up to 4 KB (PutParameter API reference).
const MAX_VALUE: usize = 4096;

impl Step for SsmParameter {
    async fn plan(&self, _ctx: &StepContext, p: Params) -> Result<Plan, StepError> {
        let ssm = aws_sdk_ssm::Client::new(&super::config(p.region.as_deref()).await);
        let path = full_name(&p.stack, &p.name);
        Ok(match found(&ssm, &path).await? {
            None => Plan::create(),
            Some((_, owner)) if owner.as_deref() != Some(&*p.stack) => Plan::conflict(not_ours(&path, owner)),
            Some((now, _)) if now.value() != Some(p.value.as_str()) => Plan::changes(vec!["value changes".into()]),
            Some(_) => Plan::adopt(),
        })
    }

    const DESTROYS: bool = true;

    async fn destroy(&self, ctx: &StepContext, p: Params, _o: &DestroyOptions) -> Result<Outputs, StepError> {
        let ssm = aws_sdk_ssm::Client::new(&super::config(p.region.as_deref()).await);
        let path = full_name(&p.stack, &p.name);
        match found(&ssm, &path).await? {
            Some((_, owner)) if owner.as_deref() == Some(&*p.stack) => {
                let gone = ssm.delete_parameter().name(&path).send().await;
                gone.or_absent("ssm:DeleteParameter", &["ParameterNotFound"])?;
                Ok(super::removed(ctx, "parameter", &[path]))
            }
            Some(_) => {
                ctx.log(format!("kept parameter {path}: another stack's, or nobody's"));
                Ok(super::removed(ctx, "parameter", &[]))
            }
            None => Ok(super::removed(ctx, "parameter", &[])),
        }
    }

    const DOC: KindDoc = KindDoc {
        summary: "A plain-text SSM parameter /<stack>/<name> that other tools read; kept as declared, never another stack's.",
        outputs: &[
            ("name", "its full name"),
            ("version", "its version"),
            ("action", "`created`, `adopted` or `updated`"),
        ],
        example: "- id: alb-address\n  uses: aws.ssm.parameter\n  with:\n    stack: \"${{ inputs.stack }}\"\n    name: alb-dns\n    value: \"${{ steps.alb.outputs.dns_name }}\"\n",
    };

    fn problems(&self, p: &Params) -> Vec<ParamProblem> {
        let below_the_path = !p.name.starts_with('/');
        let allowed = |c: char| below_the_path && (c.is_ascii_alphanumeric() || "_.-/".contains(c));
        let rule = "letters, digits and _.-/ below the stack's path (no leading /), like alb-dns";
        let mut problems = name_problems("name", &p.name, 1, allowed, rule);
        if p.value.is_empty() || p.value.len() > MAX_VALUE {
            problems.push(ParamProblem::at(&["value"], format!("1 to {MAX_VALUE} bytes (it has {})", p.value.len())));
        }
        problems
    }

    async fn run(&self, ctx: &StepContext, p: Params) -> Result<Outputs, StepError> {
        let owner = Owner::new(&p.stack, ctx);
        let ssm = aws_sdk_ssm::Client::new(&super::config(p.region.as_deref()).await);
        let path = full_name(&p.stack, &p.name);
        let put = || {
            let put = ssm.put_parameter().name(&path).value(&p.value).r#type(ParameterType::String);
            put.tier(ParameterTier::Standard).set_description(p.description.clone())
        };
        let (version, action) = match found(&ssm, &path).await? {
            None => {
                ctx.progress(format!("creating parameter {path}"));
                let mut tags = Vec::new();
                for (k, v) in owner.tags() {
                    tags.push(built("tag", Tag::builder().key(k).value(v).build())?);
                }
                let made = put().set_tags(Some(tags)).send().await.or_step_error("ssm:PutParameter")?;
                (made.version(), "created")
            }
            Some((_, holder)) if holder.as_deref() != Some(&*p.stack) => {
                return Err(StepError::fatal(not_ours(&path, holder))
                    .with_hint("choose another `name`, or delete that parameter if nothing uses it"));
            }
            Some((now, _)) if now.value() == Some(p.value.as_str()) => (now.version(), "adopted"),
            Some(_) => {
                // Tags go with a creation only: an overwrite keeps the ones it has.
                let made = put().overwrite(true).send().await.or_step_error("ssm:PutParameter")?;
                (made.version(), "updated")
            }
        };
        ctx.log(format!("{action} parameter {path} (version {version})"));
        Ok(outputs! { name: path, version, action })
    }
}

/// `/<stack>/<name>`.
fn full_name(stack: &str, name: &str) -> String {
    format!("/{stack}/{name}")
}

fn not_ours(path: &str, owner: Option<String>) -> String {
    match owner {
        Some(stack) => format!("parameter {path} belongs to stack `{stack}`"),
        None => format!("parameter {path} exists without ca-a2a-flow's ownership tags"),
    }
}

/// The parameter `path` and the stack its tags name, if it exists.
async fn found(
    ssm: &aws_sdk_ssm::Client,
    path: &str,
) -> Result<Option<(aws_sdk_ssm::types::Parameter, Option<String>)>, StepError> {
    let got = ssm.get_parameter().name(path).send().await.or_absent("ssm:GetParameter", &["ParameterNotFound"])?;
    let Some(parameter) = got.and_then(|g| g.parameter().cloned()) else { return Ok(None) };
    let stack = tags_of(ssm, path).await?.into_iter().find(|(k, _)| k == TAG_STACK).map(|(_, v)| v);
    Ok(Some((parameter, stack)))
}

/// The parameter `path`'s tags, as key and value.
async fn tags_of(ssm: &aws_sdk_ssm::Client, path: &str) -> Result<Vec<(String, String)>, StepError> {
    let tags = ssm.list_tags_for_resource().resource_type(ResourceTypeForTagging::Parameter).resource_id(path);
    let tags = tags.send().await.or_step_error("ssm:ListTagsForResource")?;
    Ok(tags.tag_list().iter().map(|t| (t.key().to_string(), t.value().to_string())).collect())
}

impl Facts for SsmParameter {
    const GC_RANK: u8 = 0;

    /// Standard parameters cost nothing; ours carry the stack tag, whose value
    /// starts with a letter (the stack naming rule): one filter finds them all.
    async fn leftovers(at: &Sweep) -> Result<Vec<Leftover>, StepError> {
        let ssm = aws_sdk_ssm::Client::new(&at.config);
        let letters: Vec<String> = ('a'..='z').map(String::from).collect();
        let ours = ParameterStringFilter::builder().key(format!("tag:{TAG_STACK}")).option("BeginsWith");
        let ours = built("filter", ours.set_values(Some(letters)).build())?;
        let mut pages = ssm.describe_parameters().parameter_filters(ours).into_paginator().send();
        let mut found = Vec::new();
        while let Some(page) = pages.next().await {
            for p in page.or_step_error("ssm:DescribeParameters")?.parameters() {
                let Some(path) = p.name() else { continue };
                let tags = tags_of(&ssm, path).await?;
                let stack = tags.iter().find(|(k, _)| k == TAG_STACK).map(|(_, v)| v.clone()).unwrap_or_default();
                let name = path.strip_prefix(&format!("/{stack}/")).unwrap_or(path).to_string();
                found.push(Leftover::new(tags, Some(path), 0.0, json!({ "name": name, "value": "-" })));
            }
        }
        Ok(found)
    }
}
