//! `aws.ecr.repository`: an ECR repository (scan on push), found by name.

use aws_sdk_ecr::types::ImageScanningConfiguration;
use ca_a2a_flow_engine::{
    DestroyOptions, KindDoc, Outputs, ParamProblem, Parameters, Plan, Step, StepContext, StepError, outputs,
};
use serde::Deserialize;

use super::owner::{Claim, Holder, Stack, claim, name_problems, planned_claim};
use super::{AwsResult, Owner, built};

#[derive(Debug, Deserialize, Parameters)]
#[serde(deny_unknown_fields)]
#[kind(name = "aws.ecr.repository", step = Repository)]
pub struct Params {
    #[param(doc = super::STACK)]
    pub stack: Stack,
    #[param(doc = super::REGION)]
    pub region: Option<String>,
    /// like ca-a2a/orchestrator (required)
    pub name: String,
    #[param(doc = super::owner::TAKE_OVER)]
    #[serde(default)]
    pub take_over: bool,
}

impl Step for Repository {
    async fn plan(&self, ctx: &StepContext, p: Params) -> Result<Plan, StepError> {
        let owner = Owner::new(&p.stack, ctx);
        let ecr = aws_sdk_ecr::Client::new(&super::config(p.region.as_deref()).await);
        Ok(match found(&ecr, &owner, &p.name).await? {
            None => Plan::create(),
            Some((_, holder)) => match planned_claim(&owner, "repository", &p.name, &holder, p.take_over) {
                Ok(changes) => Plan::changes(changes),
                Err(conflict) => conflict,
            },
        })
    }

    const DESTROYS: bool = true;

    fn kept_on_destroy(&self, options: &DestroyOptions) -> Option<&'static str> {
        (!options.delete_images).then_some("image repositories are kept (--delete-images deletes them)")
    }

    async fn destroy(&self, ctx: &StepContext, p: Params, o: &DestroyOptions) -> Result<Outputs, StepError> {
        if !o.delete_images {
            return Ok(super::kept(ctx, &format!("repository {} and its images", p.name), "--delete-images"));
        }
        let owner = Owner::new(&p.stack, ctx);
        let ecr = aws_sdk_ecr::Client::new(&super::config(p.region.as_deref()).await);
        match found(&ecr, &owner, &p.name).await? {
            None => return Ok(super::removed(ctx, "repository", &[])),
            Some((_, Holder::Ours)) => {}
            Some((_, holder)) => {
                ctx.log(format!("left alone: {}", owner.not_ours("repository", &p.name, &holder)));
                return Ok(super::removed(ctx, "repository", &[]));
            }
        }
        let gone = ecr
            .delete_repository()
            .repository_name(&p.name)
            .force(true)
            .send()
            .await
            .or_absent("ecr:DeleteRepository", &["RepositoryNotFoundException"])?;
        Ok(super::removed(ctx, "repository", &gone.map(|_| vec![p.name.clone()]).unwrap_or_default()))
    }

    const DOC: KindDoc = KindDoc {
        summary: "An ECR repository with scan on push; adopted when it exists with the stack's tags (one without them is refused unless `take_over`).",
        outputs: &[
            ("uri", "the repository URI, for image references"),
            ("arn", "its ARN"),
            ("registry_id", "the registry (account) id"),
            ("action", "`created`, `adopted` or `taken-over` (`take_over`)"),
        ],
        example: "- id: orchestrator-repo\n  uses: aws.ecr.repository\n  with: { stack: \"${{ inputs.stack }}\", name: \"${{ inputs.stack }}/orchestrator\" }\n",
    };

    fn problems(&self, p: &Params) -> Vec<ParamProblem> {
        let allowed = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_./".contains(c);
        name_problems("name", &p.name, 2, allowed, "use lowercase letters, digits and -_./")
    }

    async fn run(&self, ctx: &StepContext, p: Params) -> Result<Outputs, StepError> {
        let owner = Owner::new(&p.stack, ctx);
        let ecr = aws_sdk_ecr::Client::new(&super::config(p.region.as_deref()).await);
        let (repo, action) = match found(&ecr, &owner, &p.name).await? {
            Some((r, holder)) => match claim(&owner, "repository", &p.name, &holder, p.take_over)? {
                Claim::Adopt => (r, "adopted"),
                Claim::TakeOver => {
                    ctx.progress(format!("taking over repository {}: tagging it as stack {}'s", p.name, p.stack));
                    let mut tags = Vec::new();
                    for (k, v) in owner.tags() {
                        tags.push(built("tag", aws_sdk_ecr::types::Tag::builder().key(k).value(v).build())?);
                    }
                    let arn = r.repository_arn().unwrap_or_default();
                    ecr.tag_resource()
                        .resource_arn(arn)
                        .set_tags(Some(tags))
                        .send()
                        .await
                        .or_step_error("ecr:TagResource")?;
                    (r, "taken-over")
                }
            },
            None => {
                let mut tags = Vec::new();
                for (k, v) in owner.tags() {
                    tags.push(built("tag", aws_sdk_ecr::types::Tag::builder().key(k).value(v).build())?);
                }
                ctx.progress(format!("creating repository {}", p.name));
                let created = ecr
                    .create_repository()
                    .repository_name(&p.name)
                    .image_scanning_configuration(ImageScanningConfiguration::builder().scan_on_push(true).build())
                    .set_tags(Some(tags))
                    .send()
                    .await
                    .or_step_error("ecr:CreateRepository")?;
                let repo = created
                    .repository()
                    .cloned()
                    .ok_or_else(|| StepError::retryable("ecr:CreateRepository answered without the repository"))?;
                (repo, "created")
            }
        };
        let uri = repo.repository_uri().unwrap_or_default().to_string();
        ctx.log(format!("{action} repository {uri}"));
        Ok(
            outputs! { uri, arn: repo.repository_arn().unwrap_or_default(), registry_id: repo.registry_id().unwrap_or_default(), action },
        )
    }
}

/// The repository `name` and whose it is, if it exists.
async fn found(
    ecr: &aws_sdk_ecr::Client,
    owner: &Owner,
    name: &str,
) -> Result<Option<(aws_sdk_ecr::types::Repository, Holder)>, StepError> {
    let Some(repo) = find(ecr, name).await? else { return Ok(None) };
    let tags = ecr
        .list_tags_for_resource()
        .resource_arn(repo.repository_arn().unwrap_or_default())
        .send()
        .await
        .or_step_error("ecr:ListTagsForResource")?;
    let holder = owner.holder(tags.tags().iter().map(|t| (t.key(), t.value())));
    Ok(Some((repo, holder)))
}

/// The repository `name`, if it exists.
async fn find(ecr: &aws_sdk_ecr::Client, name: &str) -> Result<Option<aws_sdk_ecr::types::Repository>, StepError> {
    let found = ecr
        .describe_repositories()
        .repository_names(name)
        .send()
        .await
        .or_absent("ecr:DescribeRepositories", &["RepositoryNotFoundException"])?;
    Ok(found.and_then(|f| f.repositories().first().cloned()))
}

use super::cost::{CostLine, Pricing};
use super::facts::Facts;

impl Facts for Repository {
    fn console(o: &std::collections::BTreeMap<String, serde_json::Value>, r: &str) -> Option<String> {
        use super::facts::{console_in, output, url_part};
        // arn:aws:ecr:REGION:ACCOUNT:repository/NAME
        let name = output(o, "arn")?.split_once(":repository/")?.1;
        let account = output(o, "registry_id")?;
        console_in(r, &format!("ecr/repositories/private/{}/{}?region={r}", url_part(account), url_part(name)))
    }

    fn monthly(_: &Params, at: &Pricing) -> Result<Vec<CostLine>, String> {
        let (gb, price) = (at.assume.ecr_gb_per_repository, at.prices.ecr_gb_month);
        Ok(vec![CostLine::new(format!("{gb} GB stored x ${price}"), gb * price)])
    }
}
