//! What AWS's API does that moto leaves out, in every profile:
//! - tags given in CreateBucket's `CreateBucketConfiguration` are the new
//!   bucket's tags (S3 API reference, CreateBucket, "Tags": general purpose
//!   buckets take tags at creation; moto reads only the location constraint).
//!   The layer tags the bucket on moto, with a call of its own, before it
//!   answers: as on AWS, no caller ever sees the bucket without them.
//! - GetSecretValue without a version answers the version labelled
//!   `AWSCURRENT` (Secrets Manager API reference, GetSecretValue: "defaults to
//!   AWSCURRENT"); moto answers the version it last made current itself, not
//!   one UpdateSecretVersionStage moved the label to (a staged rotation). The
//!   layer asks moto for `AWSCURRENT` by name.
//! - deleting an ECS service deregisters its Application Auto Scaling target
//!   and deletes its scaling policies (a scalable target cannot outlive its
//!   service: DeregisterScalableTarget then answers ObjectNotFoundException;
//!   hako #69 met it); moto keeps the target. The layer deregisters it on moto.

use crate::http::{Request, status_of};
use crate::rules::all_tags;

/// `req` as moto must be asked it to answer as AWS does, when it differs.
pub fn asked(req: &Request) -> Option<Request> {
    if req.service() != "secretsmanager" || req.action() != "GetSecretValue" {
        return None;
    }
    let mut body: serde_json::Value = serde_json::from_slice(&req.body).ok()?;
    if body.get("VersionId").is_some() || body.get("VersionStage").is_some() {
        return None;
    }
    body["VersionStage"] = "AWSCURRENT".into();
    Some(req.with_body(body.to_string().into_bytes()))
}

/// Does, on moto, what AWS did with `req` and moto left out; `answer` is moto's.
pub fn complete(req: &Request, answer: &[u8], upstream: &str) {
    if status_of(answer) != 200 {
        return;
    }
    if req.service() == "ecs" && req.action() == "DeleteService" {
        if let Some(resource) = scalable_target_of(&req.body_text()) {
            let asked = serde_json::json!({
                "ServiceNamespace": "ecs",
                "ScalableDimension": "ecs:service:DesiredCount",
                "ResourceId": resource,
            });
            let target = "AnyScaleFrontendService.DeregisterScalableTarget";
            let (key, region) = (req.access_key(), req.region());
            let _ =
                crate::rules::ask_json(upstream, &key, &region, "application-autoscaling", target, &asked.to_string());
        }
        return;
    }
    if req.service() != "s3" {
        return;
    }
    if let Some((bucket, tags)) = tags_at_creation(req) {
        let namespace = "http://s3.amazonaws.com/doc/2006-03-01/";
        let body = format!("<Tagging xmlns=\"{namespace}\"><TagSet>{tags}</TagSet></Tagging>");
        let mut headers: Vec<(String, String)> = req
            .headers
            .iter()
            .filter(|(k, _)| ["host", "authorization", "x-amz-date"].iter().any(|h| k.eq_ignore_ascii_case(h)))
            .cloned()
            .collect();
        headers.push(("Content-Type".into(), "application/xml".into()));
        headers.push(("Content-Length".into(), body.len().to_string()));
        let tagging = Request { head: format!("PUT /{bucket}?tagging HTTP/1.1"), headers, body: body.into_bytes() };
        let _ = tagging.forward(upstream);
    }
}

/// The scalable target id (`service/<cluster>/<service>`) of the service a
/// DeleteService body names, by name or ARN (the cluster `default` when none).
fn scalable_target_of(body: &str) -> Option<String> {
    let asked: serde_json::Value = serde_json::from_str(body).ok()?;
    let last = |v: &str| v.rsplit('/').next().unwrap_or(v).to_string();
    let service = asked["service"].as_str()?;
    let cluster = match (asked["cluster"].as_str(), service.split('/').collect::<Vec<_>>().as_slice()) {
        // A long service ARN names its cluster: …:service/<cluster>/<name>.
        (None, [_, cluster, _]) => cluster.to_string(),
        (Some(c), _) => last(c),
        (None, _) => "default".to_string(),
    };
    Some(format!("service/{cluster}/{}", last(service)))
}

/// The bucket a path-style CreateBucket names, and the `<Tag>` elements of its configuration.
fn tags_at_creation(req: &Request) -> Option<(String, String)> {
    let mut parts = req.head.split(' ');
    let (method, target) = (parts.next()?, parts.next()?);
    let bucket = target.trim_start_matches('/').trim_end_matches('/');
    if method != "PUT" || bucket.is_empty() || bucket.contains(['/', '?']) {
        return None;
    }
    let body = req.body_text();
    let configuration = all_tags(&body, "Tags").into_iter().next()?;
    configuration.contains("<Tag>").then(|| (bucket.to_string(), configuration))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn create(head: &str, body: &str) -> Request {
        Request { head: head.into(), headers: vec![], body: body.as_bytes().to_vec() }
    }

    #[test]
    fn a_deleted_services_scalable_target_is_named_by_cluster_and_service() {
        let by_name = r#"{"cluster":"ca-cluster","service":"ca-orchestrator","force":true}"#;
        assert_eq!(scalable_target_of(by_name).as_deref(), Some("service/ca-cluster/ca-orchestrator"));
        let by_arn = r#"{"cluster":"arn:aws:ecs:eu-west-3:123456789012:cluster/ca-cluster","service":"arn:aws:ecs:eu-west-3:123456789012:service/ca-cluster/ca-orchestrator"}"#;
        assert_eq!(scalable_target_of(by_arn).as_deref(), Some("service/ca-cluster/ca-orchestrator"));
        let no_cluster = r#"{"service":"arn:aws:ecs:eu-west-3:123456789012:service/ca-cluster/ca-orchestrator"}"#;
        assert_eq!(scalable_target_of(no_cluster).as_deref(), Some("service/ca-cluster/ca-orchestrator"));
        assert_eq!(scalable_target_of(r#"{"service":"web"}"#).as_deref(), Some("service/default/web"));
    }

    #[test]
    fn only_a_bucket_creation_with_tags_in_its_configuration_is_completed() {
        let tagged = "<CreateBucketConfiguration><LocationConstraint>eu-west-3</LocationConstraint><Tags><Tag><Key>a</Key><Value>1</Value></Tag></Tags></CreateBucketConfiguration>";
        assert_eq!(
            tags_at_creation(&create("PUT /docs HTTP/1.1", tagged)),
            Some(("docs".into(), "<Tag><Key>a</Key><Value>1</Value></Tag>".into()))
        );
        let plain =
            "<CreateBucketConfiguration><LocationConstraint>eu-west-3</LocationConstraint></CreateBucketConfiguration>";
        assert_eq!(tags_at_creation(&create("PUT /docs HTTP/1.1", plain)), None);
        assert_eq!(tags_at_creation(&create("PUT /docs?tagging HTTP/1.1", tagged)), None);
        assert_eq!(tags_at_creation(&create("PUT /docs/key HTTP/1.1", tagged)), None);
    }
}
