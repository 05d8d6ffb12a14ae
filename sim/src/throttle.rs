//! API throttling as AWS does it: a token bucket per account, region and API
//! category; a call takes a token or is answered with the service's throttling
//! error, in its own protocol. Buckets refill per simulated second (`--time-scale`).
//!
//! Figures (README's `aws-sim` table):
//! - EC2, "Request throttling for the Amazon EC2 API": non-mutating 100 burst / 20
//!   per second; describes with neither filter, ids nor page size 50 / 10;
//!   mutating 50 / 5; resource-intensive (security group rules) 50 / 5;
//!   CreateNatGateway and DeleteNatGateway 10 / 1; CreateTags 100 / 10.
//!   `RequestLimitExceeded`, HTTP 503.
//! - ELBv2 describes 40 / 10, `Throttling` (Elastic Load Balancing API reference,
//!   "Request throttling"); RDS 300 / 12, `Throttling` (RDS user guide, "Quotas
//!   and constraints", API throttling); Secrets Manager control plane 50 per
//!   second, `ThrottlingException` (Secrets Manager user guide, "Quotas").
//!
//! Services and categories without a published figure are not throttled.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use crate::http::{Protocol, Request, error_answer};

/// One token bucket's size and refill.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Category {
    pub name: &'static str,
    pub burst: f64,
    pub per_second: f64,
}

const fn cat(name: &'static str, burst: f64, per_second: f64) -> Category {
    Category { name, burst, per_second }
}

const EC2_MUTATING: &[&str] = &[
    "Create",
    "Delete",
    "Modify",
    "Attach",
    "Detach",
    "Associate",
    "Disassociate",
    "Allocate",
    "Release",
    "Replace",
    "Run",
    "Terminate",
    "Start",
    "Stop",
    "Reboot",
    "Revoke",
    "Authorize",
    "Import",
    "Register",
    "Deregister",
    "Enable",
    "Disable",
    "Accept",
    "Reject",
    "Reset",
    "Assign",
    "Unassign",
    "Copy",
    "Cancel",
];

/// The bucket a request draws from, if AWS publishes one for it.
pub fn category(req: &Request) -> Option<Category> {
    let action = req.action();
    match req.service().as_str() {
        "ec2" => Some(ec2(&action, &req.body_text())),
        "elasticloadbalancing" if action.starts_with("Describe") => Some(cat("elbv2-describe", 40.0, 10.0)),
        "rds" => Some(cat("rds", 300.0, 12.0)),
        "secretsmanager" if action != "GetSecretValue" => Some(cat("secretsmanager-control", 50.0, 50.0)),
        _ => None,
    }
}

fn ec2(action: &str, body: &str) -> Category {
    match action {
        "CreateNatGateway" | "DeleteNatGateway" => cat("ec2-nat-gateway", 10.0, 1.0),
        "CreateTags" => cat("ec2-create-tags", 100.0, 10.0),
        a if a.starts_with("AuthorizeSecurityGroup") || a.starts_with("RevokeSecurityGroup") => {
            cat("ec2-resource-intensive", 50.0, 5.0)
        }
        a if EC2_MUTATING.iter().any(|verb| a.starts_with(verb)) => cat("ec2-mutating", 50.0, 5.0),
        _ => {
            let narrowed = body.split('&').any(|kv| {
                let key = kv.split('=').next().unwrap_or("");
                key.starts_with("Filter.") || key.contains("Id.") || key == "MaxResults"
            });
            if narrowed { cat("ec2-non-mutating", 100.0, 20.0) } else { cat("ec2-unfiltered", 50.0, 10.0) }
        }
    }
}

/// The throttling answer of `protocol`'s service, as AWS words it.
pub fn answer(protocol: Protocol) -> Vec<u8> {
    match protocol {
        Protocol::Ec2 => error_answer(protocol, 503, "RequestLimitExceeded", "Request limit exceeded."),
        Protocol::Json => error_answer(protocol, 400, "ThrottlingException", "Rate exceeded"),
        Protocol::S3 => error_answer(protocol, 503, "SlowDown", "Please reduce your request rate."),
        Protocol::Query => error_answer(protocol, 400, "Throttling", "Rate exceeded"),
    }
}

struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Every bucket, by region and category, refilled per simulated second.
pub struct Buckets {
    time_scale: f64,
    buckets: Mutex<HashMap<(String, &'static str), Bucket>>,
}

impl Buckets {
    pub fn new(time_scale: f64) -> Self {
        Self { time_scale, buckets: Mutex::new(HashMap::new()) }
    }

    /// Takes a token of `category` in `region`; `false` when the bucket is empty.
    pub fn take(&self, region: &str, category: Category) -> bool {
        self.take_at(region, category, Instant::now())
    }

    fn take_at(&self, region: &str, category: Category, now: Instant) -> bool {
        let mut buckets = self.buckets.lock().unwrap();
        let bucket =
            buckets.entry((region.to_string(), category.name)).or_insert(Bucket { tokens: category.burst, at: now });
        let simulated = now.saturating_duration_since(bucket.at).as_secs_f64() * self.time_scale;
        bucket.tokens = (bucket.tokens + simulated * category.per_second).min(category.burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_bucket_gives_its_burst_then_refills_at_its_rate_per_simulated_second() {
        let nat = cat("nat", 10.0, 1.0);
        let buckets = Buckets::new(60.0);
        let start = Instant::now();
        assert_eq!((0..12).filter(|_| buckets.take_at("eu-west-3", nat, start)).count(), 10);
        // One real second is a simulated minute: 60 tokens, capped at the burst of 10.
        let later = start + Duration::from_secs(1);
        assert_eq!((0..12).filter(|_| buckets.take_at("eu-west-3", nat, later)).count(), 10);
        assert!(buckets.take_at("us-east-1", nat, later), "each region has its own buckets");
    }

    #[test]
    fn ec2_actions_draw_from_their_published_categories() {
        assert_eq!(ec2("CreateNatGateway", "").name, "ec2-nat-gateway");
        assert_eq!(ec2("AuthorizeSecurityGroupIngress", "").name, "ec2-resource-intensive");
        assert_eq!(ec2("CreateVpc", "").name, "ec2-mutating");
        assert_eq!(ec2("DescribeVpcs", "Action=DescribeVpcs&Filter.1.Name=tag").name, "ec2-non-mutating");
        assert_eq!(ec2("DescribeVpcs", "Action=DescribeVpcs&VpcId.1=vpc-1").name, "ec2-non-mutating");
        assert_eq!(ec2("DescribeVpcs", "Action=DescribeVpcs&Version=2016-11-15").name, "ec2-unfiltered");
    }
}
