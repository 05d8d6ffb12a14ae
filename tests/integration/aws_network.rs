//! The network step kinds against moto, a real AWS emulator: what they create
//! is exactly what the workflow says; a second run creates nothing and adopts
//! everything; a run killed around a creation resumes without a duplicate.
//!
//! These tests need `AWS_ENDPOINT_URL` pointing at moto on loopback, which
//! `scripts/test.sh` sets (scripts/start-moto.sh). They refuse to run otherwise,
//! so nothing here can reach real AWS.

use aws_sdk_ec2::types::Filter;
use ca_a2a_flow_engine::RunStatus;

use crate::support::aws::{NETWORK, OwnLayer, ec2, expect_exactly_the_network, unique_stack};
use crate::support::{Env, block_on};

/// The network of a new stack named after `prefix`, deployed: its state
/// file, its stack, the workflow file and the `--input` that names the stack.
fn a_deployed_network(prefix: &str) -> (Env, String, std::path::PathBuf, String) {
    let env = Env::sqlite();
    let stack = unique_stack(prefix);
    let wf = env.write("network.yaml", NETWORK);
    let input = format!("stack={stack}");
    env.run(&["run", wf.to_str().unwrap(), "--input", &input]).expect_success();
    (env, stack, wf, input)
}

#[test]
fn the_network_is_created_once_and_a_second_run_adopts_everything() {
    let ec2 = ec2();
    let (env, stack, wf, input) = a_deployed_network("net");
    let vpc = expect_exactly_the_network(&ec2, &stack);

    env.run(&["run", wf.to_str().unwrap(), "--input", &input]).expect_success();
    assert_eq!(expect_exactly_the_network(&ec2, &stack), vpc, "the second run created nothing");
    let second = &env.runs()[0];
    for step in env.steps(&second.id) {
        assert_eq!(step.outputs.unwrap()["action"], "adopted", "step {} was adopted", step.step_id);
    }
}

#[test]
fn a_run_killed_around_each_creation_resumes_without_a_duplicate() {
    let ec2 = ec2();
    for (point, step) in [
        ("before_commit", "vpc"),
        ("after_start", "public-a"),
        ("before_commit", "igw"),
        ("before_commit", "nat-ip"),
        ("before_commit", "public-routes"),
        ("before_commit", "orchestrator-sg"),
    ] {
        let env = Env::sqlite();
        let stack = unique_stack("kill");
        let wf = env.write("network.yaml", NETWORK);
        let input = format!("stack={stack}");
        let spec = format!("{point}:{step}");
        let killed =
            env.run_with(&["run", wf.to_str().unwrap(), "--input", &input], &[("CA_A2A_FLOW_FAILPOINT", &spec)]);
        assert_eq!(killed.code, None, "killed at {spec}: {}", killed.stderr);
        let run = env.only_run();
        env.run(&["resume", &run.id]).expect_success();
        assert_eq!(env.run_record(&run.id).status, RunStatus::Succeeded);
        expect_exactly_the_network(&ec2, &stack);
    }
}

#[test]
fn a_subnet_that_moved_is_a_clear_fatal_error_and_nothing_is_created() {
    let ec2 = ec2();
    let (env, stack, _, input) = a_deployed_network("conflict");
    let moved =
        env.write("moved.yaml", &NETWORK.replace("availability_zone: eu-west-3b", "availability_zone: eu-west-3c"));
    let out = env.run(&["run", moved.to_str().unwrap(), "--input", &input]);
    out.expect_code(1);
    assert!(
        out.stderr.contains("has availability zone eu-west-3b, but the step asks for eu-west-3c"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("a subnet cannot move"), "{}", out.stderr);
    expect_exactly_the_network(&ec2, &stack);
}

#[test]
fn a_bad_cidr_is_refused_before_any_aws_call() {
    let env = Env::sqlite();
    let wf = env.write("bad.yaml", &NETWORK.replace("cidr: 10.1.0.0/16", "cidr: 10.1.0.0/33"));
    let out = env.run(&["validate", wf.to_str().unwrap()]);
    out.expect_code(2);
    assert!(out.stderr.contains("is not an IPv4 CIDR block"), "{}", out.stderr);
}

/// A network without a NAT gateway (whose minute and a half of `pending` would
/// dominate at AWS's own pace): VPC, subnet, gateway, routes, security group.
const NETWORK_WITHOUT_NAT: &str = r#"
name: lagging-reads
inputs: { stack: {} }
defaults:
  retry: { max_attempts: 5, initial_delay: 2s, max_delay: 30s }
  with: { stack: "${{ inputs.stack }}", region: eu-west-3, vpc_id: "${{ steps.vpc.outputs.vpc_id }}" }
steps:
  - id: vpc
    uses: aws.ec2.vpc
    with: { cidr: 10.1.0.0/16 }
  - id: public-a
    uses: aws.ec2.subnet
    with: { cidr: 10.1.1.0/24, availability_zone: eu-west-3a, map_public_ip: true }
  - id: igw
    uses: aws.ec2.internet_gateway
  - id: public-routes
    uses: aws.ec2.route_table
    with:
      routes: [{ destination: 0.0.0.0/0, gateway_id: "${{ steps.igw.outputs.igw_id }}" }]
      subnet_ids: ["${{ steps.public-a.outputs.subnet_id }}"]
  - id: web-sg
    uses: aws.ec2.security_group
    with: { description: web, ingress: [{ port: 80, cidr: 0.0.0.0/0 }] }
"#;

#[test]
fn a_network_made_while_aws_reads_lag_is_made_once() {
    // AWS's own pace: a new ID is unknown for up to 2 s and tag filters miss it for up to 5 s,
    // longer than a retry's first backoff (2 s).
    let aws = OwnLayer::start(&["--time-scale", "1", "--throttle", "off"]);
    let env = Env::sqlite();
    let stack = unique_stack("lag");
    let wf = env.write("lagging-reads.yaml", NETWORK_WITHOUT_NAT);
    let out = env.run_with(
        &["run", wf.to_str().unwrap(), "--input", &format!("stack={stack}")],
        &[("AWS_ENDPOINT_URL", &aws.url)],
    );
    out.expect_success();
    let ec2 = ec2();
    let counted = block_on(async {
        let ours = || Filter::builder().name("tag:ca-a2a-flow:stack").values(&stack).build();
        [
            ec2.describe_vpcs().filters(ours()).send().await.unwrap().vpcs().len(),
            ec2.describe_subnets().filters(ours()).send().await.unwrap().subnets().len(),
            ec2.describe_internet_gateways().filters(ours()).send().await.unwrap().internet_gateways().len(),
            ec2.describe_route_tables().filters(ours()).send().await.unwrap().route_tables().len(),
            ec2.describe_security_groups().filters(ours()).send().await.unwrap().security_groups().len(),
        ]
    });
    assert_eq!(counted, [1, 1, 1, 1, 1], "VPC, subnet, gateway, route table, group: each made once\n{}", out.stderr);
}

#[test]
fn a_nat_gateway_deleted_behind_the_stacks_back_is_made_again_not_answered_by_its_old_client_token() {
    let ec2 = ec2();
    let env = Env::sqlite();
    let wf = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("workflows/stack/network.yaml");
    let input = format!("stack={}", unique_stack("natgone"));
    env.run(&["run", wf.to_str().unwrap(), "--input", &input]).expect_success();
    let nat_of = |run: &str| env.step(run, "nat").outputs.unwrap()["nat_gateway_id"].as_str().unwrap().to_string();
    let state = |id: &str| {
        let found = block_on(ec2.describe_nat_gateways().nat_gateway_ids(id).send()).unwrap();
        found.nat_gateways()[0].state().map(|s| s.as_str().to_string()).unwrap_or_default()
    };
    let first = nat_of(&env.only_run().id);
    block_on(ec2.delete_nat_gateway().nat_gateway_id(&first).send()).unwrap();
    // `deleting` for a simulated minute, as on AWS.
    env.wait_until("the NAT gateway to be deleted", std::time::Duration::from_secs(30), || state(&first) == "deleted");
    // AWS frees the gateway's Elastic IP once the deletion completes; moto keeps it associated.
    let ip = env.step(&env.only_run().id, "nat-ip").outputs.unwrap()["allocation_id"].as_str().unwrap().to_string();
    let addresses = block_on(ec2.describe_addresses().allocation_ids(&ip).send()).unwrap();
    if let Some(association) = addresses.addresses().first().and_then(|a| a.association_id()) {
        block_on(ec2.disassociate_address().association_id(association).send()).unwrap();
    }

    // Same stack, step and Elastic IP: a token derived from those alone gets AWS's first
    // answer again, the deleted gateway, and no new one is ever made.
    env.run(&["run", wf.to_str().unwrap(), "--input", &input]).expect_success();
    let fresh = nat_of(&env.runs()[0].id);
    assert_ne!(fresh, first, "a fresh gateway");
    assert_eq!(state(&fresh), "available");
}

/// Two security groups in a VPC, and a rule of its own that lets the first
/// into the second on 5432, as workflows/stack/network.yaml does for Keycloak
/// and its database.
const TWO_GROUPS_AND_A_RULE: &str = r#"name: groups
inputs: { stack: {} }
defaults:
  retry: { max_attempts: 3, initial_delay: 200ms }
  with: { stack: "${{ inputs.stack }}", region: eu-west-3, vpc_id: "${{ steps.vpc.outputs.vpc_id }}" }
steps:
  - id: vpc
    uses: aws.ec2.vpc
    with: { cidr: 10.7.0.0/16 }
  - id: app-sg
    uses: aws.ec2.security_group
    with: { description: the app }
  - id: db-sg
    uses: aws.ec2.security_group
    with: { description: the database }
  - id: db-ingress
    uses: aws.ec2.security_group_ingress
    with:
      group_id: "${{ steps.db-sg.outputs.group_id }}"
      ingress: [{ port: 5432, source_group_id: "${{ steps.app-sg.outputs.group_id }}" }]
"#;

/// Whether the group `db` lets the group `app` in on 5432.
fn lets_in(ec2: &aws_sdk_ec2::Client, db: &str, app: &str) -> bool {
    let found = block_on(ec2.describe_security_groups().group_ids(db).send()).unwrap();
    found.security_groups()[0]
        .ip_permissions()
        .iter()
        .any(|p| p.from_port() == Some(5432) && p.user_id_group_pairs().iter().any(|g| g.group_id() == Some(app)))
}

#[test]
fn an_ingress_rule_of_its_own_is_added_put_back_when_taken_away_and_revoked_before_its_groups_go() {
    let ec2 = ec2();
    let env = Env::sqlite();
    let stack = unique_stack("rule");
    let wf = env.write("groups.yaml", TWO_GROUPS_AND_A_RULE);
    let (wf, input) = (wf.to_str().unwrap(), format!("stack={stack}"));
    env.run(&["run", wf, "--input", &input]).expect_success();
    let first = env.only_run().id;
    let group = |step: &str| env.step(&first, step).outputs.unwrap()["group_id"].as_str().unwrap().to_string();
    let (app, db) = (group("app-sg"), group("db-sg"));
    assert_eq!(env.step(&first, "db-ingress").outputs.unwrap()["action"], "created");
    assert!(lets_in(&ec2, &db, &app), "the database's group lets the app's in");

    let from_app = aws_sdk_ec2::types::IpPermission::builder()
        .ip_protocol("tcp")
        .from_port(5432)
        .to_port(5432)
        .user_id_group_pairs(aws_sdk_ec2::types::UserIdGroupPair::builder().group_id(&app).build())
        .build();
    block_on(ec2.revoke_security_group_ingress().group_id(&db).ip_permissions(from_app).send()).unwrap();
    let plan = env.run(&["plan", wf, "--input", &input, "--output", "json"]);
    plan.expect_success();
    let planned = plan.json()["steps"].as_array().unwrap().iter().find(|s| s["id"] == "db-ingress").unwrap().clone();
    assert_eq!(planned["action"], "create", "{planned}");
    assert_eq!(planned["changes"], serde_json::json!([format!("add ingress tcp/5432 from {app}")]), "{planned}");

    env.run(&["run", wf, "--input", &input]).expect_success();
    let second = env.runs()[0].id.clone();
    assert_eq!(env.step(&second, "db-ingress").outputs.unwrap()["action"], "created", "put back");
    assert!(lets_in(&ec2, &db, &app), "put back");
    env.run(&["run", wf, "--input", &input]).expect_success();
    assert_eq!(env.step(&env.runs()[0].id, "db-ingress").outputs.unwrap()["action"], "adopted");

    env.run(&["destroy", &first, "--yes"]).expect_success();
    let destroy = env.runs()[0].id.clone();
    let revoked = env.step(&destroy, "db-ingress").outputs.unwrap();
    assert_eq!(revoked["deleted"], serde_json::json!([format!("tcp/5432 from {app} on {db}")]), "{revoked:?}");
    let by_stack = Filter::builder().name("tag:ca-a2a-flow:stack").values(&stack).build();
    let left = block_on(ec2.describe_security_groups().filters(by_stack).send()).unwrap();
    assert!(left.security_groups().is_empty(), "both groups are gone: {:?}", left.security_groups());
}
