//! EC2's reads are eventually consistent: a resource just created may not be
//! visible yet. For a few seconds its ID is `NotFound` in describes by ID and in
//! every call that names it, and for longer, describes by filter (its tags)
//! leave it out. moto shows it at once.
//!
//! Figures (simulated seconds, the layer's choice within what the sources
//! describe): by ID within 2 s, by filter within 5 s. Sources: EC2 API
//! reference, "Eventual consistency in the Amazon EC2 API" (a new resource
//! "might not be immediately visible to all subsequent commands", describes
//! with filters lag more); terraform-provider-aws retries a new VPC's, subnet's
//! and route table's reads until found (`vpc.go`, `vpc_subnet.go`).

use std::sync::Mutex;

use crate::http::{Protocol, Request, body_of, error_answer, status_of, with_answer_body};

/// Simulated seconds a new ID stays unknown to describes by ID and calls that name it.
pub const BY_ID: (f64, f64) = (0.5, 2.0);
/// Simulated seconds a new resource stays out of describes by filter.
pub const BY_FILTER: (f64, f64) = (2.0, 5.0);

/// An EC2 resource type whose creation the layer hides for a while.
struct Kind {
    create: &'static str,
    describe: &'static str,
    /// The tag of its id in answers.
    id_tag: &'static str,
    /// The set its describe answers list it in.
    set: &'static str,
    /// AWS's error when the id is not known.
    not_found: &'static str,
    what: &'static str,
}

static KINDS: &[Kind] = &[
    Kind {
        create: "CreateVpc",
        describe: "DescribeVpcs",
        id_tag: "vpcId",
        set: "vpcSet",
        not_found: "InvalidVpcID.NotFound",
        what: "vpc ID",
    },
    Kind {
        create: "CreateSubnet",
        describe: "DescribeSubnets",
        id_tag: "subnetId",
        set: "subnetSet",
        not_found: "InvalidSubnetID.NotFound",
        what: "subnet ID",
    },
    Kind {
        create: "CreateInternetGateway",
        describe: "DescribeInternetGateways",
        id_tag: "internetGatewayId",
        set: "internetGatewaySet",
        not_found: "InvalidInternetGatewayID.NotFound",
        what: "internet gateway ID",
    },
    Kind {
        create: "CreateRouteTable",
        describe: "DescribeRouteTables",
        id_tag: "routeTableId",
        set: "routeTableSet",
        not_found: "InvalidRouteTableID.NotFound",
        what: "route table ID",
    },
    Kind {
        create: "CreateSecurityGroup",
        describe: "DescribeSecurityGroups",
        id_tag: "groupId",
        set: "securityGroupInfo",
        not_found: "InvalidGroup.NotFound",
        what: "security group",
    },
];

struct Young {
    kind: &'static Kind,
    id: String,
    by_id_at: f64,
    by_filter_at: f64,
}

#[derive(Default)]
pub struct Consistency {
    young: Mutex<Vec<Young>>,
}

impl Consistency {
    /// AWS's NotFound for a call that names an ID not visible yet at `now`.
    pub fn refuse(&self, req: &Request, now: f64) -> Option<(&'static str, Vec<u8>)> {
        if req.service() != "ec2" {
            return None;
        }
        let body = req.body_text();
        // A filter naming a young ID matches nothing yet; a parameter naming it is refused.
        let values: Vec<&str> = body
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .filter(|(k, _)| !k.starts_with("Filter."))
            .map(|(_, v)| v)
            .collect();
        let young = self.young.lock().unwrap();
        let hidden = young.iter().find(|y| y.by_id_at > now && values.contains(&y.id.as_str()))?;
        let message = format!("The {} '{}' does not exist", hidden.kind.what, hidden.id);
        Some(("not_visible_yet", error_answer(Protocol::Ec2, 400, hidden.kind.not_found, &message)))
    }

    /// moto's `answer` as AWS would give it at `now`: a create is noted, and a
    /// describe by filter leaves out what is too new for its filters.
    pub fn shown(&self, req: &Request, answer: Vec<u8>, now: f64) -> Vec<u8> {
        if req.service() != "ec2" || status_of(&answer) != 200 {
            return answer;
        }
        let action = req.action();
        let mut young = self.young.lock().unwrap();
        young.retain(|y| y.by_filter_at > now);
        if let Some(kind) = KINDS.iter().find(|k| k.create == action) {
            let body = String::from_utf8_lossy(body_of(&answer)).into_owned();
            if let Some(id) = first_between(&body, kind.id_tag) {
                let pick = |(least, most): (f64, f64)| now + least + fastrand::f64() * (most - least);
                young.push(Young { kind, id, by_id_at: pick(BY_ID), by_filter_at: pick(BY_FILTER) });
            }
            return answer;
        }
        let Some(kind) = KINDS.iter().find(|k| k.describe == action) else { return answer };
        if !req.body_text().split('&').any(|kv| kv.starts_with("Filter.")) {
            return answer;
        }
        let hidden: Vec<&str> = young.iter().filter(|y| std::ptr::eq(y.kind, kind)).map(|y| y.id.as_str()).collect();
        if hidden.is_empty() {
            return answer;
        }
        let body = String::from_utf8_lossy(body_of(&answer)).into_owned();
        match without_items(&body, kind.set, kind.id_tag, &hidden) {
            Some(fewer) => with_answer_body(&answer, fewer.as_bytes()),
            None => answer,
        }
    }
}

/// The text of the first `<tag>…</tag>` in `xml`.
fn first_between(xml: &str, tag: &str) -> Option<String> {
    let open = format!("<{tag}>");
    let start = xml.find(&open)? + open.len();
    let end = xml[start..].find(&format!("</{tag}>"))? + start;
    Some(xml[start..end].to_string())
}

/// `xml` without the top-level `<item>`s of `<set>` whose `<id_tag>` is one of
/// `ids`; `None` when none was there.
fn without_items(xml: &str, set: &str, id_tag: &str, ids: &[&str]) -> Option<String> {
    let open = format!("<{set}>");
    let start = xml.find(&open)? + open.len();
    let end = xml[start..].find(&format!("</{set}>"))? + start;
    let inner = &xml[start..end];
    let mut kept = String::new();
    let mut dropped = false;
    let mut depth = 0usize;
    let mut item_start = 0usize;
    let mut i = 0usize;
    while i < inner.len() {
        let rest = &inner[i..];
        if rest.starts_with("<item>") {
            if depth == 0 {
                item_start = i;
            }
            depth += 1;
            i += "<item>".len();
        } else if rest.starts_with("</item>") {
            depth = depth.saturating_sub(1);
            i += "</item>".len();
            if depth == 0 {
                let item = &inner[item_start..i];
                if ids.iter().any(|id| item.contains(&format!("<{id_tag}>{id}</{id_tag}>"))) {
                    dropped = true;
                } else {
                    kept.push_str(item);
                }
            }
        } else {
            let step = rest.chars().next().map_or(1, char::len_utf8);
            if depth == 0 {
                kept.push_str(&rest[..step]);
            }
            i += step;
        }
    }
    dropped.then(|| format!("{}{kept}{}", &xml[..start], &xml[end..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_young_item_leaves_its_set_with_its_nested_items() {
        let xml = "<r><vpcSet><item><vpcId>vpc-1</vpcId><tagSet><item><key>a</key></item></tagSet></item><item><vpcId>vpc-2</vpcId></item></vpcSet></r>";
        assert_eq!(
            without_items(xml, "vpcSet", "vpcId", &["vpc-1"]).unwrap(),
            "<r><vpcSet><item><vpcId>vpc-2</vpcId></item></vpcSet></r>"
        );
        assert_eq!(without_items(xml, "vpcSet", "vpcId", &["vpc-9"]), None);
    }
}
