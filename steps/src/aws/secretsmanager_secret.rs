//! `aws.secretsmanager.secret`: a secret named `<stack>/<step>` whose value is a
//! random password generated inside AWS (GetRandomPassword), never written in a
//! workflow, never logged, never stored in the state database: only the ARN is
//! an output. A secret scheduled for deletion is restored, not recreated under
//! a new name. An existing secret's value is never changed by a run.

use ca_a2a_flow_engine::{
    DestroyOptions, KindDoc, Outputs, ParamProblem, Parameters, Plan, Step, StepContext, StepError, outputs,
};
use serde::Deserialize;
use serde_json::json;

use super::owner::{Claim, Holder, Stack, claim, planned_claim};
use super::{AwsResult, Owner};

#[derive(Debug, Deserialize, Parameters)]
#[serde(deny_unknown_fields)]
#[kind(name = "aws.secretsmanager.secret", step = Secret)]
pub struct Params {
    #[param(doc = super::STACK)]
    pub stack: Stack,
    #[param(doc = super::REGION)]
    pub region: Option<String>,
    /// what the secret is for
    pub description: Option<String>,
    /// store {"username", "password"} JSON instead of the bare password
    pub username: Option<String>,
    /// password length (default 32)
    #[serde(default = "default_length")]
    pub length: i64,
    /// default true
    #[serde(default = "yes")]
    pub exclude_punctuation: bool,
    #[param(doc = super::owner::TAKE_OVER)]
    #[serde(default)]
    pub take_over: bool,
}

/// Whose the secret `s`, found by its name, is.
fn holder(owner: &Owner, s: &aws_sdk_secretsmanager::operation::describe_secret::DescribeSecretOutput) -> Holder {
    owner.holder(s.tags().iter().filter_map(|t| Some((t.key()?, t.value()?))))
}

fn default_length() -> i64 {
    32
}
fn yes() -> bool {
    true
}

/// The secret's name: `<stack>/<step>` (a `for_each` step `db[a]`: `<stack>/db.a`).
pub fn secret_name(stack: &str, step_id: &str) -> String {
    format!("{stack}/{}", super::owner::step_tag(step_id))
}

impl Step for Secret {
    async fn plan(&self, ctx: &StepContext, p: Params) -> Result<Plan, StepError> {
        let owner = Owner::new(&p.stack, ctx);
        let name = format!("{}/{}", owner.stack, owner.step);
        let sm = aws_sdk_secretsmanager::Client::new(&super::config(p.region.as_deref()).await);
        let found = describe(&sm, &name).await?;
        let Some(s) = found else { return Ok(Plan::create()) };
        let mut changes = match planned_claim(&owner, "secret", &name, &holder(&owner, &s), p.take_over) {
            Ok(changes) => changes,
            Err(conflict) => return Ok(conflict),
        };
        if s.deleted_date().is_some() {
            changes.push(format!("restore {name} (scheduled for deletion)"));
        }
        Ok(Plan::changes(changes))
    }

    const DESTROYS: bool = true;

    fn kept_on_destroy(&self, options: &DestroyOptions) -> Option<&'static str> {
        (!options.force_delete_secrets)
            .then_some("secrets are scheduled for deletion in 7 days (--force-delete-secrets deletes them now)")
    }

    async fn destroy(&self, ctx: &StepContext, p: Params, o: &DestroyOptions) -> Result<Outputs, StepError> {
        let owner = Owner::new(&p.stack, ctx);
        let name = format!("{}/{}", owner.stack, owner.step);
        let sm = aws_sdk_secretsmanager::Client::new(&super::config(p.region.as_deref()).await);
        let found = describe(&sm, &name).await?;
        let Some(found) = found else { return Ok(super::removed(ctx, "secret", &[])) };
        let whose = holder(&owner, &found);
        if whose != Holder::Ours {
            ctx.log(format!("left alone: {}", owner.not_ours("secret", &name, &whose)));
            return Ok(super::removed(ctx, "secret", &[]));
        }
        if found.deleted_date().is_some() && !o.force_delete_secrets {
            ctx.log(format!("secret {name} is already scheduled for deletion"));
            return Ok(super::removed(ctx, "secret", &[name]));
        }
        let mut delete = sm.delete_secret().secret_id(&name);
        delete = if o.force_delete_secrets {
            delete.force_delete_without_recovery(true)
        } else {
            delete.recovery_window_in_days(7)
        };
        delete.send().await.or_absent("secretsmanager:DeleteSecret", &["ResourceNotFoundException"])?;
        if !o.force_delete_secrets {
            ctx.log(format!("secret {name}: deleted in 7 days; until then `aws secretsmanager restore-secret --secret-id {name}` brings it back"));
        }
        Ok(super::removed(ctx, "secret", &[name]))
    }

    const DOC: KindDoc = KindDoc {
        summary: "A Secrets Manager secret holding a password generated inside AWS; restored if scheduled for deletion; adopted only with the stack's tags (one without them is refused unless `take_over`); only its ARN leaves AWS.",
        outputs: &[
            ("arn", "the secret's ARN"),
            ("name", "its name"),
            ("action", "`created`, `adopted`, `taken-over` (`take_over`) or `restored`"),
        ],
        example: "- id: keycloak-admin\n  uses: aws.secretsmanager.secret\n  with: { stack: \"${{ inputs.stack }}\", username: admin, description: Keycloak admin }\n",
    };

    fn problems(&self, p: &Params) -> Vec<ParamProblem> {
        let mut problems = Vec::new();
        if !(16..=4096).contains(&p.length) {
            problems.push(ParamProblem::at(&["length"], "use 16 to 4096 characters"));
        }
        problems
    }

    async fn run(&self, ctx: &StepContext, p: Params) -> Result<Outputs, StepError> {
        let owner = Owner::new(&p.stack, ctx);
        let name = format!("{}/{}", owner.stack, owner.step);
        let sm = aws_sdk_secretsmanager::Client::new(&super::config(p.region.as_deref()).await);
        let found = describe(&sm, &name).await?;
        let mut taken = false;
        if let Some(s) = &found {
            if claim(&owner, "secret", &name, &holder(&owner, s), p.take_over)? == Claim::TakeOver {
                taken = true;
                ctx.progress(format!("taking over secret {name}: tagging it as stack {}'s", p.stack));
                let tags = owner
                    .tags()
                    .into_iter()
                    .map(|(k, v)| aws_sdk_secretsmanager::types::Tag::builder().key(k).value(v).build());
                let tag = sm.tag_resource().secret_id(&name).set_tags(Some(tags.collect()));
                tag.send().await.or_step_error("secretsmanager:TagResource")?;
            }
        }
        let (arn, action) = match found {
            Some(s) if s.deleted_date().is_some() => {
                ctx.progress(format!("restoring secret {name} (it was scheduled for deletion)"));
                sm.restore_secret().secret_id(&name).send().await.or_step_error("secretsmanager:RestoreSecret")?;
                ctx.log(format!("secret {name} was scheduled for deletion: restored it, with its value"));
                (s.arn().unwrap_or_default().to_string(), "restored")
            }
            Some(s) => (s.arn().unwrap_or_default().to_string(), if taken { "taken-over" } else { "adopted" }),
            None => {
                let generated = sm
                    .get_random_password()
                    .password_length(p.length)
                    .exclude_punctuation(p.exclude_punctuation)
                    .require_each_included_type(true)
                    .send()
                    .await
                    .or_step_error("secretsmanager:GetRandomPassword")?;
                let password = generated.random_password().unwrap_or_default().to_string();
                if password.is_empty() {
                    return Err(StepError::retryable("secretsmanager:GetRandomPassword returned no password"));
                }
                ctx.secret(&password);
                let value = match &p.username {
                    Some(u) => json!({ "username": u, "password": password }).to_string(),
                    None => password,
                };
                let tags = owner
                    .tags()
                    .into_iter()
                    .map(|(k, v)| aws_sdk_secretsmanager::types::Tag::builder().key(k).value(v).build());
                ctx.progress(format!("creating secret {name}"));
                let created = sm
                    .create_secret()
                    .name(&name)
                    .set_description(p.description.clone())
                    .secret_string(value)
                    .client_request_token(owner.client_token("initial-version"))
                    .set_tags(Some(tags.collect()))
                    .send()
                    .await
                    .or_step_error("secretsmanager:CreateSecret")?;
                (created.arn().unwrap_or_default().to_string(), "created")
            }
        };
        ctx.log(format!("{action} secret {name}"));
        Ok(outputs! { arn, name, action })
    }
}

/// The secret called `name` (`None`: there is none, not even scheduled for deletion).
async fn describe(
    sm: &aws_sdk_secretsmanager::Client,
    name: &str,
) -> Result<Option<aws_sdk_secretsmanager::operation::describe_secret::DescribeSecretOutput>, StepError> {
    sm.describe_secret()
        .secret_id(name)
        .send()
        .await
        .or_absent("secretsmanager:DescribeSecret", &["ResourceNotFoundException"])
}

use super::cost::{CostLine, Pricing};
use super::facts::{Facts, Leftover, Sweep};

impl Facts for Secret {
    fn console(o: &std::collections::BTreeMap<String, serde_json::Value>, r: &str) -> Option<String> {
        use super::facts::{console_in, output, url_part};
        let name = output(o, "name")?;
        console_in(r, &format!("secretsmanager/secret?name={}&region={r}", url_part(name)))
    }

    const GC_RANK: u8 = 0;

    fn monthly(_: &Params, at: &Pricing) -> Result<Vec<CostLine>, String> {
        Ok(vec![CostLine::new("1 secret", at.prices.secret_month)])
    }

    async fn leftovers(at: &Sweep) -> Result<Vec<Leftover>, ca_a2a_flow_engine::StepError> {
        use aws_sdk_secretsmanager::types::{Filter, FilterNameStringType};
        let sm = aws_sdk_secretsmanager::Client::new(&at.config);
        let ours = Filter::builder().key(FilterNameStringType::TagKey).values(super::owner::TAG_STACK).build();
        let monthly = at.prices.as_ref().map_or(0.0, |p| p.secret_month);
        let mut pages = sm.list_secrets().filters(ours).into_paginator().send();
        let mut found = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| super::classify(&super::failure("secretsmanager:ListSecrets", &e)))?;
            for s in page.secret_list().iter().filter(|s| s.deleted_date().is_none()) {
                let tags =
                    s.tags().iter().filter_map(|t| Some((t.key()?.to_string(), t.value()?.to_string()))).collect();
                found.push(Leftover::new(tags, s.name(), monthly, json!({})));
            }
        }
        Ok(found)
    }
}
