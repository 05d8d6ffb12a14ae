//! What the AWS tests share: the SDK on the emulator only (never real AWS),
//! stack names no other test uses, the full stack's file, and the network
//! workflow with what it must leave in the emulator.

use std::collections::BTreeMap;

use aws_sdk_ec2::types::{Filter, VpcAttributeName};

use super::{Env, Out, block_on};

pub(crate) const FULL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/workflows/full.yaml");

/// The emulator's endpoint (after checking it is one, on loopback).
pub(crate) fn moto() -> String {
    ec2();
    std::env::var("AWS_ENDPOINT_URL").unwrap()
}

/// The SDK configuration of the test, on the emulator only.
pub(crate) fn sdk() -> aws_config::SdkConfig {
    ec2(); // refuses anything but the emulator on loopback
    block_on(aws_config::defaults(aws_config::BehaviorVersion::latest()).load())
}

/// The EC2 client of the test, on the emulator only.
pub(crate) fn ec2() -> aws_sdk_ec2::Client {
    let endpoint = std::env::var("AWS_ENDPOINT_URL")
        .expect("AWS tests run against moto: run them with scripts/test.sh, which starts it and sets AWS_ENDPOINT_URL");
    assert!(
        endpoint.starts_with("http://127.0.0.1:") || endpoint.starts_with("http://localhost:"),
        "AWS_ENDPOINT_URL must point at the emulator on loopback, not {endpoint}"
    );
    let config = block_on(aws_config::defaults(aws_config::BehaviorVersion::latest()).load());
    aws_sdk_ec2::Client::new(&config)
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

/// Deploys full.yaml for `stack`: through the suite's realistic layer, whose
/// tasks start and pass their health checks, waiting for each service's target
/// to be healthy; or, given an `endpoint` (fault rules on moto alone, whose ECS
/// runs no task), with `healthy_targets=0`.
pub(crate) fn deploy(env: &Env, stack: &str, endpoint: Option<&str>, extra: &[(&str, &str)]) -> Out {
    deploy_with(env, stack, endpoint, extra, &[])
}

/// [`deploy`] with more inputs (`name=value`).
pub(crate) fn deploy_with(
    env: &Env,
    stack: &str,
    endpoint: Option<&str>,
    extra: &[(&str, &str)],
    inputs: &[&str],
) -> Out {
    deploy_file(env, FULL, stack, endpoint, extra, inputs)
}

/// [`deploy_with`] of another workflow that includes full.yaml (hardening.yaml).
pub(crate) fn deploy_file(
    env: &Env,
    file: &str,
    stack: &str,
    endpoint: Option<&str>,
    extra: &[(&str, &str)],
    inputs: &[&str],
) -> Out {
    let mut vars = vec![("CA_A2A_FLOW_POLL_INTERVAL", "100ms")];
    let healthy = match endpoint {
        Some(e) => {
            vars.push(("AWS_ENDPOINT_URL", e));
            "healthy_targets=0"
        }
        None => "healthy_targets=1",
    };
    vars.extend_from_slice(extra);
    let stack = format!("stack={stack}");
    // The MCP server is left out here: `builder::the_full_stack_builds_...` deploys it.
    let mut args =
        [&["run", file, "--input", &stack, "--input", healthy, "--input", "mcp=false"][..], &local_images()].concat();
    for input in inputs {
        args.extend(["--input", input]);
    }
    env.run_with(&args, &vars)
}

/// The five services whose images full.yaml builds.
pub(crate) const AGENTS: [&str; 5] = ["orchestrator", "extractor", "validator", "archivist", "mcp-server"];

/// The image the task definition of `agent` runs, in `run` (read from ECS).
pub(crate) fn task_image(env: &Env, run: &str, agent: &str) -> String {
    let task = if agent == "mcp-server" { "mcp-task".to_string() } else { format!("{agent}-task") };
    let arn = env.step(run, &task).outputs.unwrap()["arn"].as_str().unwrap().to_string();
    let ecs = aws_sdk_ecs::Client::new(&sdk());
    let td = block_on(ecs.describe_task_definition().task_definition(arn).send()).unwrap();
    td.task_definition().unwrap().container_definitions()[0].image().unwrap().to_string()
}

/// The inputs that build the stack's images here from the sample services
/// (examples/agents) and push them to the suite's registry on loopback, on a
/// base image made of this machine's busybox (scripts/test.sh starts and makes
/// both): nothing is downloaded.
pub(crate) fn local_images() -> Vec<&'static str> {
    static INPUTS: std::sync::OnceLock<Vec<&'static str>> = std::sync::OnceLock::new();
    INPUTS
        .get_or_init(|| {
            let var = |name: &str| {
                std::env::var(name).unwrap_or_else(|_| panic!("{name} is unset: run the tests with scripts/test.sh"))
            };
            let leak = |s: String| -> &'static str { Box::leak(s.into_boxed_str()) };
            vec![
                "--input",
                "build_on=local",
                "--input",
                leak(format!("registry=http://{}", var("CA_A2A_FLOW_TEST_REGISTRY"))),
                "--input",
                leak(format!("base_image={}", var("CA_A2A_FLOW_TEST_BASE_IMAGE"))),
                "--input",
                "min_free_disk=1MiB",
            ]
        })
        .clone()
}

pub(crate) fn has_tag(tags: &[aws_sdk_ec2::types::Tag], key: &str, value: &str) -> bool {
    tags.iter().any(|t| t.key() == Some(key) && t.value() == Some(value))
}

pub(crate) const SERVICES: [(&str, i32, &str, &str); 5] = [
    ("orchestrator", 8000, "256", "512"),
    ("extractor", 8001, "256", "512"),
    ("validator", 8002, "256", "512"),
    ("archivist", 8003, "256", "512"),
    ("keycloak", 8080, "512", "1024"),
];

/// Inspects moto and asserts that it holds exactly the stack of STACK.md for
/// `stack`. Returns how many of each resource it found.
pub(crate) fn expect_exactly_the_stack(stack: &str) -> BTreeMap<&'static str, usize> {
    let config = sdk();
    let mut counts = BTreeMap::new();
    block_on(async {
        let ec2 = aws_sdk_ec2::Client::new(&config);
        let by_stack = || Filter::builder().name("tag:ca-a2a-flow:stack").values(stack).build();

        // Network.
        let vpcs = ec2.describe_vpcs().filters(by_stack()).send().await.unwrap();
        assert_eq!(vpcs.vpcs().len(), 1, "one VPC");
        let vpc = vpcs.vpcs()[0].vpc_id().unwrap().to_string();
        assert_eq!(vpcs.vpcs()[0].cidr_block(), Some("10.1.0.0/16"));
        counts.insert("vpc", 1);
        let subnets = ec2.describe_subnets().filters(by_stack()).send().await.unwrap();
        let mut cidrs: Vec<(&str, &str, bool)> = subnets
            .subnets()
            .iter()
            .map(|s| (s.cidr_block().unwrap(), s.availability_zone().unwrap(), s.map_public_ip_on_launch().unwrap()))
            .collect();
        cidrs.sort();
        assert_eq!(
            cidrs,
            [
                ("10.1.1.0/24", "eu-west-3a", true),
                ("10.1.10.0/24", "eu-west-3a", false),
                ("10.1.2.0/24", "eu-west-3b", true),
                ("10.1.20.0/24", "eu-west-3b", false)
            ]
        );
        counts.insert("subnet", 4);
        let subnet = |cidr: &str| {
            subnets.subnets().iter().find(|s| s.cidr_block() == Some(cidr)).unwrap().subnet_id().unwrap().to_string()
        };
        let igws = ec2.describe_internet_gateways().filters(by_stack()).send().await.unwrap();
        assert_eq!(igws.internet_gateways().len(), 1, "one internet gateway");
        let igw = igws.internet_gateways()[0].internet_gateway_id().unwrap().to_string();
        assert_eq!(igws.internet_gateways()[0].attachments()[0].vpc_id(), Some(vpc.as_str()), "attached");
        counts.insert("igw", 1);
        // moto ignores tag filters on NAT gateways: filter by VPC and state, then check tags.
        let nats = ec2
            .describe_nat_gateways()
            .filter(Filter::builder().name("vpc-id").values(&vpc).build())
            .filter(Filter::builder().name("state").values("available").values("pending").build())
            .send()
            .await
            .unwrap();
        assert_eq!(nats.nat_gateways().len(), 1, "one live NAT gateway: {:?}", nats.nat_gateways());
        let nat = &nats.nat_gateways()[0];
        assert!(has_tag(nat.tags(), "ca-a2a-flow:step", "nat"));
        assert_eq!(nat.subnet_id(), Some(subnet("10.1.1.0/24").as_str()), "the NAT is in public subnet a");
        let nat_eip = nat.nat_gateway_addresses()[0].allocation_id().unwrap().to_string();
        let nat_id = nat.nat_gateway_id().unwrap().to_string();
        counts.insert("nat", 1);
        let eips = ec2.describe_addresses().filters(by_stack()).send().await.unwrap();
        assert!(eips.addresses().iter().any(|a| a.allocation_id() == Some(nat_eip.as_str())), "the NAT's EIP is ours");
        counts.insert("eip", eips.addresses().len());
        let tables = ec2.describe_route_tables().filters(by_stack()).send().await.unwrap();
        assert_eq!(tables.route_tables().len(), 2, "public and private route tables");
        for t in tables.route_tables() {
            let default = t.routes().iter().find(|r| r.destination_cidr_block() == Some("0.0.0.0/0")).unwrap();
            let mut assoc: Vec<String> =
                t.associations().iter().filter_map(|a| a.subnet_id()).map(String::from).collect();
            assoc.sort();
            if has_tag(t.tags(), "ca-a2a-flow:step", "public-routes") {
                assert_eq!(default.gateway_id(), Some(igw.as_str()), "public: 0.0.0.0/0 -> IGW");
                let mut want = vec![subnet("10.1.1.0/24"), subnet("10.1.2.0/24")];
                want.sort();
                assert_eq!(assoc, want);
            } else {
                assert_eq!(default.nat_gateway_id(), Some(nat_id.as_str()), "private: 0.0.0.0/0 -> NAT");
                let mut want = vec![subnet("10.1.10.0/24"), subnet("10.1.20.0/24")];
                want.sort();
                assert_eq!(assoc, want);
            }
        }
        counts.insert("route_table", 2);
        let groups = ec2.describe_security_groups().filters(by_stack()).send().await.unwrap();
        let group = |step: &str| {
            groups
                .security_groups()
                .iter()
                .find(|g| has_tag(g.tags(), "ca-a2a-flow:step", step))
                .unwrap_or_else(|| panic!("no security group {step}"))
        };
        assert_eq!(groups.security_groups().len(), 7, "ALB + 5 services + RDS");
        counts.insert("security_group", 7);
        let alb_sg = group("alb-sg").group_id().unwrap().to_string();
        let mut alb_ports: Vec<i32> = group("alb-sg").ip_permissions().iter().filter_map(|p| p.from_port()).collect();
        alb_ports.sort();
        assert_eq!(alb_ports, [80, 443]);
        for (name, port, _, _) in SERVICES {
            let perms = group(&format!("{name}-sg")).ip_permissions();
            assert_eq!(perms.len(), 1, "{name}: one ingress rule");
            assert_eq!(perms[0].from_port(), Some(port));
            assert_eq!(perms[0].user_id_group_pairs()[0].group_id(), Some(alb_sg.as_str()), "{name}: from the ALB");
        }
        let rds_perm = &group("rds-sg").ip_permissions()[0];
        assert_eq!(rds_perm.from_port(), Some(5432));
        assert_eq!(rds_perm.user_id_group_pairs()[0].group_id(), group("keycloak-sg").group_id(), "5432 from Keycloak");

        // Edge.
        let elb = aws_sdk_elasticloadbalancingv2::Client::new(&config);
        let lbs = elb.describe_load_balancers().names(format!("{stack}-alb")).send().await.unwrap();
        assert_eq!(lbs.load_balancers().len(), 1, "one ALB");
        let lb = &lbs.load_balancers()[0];
        assert_eq!(lb.scheme().map(|s| s.as_str()), Some("internet-facing"));
        assert_eq!(lb.vpc_id(), Some(vpc.as_str()));
        counts.insert("load_balancer", 1);
        let all_tgs = elb.describe_target_groups().send().await.unwrap();
        let tgs: Vec<_> = all_tgs
            .target_groups()
            .iter()
            .filter(|t| t.target_group_name().is_some_and(|n| n.starts_with(&format!("{stack}-"))))
            .collect();
        assert_eq!(tgs.len(), 5, "5 target groups");
        counts.insert("target_group", 5);
        let tg_arn = |name: &str| {
            let tg = tgs.iter().find(|t| t.target_group_name() == Some(&format!("{stack}-{name}-tg"))).unwrap();
            tg.target_group_arn().unwrap().to_string()
        };
        for (name, port, _, _) in SERVICES {
            let tg = tgs.iter().find(|t| t.target_group_name() == Some(&format!("{stack}-{name}-tg"))).unwrap();
            assert_eq!(tg.port(), Some(port), "{name}");
            assert_eq!(tg.target_type().map(|t| t.as_str()), Some("ip"));
            assert_eq!(tg.health_check_interval_seconds(), Some(30));
            assert_eq!(tg.health_check_timeout_seconds(), Some(5));
            let path = if name == "keycloak" { "/auth/health/ready" } else { "/health" };
            assert_eq!(tg.health_check_path(), Some(path));
            // A new task serves after 2 passed checks, a leaving one drains 30 s (AWS: 5 and 300 s).
            assert_eq!(tg.healthy_threshold_count(), Some(2), "{name}");
            let attributes =
                elb.describe_target_group_attributes().target_group_arn(tg.target_group_arn().unwrap()).send().await;
            let attributes = attributes.unwrap();
            let delay =
                attributes.attributes().iter().find(|a| a.key() == Some("deregistration_delay.timeout_seconds"));
            assert_eq!(delay.and_then(|a| a.value()), Some("30"), "{name}");
        }
        let listeners =
            elb.describe_listeners().load_balancer_arn(lb.load_balancer_arn().unwrap()).send().await.unwrap();
        assert_eq!(listeners.listeners().len(), 1, "one listener");
        let listener = &listeners.listeners()[0];
        assert_eq!(listener.port(), Some(80));
        assert_eq!(
            listener.default_actions()[0].target_group_arn(),
            Some(tg_arn("orchestrator").as_str()),
            "default -> orchestrator"
        );
        counts.insert("listener", 1);
        let rules = elb.describe_rules().listener_arn(listener.listener_arn().unwrap()).send().await.unwrap();
        let mut routed: Vec<(String, Vec<String>, String)> = rules
            .rules()
            .iter()
            .filter(|r| r.is_default() != Some(true))
            .map(|r| {
                let c = &r.conditions()[0];
                let paths = c.path_pattern_config().map(|p| p.values().to_vec()).unwrap_or_else(|| c.values().to_vec());
                (r.priority().unwrap().to_string(), paths, r.actions()[0].target_group_arn().unwrap().to_string())
            })
            .collect();
        routed.sort();
        let want = |p: &str, path: &str, tg: &str| (p.to_string(), vec![path.to_string()], tg_arn(tg));
        assert_eq!(
            routed,
            [
                want("10", "/extract*", "extractor"),
                want("20", "/validate*", "validator"),
                want("30", "/archive*", "archivist"),
                want("40", "/auth*", "keycloak")
            ]
        );
        counts.insert("listener_rule", 4);
        let reachable: Vec<String> = routed
            .iter()
            .map(|r| r.2.clone())
            .chain([listener.default_actions()[0].target_group_arn().unwrap().to_string()])
            .collect();

        // Compute.
        let ecs = aws_sdk_ecs::Client::new(&config);
        let cluster = format!("{stack}-cluster");
        let clusters = ecs.describe_clusters().clusters(&cluster).send().await.unwrap();
        assert_eq!(clusters.clusters()[0].status(), Some("ACTIVE"), "the cluster");
        counts.insert("cluster", 1);
        let listed = ecs.list_services().cluster(&cluster).send().await.unwrap();
        assert_eq!(listed.service_arns().len(), 5, "5 services");
        counts.insert("service", 5);
        for (name, port, cpu, memory) in SERVICES {
            let d = ecs
                .describe_services()
                .cluster(&cluster)
                .services(format!("{stack}-{name}"))
                .include(aws_sdk_ecs::types::ServiceField::Tags)
                .send()
                .await
                .unwrap();
            let s = &d.services()[0];
            assert_eq!(s.status(), Some("ACTIVE"));
            assert_eq!(s.launch_type().map(|l| l.as_str()), Some("FARGATE"));
            let lb = &s.load_balancers()[0];
            assert_eq!(lb.target_group_arn(), Some(tg_arn(name).as_str()), "{name}: its target group");
            assert!(reachable.contains(&tg_arn(name)), "{name}: its target group is reached from the listener");
            assert_eq!(lb.container_port(), Some(port));
            let net = s.network_configuration().unwrap().awsvpc_configuration().unwrap();
            let mut nets = net.subnets().to_vec();
            nets.sort();
            let mut private = vec![subnet("10.1.10.0/24"), subnet("10.1.20.0/24")];
            private.sort();
            assert_eq!(nets, private, "{name}: private subnets");
            let td = ecs.describe_task_definition().task_definition(s.task_definition().unwrap()).send().await.unwrap();
            let td = td.task_definition().unwrap();
            assert_eq!((td.cpu(), td.memory()), (Some(cpu), Some(memory)), "{name}: size");
            let c = &td.container_definitions()[0];
            assert_eq!(c.port_mappings()[0].container_port(), Some(port));
            assert_eq!(
                c.log_configuration().unwrap().options().unwrap()["awslogs-group"],
                format!("/ecs/{stack}/{name}")
            );
            if name != "keycloak" {
                let image = c.image().unwrap();
                assert!(image.contains(&format!("/{stack}/{name}@sha256:")), "{name}: its image by digest: {image}");
            }
            // Only Keycloak's tasks may read its secrets: the agents run on a role without them.
            let role = if name == "keycloak" { "keycloak-execution-role" } else { "execution-role" };
            let execution = td.execution_role_arn().unwrap_or_default();
            assert!(execution.ends_with(&format!("role/{stack}-{role}")), "{name} runs on {execution}");
        }
        counts.insert("task_definition_family", 5);

        // Images, storage, logs, identity, secrets.
        let ecr = aws_sdk_ecr::Client::new(&config);
        let repos = ecr.describe_repositories().send().await.unwrap();
        let ours: Vec<&str> = repos
            .repositories()
            .iter()
            .filter_map(|r| r.repository_name())
            .filter(|n| n.starts_with(&format!("{stack}/")))
            .collect();
        assert_eq!(ours.len(), 5, "5 repositories: {ours:?}");
        counts.insert("repository", 5);
        let s3 =
            aws_sdk_s3::Client::from_conf(aws_sdk_s3::config::Builder::from(&config).force_path_style(true).build());
        let bucket = format!("{stack}-documents-123456789012");
        let enc = s3.get_bucket_encryption().bucket(&bucket).send().await.unwrap();
        let rule = &enc.server_side_encryption_configuration().unwrap().rules()[0];
        assert_eq!(rule.apply_server_side_encryption_by_default().unwrap().sse_algorithm().as_str(), "AES256");
        let versioning = s3.get_bucket_versioning().bucket(&bucket).send().await.unwrap();
        assert_eq!(versioning.status().map(|s| s.as_str()), Some("Enabled"));
        let block = s3.get_public_access_block().bucket(&bucket).send().await.unwrap();
        let block = block.public_access_block_configuration().unwrap();
        assert_eq!(
            (
                block.block_public_acls(),
                block.block_public_policy(),
                block.ignore_public_acls(),
                block.restrict_public_buckets()
            ),
            (Some(true), Some(true), Some(true), Some(true))
        );
        counts.insert("bucket", 1);
        let logs = aws_sdk_cloudwatchlogs::Client::new(&config);
        let groups = logs.describe_log_groups().log_group_name_prefix(format!("/ecs/{stack}/")).send().await.unwrap();
        assert_eq!(groups.log_groups().len(), 5, "5 log groups");
        assert!(groups.log_groups().iter().all(|g| g.retention_in_days() == Some(7)), "7-day retention");
        counts.insert("log_group", 5);
        let iam = aws_sdk_iam::Client::new(&config);
        for (role, reads_secrets) in [("execution-role", false), ("keycloak-execution-role", true)] {
            let role = format!("{stack}-{role}");
            let attached = iam.list_attached_role_policies().role_name(&role).send().await.unwrap();
            let names: Vec<&str> = attached.attached_policies().iter().filter_map(|p| p.policy_name()).collect();
            assert_eq!(names, ["AmazonECSTaskExecutionRolePolicy"], "{role}");
            let inline = iam.list_role_policies().role_name(&role).send().await.unwrap();
            assert_eq!(!inline.policy_names().is_empty(), reads_secrets, "{role} reads secrets: {reads_secrets}");
        }
        counts.insert("role", 3);
        let sm = aws_sdk_secretsmanager::Client::new(&config);
        let admin = sm.describe_secret().secret_id(format!("{stack}/keycloak-admin")).send().await.unwrap();
        assert!(admin.deleted_date().is_none());
        let credentials = sm.describe_secret().secret_id(format!("{stack}/keycloak-db-credentials")).send().await;
        let credentials = credentials.unwrap();
        assert!(credentials.deleted_date().is_none());
        counts.insert("secret", 2);

        // Database.
        let rds = aws_sdk_rds::Client::new(&config);
        let group = rds.describe_db_subnet_groups().db_subnet_group_name(format!("{stack}-db-subnets")).send().await;
        let group = group.unwrap();
        assert_eq!(group.db_subnet_groups()[0].vpc_id(), Some(vpc.as_str()), "the DB subnet group is in the VPC");
        counts.insert("db_subnet_group", 1);
        let dbs = rds.describe_db_instances().db_instance_identifier(format!("{stack}-keycloak-db")).send().await;
        let dbs = dbs.unwrap();
        let db = &dbs.db_instances()[0];
        assert_eq!(db.engine(), Some("postgres"));
        assert_eq!(db.storage_encrypted(), Some(true), "encrypted");
        assert_eq!(db.storage_type(), Some("gp3"));
        assert_eq!(db.publicly_accessible(), Some(false), "not public");
        assert_eq!(db.backup_retention_period(), Some(7));
        // The master password is the stack's own secret: RDS's would rotate every 7 days under Keycloak.
        assert!(db.master_user_secret().is_none(), "not an RDS-managed password");
        let master_secret = credentials.arn().unwrap();
        counts.insert("db_instance", 1);

        // Keycloak in production mode, on the RDS endpoint, no plaintext password.
        let s = ecs
            .describe_services()
            .cluster(&cluster)
            .services(format!("{stack}-keycloak"))
            .include(aws_sdk_ecs::types::ServiceField::Tags)
            .send()
            .await
            .unwrap();
        let td = ecs
            .describe_task_definition()
            .task_definition(s.services()[0].task_definition().unwrap())
            .send()
            .await
            .unwrap();
        let c = &td.task_definition().unwrap().container_definitions()[0];
        assert_eq!(c.command(), ["start"], "production mode, not start-dev");
        let env: BTreeMap<&str, &str> =
            c.environment().iter().map(|kv| (kv.name().unwrap(), kv.value().unwrap())).collect();
        assert_eq!(env["KC_DB"], "postgres");
        let endpoint = db.endpoint().unwrap().address().unwrap();
        assert_eq!(env["KC_DB_URL"], format!("jdbc:postgresql://{endpoint}:5432/keycloak"));
        assert_eq!(env["KC_HTTP_RELATIVE_PATH"], "/auth");
        assert_eq!(env["KC_PROXY"], "edge");
        assert!(env.keys().all(|k| !k.contains("PASSWORD")), "no password in the environment: {env:?}");
        let secrets: BTreeMap<&str, &str> = c.secrets().iter().map(|s| (s.name(), s.value_from())).collect();
        assert_eq!(secrets["KC_DB_PASSWORD"], format!("{master_secret}:password::"));
        assert_eq!(secrets["KC_DB_USERNAME"], format!("{master_secret}:username::"));
        assert!(secrets["KEYCLOAK_ADMIN_PASSWORD"].starts_with(admin.arn().unwrap()));
    });
    counts
}

/// The values of the stack's secrets, read back from the emulator.
pub(crate) fn secret_values(stack: &str) -> Vec<String> {
    let config = sdk();
    block_on(async {
        let sm = aws_sdk_secretsmanager::Client::new(&config);
        let mut values = Vec::new();
        for id in [format!("{stack}/keycloak-admin"), format!("{stack}/keycloak-db-credentials")] {
            let v = sm.get_secret_value().secret_id(id).send().await.unwrap();
            let parsed: serde_json::Value = serde_json::from_str(v.secret_string().unwrap()).unwrap();
            values.push(parsed["password"].as_str().unwrap().to_string());
        }
        values
    })
}

/// `destroy --yes` of `run` with `flags`.
/// `destroy`'s flags that delete everything, data, images and secrets included.
pub(crate) const EVERYTHING: [&str; 4] =
    ["--delete-data", "--delete-images", "--force-delete-secrets", "--skip-final-snapshot"];

/// Asserts that moto holds nothing of `stack` but what destroy keeps on purpose.
pub(crate) fn expect_nothing_left(stack: &str, kept_data_and_images: bool) {
    let config = sdk();
    block_on(async {
        let ec2 = aws_sdk_ec2::Client::new(&config);
        let by_stack = || Filter::builder().name("tag:ca-a2a-flow:stack").values(stack).build();
        assert!(ec2.describe_vpcs().filters(by_stack()).send().await.unwrap().vpcs().is_empty(), "VPC");
        assert!(ec2.describe_subnets().filters(by_stack()).send().await.unwrap().subnets().is_empty(), "subnets");
        let igws = ec2.describe_internet_gateways().filters(by_stack()).send().await.unwrap();
        assert!(igws.internet_gateways().is_empty(), "internet gateway");
        assert!(ec2.describe_addresses().filters(by_stack()).send().await.unwrap().addresses().is_empty(), "EIPs");
        let tables = ec2.describe_route_tables().filters(by_stack()).send().await.unwrap();
        assert!(tables.route_tables().is_empty(), "route tables");
        let groups = ec2.describe_security_groups().filters(by_stack()).send().await.unwrap();
        assert!(groups.security_groups().is_empty(), "security groups");
        let nats = ec2.describe_nat_gateways().send().await.unwrap();
        let live: Vec<_> = nats
            .nat_gateways()
            .iter()
            .filter(|n| has_tag(n.tags(), "ca-a2a-flow:stack", stack))
            .filter(|n| n.state().map(|s| s.as_str()) != Some("deleted"))
            .collect();
        assert!(live.is_empty(), "NAT gateways: {live:?}");

        let elb = aws_sdk_elasticloadbalancingv2::Client::new(&config);
        assert!(elb.describe_load_balancers().names(format!("{stack}-alb")).send().await.is_err(), "load balancer");
        let tgs = elb.describe_target_groups().send().await.unwrap();
        let prefix = format!("{stack}-");
        assert!(
            !tgs.target_groups().iter().any(|t| t.target_group_name().is_some_and(|n| n.starts_with(&prefix))),
            "target groups"
        );

        let ecs = aws_sdk_ecs::Client::new(&config);
        let clusters = ecs.describe_clusters().clusters(format!("{stack}-cluster")).send().await.unwrap();
        assert!(!clusters.clusters().iter().any(|c| c.status() == Some("ACTIVE")), "cluster");
        let tds = ecs.list_task_definitions().family_prefix(&prefix).send().await.unwrap();
        assert!(tds.task_definition_arns().is_empty(), "active task definitions: {:?}", tds.task_definition_arns());

        let logs = aws_sdk_cloudwatchlogs::Client::new(&config);
        let groups = logs.describe_log_groups().log_group_name_prefix(format!("/ecs/{stack}/")).send().await.unwrap();
        assert!(groups.log_groups().is_empty(), "log groups");
        let iam = aws_sdk_iam::Client::new(&config);
        for role in ["execution-role", "keycloak-execution-role", "task-role"] {
            assert!(iam.get_role().role_name(format!("{stack}-{role}")).send().await.is_err(), "{role}");
        }
        let rds = aws_sdk_rds::Client::new(&config);
        let db = rds.describe_db_instances().db_instance_identifier(format!("{stack}-keycloak-db")).send().await;
        assert!(db.is_err(), "DB instance");
        let group = rds.describe_db_subnet_groups().db_subnet_group_name(format!("{stack}-db-subnets")).send().await;
        assert!(group.is_err(), "DB subnet group");

        let sm = aws_sdk_secretsmanager::Client::new(&config);
        let secret = sm.describe_secret().secret_id(format!("{stack}/keycloak-admin")).send().await;
        if kept_data_and_images {
            assert!(secret.unwrap().deleted_date().is_some(), "the secret is scheduled for deletion");
        } else {
            assert!(secret.is_err(), "the secret is deleted at once");
        }
        let ecr = aws_sdk_ecr::Client::new(&config);
        let repos = ecr.describe_repositories().send().await.unwrap();
        let ours = repos
            .repositories()
            .iter()
            .filter(|r| r.repository_name().is_some_and(|n| n.starts_with(&format!("{stack}/"))))
            .count();
        let s3 =
            aws_sdk_s3::Client::from_conf(aws_sdk_s3::config::Builder::from(&config).force_path_style(true).build());
        let bucket = s3.head_bucket().bucket(format!("{stack}-documents-123456789012")).send().await;
        if kept_data_and_images {
            assert_eq!(ours, 5, "repositories are kept without --delete-images");
            assert!(bucket.is_ok(), "the bucket is kept without --delete-data");
        } else {
            assert_eq!(ours, 0, "repositories");
            assert!(bucket.is_err(), "bucket");
        }
    });
}

pub(crate) fn destroy(env: &Env, run: &str, flags: &[&str], extra: &[(&str, &str)]) -> Out {
    let mut args = vec!["destroy", run, "--yes"];
    args.extend_from_slice(flags);
    let mut vars = vec![("CA_A2A_FLOW_POLL_INTERVAL", "100ms")];
    vars.extend_from_slice(extra);
    env.run_with(&args, &vars)
}

/// Fills the emulator's eu-west-3 up to AWS's default quota of 5 VPCs (with
/// VPCs nobody owns), whatever other tests made before: a region that cannot
/// take one more.
pub(crate) fn fill_the_vpc_quota() {
    let ec2 = ec2();
    block_on(async {
        loop {
            let held = ec2.describe_vpcs().send().await.expect("moto lists VPCs").vpcs().len();
            if held >= 5 {
                return;
            }
            ec2.create_vpc().cidr_block("10.250.0.0/16").send().await.expect("moto creates a VPC");
        }
    });
}

/// The emulator is behind `aws-sim` (scripts/test.sh puts it there): a test of
/// what AWS enforces and moto does not means nothing without it.
/// A workflow file of one step `id` of kind `uses`, for the stack given as the
/// input `stack`, in eu-west-3, with the parameters `with` (YAML values).
pub(crate) fn one_aws_step(env: &Env, id: &str, uses: &str, with: &[(&str, &str)]) -> std::path::PathBuf {
    let mut yaml = format!(
        "name: {id}\ninputs: {{ stack: {{}} }}\nsteps:\n  - id: {id}\n    uses: {uses}\n    with:\n      stack: \"${{{{ inputs.stack }}}}\"\n      region: eu-west-3\n"
    );
    for (key, value) in with {
        yaml.push_str(&format!("      {key}: {value}\n"));
    }
    env.write(&format!("{id}.yaml"), &yaml)
}

/// A PostgreSQL instance `id` made as another tool would: no ownership tags.
pub(crate) fn a_db_instance_made_by_hand(id: &str) {
    let rds = aws_sdk_rds::Client::new(&sdk());
    block_on(
        rds.create_db_instance()
            .db_instance_identifier(id)
            .engine("postgres")
            .db_instance_class("db.t3.micro")
            .allocated_storage(20)
            .master_username("keycloak")
            .master_user_password("made-by-hand-1")
            .send(),
    )
    .expect("moto makes the DB instance");
}

pub(crate) fn behind_aws_sim() {
    let moto = std::env::var("CA_A2A_FLOW_MOTO_URL").unwrap_or_default();
    let endpoint = std::env::var("AWS_ENDPOINT_URL").unwrap_or_default();
    assert!(
        !moto.is_empty() && moto != endpoint,
        "this test needs aws-sim in front of moto: run it with scripts/test.sh (AWS_ENDPOINT_URL={endpoint})"
    );
}

/// A layer of its own in front of moto (`aws-sim` with `args`), for a test that
/// needs AWS's clock at another pace than the suite's; stopped when dropped.
pub(crate) struct OwnLayer {
    pub url: String,
    child: std::process::Child,
}

impl OwnLayer {
    pub(crate) fn start(args: &[&str]) -> Self {
        use std::io::BufRead;
        behind_aws_sim();
        let moto = std::env::var("CA_A2A_FLOW_MOTO_URL").unwrap();
        // Built with the workspace, next to this test binary's directory (target/debug/deps).
        let exe = std::env::current_exe().unwrap();
        let bin = exe.parent().and_then(|deps| deps.parent()).unwrap().join("aws-sim");
        let mut child = std::process::Command::new(&bin)
            .args(["--upstream", &moto])
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e} (scripts/test.sh builds it)", bin.display()));
        let mut first = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut first).unwrap();
        let url = first.trim().strip_prefix("listening on ").expect("aws-sim says where it listens").to_string();
        Self { url, child }
    }
}

impl Drop for OwnLayer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits (up to 4 s) until `look` succeeds: a new EC2 resource is unknown for a
/// moment (aws-sim's eventual consistency, as AWS's), as any client must allow for.
pub(crate) async fn seen<F, Fut, T, E>(look: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    for _ in 0..200 {
        if look().await.is_ok() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    panic!("still not visible after 4 s");
}

/// Keys of another account of moto's, through `endpoint`: moto tells accounts
/// apart by the keys of an assumed role, whose ARN names the account.
pub(crate) struct AnotherAccount {
    pub id: String,
    pub key: String,
    pub secret: String,
    pub token: String,
}

impl AnotherAccount {
    pub(crate) fn new(endpoint: &str) -> Self {
        let id = format!("{:012}", fastrand::u64(100_000_000_000..999_999_999_999));
        let loader = aws_config::defaults(aws_config::BehaviorVersion::latest()).endpoint_url(endpoint);
        let sts = aws_sdk_sts::Client::new(&block_on(loader.load()));
        let role = format!("arn:aws:iam::{id}:role/suite");
        let assumed = block_on(sts.assume_role().role_arn(role).role_session_name("suite").send()).unwrap();
        let keys = assumed.credentials().unwrap();
        Self {
            id,
            key: keys.access_key_id().into(),
            secret: keys.secret_access_key().into(),
            token: keys.session_token().into(),
        }
    }

    /// The environment that gives the binary these keys.
    pub(crate) fn vars(&self) -> [(&str, &str); 3] {
        [
            ("AWS_ACCESS_KEY_ID", self.key.as_str()),
            ("AWS_SECRET_ACCESS_KEY", self.secret.as_str()),
            ("AWS_SESSION_TOKEN", self.token.as_str()),
        ]
    }

    /// An SDK configuration with these keys, on `endpoint`.
    pub(crate) fn sdk(&self, endpoint: &str) -> aws_config::SdkConfig {
        let credentials = aws_sdk_ec2::config::Credentials::new(
            &self.key,
            &self.secret,
            Some(self.token.clone()),
            None,
            "another-account",
        );
        let loader = aws_config::defaults(aws_config::BehaviorVersion::latest()).endpoint_url(endpoint);
        block_on(loader.credentials_provider(credentials).load())
    }
}

/// The value of `name` in the environment of the first container of the task
/// definition a step of `run` registered (`step`'s output `arn`).
pub(crate) fn task_environment(env: &Env, run: &str, step: &str, name: &str) -> Option<String> {
    let arn = env.step(run, step).outputs.unwrap()["arn"].as_str().unwrap_or_default().to_string();
    let ecs = aws_sdk_ecs::Client::new(&sdk());
    let found = block_on(ecs.describe_task_definition().task_definition(&arn).send()).unwrap();
    let containers = found.task_definition().unwrap().container_definitions();
    let environment = containers.first().map(|c| c.environment()).unwrap_or_default();
    environment.iter().find(|kv| kv.name() == Some(name)).and_then(|kv| kv.value()).map(String::from)
}
