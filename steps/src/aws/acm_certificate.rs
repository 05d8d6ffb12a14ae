//! `aws.acm.certificate`: a public ACM certificate validated by DNS. Found by
//! its domain and the step's ownership tags; requested with an idempotency
//! token, so a run killed right after the request finds the same certificate.
//! The CNAME records that prove the domain are shown (and created, when a
//! Route 53 hosted zone is given); the step waits for `ISSUED`, and at its
//! deadline fails naming the records still missing.

use std::time::Duration;

use aws_sdk_acm::types::{CertificateDetail, CertificateStatus, ValidationMethod};
use ca_a2a_flow_engine::duration::HumanDuration;
use ca_a2a_flow_engine::{
    Deadline, DestroyOptions, KindDoc, Outputs, ParamProblem, Parameters, Plan, Step, StepContext, StepError, outputs,
};
use serde::Deserialize;
use serde_json::json;

use super::classify::Deleted;
use super::owner::{Stack, TAG_STACK, TAG_STEP};
use super::wait::{self, Poll};
use super::{AwsResult, Owner};

#[derive(Debug, Deserialize, Parameters)]
#[serde(deny_unknown_fields)]
#[kind(name = "aws.acm.certificate", step = Certificate)]
pub struct Params {
    #[param(doc = super::STACK)]
    pub stack: Stack,
    #[param(doc = super::REGION)]
    pub region: Option<String>,
    /// the name the certificate is for, like api.example.com (required)
    pub domain_name: String,
    /// other names it also covers (default none)
    #[serde(default)]
    pub alternative_names: Vec<String>,
    /// a Route 53 hosted zone serving the domain: the validation records are made there (default: none, the records are shown to be made by hand)
    pub hosted_zone_id: Option<String>,
    /// deadline for `ISSUED` (default 45m)
    pub wait: Option<HumanDuration>,
}

impl Params {
    /// The hosted zone, when one is given (empty counts as none).
    fn zone(&self) -> Option<&str> {
        self.hosted_zone_id.as_deref().map(str::trim).filter(|z| !z.is_empty())
    }
}

/// A certificate whose validation ended without it: a new one is requested.
const ENDED: &[CertificateStatus] = &[
    CertificateStatus::Expired,
    CertificateStatus::Failed,
    CertificateStatus::Inactive,
    CertificateStatus::Revoked,
    CertificateStatus::ValidationTimedOut,
];

/// One DNS record that proves a name to ACM.
#[derive(Debug, Clone, PartialEq)]
struct Record {
    name: String,
    kind: String,
    value: String,
}

impl std::fmt::Display for Record {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} {}", self.name, self.kind, self.value)
    }
}

/// The validation records a certificate asks for (ACM fills them in some
/// seconds after the request).
fn records(c: &CertificateDetail) -> Vec<Record> {
    let mut found: Vec<Record> = c
        .domain_validation_options()
        .iter()
        .filter_map(|o| o.resource_record())
        .map(|r| Record {
            name: r.name().to_string(),
            kind: r.r#type().as_str().to_string(),
            value: r.value().to_string(),
        })
        .collect();
    found.dedup();
    found
}

/// Every certificate of `domain` this step of this stack requested, every page.
async fn owned(acm: &aws_sdk_acm::Client, owner: &Owner, domain: &str) -> Result<Vec<String>, StepError> {
    let mut mine = Vec::new();
    for arn in all(acm, Some(domain)).await? {
        let tags = tags(acm, &arn).await?;
        let has = |k: &str, v: &str| tags.iter().any(|(key, value)| key == k && value == v);
        if has(TAG_STACK, &owner.stack) && has(TAG_STEP, &owner.step) {
            mine.push(arn);
        }
    }
    Ok(mine)
}

/// A certificate's tags, as key and value.
async fn tags(acm: &aws_sdk_acm::Client, arn: &str) -> Result<Vec<(String, String)>, StepError> {
    let found = acm
        .list_tags_for_certificate()
        .certificate_arn(arn)
        .send()
        .await
        .or_absent("acm:ListTagsForCertificate", &["ResourceNotFoundException"])?;
    let tags = found.map(|t| t.tags().to_vec()).unwrap_or_default();
    Ok(tags.iter().map(|t| (t.key().to_string(), t.value().unwrap_or_default().to_string())).collect())
}

/// The ARNs of the account's certificates (of `domain` when given), every page.
async fn all(acm: &aws_sdk_acm::Client, domain: Option<&str>) -> Result<Vec<String>, StepError> {
    let mut pages = acm.list_certificates().into_paginator().send();
    let mut arns = Vec::new();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| super::classify(&super::failure("acm:ListCertificates", &e)))?;
        for c in page.certificate_summary_list() {
            if domain.is_none_or(|d| c.domain_name() == Some(d)) {
                arns.extend(c.certificate_arn().map(String::from));
            }
        }
    }
    Ok(arns)
}

async fn describe(
    acm: &aws_sdk_acm::Client,
    arn: &str,
    just_made: bool,
) -> Result<Option<CertificateDetail>, StepError> {
    let found = acm.describe_certificate().certificate_arn(arn).send().await;
    if just_made {
        // A certificate requested a moment ago may not be visible yet.
        return Ok(found.or_step_error_created("acm:DescribeCertificate", true)?.certificate().cloned());
    }
    Ok(found
        .or_absent("acm:DescribeCertificate", &["ResourceNotFoundException"])?
        .and_then(|d| d.certificate().cloned()))
}

/// The names a certificate covers besides its domain, sorted.
fn other_names(c: &CertificateDetail) -> Vec<String> {
    let domain = c.domain_name().unwrap_or_default();
    names(domain, c.subject_alternative_names())
}

/// `alternative` without `domain`, sorted, each once.
fn names(domain: &str, alternative: &[String]) -> Vec<String> {
    let mut all: Vec<String> = alternative.iter().filter(|n| *n != domain).cloned().collect();
    all.sort_unstable();
    all.dedup();
    all
}

/// What the step finds of its own certificates for the domain.
struct Found {
    /// The one for the wanted names, issued or on its way.
    current: Option<CertificateDetail>,
    /// Live ones for other names (a certificate's names cannot change): each is
    /// deleted once no listener uses it any more.
    superseded: Vec<CertificateDetail>,
    /// Those whose validation ended without them.
    ended: Vec<String>,
}

async fn found(acm: &aws_sdk_acm::Client, owner: &Owner, p: &Params) -> Result<Found, StepError> {
    let wanted = names(&p.domain_name, &p.alternative_names);
    let (mut live, mut superseded, mut ended) = (Vec::new(), Vec::new(), Vec::new());
    for arn in owned(acm, owner, &p.domain_name).await? {
        let Some(c) = describe(acm, &arn, false).await? else { continue };
        if c.status().is_some_and(|s| ENDED.contains(s)) {
            ended.push(arn);
        } else if other_names(&c) == wanted {
            live.push(c);
        } else {
            superseded.push(c);
        }
    }
    let current = super::one_owned(live, |c| c.certificate_arn(), "certificate", owner)?;
    Ok(Found { current, superseded, ended })
}

/// A certificate as people name it: its ARN and the names it covers.
fn label(c: &CertificateDetail) -> String {
    let mut all = vec![c.domain_name().unwrap_or_default().to_string()];
    all.extend(other_names(c));
    format!("{} ({})", c.certificate_arn().unwrap_or_default(), all.join(", "))
}

fn route53_change(
    action: aws_sdk_route53::types::ChangeAction,
    r: &Record,
) -> Result<aws_sdk_route53::types::Change, StepError> {
    use aws_sdk_route53::types::{Change, ResourceRecord, ResourceRecordSet, RrType};
    let value = super::built("Route 53 record", ResourceRecord::builder().value(&r.value).build())?;
    let set = ResourceRecordSet::builder()
        .name(&r.name)
        .r#type(RrType::from(r.kind.as_str()))
        .ttl(300)
        .resource_records(value);
    let set = super::built("Route 53 record set", set.build())?;
    super::built("Route 53 change", Change::builder().action(action).resource_record_set(set).build())
}

/// Makes (UPSERT) or removes the validation records in the hosted zone.
async fn change_records(
    region: Option<&str>,
    zone: &str,
    action: aws_sdk_route53::types::ChangeAction,
    records: &[Record],
) -> Result<(), StepError> {
    use aws_sdk_route53::types::ChangeBatch;
    if records.is_empty() {
        return Ok(());
    }
    let r53 = aws_sdk_route53::Client::new(&super::config(region).await);
    let changes = records.iter().map(|r| route53_change(action.clone(), r)).collect::<Result<Vec<_>, _>>()?;
    let batch = super::built("Route 53 change batch", ChangeBatch::builder().set_changes(Some(changes)).build())?;
    let sent = r53.change_resource_record_sets().hosted_zone_id(zone).change_batch(batch).send().await;
    if action == aws_sdk_route53::types::ChangeAction::Delete {
        // A record already gone is what a delete wants.
        sent.or_absent("route53:ChangeResourceRecordSets", &["InvalidChangeBatch"])?;
    } else {
        sent.or_step_error("route53:ChangeResourceRecordSets")?;
    }
    Ok(())
}

/// What the wait for `ISSUED` last saw, and the records it made.
#[derive(Default)]
struct Seen {
    status: String,
    asked: Vec<Record>,
    made: Vec<Record>,
}

/// The deadline's failure: what is missing, and what to make.
fn not_issued(domain: &str, status: &str, records: &[Record], zone: Option<&str>, waited: &str) -> StepError {
    let listed = if records.is_empty() {
        "ACM has not named its validation records yet".to_string()
    } else {
        records.iter().map(|r| r.to_string()).collect::<Vec<_>>().join("; ")
    };
    let hint = match zone {
        Some(zone) => format!(
            "the records were made in hosted zone {zone}: check that this zone is the one the domain's registrar delegates to, then resume"
        ),
        None => "create these DNS records where the domain is served (or give `hosted_zone_id` of its Route 53 zone), then resume: ACM issues within minutes of seeing them".to_string(),
    };
    StepError::fatal(format!(
        "certificate for {domain} still {status} after {waited}: it needs the DNS records {listed}"
    ))
    .with_hint(hint)
}

/// Deletes each superseded certificate no listener uses any more, with its
/// validation records that `current` (the step's certificate, asking for
/// `asked`) does not share; the ARNs of those still in use, kept for the next
/// run or `destroy`.
async fn retire(
    ctx: &StepContext,
    acm: &aws_sdk_acm::Client,
    p: &Params,
    superseded: &[CertificateDetail],
    asked: &[Record],
    current: &str,
) -> Result<Vec<String>, StepError> {
    let mut kept = Vec::new();
    for old in superseded {
        let arn = old.certificate_arn().unwrap_or_default().to_string();
        let deleted = if old.in_use_by().is_empty() {
            let sent = acm.delete_certificate().certificate_arn(&arn).send().await;
            sent.or_held("acm:DeleteCertificate", &["ResourceNotFoundException"])?
        } else {
            Deleted::Held(old.in_use_by().join(", "))
        };
        match deleted {
            Deleted::Done => {
                if let Some(zone) = p.zone() {
                    let theirs: Vec<Record> = records(old).into_iter().filter(|r| !asked.contains(r)).collect();
                    change_records(p.region.as_deref(), zone, aws_sdk_route53::types::ChangeAction::Delete, &theirs)
                        .await?;
                }
                ctx.log(format!("deleted certificate {}: superseded by {current}", label(old)));
            }
            Deleted::Held(by) => {
                ctx.log(format!(
                    "kept certificate {} for now: still used ({by}); once the listener serves {current}, the next run or `destroy` deletes it",
                    label(old)
                ));
                kept.push(arn);
            }
        }
    }
    Ok(kept)
}

impl Step for Certificate {
    const DEADLINE: Option<Deadline> = Some(Deadline::minutes(50, 47));

    async fn plan(&self, ctx: &StepContext, p: Params) -> Result<Plan, StepError> {
        let owner = Owner::new(&p.stack, ctx);
        let acm = aws_sdk_acm::Client::new(&super::config(p.region.as_deref()).await);
        let found = found(&acm, &owner, &p).await?;
        let unused: Vec<String> = found
            .superseded
            .iter()
            .filter(|c| c.in_use_by().is_empty())
            .map(|c| format!("certificate {}: deleted, no listener uses it", label(c)))
            .collect();
        Ok(match (found.current, found.superseded.first()) {
            (Some(_), _) if unused.is_empty() => Plan::adopt(),
            (Some(_), _) => Plan::changes(unused),
            (None, None) => Plan::create(),
            (None, Some(old)) => Plan::changes(vec![format!(
                "alternative names: {:?} -> {:?}: a new certificate; the old one, {}, is deleted once no listener uses it",
                other_names(old),
                names(&p.domain_name, &p.alternative_names),
                old.certificate_arn().unwrap_or_default()
            )]),
        })
    }

    const DESTROYS: bool = true;

    async fn destroy(&self, ctx: &StepContext, p: Params, _o: &DestroyOptions) -> Result<Outputs, StepError> {
        let owner = Owner::new(&p.stack, ctx);
        let acm = aws_sdk_acm::Client::new(&super::config(p.region.as_deref()).await);
        let mut deleted = Vec::new();
        for arn in owned(&acm, &owner, &p.domain_name).await? {
            if let (Some(zone), Some(c)) = (p.zone(), describe(&acm, &arn, false).await?) {
                ctx.progress(format!("removing the validation records of {arn} from hosted zone {zone}"));
                change_records(p.region.as_deref(), zone, aws_sdk_route53::types::ChangeAction::Delete, &records(&c))
                    .await?;
            }
            // ACM refuses while a listener still uses it, and the listener's
            // deletion takes a moment to reach ACM.
            wait::until_released(ctx, &format!("certificate {arn}"), || {
                let (acm, arn) = (acm.clone(), arn.clone());
                async move {
                    acm.delete_certificate()
                        .certificate_arn(&arn)
                        .send()
                        .await
                        .or_held("acm:DeleteCertificate", &["ResourceNotFoundException"])
                }
            })
            .await?;
            deleted.push(arn);
        }
        Ok(super::removed(ctx, "certificate", &deleted))
    }

    const DOC: KindDoc = KindDoc {
        summary: "A public ACM certificate validated by DNS: the validation records are shown (and made in a Route 53 hosted zone when one is given); waits for ISSUED.",
        outputs: &[
            ("arn", "the certificate's ARN"),
            ("status", "`ISSUED`"),
            ("validation_records", "the DNS records that prove the names, as `NAME CNAME VALUE`"),
            (
                "action",
                "`created`, `adopted`, `replaced` (new names: a new certificate) or `updated` (an old one deleted)",
            ),
            (
                "superseded",
                "certificates of the step for other names still used by a listener: the next run or `destroy` deletes them",
            ),
        ],
        example: "- id: certificate\n  uses: aws.acm.certificate\n  with:\n    stack: \"${{ inputs.stack }}\"\n    domain_name: api.example.com\n    hosted_zone_id: Z0123456789ABCDEFGHIJ\n",
    };

    fn problems(&self, p: &Params) -> Vec<ParamProblem> {
        let mut problems = Vec::new();
        for (path, name) in std::iter::once((vec!["domain_name".to_string()], &p.domain_name)).chain(
            p.alternative_names.iter().enumerate().map(|(i, n)| (vec!["alternative_names".into(), i.to_string()], n)),
        ) {
            if ca_a2a_flow_engine::template::contains_template(name) {
                continue; // checked once its inputs are known
            }
            let labels_ok = name.split('.').count() >= 2
                && name.trim_start_matches("*.").split('.').all(|l| {
                    !l.is_empty() && l.len() <= 63 && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                });
            if !labels_ok || name.len() > 253 {
                let path: Vec<&str> = path.iter().map(String::as_str).collect();
                problems.push(ParamProblem::at(
                    &path,
                    format!("`{name}` is not a domain name ACM can certify (like api.example.com)"),
                ));
            }
        }
        problems
    }

    async fn run(&self, ctx: &StepContext, p: Params) -> Result<Outputs, StepError> {
        let owner = Owner::new(&p.stack, ctx);
        let acm = aws_sdk_acm::Client::new(&super::config(p.region.as_deref()).await);
        let Found { current, superseded, ended } = found(&acm, &owner, &p).await?;
        let (arn, action) = match current {
            Some(c) => (c.certificate_arn().unwrap_or_default().to_string(), "adopted"),
            None => {
                for arn in &ended {
                    ctx.log(format!("certificate {arn} ended without being issued: requesting a new one"));
                }
                for old in &superseded {
                    ctx.log(format!(
                        "certificate {} covers other names: requesting one for the names asked (a certificate's names cannot change)",
                        label(old)
                    ));
                }
                ctx.progress(format!("requesting a certificate for {}", p.domain_name));
                let tags =
                    owner.tags().into_iter().map(|(k, v)| aws_sdk_acm::types::Tag::builder().key(k).value(v).build());
                let tags = tags.collect::<Result<Vec<_>, _>>().map_err(|e| StepError::fatal(e.to_string()))?;
                // The token is the same for a resumed run (ACM answers the first
                // request's certificate for an hour), and new for other names or
                // once a certificate ended.
                let wanted = names(&p.domain_name, &p.alternative_names);
                let token = owner.client_token(&format!(
                    "{}\n{}\n{}\n{}",
                    p.domain_name,
                    wanted.join(","),
                    owner.run,
                    ended.join(",")
                ));
                let asked = acm
                    .request_certificate()
                    .domain_name(&p.domain_name)
                    .set_subject_alternative_names((!wanted.is_empty()).then_some(wanted))
                    .validation_method(ValidationMethod::Dns)
                    .idempotency_token(token)
                    .set_tags(Some(tags))
                    .send()
                    .await
                    .or_step_error("acm:RequestCertificate")?;
                (asked.certificate_arn().unwrap_or_default().to_string(), "created")
            }
        };
        let limit = p.wait.map(|w| w.0).unwrap_or(Duration::from_secs(45 * 60));
        let what = format!("certificate for {}", p.domain_name);
        // What the wait last saw (status, records) and the records it made.
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Seen::default()));
        let waited = wait::until_deadline(ctx, &what, limit, wait::interval(Duration::from_secs(15)), || {
            let (acm, arn, seen) = (acm.clone(), arn.clone(), seen.clone());
            let zone = p.zone().map(String::from);
            let region = p.region.clone();
            async move {
                let Some(c) = describe(&acm, &arn, action == "created").await? else {
                    return Ok(Poll::Pending("not visible yet".into()));
                };
                let status = c.status().map(|s| s.as_str().to_string()).unwrap_or_default();
                let asked = records(&c);
                let new: Vec<Record> = {
                    let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
                    seen.status = status.clone();
                    seen.asked = asked.clone();
                    asked.iter().filter(|r| !seen.made.contains(r)).cloned().collect()
                };
                if let Some(zone) = zone.as_deref().filter(|_| !new.is_empty()) {
                    change_records(region.as_deref(), zone, aws_sdk_route53::types::ChangeAction::Upsert, &new).await?;
                    seen.lock().unwrap_or_else(|e| e.into_inner()).made.extend(new);
                }
                match c.status() {
                    Some(CertificateStatus::Issued) => Ok(Poll::Ready(c)),
                    Some(s) if ENDED.contains(s) => Err(StepError::fatal(format!(
                        "certificate {arn} is {status}: {}",
                        c.failure_reason().map(|r| r.as_str()).unwrap_or("ACM gave no reason")
                    ))
                    .with_hint("resume: the step requests a new certificate")),
                    _ if asked.is_empty() => Ok(Poll::Pending(format!("{status}, ACM has not named its records yet"))),
                    _ if zone.is_some() => {
                        Ok(Poll::Pending(format!("{status}, records made in {}", zone.unwrap_or_default())))
                    }
                    _ => Ok(Poll::Pending(format!(
                        "{status}, waiting for DNS records {}",
                        asked.iter().map(|r| r.to_string()).collect::<Vec<_>>().join("; ")
                    ))),
                }
            }
        })
        .await?;
        let cert = match waited {
            wait::Waited::Ready(c) => c,
            // The wait's own deadline (a look that failed is its own error): say what is missing.
            wait::Waited::Deadline { waited, .. } => {
                let seen = seen.lock().unwrap_or_else(|e| e.into_inner());
                let waited = ca_a2a_flow_engine::duration::format(waited);
                return Err(not_issued(&p.domain_name, &seen.status, &seen.asked, p.zone(), &waited));
            }
        };
        let asked = records(&cert);
        let kept = retire(ctx, &acm, &p, &superseded, &asked, &arn).await?;
        let validation_records: Vec<String> = asked.iter().map(|r| r.to_string()).collect();
        let action = match action {
            "created" if !superseded.is_empty() => "replaced",
            "adopted" if kept.len() < superseded.len() => "updated",
            other => other,
        };
        ctx.log(format!("{action} certificate {arn} for {} (ISSUED)", p.domain_name));
        Ok(outputs! { arn, status: "ISSUED", validation_records, action, superseded: kept })
    }
}

use super::cost::{CostLine, Pricing};
use super::facts::{Facts, Leftover, Sweep};

impl Facts for Certificate {
    fn monthly(_: &Params, _at: &Pricing) -> Result<Vec<CostLine>, String> {
        Ok(vec![CostLine::new("public ACM certificate: free", 0.0)])
    }

    fn console(o: &std::collections::BTreeMap<String, serde_json::Value>, r: &str) -> Option<String> {
        use super::facts::{console_in, output, url_part};
        let id = output(o, "arn")?.rsplit('/').next()?;
        console_in(r, &format!("acm/home?region={r}#/certificates/{}", url_part(id)))
    }

    async fn leftovers(at: &Sweep) -> Result<Vec<Leftover>, StepError> {
        let acm = aws_sdk_acm::Client::new(&at.config);
        let mut found = Vec::new();
        for arn in all(&acm, None).await? {
            let tags = tags(&acm, &arn).await?;
            if !tags.iter().any(|(k, _)| k == TAG_STACK) {
                continue;
            }
            let Some(c) = describe(&acm, &arn, false).await? else { continue };
            let domain = c.domain_name().unwrap_or_default().to_string();
            found.push(Leftover::new(tags, Some(&arn), 0.0, json!({ "domain_name": domain })));
        }
        Ok(found)
    }
}
