//! `aws.wafv2.web_acl`: a regional WAF web ACL `<stack>-<step>` that allows by
//! default and blocks: more than `rate_limit` requests from one address in 5
//! minutes, and what AWS's managed rule groups catch (common exploits, SQL
//! injection, known bad inputs). Associated with the load balancer given.
//! Found by its name and checked for the stack's tags; rules that drifted are
//! put back (with the lock token WAF hands out, retried when another writer won).
//! WAF refuses to associate a load balancer it does not see yet
//! (`WAFUnavailableEntityException`): the step tries again.

use aws_sdk_wafv2::types::{
    DefaultAction, ManagedRuleGroupStatement, OverrideAction, RateBasedStatement, RateBasedStatementAggregateKeyType,
    Rule, RuleAction, Scope, Statement, VisibilityConfig, WebAcl,
};
use ca_a2a_flow_engine::{
    DestroyOptions, KindDoc, Outputs, ParamProblem, Parameters, Plan, Step, StepContext, StepError, outputs,
};
use serde::Deserialize;
use serde_json::json;

use super::owner::{Holder, Stack, TAG_STACK};
use super::{AwsResult, Owner};

#[derive(Debug, Deserialize, Parameters)]
#[serde(deny_unknown_fields)]
#[kind(name = "aws.wafv2.web_acl", step = WebAclStep)]
pub struct Params {
    #[param(doc = super::STACK)]
    pub stack: Stack,
    #[param(doc = super::REGION)]
    pub region: Option<String>,
    /// the load balancer the web ACL protects (default none)
    pub load_balancer_arn: Option<String>,
    /// requests one address may send in 5 minutes before it is blocked (default 2000; 10 to 2000000000)
    #[serde(default = "two_thousand")]
    pub rate_limit: i64,
    /// AWS managed rule groups that block (default AWSManagedRulesCommonRuleSet, AWSManagedRulesSQLiRuleSet, AWSManagedRulesKnownBadInputsRuleSet)
    #[serde(default = "managed")]
    pub managed_rule_groups: Vec<String>,
    #[param(doc = super::owner::TAKE_OVER)]
    #[serde(default)]
    pub take_over: bool,
}

fn two_thousand() -> i64 {
    2000
}
fn managed() -> Vec<String> {
    ["AWSManagedRulesCommonRuleSet", "AWSManagedRulesSQLiRuleSet", "AWSManagedRulesKnownBadInputsRuleSet"]
        .map(String::from)
        .to_vec()
}

type Client = aws_sdk_wafv2::Client;

fn visibility(name: &str) -> Result<VisibilityConfig, StepError> {
    let v =
        VisibilityConfig::builder().sampled_requests_enabled(true).cloud_watch_metrics_enabled(true).metric_name(name);
    super::built("visibility config", v.build())
}

/// The rules the parameters ask for: the rate limit first, then each managed group.
fn rules(p: &Params) -> Result<Vec<Rule>, StepError> {
    let rate =
        RateBasedStatement::builder().limit(p.rate_limit).aggregate_key_type(RateBasedStatementAggregateKeyType::Ip);
    let rate = Statement::builder().rate_based_statement(super::built("rate-based statement", rate.build())?).build();
    let block = RuleAction::builder().block(aws_sdk_wafv2::types::BlockAction::builder().build()).build();
    let mut rules = vec![super::built(
        "rule",
        Rule::builder()
            .name("rate-limit")
            .priority(0)
            .statement(rate)
            .action(block)
            .visibility_config(visibility("rate-limit")?)
            .build(),
    )?];
    for (i, group) in p.managed_rule_groups.iter().enumerate() {
        let statement = ManagedRuleGroupStatement::builder().vendor_name("AWS").name(group);
        let statement = Statement::builder()
            .managed_rule_group_statement(super::built("managed rule group", statement.build())?)
            .build();
        // A managed group's own actions (block) apply: nothing overrides them.
        let keep = OverrideAction::builder().none(aws_sdk_wafv2::types::NoneAction::builder().build()).build();
        rules.push(super::built(
            "rule",
            Rule::builder()
                .name(group)
                .priority(i as i32 + 1)
                .statement(statement)
                .override_action(keep)
                .visibility_config(visibility(group)?)
                .build(),
        )?);
    }
    Ok(rules)
}

/// The rules as `plan` compares them: `0 rate-limit: 2000 per 5 min per IP`, `1 AWS/AWSManagedRulesSQLiRuleSet`.
fn described(rules: &[Rule]) -> Vec<String> {
    rules
        .iter()
        .map(|r| {
            let s = r.statement();
            let what =
                match (s.and_then(|s| s.rate_based_statement()), s.and_then(|s| s.managed_rule_group_statement())) {
                    (Some(rate), _) => format!("{} per 5 min per IP", rate.limit()),
                    (_, Some(m)) => format!("{}/{}", m.vendor_name(), m.name()),
                    _ => "a rule this step did not write".into(),
                };
            format!("{} {}: {what}", r.priority(), r.name())
        })
        .collect()
}

/// Every regional web ACL of the account, every page.
async fn all(waf: &Client) -> Result<Vec<aws_sdk_wafv2::types::WebAclSummary>, StepError> {
    let mut found = Vec::new();
    let mut marker: Option<String> = None;
    loop {
        let page = waf
            .list_web_acls()
            .scope(Scope::Regional)
            .set_next_marker(marker.take())
            .send()
            .await
            .or_step_error("wafv2:ListWebACLs")?;
        found.extend(page.web_acls().iter().cloned());
        match page.next_marker() {
            Some(m) if !m.is_empty() && !page.web_acls().is_empty() => marker = Some(m.to_string()),
            _ => return Ok(found),
        }
    }
}

/// The web ACL named `name`: its id and ARN.
async fn find(waf: &Client, name: &str) -> Result<Option<(String, String)>, StepError> {
    let get = |v: Option<&str>| v.unwrap_or_default().to_string();
    Ok(all(waf).await?.into_iter().find(|a| a.name() == Some(name)).map(|a| (get(a.id()), get(a.arn()))))
}

async fn get(waf: &Client, name: &str, id: &str) -> Result<Option<(WebAcl, String)>, StepError> {
    let found = waf
        .get_web_acl()
        .name(name)
        .scope(Scope::Regional)
        .id(id)
        .send()
        .await
        .or_absent("wafv2:GetWebACL", &["WAFNonexistentItemException"])?;
    Ok(found.and_then(|f| Some((f.web_acl()?.clone(), f.lock_token().unwrap_or_default().to_string()))))
}

async fn tags(waf: &Client, arn: &str) -> Result<Vec<(String, String)>, StepError> {
    let found = waf
        .list_tags_for_resource()
        .resource_arn(arn)
        .send()
        .await
        .or_absent("wafv2:ListTagsForResource", &["WAFNonexistentItemException"])?;
    let tags = found.and_then(|f| f.tag_info_for_resource().map(|t| t.tag_list().to_vec())).unwrap_or_default();
    Ok(tags.iter().map(|t| (t.key().to_string(), t.value().to_string())).collect())
}

async fn holder(waf: &Client, owner: &Owner, arn: &str) -> Result<Holder, StepError> {
    let tags = tags(waf, arn).await?;
    Ok(owner.holder(tags.iter().map(|(k, v)| (k.as_str(), v.as_str()))))
}

/// The web ACL the load balancer is associated with, if any.
async fn associated(waf: &Client, resource: &str) -> Result<Option<String>, StepError> {
    let found = waf
        .get_web_acl_for_resource()
        .resource_arn(resource)
        .send()
        .await
        .or_absent("wafv2:GetWebACLForResource", &["WAFNonexistentItemException"])?;
    Ok(found.and_then(|f| f.web_acl().and_then(|a| Some(a.arn().to_string()))))
}

impl Step for WebAclStep {
    async fn plan(&self, ctx: &StepContext, p: Params) -> Result<Plan, StepError> {
        let owner = Owner::new(&p.stack, ctx);
        let waf = Client::new(&super::config(p.region.as_deref()).await);
        let name = owner.name();
        let Some((id, arn)) = find(&waf, &name).await? else { return Ok(Plan::create()) };
        let mut changes = match super::owner::planned_claim(
            &owner,
            "web ACL",
            &name,
            &holder(&waf, &owner, &arn).await?,
            p.take_over,
        ) {
            Ok(changes) => changes,
            Err(conflict) => return Ok(conflict),
        };
        if let Some((acl, _)) = get(&waf, &name, &id).await? {
            let (now, wanted) = (described(acl.rules()), described(&rules(&p)?));
            if now != wanted {
                changes.push(format!("rules: {now:?} -> {wanted:?}"));
            }
        }
        if let Some(lb) = &p.load_balancer_arn
            && associated(&waf, lb).await?.as_deref() != Some(arn.as_str())
        {
            changes.push(format!("association: none -> {lb}"));
        }
        Ok(Plan::changes(changes))
    }

    const DESTROYS: bool = true;

    async fn destroy(&self, ctx: &StepContext, p: Params, _o: &DestroyOptions) -> Result<Outputs, StepError> {
        let owner = Owner::new(&p.stack, ctx);
        let waf = Client::new(&super::config(p.region.as_deref()).await);
        let name = owner.name();
        let Some((id, arn)) = find(&waf, &name).await? else { return Ok(super::removed(ctx, "web ACL", &[])) };
        let whose = holder(&waf, &owner, &arn).await?;
        if whose != Holder::Ours {
            ctx.log(format!("left alone: {}", owner.not_ours("web ACL", &name, &whose)));
            return Ok(super::removed(ctx, "web ACL", &[]));
        }
        // What it protects lets go of it first: the load balancer this step
        // associated, or (for `gc`, which knows no parameters) every load
        // balancer WAF lists for it. Anything else holds the delete
        // (WAFAssociatedItemException), said below until the step's deadline.
        let protected = match &p.load_balancer_arn {
            Some(lb) => {
                let ours = associated(&waf, lb).await?.as_deref() == Some(arn.as_str());
                if ours { vec![lb.clone()] } else { Vec::new() }
            }
            None => waf
                .list_resources_for_web_acl()
                .web_acl_arn(&arn)
                .resource_type(aws_sdk_wafv2::types::ResourceType::ApplicationLoadBalancer)
                .send()
                .await
                .or_absent("wafv2:ListResourcesForWebACL", &["WAFNonexistentItemException"])?
                .map(|r| r.resource_arns().to_vec())
                .unwrap_or_default(),
        };
        for lb in protected {
            ctx.progress(format!("disassociating web ACL {name} from {lb}"));
            waf.disassociate_web_acl()
                .resource_arn(&lb)
                .send()
                .await
                .or_absent("wafv2:DisassociateWebACL", &["WAFNonexistentItemException"])?;
        }
        // WAF takes a moment to see the disassociation (WAFAssociatedItemException),
        // and wants the latest lock token.
        super::wait::until_released(ctx, &format!("web ACL {name}"), || {
            let (waf, name, id) = (waf.clone(), name.clone(), id.clone());
            async move {
                let Some((_, token)) = get(&waf, &name, &id).await? else { return Ok(super::classify::Deleted::Done) };
                waf.delete_web_acl()
                    .name(&name)
                    .scope(Scope::Regional)
                    .id(&id)
                    .lock_token(token)
                    .send()
                    .await
                    .or_held("wafv2:DeleteWebACL", &["WAFNonexistentItemException"])
            }
        })
        .await?;
        Ok(super::removed(ctx, "web ACL", &[name]))
    }

    const DOC: KindDoc = KindDoc {
        summary: "A regional WAF web ACL that allows by default and blocks a per-address rate limit and what AWS's managed rule groups catch (common exploits, SQL injection, known bad inputs); associated with a load balancer.",
        outputs: &[
            ("arn", "the web ACL's ARN"),
            ("name", "its name"),
            ("rules", "its rules, in priority order"),
            ("action", "`created`, `adopted`, `updated` or `taken-over`"),
        ],
        example: "- id: waf\n  uses: aws.wafv2.web_acl\n  with:\n    stack: \"${{ inputs.stack }}\"\n    load_balancer_arn: \"${{ steps.alb.outputs.arn }}\"\n    rate_limit: 2000\n",
    };

    fn problems(&self, p: &Params) -> Vec<ParamProblem> {
        let mut problems = Vec::new();
        if !(10..=2_000_000_000).contains(&p.rate_limit) {
            problems.push(ParamProblem::at(&["rate_limit"], format!("{}: WAF takes 10 to 2000000000", p.rate_limit)));
        }
        for (i, g) in p.managed_rule_groups.iter().enumerate() {
            if !g.starts_with("AWSManagedRules") {
                let at = i.to_string();
                problems.push(ParamProblem::at(
                    &["managed_rule_groups", at.as_str()],
                    format!("`{g}` is not an AWS managed rule group (AWSManagedRules…)"),
                ));
            }
        }
        problems
    }

    async fn run(&self, ctx: &StepContext, p: Params) -> Result<Outputs, StepError> {
        let owner = Owner::new(&p.stack, ctx);
        let waf = Client::new(&super::config(p.region.as_deref()).await);
        let name = owner.name();
        let wanted = rules(&p)?;
        let default = DefaultAction::builder().allow(aws_sdk_wafv2::types::AllowAction::builder().build()).build();
        let (arn, mut action) = match find(&waf, &name).await? {
            None => {
                ctx.progress(format!("creating web ACL {name}"));
                let tags = owner
                    .tags()
                    .into_iter()
                    .filter_map(|(k, v)| aws_sdk_wafv2::types::Tag::builder().key(k).value(v).build().ok());
                let made = waf
                    .create_web_acl()
                    .name(&name)
                    .scope(Scope::Regional)
                    .default_action(default.clone())
                    .set_rules(Some(wanted.clone()))
                    .visibility_config(visibility(&name)?)
                    .set_tags(Some(tags.collect()))
                    .send()
                    .await;
                let made = match made {
                    Ok(made) => made.summary().and_then(|s| s.arn()).unwrap_or_default().to_string(),
                    // A run killed after the create: the name is taken by the ACL it made.
                    Err(e)
                        if super::failure("wafv2:CreateWebACL", &e).code.as_deref()
                            == Some("WAFDuplicateItemException") =>
                    {
                        let Some((_, arn)) = find(&waf, &name).await? else {
                            return Err(StepError::retryable(format!("web ACL {name} exists but is not listed yet")));
                        };
                        if holder(&waf, &owner, &arn).await? != Holder::Ours {
                            return Err(owner.refuse("web ACL", &name, &holder(&waf, &owner, &arn).await?));
                        }
                        arn
                    }
                    Err(e) => return Err(super::classify(&super::failure("wafv2:CreateWebACL", &e))),
                };
                (made, "created")
            }
            Some((id, arn)) => {
                let took =
                    super::owner::claim(&owner, "web ACL", &name, &holder(&waf, &owner, &arn).await?, p.take_over)?;
                let mut action = "adopted";
                if took == super::owner::Claim::TakeOver {
                    ctx.progress(format!("taking over web ACL {name}: tagging it as stack {}'s", p.stack));
                    let tags = owner
                        .tags()
                        .into_iter()
                        .filter_map(|(k, v)| aws_sdk_wafv2::types::Tag::builder().key(k).value(v).build().ok());
                    waf.tag_resource()
                        .resource_arn(&arn)
                        .set_tags(Some(tags.collect()))
                        .send()
                        .await
                        .or_step_error("wafv2:TagResource")?;
                    action = "taken-over";
                }
                if let Some((acl, token)) = get(&waf, &name, &id).await? {
                    let (now, want) = (described(acl.rules()), described(&wanted));
                    if now != want {
                        // A lock token another writer used first is WAFOptimisticLockException: retried.
                        waf.update_web_acl()
                            .name(&name)
                            .scope(Scope::Regional)
                            .id(&id)
                            .lock_token(token)
                            .default_action(default.clone())
                            .set_rules(Some(wanted.clone()))
                            .visibility_config(visibility(&name)?)
                            .send()
                            .await
                            .or_step_error("wafv2:UpdateWebACL")?;
                        ctx.log(format!("web ACL {name}: rules {now:?} -> {want:?}"));
                        if action == "adopted" {
                            action = "updated";
                        }
                    }
                }
                (arn, action)
            }
        };
        if let Some(lb) = &p.load_balancer_arn
            && associated(&waf, lb).await?.as_deref() != Some(arn.as_str())
        {
            ctx.progress(format!("associating web ACL {name} with {lb}"));
            waf.associate_web_acl()
                .web_acl_arn(&arn)
                .resource_arn(lb)
                .send()
                .await
                .or_step_error_created("wafv2:AssociateWebACL", action == "created")?;
            if action == "adopted" {
                action = "updated";
            }
        }
        let rules = described(&wanted);
        ctx.log(format!("{action} web ACL {name}: {}", rules.join("; ")));
        Ok(outputs! { arn, name, rules, action })
    }
}

use super::cost::{CostLine, Pricing};
use super::facts::{Facts, Leftover, Sweep};

impl Facts for WebAclStep {
    fn console(o: &std::collections::BTreeMap<String, serde_json::Value>, r: &str) -> Option<String> {
        use super::facts::{console_in, output, url_part};
        let arn = output(o, "arn")?;
        let id = arn.rsplit('/').next()?;
        let name = output(o, "name")?;
        console_in(r, &format!("wafv2/homev2/web-acl/{}/{}/overview?region={r}", url_part(name), url_part(id)))
    }

    /// WAF bills the web ACL, each rule (a managed group counts as one) and
    /// the requests it inspects.
    fn monthly(p: &Params, at: &Pricing) -> Result<Vec<CostLine>, String> {
        let rules = 1 + p.managed_rule_groups.len();
        let (acl, rule, million) =
            (at.prices.waf_web_acl_month, at.prices.waf_rule_month, at.prices.waf_million_requests);
        let requests = at.assume.waf_million_requests;
        Ok(vec![
            CostLine::new(format!("web ACL ${acl}"), acl),
            CostLine::new(format!("{rules} rules x ${rule}"), rules as f64 * rule),
            CostLine::new(format!("{requests}M requests x ${million}"), requests * million),
        ])
    }

    async fn leftovers(at: &Sweep) -> Result<Vec<Leftover>, StepError> {
        let waf = Client::new(&at.config);
        let price = at.prices.as_ref().map_or(0.0, |p| p.waf_web_acl_month);
        let mut found = Vec::new();
        for acl in all(&waf).await? {
            let tags = tags(&waf, acl.arn().unwrap_or_default()).await?;
            if tags.iter().any(|(k, _)| k == TAG_STACK) {
                found.push(Leftover::new(tags, acl.name(), price, json!({})));
            }
        }
        Ok(found)
    }
}
