//! `aws.sns.topic`: an SNS topic named `<stack>-<step>` (alarms send to it),
//! with an email subscription when an address is given. Found by its name and
//! checked for the stack's tags before it is adopted or deleted. AWS sends the
//! address a confirmation mail; until it is confirmed the subscription shows as
//! pending, and the step says so instead of waiting for a human.

use ca_a2a_flow_engine::{
    DestroyOptions, KindDoc, Outputs, ParamProblem, Parameters, Plan, Step, StepContext, StepError, outputs,
};
use serde::Deserialize;
use serde_json::json;

use super::owner::{Claim, Holder, Stack, TAG_STACK, claim, planned_claim};
use super::{AwsResult, Owner};

#[derive(Debug, Deserialize, Parameters)]
#[serde(deny_unknown_fields)]
#[kind(name = "aws.sns.topic", step = Topic)]
pub struct Params {
    #[param(doc = super::STACK)]
    pub stack: Stack,
    #[param(doc = super::REGION)]
    pub region: Option<String>,
    /// an address that gets the topic's messages by email (default none; empty counts as none)
    pub email: Option<String>,
    #[param(doc = super::owner::TAKE_OVER)]
    #[serde(default)]
    pub take_over: bool,
}

impl Params {
    fn email(&self) -> Option<&str> {
        self.email.as_deref().map(str::trim).filter(|e| !e.is_empty())
    }
}

/// Every topic ARN of the account in the client's region, every page.
async fn all(sns: &aws_sdk_sns::Client) -> Result<Vec<String>, StepError> {
    let mut pages = sns.list_topics().into_paginator().send();
    let mut arns = Vec::new();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| super::classify(&super::failure("sns:ListTopics", &e)))?;
        arns.extend(page.topics().iter().filter_map(|t| t.topic_arn().map(String::from)));
    }
    Ok(arns)
}

/// The topic named `name`, if it exists.
async fn find(sns: &aws_sdk_sns::Client, name: &str) -> Result<Option<String>, StepError> {
    Ok(all(sns).await?.into_iter().find(|arn| arn.rsplit(':').next() == Some(name)))
}

async fn tags(sns: &aws_sdk_sns::Client, arn: &str) -> Result<Vec<(String, String)>, StepError> {
    let found = sns
        .list_tags_for_resource()
        .resource_arn(arn)
        .send()
        .await
        .or_absent("sns:ListTagsForResource", &["NotFound", "ResourceNotFound"])?;
    Ok(found
        .map(|t| t.tags().iter().map(|t| (t.key().to_string(), t.value().to_string())).collect())
        .unwrap_or_default())
}

async fn holder(sns: &aws_sdk_sns::Client, owner: &Owner, arn: &str) -> Result<Holder, StepError> {
    let tags = tags(sns, arn).await?;
    Ok(owner.holder(tags.iter().map(|(k, v)| (k.as_str(), v.as_str()))))
}

fn sns_tags(owner: &Owner) -> Vec<aws_sdk_sns::types::Tag> {
    owner
        .tags()
        .into_iter()
        .filter_map(|(k, v)| aws_sdk_sns::types::Tag::builder().key(k).value(v).build().ok())
        .collect()
}

/// The topic's email subscription to `email`: its ARN, or `PendingConfirmation`.
async fn subscription(sns: &aws_sdk_sns::Client, topic: &str, email: &str) -> Result<Option<String>, StepError> {
    let mut pages = sns.list_subscriptions_by_topic().topic_arn(topic).into_paginator().send();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| super::classify(&super::failure("sns:ListSubscriptionsByTopic", &e)))?;
        if let Some(s) = page
            .subscriptions()
            .iter()
            .find(|s| s.protocol() == Some("email") && s.endpoint().is_some_and(|e| e.eq_ignore_ascii_case(email)))
        {
            return Ok(Some(s.subscription_arn().unwrap_or("PendingConfirmation").to_string()));
        }
    }
    Ok(None)
}

/// What a subscription's ARN says of it.
fn confirmed(arn: &str) -> &'static str {
    if arn.starts_with("arn:") { "confirmed" } else { "pending confirmation" }
}

impl Step for Topic {
    async fn plan(&self, ctx: &StepContext, p: Params) -> Result<Plan, StepError> {
        let owner = Owner::new(&p.stack, ctx);
        let sns = aws_sdk_sns::Client::new(&super::config(p.region.as_deref()).await);
        let Some(arn) = find(&sns, &owner.name()).await? else { return Ok(Plan::create()) };
        let mut changes =
            match planned_claim(&owner, "SNS topic", &owner.name(), &holder(&sns, &owner, &arn).await?, p.take_over) {
                Ok(changes) => changes,
                Err(conflict) => return Ok(conflict),
            };
        if let Some(email) = p.email()
            && subscription(&sns, &arn, email).await?.is_none()
        {
            changes.push(format!("email subscription: none -> {email}"));
        }
        Ok(Plan::changes(changes))
    }

    const DESTROYS: bool = true;

    async fn destroy(&self, ctx: &StepContext, p: Params, _o: &DestroyOptions) -> Result<Outputs, StepError> {
        let owner = Owner::new(&p.stack, ctx);
        let sns = aws_sdk_sns::Client::new(&super::config(p.region.as_deref()).await);
        let name = owner.name();
        let Some(arn) = find(&sns, &name).await? else { return Ok(super::removed(ctx, "SNS topic", &[])) };
        let whose = holder(&sns, &owner, &arn).await?;
        if whose != Holder::Ours {
            ctx.log(format!("left alone: {}", owner.not_ours("SNS topic", &name, &whose)));
            return Ok(super::removed(ctx, "SNS topic", &[]));
        }
        // Deleting a topic deletes its subscriptions.
        sns.delete_topic().topic_arn(&arn).send().await.or_absent("sns:DeleteTopic", &["NotFound"])?;
        Ok(super::removed(ctx, "SNS topic", &[arn]))
    }

    const DOC: KindDoc = KindDoc {
        summary: "An SNS topic `<stack>-<step>` (alarms send to it) with an email subscription; the address confirms it from AWS's mail.",
        outputs: &[
            ("arn", "the topic's ARN"),
            ("subscription", "`none`, `pending confirmation` (AWS mailed the address) or `confirmed`"),
            ("action", "`created`, `adopted`, `updated` or `taken-over`"),
        ],
        example: "- id: alerts\n  uses: aws.sns.topic\n  with: { stack: \"${{ inputs.stack }}\", email: ops@example.com }\n",
    };

    fn problems(&self, p: &Params) -> Vec<ParamProblem> {
        match p.email().filter(|e| !ca_a2a_flow_engine::template::contains_template(e)) {
            Some(e)
                if !e.contains('@') || e.starts_with('@') || e.ends_with('@') || e.contains(char::is_whitespace) =>
            {
                vec![ParamProblem::at(&["email"], format!("`{e}` is not an email address"))]
            }
            _ => Vec::new(),
        }
    }

    async fn run(&self, ctx: &StepContext, p: Params) -> Result<Outputs, StepError> {
        let owner = Owner::new(&p.stack, ctx);
        let sns = aws_sdk_sns::Client::new(&super::config(p.region.as_deref()).await);
        let name = owner.name();
        let (arn, mut action) = match find(&sns, &name).await? {
            Some(arn) => {
                let took = claim(&owner, "SNS topic", &name, &holder(&sns, &owner, &arn).await?, p.take_over)?;
                if took == Claim::TakeOver {
                    ctx.progress(format!("taking over SNS topic {name}: tagging it as stack {}'s", p.stack));
                    let tag = sns.tag_resource().resource_arn(&arn).set_tags(Some(sns_tags(&owner)));
                    tag.send().await.or_step_error("sns:TagResource")?;
                    (arn, "taken-over")
                } else {
                    (arn, "adopted")
                }
            }
            None => {
                ctx.progress(format!("creating SNS topic {name}"));
                // CreateTopic answers the existing topic's ARN for a name that
                // exists with the same tags: a repeated call makes no second one.
                let made = sns
                    .create_topic()
                    .name(&name)
                    .set_tags(Some(sns_tags(&owner)))
                    .send()
                    .await
                    .or_step_error("sns:CreateTopic")?;
                (made.topic_arn().unwrap_or_default().to_string(), "created")
            }
        };
        let mut said = "none".to_string();
        if let Some(email) = p.email() {
            let found = subscription(&sns, &arn, email).await.or_else(|e| match action {
                // A topic made a moment ago may not list its subscriptions yet.
                "created" => Ok(None),
                _ => Err(e),
            })?;
            said = match found {
                Some(sub) => confirmed(&sub).to_string(),
                None => {
                    ctx.progress(format!("subscribing {email} to SNS topic {name}"));
                    sns.subscribe()
                        .topic_arn(&arn)
                        .protocol("email")
                        .endpoint(email)
                        .send()
                        .await
                        .or_step_error_created("sns:Subscribe", action == "created")?;
                    if action == "adopted" {
                        action = "updated";
                    }
                    "pending confirmation".to_string()
                }
            };
            if said != "confirmed" {
                ctx.log(format!(
                    "{email} is not confirmed yet: AWS mailed it a link (\"AWS Notification - Subscription Confirmation\"); alarms reach it once it is followed"
                ));
            }
        }
        ctx.log(format!("{action} SNS topic {name} ({arn})"));
        Ok(outputs! { arn, subscription: said, action })
    }
}

use super::cost::{CostLine, Pricing};
use super::facts::{Facts, Leftover, Sweep};

impl Facts for Topic {
    fn console(o: &std::collections::BTreeMap<String, serde_json::Value>, r: &str) -> Option<String> {
        use super::facts::{console_in, output, url_part};
        console_in(r, &format!("sns/v3/home?region={r}#/topic/{}", url_part(output(o, "arn")?)))
    }

    fn monthly(_: &Params, _at: &Pricing) -> Result<Vec<CostLine>, String> {
        Ok(vec![CostLine::new("email notifications: the first 1,000 a month are free", 0.0)])
    }

    async fn leftovers(at: &Sweep) -> Result<Vec<Leftover>, StepError> {
        let sns = aws_sdk_sns::Client::new(&at.config);
        let mut found = Vec::new();
        for arn in all(&sns).await? {
            let tags = tags(&sns, &arn).await?;
            if tags.iter().any(|(k, _)| k == TAG_STACK) {
                found.push(Leftover::new(tags, Some(&arn), 0.0, json!({})));
            }
        }
        Ok(found)
    }
}
