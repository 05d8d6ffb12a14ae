//! Ordering and deletion rules AWS enforces and moto does not, each answered
//! with AWS's own error (sources in the README's `aws-sim` table):
//! - an internet-facing load balancer needs an internet gateway attached to its
//!   VPC: `InvalidSubnet` "VPC vpc-… has no internet gateway";
//! - an internet gateway is not detached while its VPC maps public addresses (an
//!   internet-facing load balancer, a NAT gateway): `DependencyViolation`;
//! - an ECS service is not created on a target group that no listener or rule
//!   forwards to: `InvalidParameterException` "The target group with
//!   targetGroupArn … does not have an associated load balancer."
//! - a WAF web ACL is not deleted while a load balancer is associated with it:
//!   `WAFAssociatedItemException` (WAF API reference, DeleteWebACL; moto
//!   deletes it and leaves the association dangling).
//! - an ACM certificate is not deleted while a load balancer's listener uses
//!   it: `ResourceInUseException` (ACM API reference, DeleteCertificate), and
//!   DescribeCertificate's `InUseBy` names those load balancers (moto names a
//!   listener once one is made, keeps it after the listener is gone, and
//!   deletes the certificate under the listener).
//! - a security group is not deleted while another group's ingress rule lets
//!   it in: `DependencyViolation` "resource sg-… has a dependent object" (EC2
//!   API reference, DeleteSecurityGroup; moto deletes it and leaves the rule
//!   naming a group that is gone).
//!
//! And one answer moto lacks: WAF's ListResourcesForWebACL (the load balancers
//! associated with a web ACL), which `gc` needs to take a web ACL off what it
//! protects; the layer answers it from moto's associations.
//!
//! The layer asks moto what it needs to know, with calls of its own.

use crate::http::{Protocol, Request, error_answer, json_answer};

/// The values of `key=` (or `key.N=`) in a form body, URL-decoded.
pub(crate) fn form_values(body: &str, key: &str) -> Vec<String> {
    let numbered = |k: &str| {
        k.strip_prefix(key).and_then(|r| r.strip_prefix('.')).is_some_and(|n| n.chars().all(|c| c.is_ascii_digit()))
    };
    body.split('&')
        .filter_map(|kv| kv.split_once('='))
        .filter(|(k, _)| *k == key || numbered(k))
        .map(|(_, v)| decode(v))
        .collect()
}

/// A form value, URL-decoded (`+` is a space, `%2F` a slash).
fn decode(v: &str) -> String {
    let bytes = v.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => match u8::from_str_radix(&v[i + 1..i + 3], 16) {
                Ok(b) => {
                    out.push(b);
                    i += 2;
                }
                Err(_) => out.push(b'%'),
            },
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Every text between `<tag>` and `</tag>` in `xml`.
pub(crate) fn all_tags(xml: &str, tag: &str) -> Vec<String> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(start) = rest.find(&open) {
        let after = &rest[start + open.len()..];
        let Some(end) = after.find(&close) else { break };
        out.push(after[..end].to_string());
        rest = &after[end + close.len()..];
    }
    out
}

/// A call of the layer's own to moto, signed (as moto reads it) for `service` in `region`.
pub(crate) fn ask(upstream: &str, region: &str, service: &str, body: &str) -> Option<String> {
    ask_as(upstream, "testing", region, service, body)
}

/// [`ask`], as the account of the access key `key` (moto tells accounts apart by their keys).
pub(crate) fn ask_as(upstream: &str, key: &str, region: &str, service: &str, body: &str) -> Option<String> {
    let form = ("Content-Type", "application/x-www-form-urlencoded; charset=utf-8");
    call(upstream, key, region, service, &[form], body)
}

/// A JSON-protocol call of the layer's own to moto (`target` like
/// `AmazonEC2ContainerServiceV20141113.DescribeTaskDefinition`), as the account of `key`.
pub(crate) fn ask_json(
    upstream: &str,
    key: &str,
    region: &str,
    service: &str,
    target: &str,
    body: &str,
) -> Option<String> {
    let json = [("Content-Type", "application/x-amz-json-1.1"), ("X-Amz-Target", target)];
    call(upstream, key, region, service, &json, body)
}

/// A POST of `body` to moto with `headers`, signed for `service` in `region`
/// as the account of `key`; the answer's body.
fn call(
    upstream: &str,
    key: &str,
    region: &str,
    service: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Option<String> {
    let authorization = format!(
        "AWS4-HMAC-SHA256 Credential={key}/20260101/{region}/{service}/aws4_request, SignedHeaders=host, Signature=0"
    );
    let mut all = vec![("Host".to_string(), upstream.to_string())];
    all.extend(headers.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    all.push(("Authorization".into(), authorization));
    all.push(("Content-Length".into(), body.len().to_string()));
    let req = Request { head: "POST / HTTP/1.1".into(), headers: all, body: body.as_bytes().to_vec() };
    let answer = req.forward(upstream).ok()?;
    let text = String::from_utf8_lossy(&answer).into_owned();
    Some(text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default())
}

/// Whether `vpc` has an internet gateway attached, as moto holds it.
pub(crate) fn has_internet_gateway(upstream: &str, region: &str, vpc: &str) -> bool {
    let body = format!(
        "Action=DescribeInternetGateways&Version=2016-11-15&Filter.1.Name=attachment.vpc-id&Filter.1.Value.1={vpc}"
    );
    ask(upstream, region, "ec2", &body).is_some_and(|xml| !all_tags(&xml, "internetGatewayId").is_empty())
}

/// The public addresses `vpc` maps, as names: internet-facing load balancers, NAT gateways.
fn public_addresses(upstream: &str, region: &str, vpc: &str) -> Vec<String> {
    let mut found = Vec::new();
    let lbs = ask(upstream, region, "elasticloadbalancing", "Action=DescribeLoadBalancers&Version=2015-12-01");
    for lb in lbs.unwrap_or_default().split("<LoadBalancerArn>").skip(1) {
        let in_vpc = all_tags(lb, "VpcId").first().is_some_and(|v| v == vpc);
        let public = all_tags(lb, "Scheme").first().is_none_or(|s| s == "internet-facing");
        if in_vpc && public {
            found.push(format!("load balancer {}", lb.split('<').next().unwrap_or("?")));
        }
    }
    let body = format!(
        "Action=DescribeNatGateways&Version=2016-11-15&Filter.1.Name=vpc-id&Filter.1.Value.1={vpc}&Filter.2.Name=state&Filter.2.Value.1=pending&Filter.2.Value.2=available"
    );
    for nat in all_tags(&ask(upstream, region, "ec2", &body).unwrap_or_default(), "natGatewayId") {
        found.push(format!("NAT gateway {nat}"));
    }
    found
}

/// The other security groups of the account of `key` in `region` with an
/// ingress rule from the group `id`, as moto holds them.
fn groups_letting_in(upstream: &str, key: &str, region: &str, id: &str) -> Vec<String> {
    let body = format!(
        "Action=DescribeSecurityGroups&Version=2016-11-15&Filter.1.Name=ip-permission.group-id&Filter.1.Value.1={id}"
    );
    let mut found = all_tags(&ask_as(upstream, key, region, "ec2", &body).unwrap_or_default(), "groupId");
    found.retain(|g| g != id);
    found.dedup();
    found
}

/// The load balancers of the account of `key` in `region` whose WAF web ACL
/// has the id `acl`, as moto holds them.
fn protected_by(upstream: &str, key: &str, region: &str, acl: &str) -> Vec<String> {
    let lbs = ask_as(upstream, key, region, "elasticloadbalancing", "Action=DescribeLoadBalancers&Version=2015-12-01");
    all_tags(&lbs.unwrap_or_default(), "LoadBalancerArn")
        .into_iter()
        .filter(|arn| {
            let asked = serde_json::json!({ "ResourceArn": arn }).to_string();
            let target = "AWSWAF_20190729.GetWebACLForResource";
            let answer = ask_json(upstream, key, region, "wafv2", target, &asked).unwrap_or_default();
            let found = serde_json::from_str::<serde_json::Value>(&answer).unwrap_or_default();
            found["WebACL"]["Id"].as_str() == Some(acl)
        })
        .collect()
}

/// The load balancers of the account of `key` in `region` with a listener
/// that serves the certificate `cert`, as moto holds them.
pub(crate) fn certificate_used_by(upstream: &str, key: &str, region: &str, cert: &str) -> Vec<String> {
    let service = "elasticloadbalancing";
    let lbs = ask_as(upstream, key, region, service, "Action=DescribeLoadBalancers&Version=2015-12-01");
    all_tags(&lbs.unwrap_or_default(), "LoadBalancerArn")
        .into_iter()
        .filter(|lb| {
            let body = format!(
                "Action=DescribeListeners&Version=2015-12-01&LoadBalancerArn={}",
                crate::interfaces::encode(lb)
            );
            let listeners = ask_as(upstream, key, region, service, &body).unwrap_or_default();
            all_tags(&listeners, "CertificateArn").iter().any(|c| c == cert)
        })
        .collect()
}

/// moto's DescribeCertificate answer with `InUseBy` as AWS fills it: the load
/// balancers whose listeners serve the certificate.
pub fn shown(req: &Request, answer: Vec<u8>, upstream: &str) -> Vec<u8> {
    if req.service() != "acm" || req.action() != "DescribeCertificate" || crate::http::status_of(&answer) != 200 {
        return answer;
    }
    let Ok(mut doc) = serde_json::from_slice::<serde_json::Value>(crate::http::body_of(&answer)) else {
        return answer;
    };
    let Some(arn) = doc["Certificate"]["CertificateArn"].as_str().map(String::from) else { return answer };
    let used = certificate_used_by(upstream, &req.access_key(), &req.region(), &arn);
    doc["Certificate"]["InUseBy"] = used.into();
    crate::http::with_answer_body(&answer, doc.to_string().as_bytes())
}

/// AWS's refusal (HTTP 400 `code`) by the rule `rule` while `holders`, what
/// still holds the resource, is not empty; `message` is given them, joined.
fn refused(
    holders: Vec<String>,
    rule: &'static str,
    protocol: Protocol,
    code: &str,
    message: impl FnOnce(&str) -> String,
) -> Option<(&'static str, Vec<u8>)> {
    (!holders.is_empty()).then(|| (rule, error_answer(protocol, 400, code, &message(&holders.join(", ")))))
}

/// AWS's answer where a rule applies to `req`, with the rule's name.
pub fn enforce(req: &Request, upstream: &str) -> Option<(&'static str, Vec<u8>)> {
    let body = req.body_text();
    let action = req.action();
    let region = req.region();
    // A JSON-protocol request's parameters.
    let asked = || serde_json::from_str::<serde_json::Value>(&body).ok();
    match (req.service().as_str(), action.as_str()) {
        ("wafv2", "DeleteWebACL") => {
            let asked = asked()?;
            let held = protected_by(upstream, &req.access_key(), &region, asked["Id"].as_str()?);
            refused(held, "web_acl_in_use", Protocol::Json, "WAFAssociatedItemException", |by| {
                format!(
                    "AWS WAF couldn't perform the operation because your resource is being used by another resource or it's associated with another resource. ({by})"
                )
            })
        }
        ("wafv2", "ListResourcesForWebACL") => {
            let asked = asked()?;
            let acl = asked["WebACLArn"].as_str()?.rsplit('/').next()?.to_string();
            let held = protected_by(upstream, &req.access_key(), &region, &acl);
            Some(("list_resources_for_web_acl", json_answer(&serde_json::json!({ "ResourceArns": held }))))
        }
        ("acm", "DeleteCertificate") => {
            let asked = asked()?;
            let cert = asked["CertificateArn"].as_str()?;
            let used = certificate_used_by(upstream, &req.access_key(), &region, cert);
            refused(used, "certificate_in_use", Protocol::Json, "ResourceInUseException", |by| {
                format!("Certificate {cert} is in use. ({by})")
            })
        }
        ("elasticloadbalancing", "CreateLoadBalancer") => {
            let scheme = form_values(&body, "Scheme").into_iter().next();
            let kind = form_values(&body, "Type").into_iter().next();
            if scheme.as_deref().is_some_and(|s| s != "internet-facing")
                || kind.as_deref().is_some_and(|t| t != "application")
            {
                return None;
            }
            let subnets = form_values(&body, "Subnets.member");
            let mut ask_subnets = String::from("Action=DescribeSubnets&Version=2016-11-15");
            for (i, s) in subnets.iter().enumerate() {
                ask_subnets.push_str(&format!("&SubnetId.{}={s}", i + 1));
            }
            let xml = ask(upstream, &region, "ec2", &ask_subnets)?;
            let vpc = all_tags(&xml, "vpcId").into_iter().next()?;
            if has_internet_gateway(upstream, &region, &vpc) {
                return None;
            }
            let message = format!("VPC {vpc} has no internet gateway");
            Some((
                "internet_facing_needs_an_internet_gateway",
                error_answer(Protocol::Query, 400, "InvalidSubnet", &message),
            ))
        }
        ("ec2", "DeleteSecurityGroup") => {
            let id = form_values(&body, "GroupId").into_iter().next()?;
            let referring = groups_letting_in(upstream, &req.access_key(), &region, &id);
            refused(referring, "group_named_by_another_groups_rule", Protocol::Ec2, "DependencyViolation", |by| {
                format!("resource {id} has a dependent object ({by})")
            })
        }
        ("ec2", "DetachInternetGateway") => {
            let vpc = form_values(&body, "VpcId").into_iter().next()?;
            let mapped = public_addresses(upstream, &region, &vpc);
            refused(mapped, "detach_while_addresses_are_mapped", Protocol::Ec2, "DependencyViolation", |by| {
                format!(
                    "Network {vpc} has some mapped public address(es). Please unmap those public address(es) before detaching the gateway. ({by})"
                )
            })
        }
        ("ecs", "CreateService") => {
            let asked = asked()?;
            let groups = asked["loadBalancers"].as_array()?.iter().filter_map(|lb| lb["targetGroupArn"].as_str());
            for arn in groups {
                let xml = ask(
                    upstream,
                    &region,
                    "elasticloadbalancing",
                    &format!(
                        "Action=DescribeTargetGroups&Version=2015-12-01&TargetGroupArns.member.1={}",
                        crate::interfaces::encode(arn)
                    ),
                )?;
                let balancers =
                    xml.split_once("<LoadBalancerArns>").and_then(|(_, r)| r.split_once("</LoadBalancerArns>"));
                if balancers.is_some_and(|(inside, _)| inside.contains("<member>")) {
                    continue;
                }
                let message =
                    format!("The target group with targetGroupArn {arn} does not have an associated load balancer.");
                return Some((
                    "target_group_without_a_load_balancer",
                    error_answer(Protocol::Json, 400, "InvalidParameterException", &message),
                ));
            }
            None
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn form_values_are_read_by_key_and_by_numbered_member() {
        let body = "Action=CreateLoadBalancer&Name=a&Subnets.member.1=subnet-1&Subnets.member.2=subnet-2&Scheme=internet-facing";
        assert_eq!(form_values(body, "Subnets.member"), ["subnet-1", "subnet-2"]);
        assert_eq!(form_values(body, "Scheme"), ["internet-facing"]);
        assert_eq!(form_values("Name=a%2Fb+c", "Name"), ["a/b c"]);
    }

    #[test]
    fn tags_are_read_in_order() {
        assert_eq!(all_tags("<a>1</a><b>x</b><a>2</a>", "a"), ["1", "2"]);
    }
}
