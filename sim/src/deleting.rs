//! Deletions take time on AWS and none on moto. A NAT gateway is `deleting`
//! for about a minute before it is `deleted`, and until then it still holds its
//! subnet, its VPC and its public address (the internet gateway cannot be
//! detached); moto marks it `deleted` at once. An RDS instance is `deleting`
//! for minutes, still described, still using its DB subnet group (which cannot
//! be deleted) and its identifier (which cannot be reused); moto forgets it at
//! once; its network interfaces then hold its security groups and subnets for
//! [`crate::interfaces::LINGER`] more. Figures (README's `aws-sim` table), in
//! simulated seconds:
//! - NAT gateway deleting: 60 s, a choice: about a minute in public reports,
//!   unconfirmed by AWS (../shared/reference/AWS-BEHAVIOUR.md);
//! - RDS db.t3.micro deleting without a final snapshot: 300 s, a choice: "about
//!   5 minutes" in public Terraform destroy logs; AWS documents no figure;
//! - a secret deleted without recovery keeps its name for 10 s: CreateSecret of
//!   that name is refused, `InvalidRequestException` "… already scheduled for
//!   deletion" (Secrets Manager API reference, DeleteSecret: the deletion is
//!   asynchronous, "might take a few seconds"); 10 s is a choice.

use std::sync::Mutex;

use crate::http::{Protocol, Request, body_of, error_answer, query_answer, status_of, with_answer_body};
use crate::interfaces::{Held, Interfaces};
use crate::rules::{all_tags, ask, form_values};

/// Simulated seconds a NAT gateway is `deleting`.
pub const NAT_DELETING: f64 = 60.0;
/// Simulated seconds an RDS instance is `deleting`.
pub const DB_DELETING: f64 = 300.0;
/// Simulated seconds a secret deleted without recovery keeps its name.
pub const SECRET_NAME_HELD: f64 = 10.0;

/// A database being deleted: what DescribeDBInstances shows of it until `until`.
struct Database {
    id: String,
    subnet_group: String,
    /// Its `<DBInstance>` element, in the `deleting` state.
    xml: String,
    until: f64,
}

#[derive(Default)]
pub struct Deleting {
    nat_gateways: Mutex<Vec<(String, f64)>>,
    databases: Mutex<Vec<Database>>,
    /// Secret name -> until when a forced delete still holds it.
    secret_names: Mutex<Vec<(String, f64)>>,
}

impl Deleting {
    /// AWS's answer where a resource still being deleted changes it: the
    /// database described, its subnet group or identifier refused.
    pub fn refuse(&self, req: &Request, now: f64) -> Option<(&'static str, Vec<u8>)> {
        if (req.service().as_str(), req.action().as_str()) == ("secretsmanager", "CreateSecret") {
            let asked: serde_json::Value = serde_json::from_str(&req.body_text()).ok()?;
            let name = asked["Name"].as_str()?;
            let names = self.secret_names.lock().unwrap();
            names.iter().find(|(n, until)| n == name && *until > now)?;
            let message =
                "You can't create this secret because a secret with this name is already scheduled for deletion.";
            return Some(("deleting", error_answer(Protocol::Json, 400, "InvalidRequestException", message)));
        }
        if req.service() != "rds" {
            return None;
        }
        let body = req.body_text();
        let databases = self.databases.lock().unwrap();
        let live = || databases.iter().filter(|d| d.until > now);
        match req.action().as_str() {
            "DescribeDBInstances" => {
                let id = form_values(&body, "DBInstanceIdentifier").into_iter().next()?;
                let db = live().find(|d| d.id == id)?;
                Some(("deleting", described(&db.xml)))
            }
            "DeleteDBSubnetGroup" => {
                let name = form_values(&body, "DBSubnetGroupName").into_iter().next()?;
                let db = live().find(|d| d.subnet_group == name)?;
                let message = format!(
                    "Cannot delete the subnet group '{name}' because at least one database instance: {} is still using it.",
                    db.id
                );
                Some(("deleting", error_answer(Protocol::Query, 400, "InvalidDBSubnetGroupStateFault", &message)))
            }
            "CreateDBInstance" => {
                let id = form_values(&body, "DBInstanceIdentifier").into_iter().next()?;
                live().find(|d| d.id == id)?;
                let message = "DB instance already exists";
                Some(("deleting", error_answer(Protocol::Query, 400, "DBInstanceAlreadyExists", message)))
            }
            _ => None,
        }
    }

    /// moto's `answer` to `req`, with what is still deleting shown so; a
    /// delete is noted first (and what a NAT gateway holds, in `interfaces`).
    pub fn shown(&self, req: &Request, answer: Vec<u8>, now: f64, upstream: &str, interfaces: &Interfaces) -> Vec<u8> {
        if status_of(&answer) != 200 {
            return answer;
        }
        let body = req.body_text();
        match (req.service().as_str(), req.action().as_str()) {
            ("ec2", "DeleteNatGateway") => {
                let Some(id) = form_values(&body, "NatGatewayId").into_iter().next() else { return answer };
                let until = now + NAT_DELETING;
                self.nat_gateways.lock().unwrap().push((id.clone(), until));
                let asked = format!("Action=DescribeNatGateways&Version=2016-11-15&NatGatewayId.1={id}");
                if let Some(xml) = ask(upstream, &req.region(), "ec2", &asked) {
                    let vpc = all_tags(&xml, "vpcId").into_iter().next().unwrap_or_default();
                    let subnets = all_tags(&xml, "subnetId");
                    let owner = format!("NAT gateway {id}");
                    interfaces.hold(Held { owner, vpc, subnets, groups: vec![], public: true, until });
                }
                answer
            }
            ("ec2", "DescribeNatGateways") => {
                let mut text = String::from_utf8_lossy(body_of(&answer)).into_owned();
                let mut changed = false;
                for (id, _) in self.nat_gateways.lock().unwrap().iter().filter(|(_, until)| *until > now) {
                    let (gone, deleting) = ("<state>deleted</state>", "<state>deleting</state>");
                    changed |= crate::latency::hold(&mut text, "natGatewayId", id, gone, deleting);
                }
                if changed { with_answer_body(&answer, text.as_bytes()) } else { answer }
            }
            ("secretsmanager", "DeleteSecret") => {
                let asked: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
                let forced = asked["ForceDeleteWithoutRecovery"].as_bool() == Some(true);
                let answered: serde_json::Value = serde_json::from_slice(body_of(&answer)).unwrap_or_default();
                if let Some(name) = answered["Name"].as_str().filter(|_| forced) {
                    self.secret_names.lock().unwrap().push((name.to_string(), now + SECRET_NAME_HELD));
                }
                answer
            }
            ("rds", "DeleteDBInstance") => {
                let text = String::from_utf8_lossy(body_of(&answer)).into_owned();
                let Some(xml) = element(&text, "DBInstance") else { return answer };
                let id = all_tags(&xml, "DBInstanceIdentifier").into_iter().next().unwrap_or_default();
                let subnet_group = all_tags(&xml, "DBSubnetGroupName").into_iter().next().unwrap_or_default();
                // Its interfaces outlive it: they hold its groups and subnets a while longer.
                let vpc = all_tags(&xml, "VpcId").into_iter().next().unwrap_or_default();
                interfaces.hold(Held {
                    owner: format!("database {id}"),
                    vpc,
                    subnets: all_tags(&xml, "SubnetIdentifier"),
                    groups: all_tags(&xml, "VpcSecurityGroupId"),
                    public: false,
                    until: now + DB_DELETING + crate::interfaces::LINGER,
                });
                let xml = with_status(&xml, "deleting");
                self.databases.lock().unwrap().push(Database { id, subnet_group, xml, until: now + DB_DELETING });
                answer
            }
            _ => answer,
        }
    }
}

/// The first `<tag>…</tag>` element of `xml`, tags included.
fn element(xml: &str, tag: &str) -> Option<String> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    let start = xml.find(&open)?;
    let end = xml[start..].find(&close)? + start + close.len();
    Some(xml[start..end].to_string())
}

fn with_status(xml: &str, status: &str) -> String {
    match all_tags(xml, "DBInstanceStatus").into_iter().next() {
        Some(old) => xml.replacen(
            &format!("<DBInstanceStatus>{old}</DBInstanceStatus>"),
            &format!("<DBInstanceStatus>{status}</DBInstanceStatus>"),
            1,
        ),
        None => xml.replacen("<DBInstance>", &format!("<DBInstance><DBInstanceStatus>{status}</DBInstanceStatus>"), 1),
    }
}

/// DescribeDBInstances' answer with this one instance.
fn described(instance: &str) -> Vec<u8> {
    let namespace = "http://rds.amazonaws.com/doc/2014-10-31/";
    query_answer("DescribeDBInstances", namespace, &format!("<DBInstances>{instance}</DBInstances>"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deleted_instance_is_shown_deleting_with_the_rest_of_what_it_was() {
        let xml = "<DBInstance><DBInstanceIdentifier>db-1</DBInstanceIdentifier><DBInstanceStatus>available</DBInstanceStatus><DBSubnetGroup><DBSubnetGroupName>g</DBSubnetGroupName></DBSubnetGroup></DBInstance>";
        let text = format!("<DeleteDBInstanceResult>{xml}</DeleteDBInstanceResult>");
        let shown = with_status(&element(&text, "DBInstance").unwrap(), "deleting");
        assert_eq!(shown, xml.replace(">available<", ">deleting<"));
    }
}
