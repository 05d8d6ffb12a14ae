//! What one service made is not at once usable by another, or by the next
//! call: AWS propagates it. moto knows everything at once. The layer delays,
//! in simulated seconds:
//! - a new S3 bucket: `NoSuchBucket` to any call on it but its creation, for
//!   0.5 to 2 s (S3 user guide, "data consistency model": bucket operations
//!   are eventually consistent; terraform-provider-aws retries `NoSuchBucket`
//!   after CreateBucket);
//! - a new IAM instance profile: RunInstances naming it is refused,
//!   `InvalidParameterValue` "Invalid IAM Instance Profile name", for 10 s
//!   (IAM user guide, "changes are eventually consistent"; terraform-provider-aws
//!   retries RunInstances on that message for two minutes).
//!
//! The durations are the layer's choices within "a few seconds". Not simulated:
//! ECS's service-linked role missing on first use (its refusal is classified as
//! momentary, `classify::momentary`), which a shared emulator cannot show
//! without failing whichever test makes the first cluster.

use std::collections::BTreeMap;
use std::sync::Mutex;

use crate::http::{Protocol, Request, error_answer, status_of};
use crate::rules::form_values;

/// Simulated seconds a new instance profile is unknown to EC2.
pub const INSTANCE_PROFILE: f64 = 10.0;

#[derive(Default)]
pub struct Propagation {
    /// Bucket name -> when it becomes usable.
    buckets: Mutex<BTreeMap<String, f64>>,
    /// Instance profile name -> when EC2 can use it.
    profiles: Mutex<BTreeMap<String, f64>>,
}

/// The bucket a path-style S3 request names, and whether it creates it.
fn bucket_of(req: &Request) -> Option<(String, bool)> {
    let mut parts = req.head.split(' ');
    let method = parts.next()?;
    let target = parts.next()?;
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut segments = path.trim_start_matches('/').splitn(2, '/');
    let bucket = segments.next().filter(|b| !b.is_empty())?.to_string();
    let key = segments.next().unwrap_or("");
    Some((bucket, method == "PUT" && key.is_empty() && query.is_empty()))
}

impl Propagation {
    /// AWS's refusal of a call that names what has not propagated yet at `now`.
    pub fn refuse(&self, req: &Request, now: f64) -> Option<(&'static str, Vec<u8>)> {
        match (req.service().as_str(), req.action().as_str()) {
            ("s3", _) => {
                let (bucket, creates) = bucket_of(req)?;
                let until = *self.buckets.lock().unwrap().get(&bucket)?;
                (!creates && now < until).then(|| {
                    let message = "The specified bucket does not exist";
                    ("not_propagated", error_answer(Protocol::S3, 404, "NoSuchBucket", message))
                })
            }
            ("ec2", "RunInstances") => {
                let body = req.body_text();
                let named = form_values(&body, "IamInstanceProfile.Name").into_iter().next();
                let by_arn = form_values(&body, "IamInstanceProfile.Arn").into_iter().next();
                let name = named.or_else(|| by_arn.and_then(|a| a.rsplit('/').next().map(String::from)))?;
                let until = *self.profiles.lock().unwrap().get(&name)?;
                (now < until).then(|| {
                    let message = format!(
                        "Value ({name}) for parameter iamInstanceProfile.name is invalid. Invalid IAM Instance Profile name"
                    );
                    ("not_propagated", error_answer(Protocol::Ec2, 400, "InvalidParameterValue", &message))
                })
            }
            _ => None,
        }
    }

    /// Notes what `req` made, once moto's `answer` says it was made.
    pub fn made(&self, req: &Request, answer: &[u8], now: f64) {
        if status_of(answer) != 200 {
            return;
        }
        match (req.service().as_str(), req.action().as_str()) {
            ("s3", _) => {
                if let Some((bucket, true)) = bucket_of(req) {
                    self.buckets.lock().unwrap().insert(bucket, now + 0.5 + fastrand::f64() * 1.5);
                }
            }
            ("iam", "CreateInstanceProfile") => {
                if let Some(name) = form_values(&req.body_text(), "InstanceProfileName").into_iter().next() {
                    self.profiles.lock().unwrap().insert(name, now + INSTANCE_PROFILE);
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(head: &str) -> Request {
        Request { head: head.into(), headers: vec![], body: vec![] }
    }

    #[test]
    fn a_path_style_request_names_its_bucket_and_only_a_bare_put_creates_it() {
        assert_eq!(bucket_of(&request("PUT /docs HTTP/1.1")), Some(("docs".into(), true)));
        assert_eq!(bucket_of(&request("PUT /docs/ HTTP/1.1")), Some(("docs".into(), true)));
        assert_eq!(bucket_of(&request("PUT /docs?versioning HTTP/1.1")), Some(("docs".into(), false)));
        assert_eq!(bucket_of(&request("PUT /docs/a/key HTTP/1.1")), Some(("docs".into(), false)));
        assert_eq!(bucket_of(&request("GET / HTTP/1.1")), None);
    }
}
