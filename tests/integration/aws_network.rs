//! The network step kinds against moto, a real AWS emulator: what they create
//! is exactly what the workflow says; a second run creates nothing and adopts
//! everything; a run killed around a creation resumes without a duplicate.
//!
//! These tests need `AWS_ENDPOINT_URL` pointing at moto on loopback, which
//! `scripts/test.sh` sets (scripts/start-moto.sh). They refuse to run otherwise,
//! so nothing here can reach real AWS.

use aws_sdk_ec2::types::{Filter, VpcAttributeName};
use ca_a2a_flow_engine::RunStatus;

use crate::support::Env;

/// The EC2 client of the test, on the emulator only.
pub(crate) fn ec2() -> aws_sdk_ec2::Client {
    let endpoint = std::env::var("AWS_ENDPOINT_URL")
        .expect("AWS tests run against moto: run them with scripts/test.sh, which starts it and sets AWS_ENDPOINT_URL");
    assert!(
        endpoint.starts_with("http://127.0.0.1:") || endpoint.starts_with("http://localhost:"),
        "AWS_ENDPOINT_URL must point at the emulator on loopback, not {endpoint}"
    );
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let config = rt.block_on(aws_config::defaults(aws_config::BehaviorVersion::latest()).load());
    aws_sdk_ec2::Client::new(&config)
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
}

/// A stack name no other test uses (moto's state is shared by the whole run).
pub(crate) fn unique_stack(prefix: &str) -> String {
    format!("{prefix}-{:06x}", fastrand::u32(..0xff_ffff))
}

pub(crate) const NETWORK: &str = r#"name: network
inputs:
  stack: { default: ca-a2a }
  region: { default: eu-west-3 }
defaults: { retry: { max_attempts: 3, initial_delay: 200ms } }
steps:
  - id: vpc
    uses: aws.ec2.vpc
    with: { stack: "${{ inputs.stack }}", region: "${{ inputs.region }}", cidr: 10.1.0.0/16 }
  - id: public-a
    uses: aws.ec2.subnet
    with:
      stack: "${{ inputs.stack }}"
      region: "${{ inputs.region }}"
      vpc_id: "${{ steps.vpc.outputs.vpc_id }}"
      cidr: 10.1.1.0/24
      availability_zone: eu-west-3a
      map_public_ip: true
  - id: private-b
    uses: aws.ec2.subnet
    with:
      stack: "${{ inputs.stack }}"
      region: "${{ inputs.region }}"
      vpc_id: "${{ steps.vpc.outputs.vpc_id }}"
      cidr: 10.1.20.0/24
      availability_zone: eu-west-3b
  - id: igw
    uses: aws.ec2.internet_gateway
    with: { stack: "${{ inputs.stack }}", region: "${{ inputs.region }}", vpc_id: "${{ steps.vpc.outputs.vpc_id }}" }
  - id: nat-ip
    uses: aws.ec2.elastic_ip
    with: { stack: "${{ inputs.stack }}", region: "${{ inputs.region }}" }
  - id: public-routes
    uses: aws.ec2.route_table
    with:
      stack: "${{ inputs.stack }}"
      region: "${{ inputs.region }}"
      vpc_id: "${{ steps.vpc.outputs.vpc_id }}"
      routes: [{ destination: 0.0.0.0/0, gateway_id: "${{ steps.igw.outputs.igw_id }}" }]
      subnet_ids: ["${{ steps.public-a.outputs.subnet_id }}"]
  - id: alb-sg
    uses: aws.ec2.security_group
    with:
      stack: "${{ inputs.stack }}"
      region: "${{ inputs.region }}"
      vpc_id: "${{ steps.vpc.outputs.vpc_id }}"
      ingress: [{ port: 80, cidr: 0.0.0.0/0 }, { port: 443, cidr: 0.0.0.0/0 }]
  - id: orchestrator-sg
    uses: aws.ec2.security_group
    with:
      stack: "${{ inputs.stack }}"
      region: "${{ inputs.region }}"
      vpc_id: "${{ steps.vpc.outputs.vpc_id }}"
      ingress: [{ port: 8000, source_group_id: "${{ steps.alb-sg.outputs.group_id }}" }]
"#;

/// What the emulator holds for a stack: (VPC ids and CIDRs, subnets as (cidr, az, public)).
fn stack_resources(ec2: &aws_sdk_ec2::Client, stack: &str) -> (Vec<(String, String)>, Vec<(String, String, bool)>) {
    let by_stack = Filter::builder().name("tag:ca-a2a-flow:stack").values(stack).build();
    block_on(async {
        let vpcs = ec2.describe_vpcs().filters(by_stack.clone()).send().await.unwrap();
        let subnets = ec2.describe_subnets().filters(by_stack).send().await.unwrap();
        let mut v: Vec<(String, String)> = vpcs
            .vpcs()
            .iter()
            .map(|v| (v.vpc_id().unwrap().to_string(), v.cidr_block().unwrap().to_string()))
            .collect();
        v.sort();
        let mut s: Vec<(String, String, bool)> = subnets
            .subnets()
            .iter()
            .map(|s| {
                (
                    s.cidr_block().unwrap().to_string(),
                    s.availability_zone().unwrap().to_string(),
                    s.map_public_ip_on_launch().unwrap_or(false),
                )
            })
            .collect();
        s.sort();
        (v, s)
    })
}

pub(crate) fn expect_exactly_the_network(ec2: &aws_sdk_ec2::Client, stack: &str) -> String {
    let (vpcs, subnets) = stack_resources(ec2, stack);
    assert_eq!(vpcs.len(), 1, "exactly one VPC for the stack: {vpcs:?}");
    assert_eq!(vpcs[0].1, "10.1.0.0/16");
    assert_eq!(
        subnets,
        [
            ("10.1.1.0/24".to_string(), "eu-west-3a".to_string(), true),
            ("10.1.20.0/24".to_string(), "eu-west-3b".to_string(), false)
        ]
    );
    let vpc = vpcs[0].0.clone();
    let by_stack = Filter::builder().name("tag:ca-a2a-flow:stack").values(stack).build();
    block_on(async {
        for attr in [VpcAttributeName::EnableDnsSupport, VpcAttributeName::EnableDnsHostnames] {
            let a = ec2.describe_vpc_attribute().vpc_id(&vpc).attribute(attr.clone()).send().await.unwrap();
            let on = a.enable_dns_support().or(a.enable_dns_hostnames()).and_then(|v| v.value());
            assert_eq!(on, Some(true), "{attr:?} is on");
        }
        let igws = ec2.describe_internet_gateways().filters(by_stack.clone()).send().await.unwrap();
        assert_eq!(igws.internet_gateways().len(), 1, "one internet gateway");
        let igw = &igws.internet_gateways()[0];
        let attached: Vec<&str> = igw.attachments().iter().filter_map(|a| a.vpc_id()).collect();
        assert_eq!(attached, [vpc.as_str()], "the gateway is attached to the VPC");
        let eips = ec2.describe_addresses().filters(by_stack.clone()).send().await.unwrap();
        assert_eq!(eips.addresses().len(), 1, "one Elastic IP");
        let tables = ec2.describe_route_tables().filters(by_stack.clone()).send().await.unwrap();
        assert_eq!(tables.route_tables().len(), 1, "one route table");
        let table = &tables.route_tables()[0];
        let default_routes: Vec<Option<&str>> = table
            .routes()
            .iter()
            .filter(|r| r.destination_cidr_block() == Some("0.0.0.0/0"))
            .map(|r| r.gateway_id())
            .collect();
        assert_eq!(default_routes, [igw.internet_gateway_id()], "0.0.0.0/0 goes to the gateway");
        let subnets = ec2.describe_subnets().filters(by_stack).send().await.unwrap();
        let public = subnets.subnets().iter().find(|s| s.cidr_block() == Some("10.1.1.0/24")).unwrap().subnet_id();
        let associated: Vec<Option<&str>> = table.associations().iter().map(|a| a.subnet_id()).collect();
        assert_eq!(associated, [public], "the public subnet uses the table");
        let by_stack = Filter::builder().name("tag:ca-a2a-flow:stack").values(stack).build();
        let groups = ec2.describe_security_groups().filters(by_stack).send().await.unwrap();
        let group = |step: &str| {
            groups
                .security_groups()
                .iter()
                .find(|g| g.tags().iter().any(|t| t.key() == Some("ca-a2a-flow:step") && t.value() == Some(step)))
                .unwrap_or_else(|| panic!("no security group for {step}"))
        };
        assert_eq!(groups.security_groups().len(), 2, "two security groups");
        let alb = group("alb-sg");
        assert_eq!(alb.group_name(), Some(format!("{stack}-alb-sg").as_str()), "deterministic name");
        let mut alb_ports: Vec<(i32, Vec<&str>)> = alb
            .ip_permissions()
            .iter()
            .map(|p| (p.from_port().unwrap(), p.ip_ranges().iter().filter_map(|r| r.cidr_ip()).collect()))
            .collect();
        alb_ports.sort();
        assert_eq!(alb_ports, [(80, vec!["0.0.0.0/0"]), (443, vec!["0.0.0.0/0"])]);
        let svc = group("orchestrator-sg");
        let from_alb: Vec<(i32, Vec<&str>)> = svc
            .ip_permissions()
            .iter()
            .map(|p| (p.from_port().unwrap(), p.user_id_group_pairs().iter().filter_map(|g| g.group_id()).collect()))
            .collect();
        assert_eq!(from_alb, [(8000, vec![alb.group_id().unwrap()])], "the service admits the ALB's group only");
    });
    vpc
}

#[test]
fn the_network_is_created_once_and_a_second_run_adopts_everything() {
    let ec2 = ec2();
    let env = Env::sqlite();
    let stack = unique_stack("net");
    let wf = env.write("network.yaml", NETWORK);
    let input = format!("stack={stack}");
    env.run(&["run", wf.to_str().unwrap(), "--input", &input]).expect_success();
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
    let env = Env::sqlite();
    let stack = unique_stack("conflict");
    let wf = env.write("network.yaml", NETWORK);
    let input = format!("stack={stack}");
    env.run(&["run", wf.to_str().unwrap(), "--input", &input]).expect_success();
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
