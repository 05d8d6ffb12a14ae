//! Pages as AWS cuts them. AWS answers a list in pages: the JSON and query
//! services by default (Secrets Manager, CloudWatch Logs, SSM, ECS, RDS), EC2
//! describes when the caller gives `MaxResults`. moto returns everything at
//! once unless asked for less, so the layer asks for `--page-size` items: code
//! that reads the first page only is seen with a handful of resources.

use crate::http::{Protocol, Request};

/// The parameter that sets the page size of an action, and the smallest value
/// its service accepts.
struct Paged {
    action: &'static str,
    param: &'static str,
    min: usize,
}

/// The JSON-protocol lists moto pages when asked (API references: ListSecrets,
/// DescribeLogGroups, FilterLogEvents, ListCommandInvocations,
/// DescribeInstanceInformation, DescribeImages).
const JSON: &[Paged] = &[
    Paged { action: "ListSecrets", param: "MaxResults", min: 1 },
    Paged { action: "DescribeLogGroups", param: "limit", min: 1 },
    Paged { action: "FilterLogEvents", param: "limit", min: 1 },
    Paged { action: "ListCommandInvocations", param: "MaxResults", min: 1 },
    Paged { action: "DescribeInstanceInformation", param: "MaxResults", min: 5 },
    Paged { action: "DescribeImages", param: "maxResults", min: 1 },
];

/// The query-protocol lists: RDS takes `MaxRecords` from 20 (API reference:
/// DescribeDBSubnetGroups, DescribeDBInstances); IAM `MaxItems` from 1, and
/// answers 100 when not asked (API reference: ListAttachedRolePolicies).
const QUERY: &[Paged] = &[
    Paged { action: "DescribeDBSubnetGroups", param: "MaxRecords", min: 20 },
    Paged { action: "DescribeDBInstances", param: "MaxRecords", min: 20 },
    Paged { action: "ListAttachedRolePolicies", param: "MaxItems", min: 1 },
];

/// JSON lists that moto answers whole whatever page size is asked: the layer
/// cuts them itself, with a token of its own (API references: ListTaskDefinitions,
/// ListServices, ListCommands).
struct Sliced {
    action: &'static str,
    list: &'static str,
    token: &'static str,
}

const SLICED: &[Sliced] = &[
    Sliced { action: "ListTaskDefinitions", list: "taskDefinitionArns", token: "nextToken" },
    Sliced { action: "ListServices", list: "serviceArns", token: "nextToken" },
    Sliced { action: "ListCommands", list: "Commands", token: "NextToken" },
];

const TOKEN: &str = "aws-sim-page-";

/// The answer to `req` cut to one page of `size` items by the layer, for the
/// lists moto does not page; `None` for any other request.
pub fn sliced(req: &Request, size: usize, upstream: &str) -> Option<Vec<u8>> {
    if req.protocol() != Protocol::Json {
        return None;
    }
    let action = req.action();
    let rule = SLICED.iter().find(|s| s.action == action)?;
    let mut body: serde_json::Value = serde_json::from_slice(&req.body).ok()?;
    let object = body.as_object_mut()?;
    let offset = match object.remove(rule.token) {
        None => 0,
        Some(t) => t.as_str()?.strip_prefix(TOKEN)?.parse::<usize>().ok()?,
    };
    object.retain(|k, _| !k.eq_ignore_ascii_case("maxResults"));
    let whole = req.with_body(body.to_string().into_bytes()).forward(upstream).ok()?;
    if crate::http::status_of(&whole) != 200 {
        return Some(whole);
    }
    let mut answer: serde_json::Value = serde_json::from_slice(crate::http::body_of(&whole)).ok()?;
    let items = answer.get_mut(rule.list)?.as_array_mut()?;
    let rest: Vec<serde_json::Value> = items.drain(..).skip(offset).collect();
    let more = rest.len() > size;
    items.extend(rest.into_iter().take(size));
    if more {
        answer[rule.token] = format!("{TOKEN}{}", offset + size).into();
    }
    Some(crate::http::with_answer_body(&whole, answer.to_string().as_bytes()))
}

const EMPTY: &str = "aws-sim-empty-page";

/// FilterLogEvents "can return an empty page with a token while more events
/// exist" (its API reference): the first page the layer gives is that one.
pub fn empty_first_page(req: &Request) -> Option<Vec<u8>> {
    if req.protocol() != Protocol::Json || req.action() != "FilterLogEvents" {
        return None;
    }
    let body: serde_json::Value = serde_json::from_slice(&req.body).ok()?;
    if body.get("nextToken").is_some() {
        return None;
    }
    let page = serde_json::json!({ "events": [], "searchedLogStreams": [], "nextToken": EMPTY });
    Some(crate::http::json_answer(&page))
}

/// The request after the layer's empty page: as it was first sent.
pub fn after_empty_page(req: &Request) -> Option<Request> {
    if req.protocol() != Protocol::Json || req.action() != "FilterLogEvents" {
        return None;
    }
    let mut body: serde_json::Value = serde_json::from_slice(&req.body).ok()?;
    if body.get("nextToken")?.as_str()? != EMPTY {
        return None;
    }
    body.as_object_mut()?.remove("nextToken");
    Some(req.with_body(body.to_string().into_bytes()))
}

/// `req` asking for pages of at most `size` items where AWS would page it, or
/// `None` when the action is not one that pages (or already asks for less).
pub fn paged(req: &Request, size: usize) -> Option<Request> {
    let action = req.action();
    match req.protocol() {
        Protocol::Json => {
            let rule = JSON.iter().find(|p| p.action == action)?;
            let mut body: serde_json::Value = serde_json::from_slice(&req.body).ok()?;
            let size = size.max(rule.min);
            let asked = body.get(rule.param).and_then(|v| v.as_u64()).map(|v| v as usize);
            if asked.is_some_and(|a| a <= size) {
                return None;
            }
            body.as_object_mut()?.insert(rule.param.to_string(), size.into());
            Some(req.with_body(body.to_string().into_bytes()))
        }
        Protocol::Query => {
            let rule = QUERY.iter().find(|p| p.action == action)?;
            Some(req.with_body(with_form_value(&req.body_text(), rule.param, size.max(rule.min), true)?.into_bytes()))
        }
        // EC2 pages only when asked to: a `MaxResults` larger than the page is cut.
        Protocol::Ec2 if action.starts_with("Describe") => {
            Some(req.with_body(with_form_value(&req.body_text(), "MaxResults", size.max(5), false)?.into_bytes()))
        }
        _ => None,
    }
}

/// `form` with `param` at most `size`: lowered when larger, added when absent
/// and `add` says so; `None` when nothing changes.
fn with_form_value(form: &str, param: &str, size: usize, add: bool) -> Option<String> {
    let prefix = format!("{param}=");
    let asked = form.split('&').find_map(|kv| kv.strip_prefix(prefix.as_str())).and_then(|v| v.parse::<usize>().ok());
    match asked {
        Some(a) if a <= size => None,
        Some(_) => Some(
            form.split('&')
                .map(|kv| if kv.starts_with(&prefix) { format!("{prefix}{size}") } else { kv.to_string() })
                .collect::<Vec<_>>()
                .join("&"),
        ),
        None if add => Some(format!("{form}&{prefix}{size}")),
        None => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_form_value_is_lowered_added_or_left_as_it_is() {
        assert_eq!(
            with_form_value("Action=X&MaxResults=100", "MaxResults", 5, false).as_deref(),
            Some("Action=X&MaxResults=5")
        );
        assert_eq!(with_form_value("Action=X&MaxResults=3", "MaxResults", 5, true), None);
        assert_eq!(with_form_value("Action=X", "MaxRecords", 20, true).as_deref(), Some("Action=X&MaxRecords=20"));
        assert_eq!(with_form_value("Action=X", "MaxResults", 5, false), None);
    }
}
