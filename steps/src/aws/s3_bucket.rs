//! `aws.s3.bucket`: a private bucket with AES-256 default encryption, versioning,
//! every public access blocked, and a lifecycle that expires old versions. The
//! settings are applied on every run (each call is idempotent), so drift is undone.

use aws_sdk_s3::types::{
    AbortIncompleteMultipartUpload, BucketLifecycleConfiguration, BucketLocationConstraint, BucketVersioningStatus,
    CreateBucketConfiguration, ExpirationStatus, LifecycleRule, LifecycleRuleFilter, NoncurrentVersionExpiration,
    PublicAccessBlockConfiguration, ServerSideEncryption, ServerSideEncryptionByDefault,
    ServerSideEncryptionConfiguration, ServerSideEncryptionRule, Tagging, VersioningConfiguration,
};
use ca_a2a_flow_engine::{
    DestroyOptions, KindDoc, Outputs, ParamProblem, Parameters, Plan, Step, StepContext, StepError, outputs,
};
use serde::Deserialize;

use super::owner::{Claim, Holder, Stack, claim, planned_claim};
use super::{AwsResult, Owner, built};

#[derive(Debug, Deserialize, Parameters)]
#[serde(deny_unknown_fields)]
#[kind(name = "aws.s3.bucket", step = Bucket)]
pub struct Params {
    #[param(doc = super::STACK)]
    pub stack: Stack,
    #[param(doc = super::REGION)]
    pub region: Option<String>,
    /// globally unique bucket name (required)
    pub name: String,
    /// days before replaced versions expire (default 30)
    #[serde(default = "thirty")]
    pub noncurrent_days: i32,
    #[param(doc = super::owner::TAKE_OVER)]
    #[serde(default)]
    pub take_over: bool,
}

fn thirty() -> i32 {
    30
}

impl Step for Bucket {
    async fn plan(&self, ctx: &StepContext, p: Params) -> Result<Plan, StepError> {
        let owner = Owner::new(&p.stack, ctx);
        let s3 = client(p.region.as_deref()).await;
        Ok(match found(&s3, &owner, &p.name).await {
            Ok(None) => Plan::create(),
            Ok(Some((holder, _))) => match planned_claim(&owner, "bucket", &p.name, &holder, p.take_over) {
                Ok(changes) => Plan::changes(changes),
                Err(conflict) => conflict,
            },
            Err(Elsewhere) => Plan::conflict(format!("bucket {} belongs to another account", p.name)),
            Err(Failed(e)) => return Err(e),
        })
    }

    const DESTROYS: bool = true;

    fn kept_on_destroy(&self, options: &DestroyOptions) -> Option<&'static str> {
        (!options.delete_data).then_some("buckets are kept with their data (--delete-data deletes them)")
    }

    async fn destroy(&self, ctx: &StepContext, p: Params, o: &DestroyOptions) -> Result<Outputs, StepError> {
        if !o.delete_data {
            return Ok(super::kept(ctx, &format!("bucket {} and its data", p.name), "--delete-data"));
        }
        let owner = Owner::new(&p.stack, ctx);
        let s3 = client(p.region.as_deref()).await;
        let name = &p.name;
        match found(&s3, &owner, name).await {
            Ok(None) | Err(Elsewhere) => return Ok(super::removed(ctx, "bucket", &[])),
            Ok(Some((Holder::Ours, _))) => {}
            Ok(Some((holder, _))) => {
                ctx.log(format!("left alone: {}", owner.not_ours("bucket", name, &holder)));
                return Ok(super::removed(ctx, "bucket", &[]));
            }
            Err(Failed(e)) => return Err(e),
        }
        let mut removed = 0usize;
        loop {
            let listed = match s3.list_object_versions().bucket(name).send().await {
                Ok(l) => l,
                Err(e)
                    if e.as_service_error().and_then(aws_sdk_s3::error::ProvideErrorMetadata::code)
                        == Some("NoSuchBucket") =>
                {
                    return Ok(super::removed(ctx, "bucket", &[]));
                }
                Err(e) => return Err(super::classify(&super::failure("s3:ListObjectVersions", &e))),
            };
            let mut objects = Vec::new();
            let versions = listed.versions().iter().map(|v| (v.key(), v.version_id()));
            let markers = listed.delete_markers().iter().map(|m| (m.key(), m.version_id()));
            for (key, version) in versions.chain(markers) {
                let id = aws_sdk_s3::types::ObjectIdentifier::builder()
                    .set_key(key.map(String::from))
                    .set_version_id(version.map(String::from));
                objects.push(built("object", id.build())?);
            }
            if objects.is_empty() {
                break;
            }
            removed += objects.len();
            ctx.progress(format!("bucket {name}: deleting {} object versions", objects.len()));
            let batch =
                built("delete", aws_sdk_s3::types::Delete::builder().set_objects(Some(objects)).quiet(true).build())?;
            let answer =
                s3.delete_objects().bucket(name).delete(batch).send().await.or_step_error("s3:DeleteObjects")?;
            refused_keys(name, answer.errors())?;
        }
        s3.delete_bucket().bucket(name).send().await.or_absent("s3:DeleteBucket", &["NoSuchBucket"])?;
        ctx.log(format!("bucket {name}: {removed} object versions deleted"));
        Ok(super::removed(ctx, "bucket", &[name.clone()]))
    }

    const DOC: KindDoc = KindDoc {
        summary: "A private S3 bucket: AES-256 encryption, versioning, public access blocked, old versions expired; tagged as the stack's when it is created, and adopted only with those tags (one without them is refused unless `take_over`).",
        outputs: &[
            ("name", "the bucket"),
            ("arn", "its ARN"),
            ("action", "`created`, `adopted` or `taken-over` (`take_over`)"),
        ],
        example: "- id: documents\n  uses: aws.s3.bucket\n  with: { stack: \"${{ inputs.stack }}\", name: \"${{ inputs.stack }}-documents-${{ steps.execution-role.outputs.account_id }}\" }\n",
    };

    fn problems(&self, p: &Params) -> Vec<ParamProblem> {
        let mut problems = Vec::new();
        let ok = p.name.contains("${{")
            || ((3..=63).contains(&p.name.len())
                && p.name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.'));
        if !ok {
            problems.push(ParamProblem::at(
                &["name"],
                format!("`{}`: 3-63 lowercase letters, digits, `-` and `.`", p.name),
            ));
        }
        problems
    }

    async fn run(&self, ctx: &StepContext, p: Params) -> Result<Outputs, StepError> {
        let owner = Owner::new(&p.stack, ctx);
        let config = super::config(p.region.as_deref()).await;
        let region = config.region().map(|r| r.to_string()).unwrap_or_else(|| "us-east-1".into());
        // An emulator endpoint has no per-bucket DNS names: address buckets by path there.
        let s3_config =
            aws_sdk_s3::config::Builder::from(&config).force_path_style(config.endpoint_url().is_some()).build();
        let s3 = aws_sdk_s3::Client::from_conf(s3_config);
        let name = &p.name;
        let mut tags = Vec::new();
        for (k, v) in owner.tags() {
            tags.push(built("tag", aws_sdk_s3::types::Tag::builder().key(k).value(v).build())?);
        }
        let action = match found(&s3, &owner, name).await {
            Err(Elsewhere) => {
                return Err(StepError::fatal(format!("bucket {name} exists and belongs to another account"))
                    .with_hint("bucket names are global: choose another name (the workflow adds the account id)"));
            }
            Err(Failed(e)) => return Err(e),
            Ok(Some((holder, this_run))) => match claim(&owner, "bucket", name, &holder, p.take_over)? {
                // Made by an earlier attempt of this run: still this run's creation.
                Claim::Adopt if this_run => "created",
                Claim::Adopt => "adopted",
                Claim::TakeOver => {
                    ctx.progress(format!("taking over bucket {name}: tagging it as stack {}'s", p.stack));
                    // PutBucketTagging replaces the whole set: the bucket's own tags are kept beside ours.
                    let had = s3.get_bucket_tagging().bucket(name).send().await;
                    let theirs = had.map(|t| t.tag_set().to_vec()).unwrap_or_default();
                    let kept = theirs.into_iter().filter(|t| !tags.iter().any(|o| o.key() == t.key()));
                    let all: Vec<_> = tags.iter().cloned().chain(kept).collect();
                    s3.put_bucket_tagging()
                        .bucket(name)
                        .tagging(built("tagging", Tagging::builder().set_tag_set(Some(all)).build())?)
                        .send()
                        .await
                        .or_step_error("s3:PutBucketTagging")?;
                    "taken-over"
                }
            },
            Ok(None) => {
                ctx.progress(format!("creating bucket {name}"));
                // Tagged in the creation itself: no instant sees the bucket without its owner.
                let mut configuration = CreateBucketConfiguration::builder().set_tags(Some(tags.clone()));
                if region != "us-east-1" {
                    configuration = configuration.location_constraint(BucketLocationConstraint::from(region.as_str()));
                }
                let create = s3.create_bucket().bucket(name).create_bucket_configuration(configuration.build());
                match create.send().await {
                    Ok(_) => "created",
                    // Ours already (a lost answer to an earlier create, which tagged it): carry on converging it.
                    Err(e) if e.as_service_error().is_some_and(|s| s.is_bucket_already_owned_by_you()) => "adopted",
                    Err(e) => return Err(super::classify(&super::failure("s3:CreateBucket", &e))),
                }
            }
        };
        let fresh = action == "created";
        if fresh {
            usable(ctx, &s3, name).await?;
        }
        let encryption = built(
            "encryption",
            ServerSideEncryptionConfiguration::builder()
                .rules(
                    ServerSideEncryptionRule::builder()
                        .apply_server_side_encryption_by_default(built(
                            "encryption",
                            ServerSideEncryptionByDefault::builder()
                                .sse_algorithm(ServerSideEncryption::Aes256)
                                .build(),
                        )?)
                        .build(),
                )
                .build(),
        )?;
        s3.put_bucket_encryption()
            .bucket(name)
            .server_side_encryption_configuration(encryption)
            .send()
            .await
            .or_step_error_created("s3:PutBucketEncryption", fresh)?;
        s3.put_bucket_versioning()
            .bucket(name)
            .versioning_configuration(
                VersioningConfiguration::builder().status(BucketVersioningStatus::Enabled).build(),
            )
            .send()
            .await
            .or_step_error_created("s3:PutBucketVersioning", fresh)?;
        s3.put_public_access_block()
            .bucket(name)
            .public_access_block_configuration(
                PublicAccessBlockConfiguration::builder()
                    .block_public_acls(true)
                    .ignore_public_acls(true)
                    .block_public_policy(true)
                    .restrict_public_buckets(true)
                    .build(),
            )
            .send()
            .await
            .or_step_error_created("s3:PutPublicAccessBlock", fresh)?;
        let rule = built(
            "lifecycle",
            LifecycleRule::builder()
                .id("ca-a2a-flow-versions")
                .status(ExpirationStatus::Enabled)
                .filter(LifecycleRuleFilter::builder().prefix("").build())
                .noncurrent_version_expiration(
                    NoncurrentVersionExpiration::builder().noncurrent_days(p.noncurrent_days).build(),
                )
                .abort_incomplete_multipart_upload(
                    AbortIncompleteMultipartUpload::builder().days_after_initiation(7).build(),
                )
                .build(),
        )?;
        s3.put_bucket_lifecycle_configuration()
            .bucket(name)
            .lifecycle_configuration(built("lifecycle", BucketLifecycleConfiguration::builder().rules(rule).build())?)
            .send()
            .await
            .or_step_error_created("s3:PutBucketLifecycleConfiguration", fresh)?;
        ctx.log(format!("{action} bucket {name}: AES256, versioning, public access blocked"));
        let partition = super::partition(&config).await?;
        Ok(outputs! { name, arn: format!("arn:{partition}:s3:::{name}"), action })
    }
}

/// Why a bucket's holder is not known.
enum Unfound {
    /// The name is taken by another account (HeadBucket answers 403).
    Elsewhere,
    Failed(StepError),
}
use Unfound::{Elsewhere, Failed};

/// An S3 client; an emulator endpoint has no per-bucket DNS names, so buckets are addressed by path there.
async fn client(region: Option<&str>) -> aws_sdk_s3::Client {
    let config = super::config(region).await;
    let s3_config =
        aws_sdk_s3::config::Builder::from(&config).force_path_style(config.endpoint_url().is_some()).build();
    aws_sdk_s3::Client::from_conf(s3_config)
}

/// Waits until S3 answers for the bucket just created: for a moment every
/// other call on it is `NoSuchBucket` (S3's bucket operations are eventually
/// consistent), and its settings are applied only once it answers.
async fn usable(ctx: &StepContext, s3: &aws_sdk_s3::Client, name: &str) -> Result<(), StepError> {
    let every = super::wait::interval(std::time::Duration::from_secs(1));
    let what = format!("new bucket {name}");
    super::wait::until(ctx, &what, std::time::Duration::from_secs(120), every, || async {
        Ok(match s3.head_bucket().bucket(name).send().await {
            Ok(_) => super::wait::Poll::Ready(()),
            Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 404) => {
                super::wait::Poll::Pending("not answering yet (NoSuchBucket)".into())
            }
            Err(e) => return Err(super::classify(&super::failure("s3:HeadBucket", &e))),
        })
    })
    .await
}

/// Whose the bucket `name` is, by its tags, if it exists in this account, and
/// whether this very run made it (an earlier attempt, before a retry or a kill).
async fn found(s3: &aws_sdk_s3::Client, owner: &Owner, name: &str) -> Result<Option<(Holder, bool)>, Unfound> {
    match s3.head_bucket().bucket(name).send().await {
        Ok(_) => {}
        Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 404) => return Ok(None),
        Err(e) if e.raw_response().is_some_and(|r| r.status().as_u16() == 403) => return Err(Elsewhere),
        Err(e) => return Err(Failed(super::classify(&super::failure("s3:HeadBucket", &e)))),
    }
    match s3.get_bucket_tagging().bucket(name).send().await {
        Ok(t) => {
            let tags = || t.tag_set().iter().map(|t| (t.key(), t.value()));
            let this_run = tags().any(|(k, v)| k == super::owner::TAG_RUN && v == owner.run);
            let holder = owner.holder(tags());
            Ok(Some((holder.clone(), holder == Holder::Ours && this_run)))
        }
        // A bucket without any tag answers NoSuchTagSet (S3 API reference, GetBucketTagging).
        Err(e)
            if e.as_service_error().and_then(aws_sdk_s3::error::ProvideErrorMetadata::code) == Some("NoSuchTagSet") =>
        {
            Ok(Some((Holder::Nobody, false)))
        }
        Err(e) => Err(Failed(super::classify(&super::failure("s3:GetBucketTagging", &e)))),
    }
}

use super::cost::{CostLine, Pricing};
use super::facts::Facts;

impl Facts for Bucket {
    fn console(o: &std::collections::BTreeMap<String, serde_json::Value>, r: &str) -> Option<String> {
        use super::facts::{console_in, output, url_part};
        let name = output(o, "name")?;
        // S3's console is global: the region is a parameter (checked by `console_in`).
        console_in(r, "").map(|_| format!("https://s3.console.aws.amazon.com/s3/buckets/{}?region={r}", url_part(name)))
    }

    fn monthly(_: &Params, at: &Pricing) -> Result<Vec<CostLine>, String> {
        let (gb, price) = (at.assume.s3_gb, at.prices.s3_standard_gb_month);
        Ok(vec![CostLine::new(format!("{gb} GB x ${price}"), gb * price)])
    }
}

/// DeleteObjects answers 200 even when it deleted nothing: each key it refused
/// is an entry of `Errors` (S3 API reference, DeleteObjects). They are the
/// step's error, retryable only where S3's own code says so.
fn refused_keys(bucket: &str, errors: &[aws_sdk_s3::types::Error]) -> Result<(), StepError> {
    let Some(first) = errors.first() else { return Ok(()) };
    let code = first.code().unwrap_or("");
    let shown: Vec<String> = errors
        .iter()
        .take(3)
        .map(|e| format!("{} ({}: {})", e.key().unwrap_or("?"), e.code().unwrap_or("?"), e.message().unwrap_or("")))
        .collect();
    let more = errors.len().saturating_sub(shown.len());
    let more = if more > 0 { format!(" and {more} more") } else { String::new() };
    let message =
        format!("s3:DeleteObjects refused {} keys of bucket {bucket}: {}{more}", errors.len(), shown.join(", "));
    if matches!(code, "InternalError" | "SlowDown" | "ServiceUnavailable" | "OperationAborted") {
        return Err(StepError::retryable(message).with_hint("S3 refused them for a moment; the step tries again"));
    }
    Err(StepError::fatal(message).with_hint(
        "an object lock, legal hold or bucket policy keeps them: lift it (or empty the bucket by hand), then destroy again",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ca_a2a_flow_engine::ErrorClass;

    fn refusal(key: &str, code: &str) -> aws_sdk_s3::types::Error {
        aws_sdk_s3::types::Error::builder().key(key).code(code).message("refused").build()
    }

    #[test]
    fn keys_delete_objects_refused_fail_the_destroy_naming_them() {
        let locked = [refusal("report.pdf", "AccessDenied"), refusal("scan.png", "AccessDenied")];
        let e = refused_keys("s-documents", &locked).unwrap_err();
        assert_eq!(e.class, ErrorClass::Fatal);
        assert!(e.message.contains("refused 2 keys of bucket s-documents: report.pdf (AccessDenied"), "{}", e.message);
        assert!(e.hint.unwrap().contains("object lock"));
    }

    #[test]
    fn keys_refused_for_a_moment_are_retried_and_an_answer_without_errors_is_fine() {
        assert_eq!(refused_keys("b", &[refusal("k", "SlowDown")]).unwrap_err().class, ErrorClass::Retryable);
        assert!(refused_keys("b", &[]).is_ok());
    }
}
