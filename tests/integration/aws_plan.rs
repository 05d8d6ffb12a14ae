//! `plan` and preflight of the full stack against moto: create, adopt or update
//! for exactly what changed, never a write; quotas and policies refused first.

use crate::support::Env;
use crate::support::aws::{FULL, deploy, ec2, moto, unique_stack};
use crate::support::faults::{Fault, FaultProxy, Rule};

fn plan(env: &Env, stack: &str, endpoint: &str, extra: &[&str]) -> serde_json::Value {
    let stack = format!("stack={stack}");
    let mut args = vec!["plan", FULL, "--input", &stack, "--input", "mcp=false", "--output", "json"];
    args.extend_from_slice(extra);
    let out = env.run_with(&args, &[("AWS_ENDPOINT_URL", endpoint)]);
    out.expect_success();
    out.json()
}

/// `(step, action)` of every step that makes a resource.
fn actions(plan: &serde_json::Value) -> Vec<(String, String)> {
    plan["steps"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["action"] != "none")
        .map(|s| (s["id"].as_str().unwrap().to_string(), s["action"].as_str().unwrap().to_string()))
        .collect()
}

#[test]
fn plan_says_create_then_adopt_then_update_for_exactly_what_changed_and_never_writes() {
    let proxy = FaultProxy::start(&moto(), Vec::new());
    let env = Env::sqlite();
    let stack = unique_stack("plan");

    let fresh = plan(&env, &stack, &proxy.url, &[]);
    let fresh = actions(&fresh);
    assert_eq!(fresh.len(), 58, "every step that makes a resource");
    assert!(fresh.iter().all(|(_, a)| a == "create"), "a fresh stack: all create: {fresh:?}");

    deploy(&env, &stack, None, &[]).expect_success();
    let deployed = actions(&plan(&env, &stack, &proxy.url, &[]));
    assert!(deployed.iter().all(|(_, a)| a == "adopt"), "after the deploy: all adopt: {deployed:?}");

    let bigger = plan(&env, &stack, &proxy.url, &["--input", "agent_memory=1024"]);
    let mut updated: Vec<String> =
        actions(&bigger).into_iter().filter(|(_, a)| a != "adopt").map(|(s, a)| format!("{s}:{a}")).collect();
    updated.sort();
    assert_eq!(
        updated,
        [
            "archivist-task:update",
            "archivist:update",
            "extractor-task:update",
            "extractor:update",
            "orchestrator-task:update",
            "orchestrator:update",
            "validator-task:update",
            "validator:update"
        ],
        "the four agents' task definitions change, and their services follow"
    );
    let task = bigger["steps"].as_array().unwrap().iter().find(|s| s["id"] == "orchestrator-task").unwrap();
    assert!(task["changes"].as_array().unwrap().iter().any(|c| c == "memory: 512 -> 1024"), "{task}");

    let writes: Vec<String> = proxy
        .actions()
        .into_iter()
        // The permissions preflight is EC2's DryRun: it creates nothing.
        .filter(|a| {
            // S3's reads are its REST methods.
            !["Describe", "Get", "List", "HEAD", "GET"].iter().any(|read| a.starts_with(read))
                && !a.contains("(dry-run)")
        })
        .collect();
    assert!(writes.is_empty(), "plan made only read-only calls: {writes:?}");
    assert!(proxy.actions().len() > 50, "plan did look");
}

#[test]
fn plan_as_mermaid_has_a_node_per_step_and_an_edge_per_dependency() {
    let env = Env::sqlite();
    let out = env.run(&["plan", FULL, "--offline", "--output", "mermaid"]);
    out.expect_success();
    let json = env.run(&["plan", FULL, "--offline", "--output", "json"]);
    let steps = json.json()["steps"].as_array().unwrap().clone();
    let edges: usize = steps.iter().map(|s| s["needs"].as_array().unwrap().len()).sum();
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines[0], "flowchart TD");
    assert_eq!(lines.iter().filter(|l| l.contains("[\"")).count(), steps.len(), "one node per step");
    assert_eq!(lines.iter().filter(|l| l.contains(" --> ")).count(), edges, "one edge per dependency");
    // 9 since the images wait for the builder's steps (made with build_on=builder, skipped here
    // with stand-in outputs): identity, its bucket, role, instance, readiness, then the images.
    assert_eq!(json.json()["waves"].as_array().unwrap().len(), 9, "the full stack runs in 9 waves");
}

#[test]
fn the_database_is_asked_for_as_soon_as_its_network_and_its_password_exist() {
    // The database is the longest wait of a deploy (RDS: about 6 minutes to
    // create); whatever it waits for first lengthens the whole deploy.
    let env = Env::sqlite();
    let plan = env.run(&["plan", FULL, "--offline", "--output", "json"]);
    plan.expect_success();
    let plan = plan.json();
    let needs: std::collections::BTreeMap<&str, Vec<&str>> = plan["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (s["id"].as_str().unwrap(), s["needs"].as_array().unwrap().iter().map(|n| n.as_str().unwrap()).collect())
        })
        .collect();
    let before = |step: &str| {
        let mut seen = std::collections::BTreeSet::new();
        let mut next = vec![step];
        while let Some(s) = next.pop() {
            for n in &needs[s] {
                if seen.insert(*n) {
                    next.push(n);
                }
            }
        }
        seen
    };
    assert_eq!(
        before("keycloak-db").into_iter().collect::<Vec<_>>(),
        ["db-subnets", "keycloak-db-credentials", "private-a", "private-b", "rds-sg", "vpc"],
        "not the load balancer's nor Keycloak's security group"
    );
    assert!(before("keycloak").contains("rds-ingress"), "Keycloak's tasks start once the database lets them in");
}

#[test]
fn a_run_in_a_region_whose_vpc_quota_is_used_up_is_refused_before_creating_anything() {
    // An earlier attempt's network, recorded in another state file: an orphan here.
    let elsewhere = Env::sqlite();
    let orphan_stack = unique_stack("leftover");
    let net = elsewhere.write("network.yaml", crate::support::aws::NETWORK);
    elsewhere.run(&["run", net.to_str().unwrap(), "--input", &format!("stack={orphan_stack}")]).expect_success();
    let orphan = crate::support::aws::expect_exactly_the_network(&ec2(), &orphan_stack);

    // moto's Service Quotas answers AWS's default, 5 VPCs per region.
    crate::support::aws::fill_the_vpc_quota();
    let proxy = FaultProxy::start(&moto(), Vec::new());
    let env = Env::sqlite();
    let out = deploy(&env, &unique_stack("quota"), Some(&proxy.url), &[("CA_A2A_FLOW_SKIP_PREFLIGHT", "eip-quota")]);
    out.expect_code(2);
    assert!(out.stderr.contains("preflight `vpc-quota` failed: "), "{}", out.stderr);
    assert!(
        out.stderr.contains("of 5 VPCs used in eu-west-3 (quota from Service Quotas), this run creates 1"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains(&format!("{orphan} (stack {orphan_stack})")), "names our orphan VPC: {}", out.stderr);
    assert!(out.stderr.contains("nothing was created"), "{}", out.stderr);
    let writes: Vec<String> = proxy
        .actions()
        .into_iter()
        .filter(|a| !["Describe", "Get", "List", "HEAD"].iter().any(|r| a.starts_with(r)) && !a.contains("(dry-run)"))
        .collect();
    assert!(writes.is_empty(), "nothing was created: {writes:?}");
    assert!(env.runs().is_empty(), "no run was recorded");
}

#[test]
fn a_service_control_policy_denying_the_network_fails_preflight_with_the_region_hint() {
    let rule = Rule {
        action: "CreateVpc",
        fault: Fault::Error {
            status: 403,
            code: "UnauthorizedOperation",
            message: "You are not authorized to perform this operation. User: arn:aws:iam::123456789012:user/dev is not authorized to perform: ec2:CreateVpc with an explicit deny in a service control policy".into(),
        },
        times: None,
    };
    let proxy = FaultProxy::start(&moto(), vec![rule]);
    let env = Env::sqlite();
    let out = deploy(&env, &unique_stack("scp"), Some(&proxy.url), &[]);
    out.expect_code(2);
    assert!(
        out.stderr.contains("preflight `permissions` failed: ec2:CreateVpc failed: UnauthorizedOperation"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("(dry run)"), "{}", out.stderr);
    assert!(out.stderr.contains("an organisation policy (SCP) forbids ec2:CreateVpc here"), "{}", out.stderr);
    let creates: Vec<String> = proxy.actions().into_iter().filter(|a| a.starts_with("Create")).collect();
    assert_eq!(creates, ["CreateVpc(dry-run)!UnauthorizedOperation"], "only the dry-run probe");
    assert!(env.runs().is_empty(), "no run was recorded");
}

#[test]
fn plan_reports_each_preflight_check_with_its_numbers() {
    crate::support::aws::fill_the_vpc_quota();
    let env = Env::sqlite();
    let out = env.run(&["plan", FULL, "--input", &format!("stack={}", unique_stack("pf")), "--output", "json"]);
    out.expect_success();
    let checks = out.json()["preflight"].as_array().unwrap().clone();
    let status =
        |name: &str| checks.iter().find(|c| c["name"] == name).unwrap()["status"].as_str().unwrap().to_string();
    assert_eq!(status("region"), "pass");
    assert_eq!(status("permissions"), "pass");
    assert_eq!(status("vpc-quota"), "fail", "the region holds the default quota of 5 VPCs: {checks:?}");
    let region = checks.iter().find(|c| c["name"] == "region").unwrap();
    assert!(region["message"].as_str().unwrap().contains("eu-west-3a, eu-west-3b exist"), "{region}");
}

#[test]
fn a_quota_service_quotas_will_not_tell_is_a_warning_on_the_documented_default_not_a_failure() {
    crate::support::aws::fill_the_vpc_quota();
    let denied = Rule {
        action: "GetServiceQuota",
        fault: Fault::Error {
            status: 400,
            code: "AccessDeniedException",
            message:
                "User: arn:aws:iam::123456789012:user/dev is not authorized to perform: servicequotas:GetServiceQuota"
                    .into(),
        },
        times: None,
    };
    let proxy = FaultProxy::start(&moto(), vec![denied]);
    let checks = plan(&Env::sqlite(), &unique_stack("sq"), &proxy.url, &[])["preflight"].as_array().unwrap().clone();
    let vpc = checks.iter().find(|c| c["name"] == "vpc-quota").unwrap();
    assert_eq!(vpc["status"], "warn", "the region's real quota is unknown, so 5 VPCs in use may be fine: {vpc}");
    let said = vpc["message"].as_str().unwrap();
    assert!(said.contains("quota from the documented default"), "{said}");
    assert!(said.contains("servicequotas:GetServiceQuota was refused (AccessDeniedException)"), "{said}");
    let eip = checks.iter().find(|c| c["name"] == "eip-quota").unwrap();
    assert!(eip["message"].as_str().unwrap().contains("servicequotas:GetServiceQuota was refused"), "{eip}");
}
