//! State changes take time on AWS and none on moto: a NAT gateway is
//! `pending` for a minute and a half or more, an RDS instance `creating` for
//! six minutes, a load balancer `provisioning` for over two. The layer notes
//! when each was created and, until its time has passed (in simulated
//! seconds, `--time-scale`), shows it in that state in every answer that
//! describes it. Figures (README's `aws-sim` table):
//! - NAT gateway pending -> available: 1m30s to 2m06s in public Terraform apply logs;
//! - RDS PostgreSQL db.t3.micro creating -> available: 5m57s and 6m08s in public
//!   Terraform apply logs; Multi-AZ 15 to 20 min (terraform #498). The last
//!   minute to minute and a half of it is `backing-up`, the first automated
//!   backup of an instance that keeps backups (`BackupRetentionPeriod` above 0,
//!   the API's default 1): RDS user guide, "Viewing Amazon RDS DB instance
//!   status"; terraform-provider-aws waits through `backing-up` on create. The
//!   split is the layer's choice;
//! - ALB provisioning -> active: 2m19s typical (steampipe-plugin-aws #792).

use std::sync::Mutex;
use std::time::Instant;

use crate::http::{Request, body_of, status_of, with_answer_body};

/// A kind of resource whose creation takes time, and how its answers show it.
struct Slow {
    kind: &'static str,
    service: &'static str,
    create: &'static str,
    describe: &'static str,
    /// The tag holding its id, before its state in every answer (the API's shape order).
    id_tag: &'static str,
    ready: &'static str,
    waiting: &'static str,
    /// Simulated seconds until usable: (least, most), from the request's body.
    seconds: fn(&str) -> (f64, f64),
    /// The state shown for the last part of that time, and for how long (least,
    /// most), from the request's body; `None` when there is no such part.
    last: fn(&str) -> Option<(&'static str, f64, f64)>,
}

const SLOW: &[Slow] = &[
    Slow {
        kind: "nat_gateway",
        service: "ec2",
        create: "CreateNatGateway",
        describe: "DescribeNatGateways",
        id_tag: "natGatewayId",
        ready: "<state>available</state>",
        waiting: "<state>pending</state>",
        seconds: |_| (90.0, 126.0),
        last: |_| None,
    },
    Slow {
        kind: "db_instance",
        service: "rds",
        create: "CreateDBInstance",
        describe: "DescribeDBInstances",
        id_tag: "DBInstanceIdentifier",
        ready: "<DBInstanceStatus>available</DBInstanceStatus>",
        waiting: "<DBInstanceStatus>creating</DBInstanceStatus>",
        seconds: |body| if body.contains("MultiAZ=true") { (900.0, 1200.0) } else { (357.0, 368.0) },
        last: |body| {
            let backups = !body.contains("BackupRetentionPeriod=0&") && !body.ends_with("BackupRetentionPeriod=0");
            backups.then_some(("<DBInstanceStatus>backing-up</DBInstanceStatus>", 60.0, 90.0))
        },
    },
    Slow {
        kind: "load_balancer",
        service: "elasticloadbalancing",
        create: "CreateLoadBalancer",
        describe: "DescribeLoadBalancers",
        id_tag: "LoadBalancerArn",
        ready: "<Code>active</Code>",
        waiting: "<Code>provisioning</Code>",
        seconds: |_| (130.0, 150.0),
        last: |_| None,
    },
];

/// One resource the layer saw created.
#[derive(Debug, Clone)]
pub struct Created {
    pub kind: &'static str,
    pub id: String,
    /// Simulated seconds since the layer started, when its create was answered.
    pub created_at: f64,
    /// Simulated seconds since the layer started, when it became usable.
    pub usable_at: f64,
}

/// The resources being created, and the simulated clock.
pub struct Latency {
    start: Instant,
    time_scale: f64,
    created: Mutex<Vec<Created>>,
    /// NAT gateways made in a VPC without an internet gateway: they fail, with AWS's message.
    failed: Mutex<Vec<(String, String)>>,
    /// Resources in the last part of their creation: id, from when, the state shown then.
    last: Mutex<Vec<(String, f64, &'static str)>>,
}

impl Latency {
    pub fn new(time_scale: f64) -> Self {
        Self {
            start: Instant::now(),
            time_scale,
            created: Mutex::new(Vec::new()),
            failed: Mutex::default(),
            last: Mutex::default(),
        }
    }

    /// Simulated seconds since the layer started.
    pub fn now(&self) -> f64 {
        self.start.elapsed().as_secs_f64() * self.time_scale
    }

    pub fn created(&self) -> Vec<Created> {
        self.created.lock().unwrap().clone()
    }

    /// moto's `answer` to `req`, showing every resource it names that is not
    /// usable yet in its waiting state; a create is noted first. A NAT gateway
    /// made in a VPC without an attached internet gateway ends `failed`
    /// (`Gateway.NotAttached`), as on AWS (moto makes it `available`).
    pub fn shown(&self, req: &Request, answer: Vec<u8>, upstream: &str) -> Vec<u8> {
        if status_of(&answer) != 200 {
            return answer;
        }
        let (service, action) = (req.service(), req.action());
        let Some(slow) = SLOW.iter().find(|s| s.service == service && (s.create == action || s.describe == action))
        else {
            return answer;
        };
        let mut body = String::from_utf8_lossy(body_of(&answer)).into_owned();
        let now = self.now();
        let vpc = first_between(&body, "vpcId").unwrap_or_default();
        let fails = action == "CreateNatGateway"
            && !req.body_text().contains("ConnectivityType=private")
            && !crate::rules::has_internet_gateway(upstream, &req.region(), &vpc);
        let mut created = self.created.lock().unwrap();
        let mut changed = false;
        if action == slow.create {
            if let Some(id) = first_between(&body, slow.id_tag) {
                if fails {
                    let message = format!("Network {vpc} has no Internet gateway attached");
                    changed |= hold(&mut body, slow.id_tag, &id, slow.ready, slow.waiting);
                    self.failed.lock().unwrap().push((id, message));
                } else {
                    let (least, most) = (slow.seconds)(&req.body_text());
                    let usable_at = now + least + fastrand::f64() * (most - least);
                    if let Some((state, least, most)) = (slow.last)(&req.body_text()) {
                        let from = usable_at - least - fastrand::f64() * (most - least);
                        self.last.lock().unwrap().push((id.clone(), from, state));
                    }
                    created.push(Created { kind: slow.kind, id, created_at: now, usable_at });
                }
            }
        }
        let last = self.last.lock().unwrap();
        for c in created.iter().filter(|c| c.kind == slow.kind && c.usable_at > now) {
            let late = last.iter().find(|(id, from, _)| *id == c.id && now >= *from).map(|(_, _, state)| *state);
            changed |= hold(&mut body, slow.id_tag, &c.id, slow.ready, late.unwrap_or(slow.waiting));
        }
        drop(last);
        if action == "DescribeNatGateways" {
            for (id, message) in self.failed.lock().unwrap().iter() {
                let failed = format!(
                    "<state>failed</state><failureCode>Gateway.NotAttached</failureCode><failureMessage>{message}</failureMessage>"
                );
                for state in ["<state>available</state>", "<state>pending</state>"] {
                    changed |= hold(&mut body, slow.id_tag, id, state, &failed);
                }
            }
        }
        if changed { with_answer_body(&answer, body.as_bytes()) } else { answer }
    }
}

/// The text of the first `<tag>…</tag>` in `xml`.
fn first_between(xml: &str, tag: &str) -> Option<String> {
    let open = format!("<{tag}>");
    let start = xml.find(&open)? + open.len();
    let end = xml[start..].find(&format!("</{tag}>"))? + start;
    Some(xml[start..end].to_string())
}

/// Replaces `ready` with `waiting` in the item whose `<id_tag>` is `id`: after
/// that tag and before the next item's. Whether anything was replaced.
pub(crate) fn hold(xml: &mut String, id_tag: &str, id: &str, ready: &str, waiting: &str) -> bool {
    let anchor = format!("<{id_tag}>{id}</{id_tag}>");
    let mut changed = false;
    let mut from = 0;
    while let Some(at) = xml[from..].find(&anchor).map(|i| i + from + anchor.len()) {
        let next_item = xml[at..].find(&format!("<{id_tag}>")).map(|i| i + at).unwrap_or(xml.len());
        if let Some(state) = xml[at..next_item].find(ready).map(|i| i + at) {
            xml.replace_range(state..state + ready.len(), waiting);
            changed = true;
        }
        from = at;
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_named_items_state_is_held() {
        let mut xml = "<item><natGatewayId>nat-1</natGatewayId><state>available</state></item><item><natGatewayId>nat-2</natGatewayId><state>available</state></item>".to_string();
        assert!(hold(&mut xml, "natGatewayId", "nat-2", "<state>available</state>", "<state>pending</state>"));
        assert_eq!(
            xml,
            "<item><natGatewayId>nat-1</natGatewayId><state>available</state></item><item><natGatewayId>nat-2</natGatewayId><state>pending</state></item>"
        );
        assert!(!hold(&mut xml, "natGatewayId", "nat-3", "<state>available</state>", "<state>pending</state>"));
    }
}
