//! `aws.ecr.repository`: an ECR repository (scan on push), found by name.

use aws_sdk_ecr::types::ImageScanningConfiguration;
use ca_a2a_flow_engine::{
    DestroyOptions, KindDoc, OutputSpec, Outputs, ParamProblem, Plan, Step, StepContext, StepError,
};
use serde::Deserialize;
use serde_json::{Value as Json, json};

use super::owner::stack_problems;
use super::{AwsResult, Owner, built};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    pub stack: String,
    #[serde(default)]
    pub region: Option<String>,
    /// Like ca-a2a/orchestrator.
    pub name: String,
}

pub struct Repository;

impl Step for Repository {
    type Params = Params;
    const KIND: &'static str = "aws.ecr.repository";

    async fn plan(&self, _ctx: &StepContext, p: Params) -> Result<Plan, StepError> {
        let ecr = aws_sdk_ecr::Client::new(&super::config(p.region.as_deref()).await);
        let found = ecr
            .describe_repositories()
            .repository_names(&p.name)
            .send()
            .await
            .or_absent("ecr:DescribeRepositories", &["RepositoryNotFoundException"])?;
        Ok(if found.is_some() { Plan::adopt() } else { Plan::create() })
    }

    const DESTROYS: bool = true;

    fn kept_on_destroy(&self, options: &DestroyOptions) -> Option<&'static str> {
        (!options.delete_images).then_some("image repositories are kept (--delete-images deletes them)")
    }

    async fn destroy(&self, ctx: &StepContext, p: Params, o: &DestroyOptions) -> Result<Outputs, StepError> {
        if !o.delete_images {
            return Ok(super::kept(ctx, &format!("repository {} and its images", p.name), "--delete-images"));
        }
        let ecr = aws_sdk_ecr::Client::new(&super::config(p.region.as_deref()).await);
        let gone = ecr
            .delete_repository()
            .repository_name(&p.name)
            .force(true)
            .send()
            .await
            .or_absent("ecr:DeleteRepository", &["RepositoryNotFoundException"])?;
        Ok(super::removed(ctx, "repository", &gone.map(|_| vec![p.name.clone()]).unwrap_or_default()))
    }

    fn doc(&self) -> KindDoc {
        KindDoc {
            summary: "An ECR repository with scan on push; adopted when it exists.",
            params: super::stack_params(vec![("name", "string", "like ca-a2a/orchestrator (required)")]),
            outputs: vec![
                ("uri", "the repository URI, for image references"),
                ("arn", "its ARN"),
                ("registry_id", "the registry (account) id"),
                ("action", "`created` or `adopted`"),
            ],
            example: "- id: orchestrator-repo\n  uses: aws.ecr.repository\n  with: { stack: \"${{ inputs.stack }}\", name: \"${{ inputs.stack }}/orchestrator\" }\n",
        }
    }

    fn outputs(&self, _params: &Json) -> OutputSpec {
        OutputSpec::Fixed(vec!["uri", "arn", "registry_id", "action"])
    }

    fn problems(&self, p: &Params) -> Vec<ParamProblem> {
        let mut problems = stack_problems(&p.stack);
        let ok = p.name.contains("${{")
            || (p.name.len() >= 2
                && p.name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "-_./".contains(c)));
        if !ok {
            problems.push(ParamProblem::at(&["name"], format!("`{}`: use lowercase letters, digits and -_./", p.name)));
        }
        problems
    }

    async fn run(&self, ctx: &StepContext, p: Params) -> Result<Outputs, StepError> {
        let owner = Owner::new(&p.stack, ctx);
        let ecr = aws_sdk_ecr::Client::new(&super::config(p.region.as_deref()).await);
        let found = ecr
            .describe_repositories()
            .repository_names(&p.name)
            .send()
            .await
            .or_absent("ecr:DescribeRepositories", &["RepositoryNotFoundException"])?;
        let (repo, action) = match found.and_then(|f| f.repositories().first().cloned()) {
            Some(r) => (r, "adopted"),
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
        Ok(Outputs::from([
            ("uri".into(), json!(uri)),
            ("arn".into(), json!(repo.repository_arn().unwrap_or_default())),
            ("registry_id".into(), json!(repo.registry_id().unwrap_or_default())),
            ("action".into(), json!(action)),
        ]))
    }
}

use super::cost::{CostLine, Pricing};
use super::facts::Facts;

impl Facts for Repository {
    fn monthly(_: &Params, at: &Pricing) -> Result<Vec<CostLine>, String> {
        let (gb, price) = (at.assume.ecr_gb_per_repository, at.prices.ecr_gb_month);
        Ok(vec![CostLine::new(format!("{gb} GB stored x ${price}"), gb * price)])
    }
}
