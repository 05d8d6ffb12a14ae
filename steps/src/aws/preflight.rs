//! Preflight: what can be known before a run creates anything, each check
//! reported pass / warn / fail with its numbers. `plan` prints them; `run`
//! performs them first and refuses on a failure (`--skip-preflight NAME`).
//! The bash deployment's failures they catch: a region whose VPC quota was used up by
//! leftovers (VpcLimitExceeded), a region closed by an organisation policy
//! (AccessDenied 45 minutes in), an availability zone that does not exist.

use std::collections::{BTreeMap, BTreeSet};

use aws_sdk_ec2::types::Filter;
use ca_a2a_flow_engine::template::Scope;
use ca_a2a_flow_engine::{Plan, PlanAction, Workflow};
use serde::Serialize;
use serde_json::Value as Json;

use super::{classify, failure};
use crate::image_build_push as image;
use ca_a2a_flow_engine::Kind;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    Warn,
    Fail,
    Skipped,
}

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub status: Status,
    pub message: String,
}

/// The checks there are, for `--skip-preflight`.
pub const NAMES: &[&str] = &["credentials", "region", "vpc-quota", "eip-quota", "permissions", "disk", "builder"];

/// The checks that call AWS: with no usable credentials they are not tried (each would say the same).
const ASK_AWS: &[&str] = &["region", "vpc-quota", "eip-quota", "permissions", "builder"];

/// The account the stack was deployed in, as an earlier run recorded it: (account, run id).
pub type Recorded = Option<(String, String)>;

/// Whether `wf` has an AWS step, so that the checks apply to it.
pub fn applies(wf: &Workflow) -> bool {
    wf.steps.iter().any(|s| crate::facts(&s.uses).is_some())
}

/// Runs the checks for `wf` as `plans` would run it. Checks named in `skip`
/// are reported as skipped.
pub async fn checks(
    wf: &Workflow,
    inputs: &BTreeMap<String, Json>,
    plans: &BTreeMap<String, Plan>,
    skip: &[String],
    known_stacks: &BTreeSet<String>,
    recorded: &Recorded,
) -> Vec<Check> {
    let outputs = BTreeMap::new();
    let (secret, env) = (|_: &str, _: &str| false, |n: &str| std::env::var(n).ok());
    let scope = Scope { run_id: "", run_name: "", inputs, outputs: &outputs, secret: &secret, env: &env };
    let steps: Vec<(&str, &str, Json)> =
        wf.steps.iter().map(|s| (s.id.as_str(), s.uses.as_str(), scope.resolve_partial(&s.with))).collect();
    if !applies(wf) {
        return Vec::new();
    }
    let creates = |kind: &str| {
        wf.steps
            .iter()
            .filter(|s| s.uses == kind)
            .filter(|s| plans.get(&s.id).is_none_or(|p| p.action == PlanAction::Create))
            .count()
    };
    let region = steps
        .iter()
        .find_map(|(_, _, w)| w.get("region").and_then(Json::as_str).filter(|r| !r.contains("${{")).map(String::from));
    let config = super::config(region.as_deref()).await;
    let region = config.region().map(|r| r.to_string()).unwrap_or_default();
    let ec2 = aws_sdk_ec2::Client::new(&config);
    let mut out = Vec::new();
    let mut skip = skip.to_vec();

    // Who the credentials are, before anything else asks AWS: a session that
    // expired, or credentials of another account than the one meant, are said
    // here, in seconds, and the checks that would call AWS are not tried.
    let expected: Vec<(String, String)> = steps
        .iter()
        .filter_map(|(id, _, w)| w.get("expect_account").and_then(Json::as_str).map(|a| (a, *id)))
        .filter(|(a, _)| !a.contains("${{"))
        .map(|(a, id)| (a.to_string(), format!("step `{id}`'s expect_account")))
        .chain(recorded.iter().map(|(a, run)| (a.clone(), format!("run {run} of this stack"))))
        .collect();
    let unusable = if skip.iter().any(|s| s == "credentials") {
        out.push(Check { name: "credentials", status: Status::Skipped, message: "skipped (--skip-preflight)".into() });
        false
    } else {
        let (status, message) = credentials(&config, &expected).await;
        out.push(Check { name: "credentials", status, message });
        status == Status::Fail
    };
    if unusable {
        skip.extend(ASK_AWS.iter().map(|s| s.to_string()));
    }
    let mut add = |name: &'static str, check: Option<Result<(Status, String), String>>| {
        let (status, message) = match check {
            None if unusable && ASK_AWS.contains(&name) => {
                (Status::Skipped, "not checked: no usable AWS credentials".to_string())
            }
            None => (Status::Skipped, "skipped (--skip-preflight)".to_string()),
            Some(Ok(c)) => c,
            Some(Err(e)) => (Status::Warn, format!("could not check: {e}")),
        };
        out.push(Check { name, status, message });
    };
    // A skipped check makes no call at all.
    let run = |name: &str| !skip.iter().any(|s| s == name);

    let zones: BTreeSet<String> = steps
        .iter()
        .filter_map(|(_, _, w)| w.get("availability_zone").and_then(Json::as_str))
        .filter(|z| !z.contains("${{"))
        .map(String::from)
        .collect();
    add("region", if run("region") { Some(region_check(&ec2, &region, &zones).await) } else { None });
    let vpcs = creates(super::ec2_vpc::Vpc::KIND);
    add(
        "vpc-quota",
        if run("vpc-quota") { Some(vpc_quota(&config, &ec2, &region, vpcs, known_stacks).await) } else { None },
    );
    let eips = creates(super::ec2_elastic_ip::ElasticIp::KIND);
    add("eip-quota", if run("eip-quota") { Some(eip_quota(&config, &ec2, &region, eips).await) } else { None });
    add("permissions", if run("permissions") { Some(permissions(&ec2, &region, vpcs > 0).await) } else { None });
    let skipped = ca_a2a_flow_engine::skipped_by_inputs(wf, inputs);
    let mut images: Vec<(&str, image::Params)> = Vec::new();
    let mut unread: Vec<String> = Vec::new();
    for (id, _, w) in steps.iter().filter(|(id, kind, _)| *kind == image::BuildPush::KIND && !skipped.contains(*id)) {
        match serde_json::from_value(w.clone()) {
            Ok(p) => images.push((id, p)),
            Err(e) => unread.push(format!("`{id}` not checked: {e} (known only once earlier steps ran)")),
        }
    }
    let on_builder = |p: &image::Params| p.runs_on == image::RunsOn::Builder;
    let local: Vec<(&str, &image::Params)> =
        images.iter().filter(|(_, p)| !on_builder(p)).map(|(i, p)| (*i, p)).collect();
    let remote: Vec<(&str, &image::Params)> =
        images.iter().filter(|(_, p)| on_builder(p)).map(|(i, p)| (*i, p)).collect();
    add("disk", if run("disk") { Some(Ok(disk(&local, &unread).await)) } else { None });
    add("builder", if run("builder") { Some(builder(&config, &remote).await) } else { None });
    out
}

/// Free disk where each local image build stores images, against its `min_free_disk`.
async fn disk(builds: &[(&str, &image::Params)], unread: &[String]) -> (Status, String) {
    if builds.is_empty() && unread.is_empty() {
        return (Status::Skipped, "no image is built here".into());
    }
    let mut said = unread.to_vec();
    let mut failed = false;
    for (id, p) in builds {
        match image::free_disk(p).await {
            Ok(free) => said.push(format!("`{id}`: {free}")),
            Err(e) => {
                failed = true;
                said.push(format!("`{id}`: {}", e.message));
            }
        }
    }
    let status = match (failed, unread.is_empty()) {
        (true, _) => Status::Fail,
        (false, false) => Status::Warn,
        (false, true) => Status::Pass,
    };
    (status, said.join("; "))
}

/// Each build on the EC2 builder names an instance that is online in SSM, or
/// one the run makes.
async fn builder(
    config: &aws_config::SdkConfig,
    builds: &[(&str, &image::Params)],
) -> Result<(Status, String), String> {
    if builds.is_empty() {
        return Ok((Status::Skipped, "no image is built on the EC2 builder".into()));
    }
    let ssm = aws_sdk_ssm::Client::new(config);
    let mut said = Vec::new();
    for (id, p) in builds {
        let instance = p.instance_id.as_deref().unwrap_or_default();
        if instance.contains("${{") {
            said.push(format!("`{id}`: on the builder this run makes or adopts"));
            continue;
        }
        if instance.is_empty() {
            return Ok((
                Status::Fail,
                format!(
                    "step `{id}` builds on the EC2 builder but names no instance: include workflows/builder.yaml and feed `instance_id` from its `builder` step (full.yaml does, with --input build_on=builder), or run it and pass the instance id; or build with runs_on: local"
                ),
            ));
        }
        let filter = aws_sdk_ssm::types::InstanceInformationStringFilter::builder()
            .key("InstanceIds")
            .values(instance)
            .build()
            .map_err(|e| e.to_string())?;
        let found = ssm
            .describe_instance_information()
            .filters(filter)
            .send()
            .await
            .map_err(|e| classify(&failure("ssm:DescribeInstanceInformation", &e)).message)?;
        match found.instance_information_list().first().and_then(|i| i.ping_status()).map(|p| p.as_str().to_string()) {
            Some(p) if p == "Online" => said.push(format!("`{id}`: {instance} is online in SSM")),
            other => {
                return Ok((
                    Status::Fail,
                    format!(
                        "step `{id}` builds on {instance}, which is {} in SSM: start it (`aws ec2 start-instances --instance-ids {instance}`) or run workflows/builder.yaml again",
                        other.map(|p| p.to_lowercase()).unwrap_or_else(|| "not registered".into())
                    ),
                ));
            }
        }
    }
    Ok((Status::Pass, said.join("; ")))
}

/// How long the credential chain and STS get before the check says they did not answer.
const CREDENTIALS_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// Where the SDK's default chain looks for credentials, in its order.
const CHAIN: &str = "the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY), the profile in ~/.aws/config and ~/.aws/credentials (keys, SSO, a role to assume), a web identity token (AWS_WEB_IDENTITY_TOKEN_FILE), an ECS container role, the EC2 instance role";

/// What to do about credentials the SDK could not find or AWS refused.
const FIX: &str = "`aws configure` (access keys), or `aws sso login --profile NAME` then `export AWS_PROFILE=NAME` (IAM Identity Center), or run where a role applies (CloudShell, the EC2 builder)";

/// Whether the SDK finds credentials, they have not expired, AWS accepts
/// them (STS GetCallerIdentity), and they are of the account the workflow or
/// an earlier run of the stack expects. Each failure says what was tried and
/// the fix; the whole check takes seconds, not a run's retries.
async fn credentials(config: &aws_config::SdkConfig, expected: &[(String, String)]) -> (Status, String) {
    use aws_credential_types::provider::ProvideCredentials;
    use aws_credential_types::provider::error::CredentialsError;
    let profile = std::env::var("AWS_PROFILE").map(|p| format!(" (AWS_PROFILE={p})")).unwrap_or_default();
    let Some(provider) = config.credentials_provider() else {
        return (Status::Fail, format!("the SDK has no credential provider; fix: {FIX}"));
    };
    let loaded = match tokio::time::timeout(CREDENTIALS_WAIT, provider.provide_credentials()).await {
        Err(_) => {
            return (
                Status::Fail,
                format!(
                    "the SDK's credential chain gave no answer in {}s{profile} (a profile's SSO or role provider, or an instance metadata service, that does not answer); it looks in {CHAIN}; fix: {FIX}",
                    CREDENTIALS_WAIT.as_secs()
                ),
            );
        }
        Ok(Err(CredentialsError::CredentialsNotLoaded(_))) => {
            return (Status::Fail, format!("no AWS credentials found{profile}: the SDK looked in {CHAIN}; fix: {FIX}"));
        }
        Ok(Err(e)) => {
            let why = aws_smithy_types::error::display::DisplayErrorContext(&e);
            let expired = why.to_string().to_lowercase().contains("expired");
            let fix = if expired {
                "`aws sso login --profile NAME` (an SSO session lasts hours), or new temporary credentials"
            } else {
                FIX
            };
            return (Status::Fail, format!("the SDK could not load credentials{profile}: {why}; fix: {fix}"));
        }
        Ok(Ok(c)) => c,
    };
    let key = loaded.access_key_id();
    let key = format!("…{}", &key[key.len().saturating_sub(4)..]);
    if loaded.expiry().is_some_and(|at| at <= std::time::SystemTime::now()) {
        return (
            Status::Fail,
            format!(
                "the credentials (access key {key}{profile}) have expired; fix: `aws sso login --profile NAME`, or new temporary credentials"
            ),
        );
    }
    let sts = aws_sdk_sts::Client::new(config);
    let asked = tokio::time::timeout(CREDENTIALS_WAIT, sts.get_caller_identity().send()).await;
    let me = match asked {
        Err(_) => {
            return (
                Status::Fail,
                format!(
                    "STS did not answer in {}s: check the network, the region and AWS_ENDPOINT_URL",
                    CREDENTIALS_WAIT.as_secs()
                ),
            );
        }
        Ok(Err(e)) => {
            let code = e.as_service_error().and_then(aws_sdk_sts::error::ProvideErrorMetadata::code).unwrap_or("");
            let message = match code {
                "ExpiredToken" | "ExpiredTokenException" | "RequestExpired" => format!(
                    "AWS says the session of access key {key}{profile} has expired; fix: `aws sso login --profile NAME`, or new temporary credentials (AWS_SESSION_TOKEN)"
                ),
                "InvalidClientTokenId" | "SignatureDoesNotMatch" | "UnrecognizedClientException" | "AuthFailure" => {
                    format!(
                        "AWS does not accept access key {key}{profile} ({code}: a deleted or mistyped key, or a secret that does not match it); fix: {FIX}"
                    )
                }
                "" => format!(
                    "STS could not be reached ({}): check the network, the region and AWS_ENDPOINT_URL",
                    aws_smithy_types::error::display::DisplayErrorContext(&e)
                ),
                other => {
                    // Throttled, or AWS failing for a moment: no verdict on the credentials.
                    let why = aws_smithy_types::error::display::DisplayErrorContext(&e);
                    return (Status::Warn, format!("could not check: sts:GetCallerIdentity answered {other}: {why}"));
                }
            };
            return (Status::Fail, message);
        }
        Ok(Ok(me)) => me,
    };
    let account = me.account().unwrap_or_default();
    let arn = me.arn().unwrap_or_default();
    if let Some((want, said)) = expected.iter().find(|(want, _)| want != account) {
        return (
            Status::Fail,
            format!(
                "these credentials are of account {account} ({arn}), but {said} says {want}: switch profile (AWS_PROFILE) or SSO session, or give the stack another name"
            ),
        );
    }
    (Status::Pass, format!("account {account} as {arn}"))
}

async fn region_check(
    ec2: &aws_sdk_ec2::Client,
    region: &str,
    zones: &BTreeSet<String>,
) -> Result<(Status, String), String> {
    if region.is_empty() {
        return Ok((Status::Fail, "no region: pass --input region=..., or set AWS_REGION".into()));
    }
    let found = ec2
        .describe_availability_zones()
        .send()
        .await
        .map_err(|e| classify(&failure("ec2:DescribeAvailabilityZones", &e)).message)?;
    let known: BTreeSet<String> =
        found.availability_zones().iter().filter_map(|z| z.zone_name()).map(String::from).collect();
    let missing: Vec<&String> = zones.iter().filter(|z| !known.contains(*z)).collect();
    if missing.is_empty() {
        let zones: Vec<&str> = zones.iter().map(String::as_str).collect();
        Ok((Status::Pass, format!("{region}: availability zones {} exist", zones.join(", "))))
    } else {
        let missing: Vec<&str> = missing.iter().map(|s| s.as_str()).collect();
        let known: Vec<&str> = known.iter().map(String::as_str).collect();
        Ok((Status::Fail, format!("{region} has no zone {}; it has {}", missing.join(", "), known.join(", "))))
    }
}

/// A quota's value, and where it comes from.
struct Quota {
    value: f64,
    /// "Service Quotas", or the documented default and why.
    source: String,
    /// Read from the account; a documented default may be below the account's real quota.
    known: bool,
}

impl Quota {
    /// A shortage against a quota the account did not tell is a warning: the real one may be higher.
    fn short(&self) -> Status {
        if self.known { Status::Fail } else { Status::Warn }
    }
}

/// A quota from Service Quotas, or AWS's documented default when it cannot say
/// (a refused read is said, never a failure of its own).
async fn quota(config: &aws_config::SdkConfig, service: &str, code: &str, default: f64) -> Quota {
    let sq = aws_sdk_servicequotas::Client::new(config);
    let fallback = |why: String| Quota { value: default, source: format!("the documented default{why}"), known: false };
    match sq.get_service_quota().service_code(service).quota_code(code).send().await {
        Ok(q) => match q.quota().and_then(|q| q.value()) {
            Some(value) => Quota { value, source: "Service Quotas".into(), known: true },
            None => fallback(String::new()),
        },
        Err(e) => {
            let f = failure("servicequotas:GetServiceQuota", &e);
            let code = f.code.unwrap_or_else(|| "no answer".into());
            fallback(format!("; servicequotas:GetServiceQuota was refused ({code}), so the account's own is unknown"))
        }
    }
}

async fn vpc_quota(
    config: &aws_config::SdkConfig,
    ec2: &aws_sdk_ec2::Client,
    region: &str,
    creating: usize,
    known_stacks: &BTreeSet<String>,
) -> Result<(Status, String), String> {
    let quota = quota(config, "vpc", "L-F678F1CE", 5.0).await;
    let (limit, source) = (quota.value, &quota.source);
    let vpcs = ec2.describe_vpcs().send().await.map_err(|e| classify(&failure("ec2:DescribeVpcs", &e)).message)?;
    let used = vpcs.vpcs().len();
    // Ours, of stacks this state store knows nothing of: leftovers of earlier attempts.
    let orphans: Vec<String> = vpcs
        .vpcs()
        .iter()
        .filter_map(|v| {
            let stack = v.tags().iter().find(|t| t.key() == Some(super::owner::TAG_STACK))?.value()?;
            (!known_stacks.contains(stack)).then(|| format!("{} (stack {stack})", v.vpc_id().unwrap_or("?")))
        })
        .collect();
    let headroom = limit as i64 - used as i64;
    let numbers = format!("{used} of {limit} VPCs used in {region} (quota from {source}), this run creates {creating}");
    if creating > 0 && headroom < creating as i64 {
        let orphans = match orphans.len() {
            0 => String::new(),
            n => format!("; {n} carry ca-a2a-flow tags of stacks unknown to this state store: {}", orphans.join(", ")),
        };
        return Ok((
            quota.short(),
            format!(
                "{numbers}{orphans}: delete VPCs left by earlier attempts (`ca-a2a-flow destroy`), or raise the quota"
            ),
        ));
    }
    // A run that creates no VPC is not held back by the others (it may be the one that removes them).
    Ok((if headroom <= creating as i64 { Status::Warn } else { Status::Pass }, numbers))
}

async fn eip_quota(
    config: &aws_config::SdkConfig,
    ec2: &aws_sdk_ec2::Client,
    region: &str,
    creating: usize,
) -> Result<(Status, String), String> {
    let quota = quota(config, "ec2", "L-0263D0A3", 5.0).await;
    let (limit, source) = (quota.value, &quota.source);
    let vpc_domain = Filter::builder().name("domain").values("vpc").build();
    let eips = ec2
        .describe_addresses()
        .filters(vpc_domain)
        .send()
        .await
        .map_err(|e| classify(&failure("ec2:DescribeAddresses", &e)).message)?;
    let used = eips.addresses().len();
    let numbers =
        format!("{used} of {limit} Elastic IPs used in {region} (quota from {source}), this run allocates {creating}");
    let headroom = limit as i64 - used as i64;
    Ok(if creating > 0 && headroom < creating as i64 {
        (quota.short(), format!("{numbers}: release unused Elastic IPs, or raise the quota"))
    } else {
        (Status::Pass, numbers)
    })
}

/// EC2's DryRun says whether the credentials may create a VPC here, without creating one.
async fn permissions(ec2: &aws_sdk_ec2::Client, region: &str, creates_vpc: bool) -> Result<(Status, String), String> {
    if !creates_vpc {
        return Ok((Status::Skipped, "this run creates no VPC".into()));
    }
    let probe = ec2.create_vpc().cidr_block("10.255.0.0/16").dry_run(true).send().await;
    let err = match probe {
        Ok(_) => return Ok((Status::Pass, "ec2:CreateVpc allowed (dry run)".into())),
        Err(e) => e,
    };
    let f = failure("ec2:CreateVpc", &err);
    match f.code.as_deref() {
        Some("DryRunOperation") => Ok((Status::Pass, format!("ec2:CreateVpc allowed in {region} (dry run)"))),
        Some("UnauthorizedOperation") | Some("AccessDenied") => {
            let e = classify(&f);
            Ok((Status::Fail, format!("{} (dry run); {}", e.message, e.hint.unwrap_or_default())))
        }
        _ => Err(classify(&f).message),
    }
}
