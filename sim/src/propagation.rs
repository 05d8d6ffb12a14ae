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
//! - a new IAM role, for ECS: a service's tasks whose task definition names
//!   a role made less than 10 s ago cannot start until ECS can assume it
//!   (ECS: "ECS was unable to assume the role"; the scheduler launches them
//!   again), so they run a task start after that (IAM user guide, "changes
//!   are eventually consistent");
//! - ECS's service-linked role on an account new to ECS: the first
//!   CreateCluster creates `AWSServiceRoleForECS` (on moto, where the layer
//!   keeps it, so every layer in front of the same moto agrees), and for 10 s
//!   CreateService is refused, `InvalidParameterException` "Unable to assume
//!   the service linked role. Please verify that the ECS service linked role
//!   exists." (ECS developer guide, "Using service-linked roles for Amazon
//!   ECS": the role is created with the first cluster; terraform-provider-aws
//!   retries CreateService on that message).
//!
//! The durations are the layer's choices within "a few seconds".

use std::collections::BTreeMap;
use std::sync::Mutex;

use crate::http::{Protocol, Request, error_answer, status_of};
use crate::interfaces::encode;
use crate::rules::{ask_as, ask_json, form_values};

/// Simulated seconds a new instance profile is unknown to EC2.
pub const INSTANCE_PROFILE: f64 = 10.0;
/// Simulated seconds a new IAM role cannot be assumed by ECS.
pub const ROLE: f64 = 10.0;
/// Simulated seconds ECS cannot use the service-linked role it has just created.
pub const SERVICE_LINKED_ROLE: f64 = 10.0;
/// ECS's service-linked role, and the path IAM gives service-linked roles.
const ECS_ROLE: &str = "AWSServiceRoleForECS";
const ECS_ROLE_PATH: &str = "/aws-service-role/ecs.amazonaws.com/";

#[derive(Default)]
pub struct Propagation {
    /// Bucket name -> when it becomes usable.
    buckets: Mutex<BTreeMap<String, f64>>,
    /// Instance profile name -> when EC2 can use it.
    profiles: Mutex<BTreeMap<String, f64>>,
    /// Access key (its account) -> when ECS can use the service-linked role it just made.
    ecs_role: Mutex<BTreeMap<String, f64>>,
    /// Role name -> when ECS can assume it.
    roles: Mutex<BTreeMap<String, f64>>,
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
            ("ecs", "CreateService") => {
                let until = *self.ecs_role.lock().unwrap().get(&req.access_key())?;
                (now < until).then(|| {
                    let message = "Unable to assume the service linked role. Please verify that the ECS service linked role exists.";
                    ("service_linked_role", error_answer(Protocol::Json, 400, "InvalidParameterException", message))
                })
            }
            _ => None,
        }
    }

    /// Notes what `req` made, once moto's `answer` says it was made.
    pub fn made(&self, req: &Request, answer: &[u8], now: f64, upstream: &str) {
        if status_of(answer) != 200 {
            return;
        }
        match (req.service().as_str(), req.action().as_str()) {
            ("s3", _) => {
                if let Some((bucket, true)) = bucket_of(req) {
                    self.buckets.lock().unwrap().insert(bucket, now + 0.5 + fastrand::f64() * 1.5);
                }
            }
            ("ecs", "CreateCluster") => {
                // The account's first cluster makes ECS's role, which IAM then propagates.
                let (key, region) = (req.access_key(), req.region());
                let asked = format!("Action=GetRole&Version=2010-05-08&RoleName={ECS_ROLE}");
                let known = ask_as(upstream, &key, &region, "iam", &asked).is_some_and(|xml| xml.contains("<RoleId>"));
                if !known {
                    let trust = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"ecs.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#;
                    let made = format!(
                        "Action=CreateRole&Version=2010-05-08&RoleName={ECS_ROLE}&Path={}&AssumeRolePolicyDocument={}",
                        encode(ECS_ROLE_PATH),
                        encode(trust)
                    );
                    let _ = ask_as(upstream, &key, &region, "iam", &made);
                    self.ecs_role.lock().unwrap().insert(key, now + SERVICE_LINKED_ROLE);
                }
            }
            ("iam", "CreateRole") => {
                if let Some(name) = form_values(&req.body_text(), "RoleName").into_iter().next() {
                    self.roles.lock().unwrap().insert(name, now + ROLE);
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

impl Propagation {
    /// When ECS can assume every role the task definition `arn` (of `req`'s
    /// account and region) names; 0 when none of them is new.
    pub fn roles_usable_at(&self, req: &Request, upstream: &str, arn: &str) -> f64 {
        let roles = self.roles.lock().unwrap().clone();
        if roles.is_empty() {
            return 0.0;
        }
        let target = "AmazonEC2ContainerServiceV20141113.DescribeTaskDefinition";
        let body = serde_json::json!({ "taskDefinition": arn }).to_string();
        let Some(answer) = ask_json(upstream, &req.access_key(), &req.region(), "ecs", target, &body) else {
            return 0.0;
        };
        let Ok(doc) = serde_json::from_str::<serde_json::Value>(&answer) else { return 0.0 };
        ["executionRoleArn", "taskRoleArn"]
            .iter()
            .filter_map(|key| doc["taskDefinition"][key].as_str())
            .filter_map(|role| roles.get(role.rsplit('/').next().unwrap_or(role)))
            .fold(0.0, |a, b| a.max(*b))
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
