//! Network interfaces outlive what made them. A load balancer's interfaces in
//! its subnets, with its security groups, are released by AWS some minutes
//! after the load balancer is deleted (a database's after it is gone, a Fargate
//! task's after it stopped: [`crate::deleting`], [`crate::tasks`]), and until
//! then they hold what they are in: DeleteSecurityGroup, DeleteSubnet and DeleteVpc answer
//! `DependencyViolation`, and an internet-facing one still maps public
//! addresses, so its VPC's internet gateway cannot be detached.
//!
//! Figure: 2 minutes (simulated). terraform-provider-aws's `elbv2` delete says
//! the ALB's interface cleanup "is asynchronous and may take time which then
//! blocks IGW, SG or VPC on deletion"; public Terraform configurations sleep 2
//! minutes after a load balancer's deletion for the same reason.

use std::sync::Mutex;

use crate::http::{Protocol, Request, error_answer, status_of};
use crate::rules::{all_tags, ask, form_values};

/// How long a deleted resource's interfaces linger, in simulated seconds.
pub const LINGER: f64 = 120.0;

/// What a deleted resource's interfaces still hold.
#[derive(Debug, Clone)]
pub struct Held {
    /// `load balancer app/name/id`
    pub owner: String,
    pub vpc: String,
    pub subnets: Vec<String>,
    pub groups: Vec<String>,
    pub public: bool,
    /// Simulated seconds since the layer started, when they are released.
    pub until: f64,
}

#[derive(Default)]
pub struct Interfaces {
    held: Mutex<Vec<Held>>,
}

impl Interfaces {
    /// What the resource `req` deletes holds, asked of moto before the delete is forwarded.
    pub fn before_delete(&self, req: &Request, upstream: &str) -> Option<Held> {
        if (req.service().as_str(), req.action().as_str()) != ("elasticloadbalancing", "DeleteLoadBalancer") {
            return None;
        }
        let arn = form_values(&req.body_text(), "LoadBalancerArn").into_iter().next()?;
        let body =
            format!("Action=DescribeLoadBalancers&Version=2015-12-01&LoadBalancerArns.member.1={}", encode(&arn));
        let xml = ask(upstream, &req.region(), "elasticloadbalancing", &body)?;
        let groups = xml
            .split_once("<SecurityGroups>")
            .and_then(|(_, rest)| rest.split_once("</SecurityGroups>"))
            .map(|(inside, _)| all_tags(inside, "member"))
            .unwrap_or_default();
        let name = arn.split_once(":loadbalancer/").map(|(_, n)| n.to_string()).unwrap_or(arn);
        Some(Held {
            owner: format!("load balancer {name}"),
            vpc: all_tags(&xml, "VpcId").into_iter().next()?,
            subnets: all_tags(&xml, "SubnetId"),
            groups,
            public: all_tags(&xml, "Scheme").first().is_none_or(|s| s == "internet-facing"),
            until: 0.0,
        })
    }

    /// Notes what `held` keeps once the delete was answered, until `now` plus the linger.
    pub fn after_delete(&self, held: Option<Held>, answer: &[u8], now: f64) {
        if let Some(held) = held.filter(|_| status_of(answer) == 200) {
            self.held.lock().unwrap().push(Held { until: now + LINGER, ..held });
        }
    }

    /// Notes what a resource being deleted still holds, until `held.until`.
    pub fn hold(&self, held: Held) {
        self.held.lock().unwrap().push(held);
    }

    /// AWS's refusal of a delete (or detach) that lingering interfaces still block at `now`.
    pub fn refuse(&self, req: &Request, now: f64) -> Option<(&'static str, Vec<u8>)> {
        if req.service() != "ec2" {
            return None;
        }
        let body = req.body_text();
        let first = |key: &str| form_values(&body, key).into_iter().next();
        let held = self.held.lock().unwrap();
        let live: Vec<&Held> = held.iter().filter(|h| h.until > now).collect();
        let owners =
            |hit: &dyn Fn(&Held) -> bool| live.iter().filter(|h| hit(h)).map(|h| h.owner.clone()).collect::<Vec<_>>();
        let (what, message) = match req.action().as_str() {
            "DeleteSecurityGroup" => {
                let id = first("GroupId")?;
                let by = owners(&|h| h.groups.contains(&id));
                (by, format!("resource {id} has a dependent object"))
            }
            "DeleteSubnet" => {
                let id = first("SubnetId")?;
                let by = owners(&|h| h.subnets.contains(&id));
                (by, format!("The subnet '{id}' has dependencies and cannot be deleted."))
            }
            "DeleteVpc" => {
                let id = first("VpcId")?;
                let by = owners(&|h| h.vpc == id);
                (by, format!("The vpc '{id}' has dependencies and cannot be deleted."))
            }
            "DetachInternetGateway" => {
                let vpc = first("VpcId")?;
                let by = owners(&|h| h.vpc == vpc && h.public);
                (
                    by,
                    format!(
                        "Network {vpc} has some mapped public address(es). Please unmap those public address(es) before detaching the gateway."
                    ),
                )
            }
            _ => return None,
        };
        if what.is_empty() {
            return None;
        }
        Some(("held_by_network_interfaces", error_answer(Protocol::Ec2, 400, "DependencyViolation", &message)))
    }
}

/// A form value, URL-encoded.
pub(crate) fn encode(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}
