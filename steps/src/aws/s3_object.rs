//! `aws.s3.object`: a file of this machine in a bucket of the stack, under a
//! key named by its content (`<prefix><sha256 prefix>/<name>`). The key says
//! what the object holds, so an object already at it is the same file: it is
//! adopted, never uploaded twice, and a changed file is a new key. The bucket
//! is another step's (its ownership is checked there); `destroy` deletes the
//! object, which is an artifact of the run, not data.

use std::path::Path;
use std::time::Duration;

use aws_sdk_s3::primitives::ByteStream;
use ca_a2a_flow_engine::{
    DestroyOptions, KindDoc, Outputs, ParamProblem, Parameters, Plan, Step, StepContext, StepError, outputs,
};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::AwsResult;
use super::facts::Facts;
use super::owner::Stack;

#[derive(Debug, Deserialize, Parameters)]
#[serde(deny_unknown_fields)]
#[kind(name = "aws.s3.object", step = S3Object)]
pub struct Params {
    #[param(doc = super::STACK)]
    pub stack: Stack,
    #[param(doc = super::REGION)]
    pub region: Option<String>,
    /// the bucket (required; made by an `aws.s3.bucket` step)
    pub bucket: String,
    /// the file on this machine, relative to the workflow file (required)
    pub file: String,
    /// the key's beginning, like `bin/` (default none)
    #[serde(default)]
    pub prefix: String,
    /// the key's last part (default: the file's name)
    pub name: Option<String>,
}

impl Params {
    fn name(&self) -> String {
        self.name.clone().unwrap_or_else(|| {
            Path::new(&self.file).file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
        })
    }
}

impl Step for S3Object {
    const DOC: KindDoc = KindDoc {
        summary: "A local file in a bucket under a key named by its content; adopted when there, deleted by destroy.",
        outputs: &[
            ("bucket", "the bucket"),
            ("key", "`<prefix><first 16 hex digits of its sha256>/<name>`"),
            ("url", "s3://bucket/key"),
            ("sha256", "the file's SHA-256"),
            ("size", "its size in bytes"),
            ("action", "`uploaded` or `adopted`"),
        ],
        example: "- id: worker-binary\n  uses: aws.s3.object\n  with:\n    stack: \"${{ inputs.stack }}\"\n    bucket: \"${{ steps.build-contexts.outputs.name }}\"\n    file: ../target/release/ca-a2a-flow\n    prefix: bin/\n",
    };

    const DESTROYS: bool = true;

    fn problems(&self, p: &Params) -> Vec<ParamProblem> {
        let mut problems = Vec::new();
        if p.file.trim().is_empty() {
            problems.push(ParamProblem::at(&["file"], "no file named"));
        }
        let name = p.name();
        let bad = |c: char| !(c.is_ascii_alphanumeric() || "_.-".contains(c));
        if name.is_empty() || name.chars().any(bad) {
            problems.push(ParamProblem::at(&["name"], format!("`{name}`: letters, digits and _.- only")));
        }
        if p.prefix.starts_with('/') || p.prefix.chars().any(|c| bad(c) && c != '/') {
            problems
                .push(ParamProblem::at(&["prefix"], format!("`{}`: letters, digits and _.-/, no leading /", p.prefix)));
        }
        problems
    }

    fn local_paths(&self, p: &Params) -> Vec<(&'static str, String)> {
        vec![("file", p.file.clone())]
    }

    async fn plan(&self, ctx: &StepContext, p: Params) -> Result<Plan, StepError> {
        let file = File::read(ctx, &p).await?;
        let s3 = aws_sdk_s3::Client::new(&super::config(p.region.as_deref()).await);
        Ok(match there(&s3, &p.bucket, &file.key).await? {
            Some(_) => Plan::adopt(),
            None => Plan { new_outputs: true, ..Plan::create() },
        })
    }

    async fn run(&self, ctx: &StepContext, p: Params) -> Result<Outputs, StepError> {
        let file = File::read(ctx, &p).await?;
        let s3 = aws_sdk_s3::Client::new(&super::config(p.region.as_deref()).await);
        let url = format!("s3://{}/{}", p.bucket, file.key);
        let action = match there(&s3, &p.bucket, &file.key).await? {
            Some(size) if size == file.size => "adopted",
            // A key names its content: another size there is an upload cut short.
            _ => {
                ctx.progress(format!("uploading {} to {url} ({:.1} MiB)", p.file, file.size as f64 / 1_048_576.0));
                let body = ByteStream::from_path(&file.path)
                    .await
                    .map_err(|e| StepError::retryable(format!("cannot read {}: {e}", file.path.display())))?;
                // A call's usual deadline is for answers: a second per MiB more to carry it.
                let limit =
                    (super::call_timeout() + Duration::from_secs(file.size.div_ceil(1_048_576))).min(ctx.remaining());
                let timeouts = aws_config::timeout::TimeoutConfig::builder()
                    .operation_attempt_timeout(limit)
                    .operation_timeout(limit)
                    .build();
                s3.put_object()
                    .bucket(&p.bucket)
                    .key(&file.key)
                    .body(body)
                    .customize()
                    .config_override(aws_sdk_s3::config::Builder::default().timeout_config(timeouts))
                    .send()
                    .await
                    .or_step_error("s3:PutObject")?;
                "uploaded"
            }
        };
        ctx.log(format!("{action} {url} ({} bytes, sha256 {})", file.size, file.sha256));
        Ok(outputs! { bucket: p.bucket, key: file.key, url, sha256: file.sha256, size: file.size, action })
    }

    /// Every object this step put there, whatever the file's content was then:
    /// `<prefix><16 hex digits>/<name>`.
    async fn destroy(&self, ctx: &StepContext, p: Params, _o: &DestroyOptions) -> Result<Outputs, StepError> {
        let s3 = aws_sdk_s3::Client::new(&super::config(p.region.as_deref()).await);
        let name = p.name();
        let mut pages = s3.list_objects_v2().bucket(&p.bucket).prefix(&p.prefix).into_paginator().send();
        let mut ours = Vec::new();
        while let Some(page) = pages.next().await {
            let Some(page) = page.or_absent("s3:ListObjectsV2", &["NoSuchBucket"])? else { break };
            for key in page.contents().iter().filter_map(|o| o.key()) {
                let rest = &key[p.prefix.len()..];
                let made_here = rest.split_once('/').is_some_and(|(hash, last)| {
                    hash.len() == 16 && hash.chars().all(|c| c.is_ascii_hexdigit()) && last == name
                });
                if made_here {
                    ours.push(key.to_string());
                }
            }
        }
        for key in &ours {
            let gone = s3.delete_object().bucket(&p.bucket).key(key).send().await;
            gone.or_absent("s3:DeleteObject", &["NoSuchBucket", "NoSuchKey"])?;
        }
        let urls: Vec<String> = ours.iter().map(|k| format!("s3://{}/{k}", p.bucket)).collect();
        Ok(super::removed(ctx, "object", &urls))
    }
}

struct File {
    path: std::path::PathBuf,
    key: String,
    sha256: String,
    size: u64,
}

impl File {
    /// Hashes the file, off the async workers.
    async fn read(ctx: &StepContext, p: &Params) -> Result<Self, StepError> {
        let path = ctx.workflow_dir.join(&p.file);
        let hashed = {
            let path = path.clone();
            tokio::task::spawn_blocking(move || -> std::io::Result<(String, u64)> {
                use std::io::Read;
                let mut f = std::fs::File::open(&path)?;
                let mut hasher = Sha256::new();
                let mut buf = vec![0u8; 1 << 20];
                let mut size = 0u64;
                loop {
                    let n = f.read(&mut buf)?;
                    if n == 0 {
                        break;
                    }
                    size += n as u64;
                    hasher.update(&buf[..n]);
                }
                Ok((hex(&hasher.finalize()), size))
            })
            .await
        };
        let (sha256, size) =
            hashed.map_err(|e| StepError::retryable(format!("hashing {}: {e}", path.display())))?.map_err(|e| {
                StepError::fatal(format!("cannot read {}: {e}", path.display())).with_hint("check the `file` parameter")
            })?;
        let key = key_of(&p.prefix, &sha256, &p.name());
        Ok(Self { path, key, sha256, size })
    }
}

fn key_of(prefix: &str, sha256: &str, name: &str) -> String {
    format!("{prefix}{}/{name}", &sha256[..16])
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The object's size, if it is there.
async fn there(s3: &aws_sdk_s3::Client, bucket: &str, key: &str) -> Result<Option<u64>, StepError> {
    let head = s3.head_object().bucket(bucket).key(key).send().await;
    let head = head.or_absent("s3:HeadObject", &["NotFound", "NoSuchKey"])?;
    Ok(head.map(|h| h.content_length().unwrap_or_default().max(0) as u64))
}

/// An object costs what its bytes do in the bucket: cents; it is found and
/// removed with its bucket by `gc`.
impl Facts for S3Object {
    const GC_RANK: u8 = 0;
}
