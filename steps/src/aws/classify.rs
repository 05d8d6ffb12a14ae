//! The one place where an AWS error is judged retryable or fatal, and given a
//! message that says what failed, why, what to do, and the request id.

use std::error::Error as StdError;

use aws_sdk_ec2::config::http::HttpResponse;
use aws_sdk_ec2::error::{ProvideErrorMetadata, SdkError};
use ca_a2a_flow_engine::StepError;

/// What kind of failure, independent of the service and operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The call ran past its deadline.
    Timeout,
    /// The request never got an answer (connection refused, DNS, TLS).
    Unreachable,
    /// AWS answered with an error code.
    Service,
    /// AWS answered something the SDK could not read.
    BadResponse,
    /// The request could not be built (a bug or a bad parameter).
    Request,
}

/// An AWS failure reduced to what classification needs.
#[derive(Debug, Clone, PartialEq)]
pub struct AwsFailure {
    /// `ec2:CreateVpc`.
    pub action: String,
    pub kind: FailureKind,
    pub code: Option<String>,
    pub message: String,
    pub request_id: Option<String>,
    pub http_status: Option<u16>,
    /// The step created the resource a moment ago (eventual consistency).
    pub just_created: bool,
}

/// Reduces any SDK error (of any AWS service client) to an [`AwsFailure`].
pub fn failure<E>(action: &str, err: &SdkError<E, HttpResponse>) -> AwsFailure
where
    E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
{
    let kind = match err {
        SdkError::TimeoutError(_) => FailureKind::Timeout,
        SdkError::DispatchFailure(_) => FailureKind::Unreachable,
        SdkError::ResponseError(_) => FailureKind::BadResponse,
        SdkError::ConstructionFailure(_) => FailureKind::Request,
        SdkError::ServiceError(_) => FailureKind::Service,
        _ => FailureKind::BadResponse,
    };
    let raw = err.raw_response();
    let header_id = raw.and_then(|r| {
        ["x-amzn-requestid", "x-amz-request-id", "x-amzn-request-id"]
            .iter()
            .find_map(|h| r.headers().get(*h))
            .map(String::from)
    });
    // Query-protocol services (EC2) put the request id in the XML body, not in a header.
    let body_id = || {
        let body = raw.and_then(|r| r.body().bytes()).map(String::from_utf8_lossy)?;
        ["RequestID", "RequestId"].iter().find_map(|tag| {
            let start = body.find(&format!("<{tag}>"))? + tag.len() + 2;
            let end = body[start..].find('<')? + start;
            Some(body[start..end].trim().to_string())
        })
    };
    let header_id = header_id.or_else(body_id);
    let (code, message, request_id) = match err.as_service_error() {
        Some(e) => (
            e.code().map(String::from),
            e.message().map(String::from).unwrap_or_else(|| e.to_string()),
            e.meta().extra("aws_request_id").map(String::from).or(header_id),
        ),
        None if kind == FailureKind::Timeout => (None, "no answer before the call's deadline".to_string(), None),
        None => (None, describe_chain(err), header_id),
    };
    AwsFailure {
        action: action.to_string(),
        kind,
        code,
        message,
        request_id,
        http_status: raw.map(|r| r.status().as_u16()),
        just_created: false,
    }
}

/// `send().await.or_step_error("ec2:CreateVpc")?`: every AWS call's error goes
/// through [`classify`], the one place that judges it.
pub trait AwsResult<T> {
    fn or_step_error(self, action: &str) -> Result<T, StepError>;
    /// The same, for a call on a resource this attempt just created (a NotFound
    /// then means "not visible yet", which is retryable).
    fn or_step_error_created(self, action: &str, just_created: bool) -> Result<T, StepError>;
    /// The same, except that an error whose code is one of `absent` (the
    /// service's "not found") is `Ok(None)`: a describe-by-name found nothing.
    fn or_absent(self, action: &str, absent: &[&str]) -> Result<Option<T>, StepError>;
    /// A delete's answer: done (or `absent`: already gone), or still held by
    /// something AWS releases in its own time (a `DependencyViolation`, an
    /// in-use error), which the caller waits out; anything else is the error.
    fn or_held(self, action: &str, absent: &[&str]) -> Result<Deleted, StepError>;
}

/// What a delete call got.
#[derive(Debug, Clone, PartialEq)]
pub enum Deleted {
    /// Deleted, or already gone.
    Done,
    /// Something still depends on it: AWS's words.
    Held(String),
}

impl<T, E> AwsResult<T> for Result<T, SdkError<E, HttpResponse>>
where
    E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
{
    fn or_step_error(self, action: &str) -> Result<T, StepError> {
        self.map_err(|e| classify(&failure(action, &e)))
    }
    fn or_step_error_created(self, action: &str, just_created: bool) -> Result<T, StepError> {
        self.map_err(|e| classify(&AwsFailure { just_created, ..failure(action, &e) }))
    }
    fn or_absent(self, action: &str, absent: &[&str]) -> Result<Option<T>, StepError> {
        match self {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.as_service_error().and_then(|s| s.code()).is_some_and(|c| absent.contains(&c)) => Ok(None),
            Err(e) => Err(classify(&failure(action, &e))),
        }
    }
    fn or_held(self, action: &str, absent: &[&str]) -> Result<Deleted, StepError> {
        match self.or_absent(action, absent) {
            Ok(_) => Ok(Deleted::Done),
            Err(e) if e.hint.as_deref() == Some(HELD_HINT) => Ok(Deleted::Held(e.message)),
            Err(e) => Err(e),
        }
    }
}

/// The hint of an error whose resource something else still holds.
const HELD_HINT: &str = "something still depends on the resource; retrying until the step's deadline";

fn describe_chain(e: &dyn StdError) -> String {
    let mut parts = vec![e.to_string()];
    let mut source = e.source();
    while let Some(s) = source {
        parts.push(s.to_string());
        source = s.source();
    }
    parts.dedup();
    parts.join(": ")
}

const THROTTLING: &[&str] = &[
    "Throttling",
    "ThrottlingException",
    "ThrottledException",
    "RequestLimitExceeded",
    "TooManyRequestsException",
    "RequestThrottled",
    "RequestThrottledException",
    "SlowDown",
    "PriorRequestNotComplete",
    "EC2ThrottledException",
];
const SERVER_SIDE: &[&str] = &[
    "InternalError",
    "InternalFailure",
    "ServiceUnavailable",
    "ServiceUnavailableException",
    "Unavailable",
    "InternalServerError",
];
const ACCESS: &[&str] = &[
    "AccessDenied",
    "AccessDeniedException",
    "UnauthorizedOperation",
    "AuthFailure",
    "UnrecognizedClientException",
    "InvalidClientTokenId",
];

/// Something else still uses the resource (a deletion in progress elsewhere, a
/// dependent not gone yet): retried until the step's deadline.
const DEPENDED_ON: &[&str] = &[
    "DependencyViolation",
    "ResourceInUse",
    "ResourceInUseException",
    "ClusterContainsServicesException",
    "ClusterContainsTasksException",
    "InvalidDBSubnetGroupStateFault",
    "InvalidDBInstanceState",
    "InvalidDBInstanceStateFault",
    "DeleteConflict",
    "InvalidIPAddress.InUse",
    // WAF: a load balancer still associated with the web ACL.
    "WAFAssociatedItemException",
];

/// Refusals AWS gives for a moment only, read from their code and text (each as
/// the service words it), with why it passes.
fn momentary(code: &str, message: &str) -> Option<&'static str> {
    let says = |text: &str| message.to_lowercase().contains(text);
    match code {
        // S3: a create or delete of the same bucket is still in flight.
        "OperationAborted" => Some("a conflicting operation on this bucket is still in progress; the step tries again"),
        // ECS creates its service-linked role on first use, and IAM takes seconds to show it.
        "InvalidParameterException" if says("unable to assume the service linked role") => Some(
            "ECS has just created its service-linked role (AWSServiceRoleForECS) and cannot use it yet; the step tries again",
        ),
        // ELB takes seconds to tell ECS about a listener or rule made a moment ago.
        "InvalidParameterException" if says("does not have an associated load balancer") => Some(
            "the listener or rule that uses this target group is new and ECS does not see it yet; the step tries again",
        ),
        // Secrets Manager frees a force-deleted secret's name some seconds after the delete.
        "InvalidRequestException" if says("scheduled for deletion") => Some(
            "a secret with this name is scheduled for deletion: a forced delete frees the name within seconds (the step tries again), a recovery window keeps it for days (restore it, or `destroy --force-delete-secrets`)",
        ),
        // WAF: another writer used the lock token first; the next try reads a fresh one.
        "WAFOptimisticLockException" => {
            Some("the web ACL changed since its lock token was read; the step reads it again")
        }
        // WAF does not see a load balancer made a moment ago (the Terraform provider
        // retries this for minutes on association).
        "WAFUnavailableEntityException" => Some("WAF does not see the resource yet (it is new); the step tries again"),
        // ACM fills in a new certificate's details a moment after the request.
        "RequestInProgressException" => Some("ACM is still processing the certificate request; the step tries again"),
        // Application Auto Scaling: another change to the same target is under way.
        "ConcurrentUpdateException" => {
            Some("another change to this scalable target is under way; the step tries again")
        }
        _ => None,
    }
}

/// Decides retryable or fatal, and writes the message and hint.
pub fn classify(f: &AwsFailure) -> StepError {
    let rid = f.request_id.as_deref().map(|r| format!(" (request id {r})")).unwrap_or_default();
    let code = f.code.as_deref().unwrap_or("");
    let what = if code.is_empty() { f.message.clone() } else { format!("{code}: {}", f.message) };
    let base = format!("{} failed: {what}{rid}", f.action);
    match f.kind {
        FailureKind::Timeout => {
            return StepError::retryable(format!("{} got no answer within {}{rid}", f.action, ca_a2a_flow_engine::duration::format(super::call_timeout())))
                .with_hint("the call was cut at its deadline and will be tried again; raise CA_A2A_FLOW_AWS_CALL_TIMEOUT if AWS is just slow");
        }
        FailureKind::Unreachable => {
            return StepError::retryable(format!("{} could not reach AWS: {}", f.action, f.message))
                .with_hint("check the network, the region, and AWS_ENDPOINT_URL if one is set");
        }
        FailureKind::BadResponse => {
            return StepError::retryable(format!(
                "{} got an answer the SDK could not read: {}{rid}",
                f.action, f.message
            ));
        }
        FailureKind::Request => {
            return StepError::fatal(format!("{} could not be sent: {}", f.action, f.message))
                .with_hint("a parameter is malformed; check the step's `with`");
        }
        FailureKind::Service => {}
    }
    if THROTTLING.contains(&code) || f.http_status == Some(429) {
        return StepError::retryable(base)
            .with_hint("AWS is throttling this account; the step backs off and tries again");
    }
    if SERVER_SIDE.contains(&code) || f.http_status.is_some_and(|s| s >= 500) {
        return StepError::retryable(base).with_hint("an AWS-side error; the step tries again");
    }
    if let Some(why) = momentary(code, &f.message) {
        return StepError::retryable(base).with_hint(why);
    }
    let not_found = code.contains("NotFound") || code.starts_with("NoSuch");
    if not_found && f.just_created {
        return StepError::retryable(base)
            .with_hint("the resource was created a moment ago and is not visible everywhere yet");
    }
    if ACCESS.contains(&code) {
        let lower = f.message.to_lowercase();
        let hint = if lower.contains("service control policy") || lower.contains("scp") {
            format!(
                "an organisation policy (SCP) forbids {} here; this region or account may be closed to it: try another region or ask your organisation's administrators",
                f.action
            )
        } else if code == "AuthFailure" || code == "UnrecognizedClientException" || code == "InvalidClientTokenId" {
            "the credentials are not valid: check the AWS profile, SSO session or environment variables".to_string()
        } else {
            format!(
                "grant `{}` to the identity running ca-a2a-flow (`aws sts get-caller-identity` shows which)",
                f.action
            )
        };
        return StepError::fatal(format!("{base}; permission denied")).with_hint(hint);
    }
    if code == "VpcLimitExceeded" {
        return StepError::fatal(base).with_hint(
            "the region's VPC quota is used up: delete VPCs left by earlier attempts (those tagged ca-a2a-flow:stack), or raise the quota",
        );
    }
    if DEPENDED_ON.contains(&code) {
        return StepError::retryable(base).with_hint(HELD_HINT);
    }
    // IAM is eventually consistent: an instance profile made seconds ago is not yet
    // usable by EC2 ("Invalid IAM Instance Profile name").
    if code == "InvalidParameterValue" && f.message.to_lowercase().contains("instance profile") {
        return StepError::retryable(base)
            .with_hint("the instance profile is new and IAM has not propagated it yet; the step tries again");
    }
    if code.starts_with("InvalidParameter") || code.starts_with("Invalid") || code.starts_with("Malformed") {
        return StepError::fatal(base).with_hint("AWS refused a parameter; check the step's `with` and the inputs");
    }
    StepError::fatal(base)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ca_a2a_flow_engine::ErrorClass::{Fatal, Retryable};

    fn service(code: &str, message: &str) -> AwsFailure {
        AwsFailure {
            action: "ec2:CreateVpc".into(),
            kind: FailureKind::Service,
            code: Some(code.into()),
            message: message.into(),
            request_id: Some("req-123".into()),
            http_status: Some(400),
            just_created: false,
        }
    }

    #[test]
    fn throttling_server_errors_timeouts_and_unreachable_endpoints_are_retried() {
        assert_eq!(classify(&service("RequestLimitExceeded", "slow down")).class, Retryable);
        assert_eq!(classify(&AwsFailure { http_status: Some(503), ..service("Weird", "x") }).class, Retryable);
        assert_eq!(classify(&AwsFailure { kind: FailureKind::Timeout, ..service("", "") }).class, Retryable);
        assert_eq!(classify(&AwsFailure { kind: FailureKind::Unreachable, ..service("", "refused") }).class, Retryable);
    }

    #[test]
    fn not_found_is_retried_only_right_after_this_step_created_the_resource() {
        assert_eq!(classify(&service("InvalidVpcID.NotFound", "no vpc")).class, Fatal);
        assert_eq!(
            classify(&AwsFailure { just_created: true, ..service("InvalidVpcID.NotFound", "no vpc") }).class,
            Retryable
        );
    }

    #[test]
    fn access_denied_names_the_action_and_an_scp_points_at_the_region() {
        let e = classify(&service(
            "AccessDenied",
            "User is not authorized ... with an explicit deny in a service control policy",
        ));
        assert_eq!(e.class, Fatal);
        assert!(e.message.contains("ec2:CreateVpc") && e.message.contains("req-123"), "{}", e.message);
        assert!(e.hint.unwrap().contains("organisation policy"));
        let plain = classify(&service("UnauthorizedOperation", "not allowed"));
        assert!(plain.hint.unwrap().contains("grant `ec2:CreateVpc`"));
    }

    #[test]
    fn quota_and_bad_parameters_are_fatal_with_a_fix() {
        let quota = classify(&service("VpcLimitExceeded", "The maximum number of VPCs has been reached."));
        assert_eq!(quota.class, Fatal);
        assert!(quota.hint.unwrap().contains("quota"));
        assert_eq!(classify(&service("InvalidParameterValue", "bad cidr")).class, Fatal);
    }

    #[test]
    fn an_instance_profile_iam_has_not_propagated_yet_is_retryable() {
        let young = service(
            "InvalidParameterValue",
            "Value (ca-a2a-builder-role) for parameter iamInstanceProfile.name is invalid. Invalid IAM Instance Profile name",
        );
        assert_eq!(classify(&young).class, Retryable);
    }

    #[test]
    fn the_not_found_codes_of_s3_and_iam_are_retried_right_after_a_create_too() {
        for code in ["NoSuchBucket", "NoSuchEntity", "NoSuchKey"] {
            assert_eq!(classify(&service(code, "gone")).class, Fatal, "{code}");
            assert_eq!(
                classify(&AwsFailure { just_created: true, ..service(code, "not yet") }).class,
                Retryable,
                "{code}"
            );
        }
    }

    #[test]
    fn what_aws_refuses_only_for_a_moment_is_retried_with_a_hint_that_says_why() {
        let moments = [
            (
                "OperationAborted",
                "A conflicting conditional operation is currently in progress against this resource. Please try again.",
                "conflicting",
            ),
            (
                "InvalidParameterException",
                "Unable to assume the service linked role. Please verify that the ECS service linked role exists.",
                "service-linked role",
            ),
            (
                "InvalidParameterException",
                "The target group with targetGroupArn arn:aws:elasticloadbalancing:eu-west-3:1:targetgroup/s-tg/1 does not have an associated load balancer.",
                "listener",
            ),
            (
                "InvalidRequestException",
                "You can't create this secret because a secret with this name is already scheduled for deletion.",
                "scheduled for deletion",
            ),
        ];
        for (code, message, why) in moments {
            let e = classify(&service(code, message));
            assert_eq!(e.class, Retryable, "{code}: {message}");
            assert!(e.hint.as_deref().is_some_and(|h| h.contains(why)), "{code}: {:?}", e.hint);
        }
        let other = classify(&service("InvalidParameterException", "Container memory must be at least 4 MiB"));
        assert_eq!(other.class, Fatal, "an InvalidParameterException about anything else stays fatal");
    }

    #[test]
    fn every_message_carries_the_request_id() {
        for code in ["Throttling", "AccessDenied", "InvalidParameterValue", "Unknown"] {
            assert!(classify(&service(code, "m")).message.contains("request id req-123"), "{code}");
        }
    }
}
