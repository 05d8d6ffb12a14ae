//! `workflows/full.yaml`, the whole CA-A2A stack, deployed against moto (a real
//! AWS emulator) by the real binary, then inspected through the AWS SDK: exactly
//! the stack of STACK.md, nothing twice, no secret value anywhere of ours.
//!
//! Runs with `healthy_targets=0`: moto's ECS runs no task, so no target ever
//! registers in a target group (a moto gap, in the README); the waiting itself
//! is covered by `a_target_group_is_waited_for_until_its_targets_are_healthy`.

use std::collections::BTreeMap;
use std::time::Duration;

use aws_sdk_ec2::types::Filter;
use ca_a2a_flow_engine::RunStatus;

use crate::aws_network::{ec2, unique_stack};
use crate::faults::{Fault, FaultProxy, Rule};
use crate::support::{Env, Out};

pub(crate) const FULL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/workflows/full.yaml");

pub(crate) fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
}

pub(crate) fn sdk() -> aws_config::SdkConfig {
    ec2(); // refuses anything but the emulator on loopback
    block_on(aws_config::defaults(aws_config::BehaviorVersion::latest()).load())
}

/// Deploys full.yaml for `stack`, the SDK pointed at `endpoint` (moto or the fault proxy).
pub(crate) fn deploy(env: &Env, stack: &str, endpoint: Option<&str>, extra: &[(&str, &str)]) -> Out {
    let mut vars = vec![("CA_A2A_FLOW_POLL_INTERVAL", "100ms")];
    if let Some(e) = endpoint {
        vars.push(("AWS_ENDPOINT_URL", e));
    }
    vars.extend_from_slice(extra);
    let stack = format!("stack={stack}");
    // The MCP server is built on an EC2 builder: `builder::the_full_stack_with_its_mcp_server_...` deploys it.
    env.run_with(&["run", FULL, "--input", &stack, "--input", "healthy_targets=0", "--input", "mcp=false"], &vars)
}

fn moto() -> String {
    ec2();
    std::env::var("AWS_ENDPOINT_URL").unwrap()
}

fn has_tag(tags: &[aws_sdk_ec2::types::Tag], key: &str, value: &str) -> bool {
    tags.iter().any(|t| t.key() == Some(key) && t.value() == Some(value))
}

const SERVICES: [(&str, i32, &str, &str); 5] = [
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
            let d = ecs.describe_services().cluster(&cluster).services(format!("{stack}-{name}")).send().await.unwrap();
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
                assert!(c.image().unwrap().contains(&format!("/{stack}/{name}:latest")), "{name}: its ECR image");
            }
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
        let role = format!("{stack}-execution-role");
        let attached = iam.list_attached_role_policies().role_name(&role).send().await.unwrap();
        let names: Vec<&str> = attached.attached_policies().iter().filter_map(|p| p.policy_name()).collect();
        assert_eq!(names, ["AmazonECSTaskExecutionRolePolicy"], "the execution role");
        counts.insert("role", 2);
        let sm = aws_sdk_secretsmanager::Client::new(&config);
        let admin = sm.describe_secret().secret_id(format!("{stack}/keycloak-admin")).send().await.unwrap();
        assert!(admin.deleted_date().is_none());
        counts.insert("secret", 1);

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
        let master_secret = db.master_user_secret().and_then(|s| s.secret_arn()).expect("RDS manages the password");
        counts.insert("db_instance", 1);

        // Keycloak in production mode, on the RDS endpoint, no plaintext password.
        let s = ecs.describe_services().cluster(&cluster).services(format!("{stack}-keycloak")).send().await.unwrap();
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
fn secret_values(stack: &str) -> Vec<String> {
    let config = sdk();
    block_on(async {
        let sm = aws_sdk_secretsmanager::Client::new(&config);
        let rds = aws_sdk_rds::Client::new(&config);
        let db = rds.describe_db_instances().db_instance_identifier(format!("{stack}-keycloak-db")).send().await;
        let master = db.unwrap().db_instances()[0].master_user_secret().unwrap().secret_arn().unwrap().to_string();
        let mut values = Vec::new();
        for id in [format!("{stack}/keycloak-admin"), master] {
            let v = sm.get_secret_value().secret_id(id).send().await.unwrap();
            let parsed: serde_json::Value = serde_json::from_str(v.secret_string().unwrap()).unwrap();
            values.push(parsed["password"].as_str().unwrap().to_string());
        }
        values
    })
}

#[test]
fn the_full_stack_is_deployed_exactly_and_a_second_run_adopts_everything_and_no_secret_leaks() {
    let env = Env::sqlite();
    let stack = unique_stack("full");
    let first = deploy(&env, &stack, None, &[]);
    first.expect_success();
    let counts = expect_exactly_the_stack(&stack);

    // Acceptance 6: no secret value in the state database, the event log or the terminal.
    let logs = env.run(&["logs", &env.only_run().id]);
    let status = env.run(&["status", &env.only_run().id]);
    let stored = env.everything_stored();
    let values = secret_values(&stack);
    assert_eq!(values[0].len(), 32, "Keycloak's admin password was generated inside AWS, 32 characters");
    // moto gives every RDS-managed master secret the same password, P@55w0rd!: still searched for.
    for value in values {
        assert!(value.len() >= 8, "{value:?} is long enough to search for");
        for (place, text) in [
            ("the state database", &stored),
            ("the terminal (stdout)", &first.stdout),
            ("the terminal (stderr)", &first.stderr),
            ("the event log", &logs.stdout),
            ("status", &status.stdout),
        ] {
            assert!(!text.contains(&value), "a secret value is in {place}");
        }
    }

    // Acceptance 2: a second run creates nothing and adopts every resource.
    deploy(&env, &stack, None, &[]).expect_success();
    assert_eq!(expect_exactly_the_stack(&stack), counts, "the second run created nothing");
    let second = &env.runs()[0];
    for step in env.steps(&second.id) {
        if let Some(action) = step.outputs.as_ref().and_then(|o| o.get("action")) {
            assert_eq!(action, "adopted", "step {} was adopted", step.step_id);
        }
    }
}

#[test]
fn a_deploy_killed_around_each_kind_of_creation_resumes_to_exactly_the_stack() {
    // SIGKILL by the engine's failpoints: right after a step's `started` commit
    // (before its AWS calls) or right before its success commit (after AWS made
    // the resource, before the run recorded it). Each point is a separate
    // deploy of its own stack. The NAT gateway and the RDS instance are also
    // killed in the middle of their waits, in the two tests below.
    for point in [
        "before_commit:vpc",
        "after_start:nat",
        "before_commit:nat",
        "before_commit:alb",
        "before_commit:auth-rule",
        "before_commit:keycloak-admin",
        "after_start:keycloak-db",
        "before_commit:keycloak-db",
        "before_commit:keycloak-task",
        "before_commit:keycloak",
    ] {
        let env = Env::sqlite();
        let stack = unique_stack("kill");
        let out = deploy(&env, &stack, None, &[("CA_A2A_FLOW_FAILPOINT", point)]);
        assert_eq!(out.code, None, "killed at {point}: {}", out.stderr);
        let run = env.only_run().id;
        env.run_with(&["resume", &run], &[("CA_A2A_FLOW_POLL_INTERVAL", "100ms")]).expect_success();
        assert_eq!(env.run_record(&run).status, RunStatus::Succeeded, "{point}");
        expect_exactly_the_stack(&stack);
    }
}

/// Holds the NAT gateway (or the DB instance) in `pending` (`creating`) through
/// the fault layer, kills the run in the middle of that wait, resumes.
fn killed_while_waiting_for(
    action: &'static str,
    when: &'static str,
    from: &'static str,
    to: &str,
    step: &str,
    state: &str,
) {
    let rule = Rule { action, fault: Fault::Rewrite { when, from, to: to.into() }, times: None };
    let proxy = FaultProxy::start(&moto(), vec![rule]);
    let env = Env::sqlite();
    let stack = unique_stack("wait");
    let stack_input = format!("stack={stack}");
    let child = env.spawn(
        &["run", FULL, "--input", &stack_input, "--input", "healthy_targets=0", "--input", "mcp=false"],
        &[("AWS_ENDPOINT_URL", proxy.url.as_str()), ("CA_A2A_FLOW_POLL_INTERVAL", "100ms")],
    );
    env.wait_until(&format!("{step} to wait"), Duration::from_secs(60), || {
        proxy.actions().iter().filter(|a| a.as_str() == format!("{action}!rewritten")).count() >= 3
    });
    // While it waits, `status` shows the resource's state, the time waited and the deadline.
    let status = env.run(&["status", &env.only_run().id, "--output", "json"]).json();
    let waiting = status["steps"].as_array().unwrap().iter().find(|s| s["id"] == step).unwrap().clone();
    let progress = waiting["progress"].as_str().unwrap_or_default().to_string();
    assert!(progress.contains(&format!(": {state} ")) && progress.contains(" / "), "{step} progress: {waiting}");
    crate::support::signal(&child, libc::SIGKILL);
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), None, "killed");
    let run = env.only_run();
    assert_eq!(env.step(&run.id, step).status, ca_a2a_flow_engine::StepStatus::Running, "killed while {step} waited");
    env.run_with(&["resume", &run.id], &[("CA_A2A_FLOW_POLL_INTERVAL", "100ms")]).expect_success();
    expect_exactly_the_stack(&stack);
}

#[test]
fn a_deploy_killed_while_the_nat_gateway_is_pending_resumes_without_a_second_nat() {
    killed_while_waiting_for(
        "DescribeNatGateways",
        "NatGatewayId",
        "<state>available</state>",
        "<state>pending</state>",
        "nat",
        "pending",
    );
}

#[test]
fn a_deploy_killed_while_the_database_is_being_created_resumes_without_a_second_instance() {
    killed_while_waiting_for(
        "DescribeDBInstances",
        "DBInstanceIdentifier",
        "<DBInstanceStatus>available</DBInstanceStatus>",
        "<DBInstanceStatus>creating</DBInstanceStatus>",
        "keycloak-db",
        "creating",
    );
}

#[test]
fn throttling_on_a_third_of_all_calls_still_deploys_exactly_the_stack() {
    let rule = Rule { action: "*", fault: Fault::Throttle { ratio: 0.3 }, times: None };
    let proxy = FaultProxy::start(&moto(), vec![rule]);
    let env = Env::sqlite();
    let stack = unique_stack("throttled");
    deploy(&env, &stack, Some(&proxy.url), &[]).expect_success();
    expect_exactly_the_stack(&stack);
    let throttled = proxy.actions().iter().filter(|a| a.ends_with("!throttled")).count();
    assert!(throttled > 20, "many calls were throttled: {throttled}");
}

#[test]
fn a_nat_gateway_that_fails_is_reported_deleted_and_recreated_with_a_fresh_elastic_ip() {
    let rule = Rule {
        action: "DescribeNatGateways",
        fault: Fault::Rewrite {
            when: "NatGatewayId",
            from: "<state>available</state>",
            to: "<state>failed</state><failureCode>Gateway.NotAttached</failureCode><failureMessage>Network vpc-x has no Internet gateway attached</failureMessage>".into(),
        },
        times: Some(1),
    };
    let proxy = FaultProxy::start(&moto(), vec![rule]);
    let env = Env::sqlite();
    let stack = unique_stack("natfail");
    let out = deploy(&env, &stack, Some(&proxy.url), &[]);
    out.expect_success();
    expect_exactly_the_stack(&stack);
    let run = env.only_run();
    let nat = env.step(&run.id, "nat");
    let outputs = nat.outputs.unwrap();
    assert_eq!(outputs["action"], "recreated");
    let first_ip = env.step(&run.id, "nat-ip").outputs.unwrap()["allocation_id"].clone();
    assert_ne!(outputs["allocation_id"], first_ip, "a fresh Elastic IP");
    let logs = env.run(&["logs", &run.id, "--step", "nat"]);
    assert!(
        logs.stdout.contains("failed: Gateway.NotAttached: Network vpc-x has no Internet gateway attached"),
        "the failure code and message are reported: {}",
        logs.stdout
    );
    assert!(proxy.actions().contains(&"DeleteNatGateway".to_string()), "the failed gateway was deleted");
}

#[test]
fn access_denied_on_the_database_is_fatal_and_names_the_action_and_the_policy() {
    let rule = Rule {
        action: "CreateDBInstance",
        fault: Fault::Error {
            status: 403,
            code: "AccessDenied",
            message: "User: arn:aws:iam::123456789012:user/dev is not authorized to perform: rds:CreateDBInstance with an explicit deny in a service control policy".into(),
        },
        times: None,
    };
    let proxy = FaultProxy::start(&moto(), vec![rule]);
    let env = Env::sqlite();
    let out = deploy(&env, &unique_stack("denied"), Some(&proxy.url), &[]);
    out.expect_code(1);
    assert!(out.stderr.contains("rds:CreateDBInstance failed: AccessDenied"), "{}", out.stderr);
    assert!(out.stderr.contains("request id fault-"), "{}", out.stderr);
    assert!(out.stderr.contains("organisation policy (SCP) forbids rds:CreateDBInstance"), "{}", out.stderr);
    assert_eq!(env.attempts(&env.only_run().id, "keycloak-db").len(), 1, "fatal: tried once");
}

#[test]
fn a_db_subnet_group_left_in_another_vpc_is_a_fatal_error_with_the_fix_and_no_database_is_made() {
    let stack = unique_stack("oldgroup");
    let config = sdk();
    block_on(async {
        // What an earlier attempt left: the same name, in another VPC.
        let ec2 = aws_sdk_ec2::Client::new(&config);
        let vpc = ec2.create_vpc().cidr_block("10.9.0.0/16").send().await.unwrap();
        let vpc = vpc.vpc().unwrap().vpc_id().unwrap().to_string();
        let mut subnets = Vec::new();
        for (cidr, az) in [("10.9.1.0/24", "eu-west-3a"), ("10.9.2.0/24", "eu-west-3b")] {
            let s = ec2.create_subnet().vpc_id(&vpc).cidr_block(cidr).availability_zone(az).send().await.unwrap();
            subnets.push(s.subnet().unwrap().subnet_id().unwrap().to_string());
        }
        let rds = aws_sdk_rds::Client::new(&config);
        rds.create_db_subnet_group()
            .db_subnet_group_name(format!("{stack}-db-subnets"))
            .db_subnet_group_description("left behind")
            .set_subnet_ids(Some(subnets))
            .send()
            .await
            .unwrap();
    });
    let env = Env::sqlite();
    let out = deploy(&env, &stack, None, &[]);
    out.expect_code(1);
    assert!(
        out.stderr.contains(&format!("DB subnet group {stack}-db-subnets already exists in vpc-")),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("nothing was created"), "{}", out.stderr);
    assert!(
        out.stderr.contains(&format!("aws rds delete-db-subnet-group --db-subnet-group-name {stack}-db-subnets")),
        "{}",
        out.stderr
    );
    assert_eq!(env.attempts(&env.only_run().id, "db-subnets").len(), 1, "fatal: tried once");
    block_on(async {
        let rds = aws_sdk_rds::Client::new(&config);
        let db = rds.describe_db_instances().db_instance_identifier(format!("{stack}-keycloak-db")).send().await;
        assert!(db.is_err(), "no database was created");
    });
}

#[test]
fn a_target_group_is_waited_for_until_its_targets_are_healthy() {
    // moto's ECS registers no task in a target group: the fault layer answers
    // DescribeTargetHealth with one target, `initial` twice, then `healthy`.
    let env = Env::sqlite();
    let stack = unique_stack("health");
    let config = sdk();
    let tg = block_on(async {
        let ec2 = aws_sdk_ec2::Client::new(&config);
        let vpc = ec2.create_vpc().cidr_block("10.8.0.0/16").send().await.unwrap();
        let elb = aws_sdk_elasticloadbalancingv2::Client::new(&config);
        let tg = elb
            .create_target_group()
            .name(format!("{stack}-tg"))
            .protocol(aws_sdk_elasticloadbalancingv2::types::ProtocolEnum::Http)
            .port(8080)
            .vpc_id(vpc.vpc().unwrap().vpc_id().unwrap())
            .target_type(aws_sdk_elasticloadbalancingv2::types::TargetTypeEnum::Ip)
            .send()
            .await
            .unwrap();
        tg.target_groups()[0].target_group_arn().unwrap().to_string()
    });
    let body = |state: &str| {
        format!(
            "<TargetHealthDescriptions><member><Target><Id>10.1.10.7</Id><Port>8080</Port></Target><TargetHealth><State>{state}</State><Description>Target registration is in progress</Description></TargetHealth></member></TargetHealthDescriptions>"
        )
    };
    let empty = "<TargetHealthDescriptions/>";
    let proxy = FaultProxy::start(
        &moto(),
        vec![
            Rule {
                action: "DescribeTargetHealth",
                fault: Fault::Rewrite { when: "TargetGroupArn", from: empty, to: body("initial") },
                times: Some(2),
            },
            Rule {
                action: "DescribeTargetHealth",
                fault: Fault::Rewrite { when: "TargetGroupArn", from: empty, to: body("healthy") },
                times: None,
            },
        ],
    );
    let wf = env.write(
        "health.yaml",
        &format!(
            "name: health\nsteps:\n  - id: healthy\n    uses: aws.elbv2.wait_healthy\n    with: {{ target_group_arn: \"{tg}\", wait: 1m }}\n"
        ),
    );
    let out = env.run_with(
        &["run", wf.to_str().unwrap()],
        &[("AWS_ENDPOINT_URL", proxy.url.as_str()), ("CA_A2A_FLOW_POLL_INTERVAL", "100ms")],
    );
    out.expect_success();
    assert!(
        out.stderr.contains("0/1 healthy; 10.1.10.7 initial (Target registration is in progress)"),
        "{}",
        out.stderr
    );
    let run = env.only_run();
    assert_eq!(env.step(&run.id, "healthy").outputs.unwrap()["healthy"], 1);
}

#[test]
fn a_service_whose_target_group_no_listener_uses_is_refused_at_its_line_before_any_aws_call() {
    let env = Env::sqlite();
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/workflows");
    for file in ["full.yaml", "stack/network.yaml", "stack/edge.yaml", "stack/data.yaml", "stack/ecs.yaml"] {
        let text = std::fs::read_to_string(format!("{root}/{file}")).unwrap();
        // The bash deployment's failure 6: the validator's listener rule forwards elsewhere.
        let text = text.replace(
            "{ name: validate, priority: 20, target: validator }",
            "{ name: validate, priority: 20, target: archivist }",
        );
        env.write(&format!("workflows/{file}"), &text);
    }
    let full = env.path("workflows/full.yaml");
    let ecs = std::fs::read_to_string(env.path("workflows/stack/ecs.yaml")).unwrap();
    let line = 1 + ecs
        .lines()
        .position(|l| l.contains("target_group_arn: \"${{ steps.${{ item.name }}-tg.outputs.arn }}\""))
        .expect("the agent services' target group line (a for_each: the error is placed at the definition)");

    let out = env.run(&["validate", full.to_str().unwrap()]);
    out.expect_code(2);
    let at = format!(
        "stack/ecs.yaml:{line}:25: error: step `validator` (aws.ecs.service): target group `steps.validator-tg` is not the target of any listener's default action or listener rule"
    );
    assert!(out.stderr.contains(&at), "{}", out.stderr);

    let proxy = FaultProxy::start(&moto(), Vec::new());
    let run = env.run_with(&["run", full.to_str().unwrap()], &[("AWS_ENDPOINT_URL", proxy.url.as_str())]);
    run.expect_code(2);
    assert!(proxy.actions().is_empty(), "no AWS call was made: {:?}", proxy.actions());
    assert!(env.runs().is_empty(), "no run was recorded");
}

/// Asserts that moto holds nothing of `stack` but what destroy keeps on purpose.
fn expect_nothing_left(stack: &str, kept_data_and_images: bool) {
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
        for role in ["execution-role", "task-role"] {
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

const EVERYTHING: [&str; 4] = ["--delete-data", "--delete-images", "--force-delete-secrets", "--skip-final-snapshot"];

fn destroy(env: &Env, run: &str, flags: &[&str], extra: &[(&str, &str)]) -> Out {
    let mut args = vec!["destroy", run, "--yes"];
    args.extend_from_slice(flags);
    let mut vars = vec![("CA_A2A_FLOW_POLL_INTERVAL", "100ms")];
    vars.extend_from_slice(extra);
    env.run_with(&args, &vars)
}

#[test]
fn destroy_removes_the_whole_stack_in_dependency_order_and_a_second_destroy_finds_it_gone() {
    let env = Env::sqlite();
    let stack = unique_stack("destroy");
    deploy(&env, &stack, None, &[]).expect_success();
    let deploy_run = env.only_run().id;
    let out = destroy(&env, &deploy_run, &EVERYTHING, &[]);
    out.expect_success();
    assert!(out.stderr.contains("in reverse dependency order"), "{}", out.stderr);
    expect_nothing_left(&stack, false);
    let destroy_run = env.runs()[0].id.clone();
    assert_ne!(destroy_run, deploy_run, "the destroy is a run of its own");
    assert_eq!(env.step(&destroy_run, "vpc").status, ca_a2a_flow_engine::StepStatus::Succeeded);

    // What is already gone counts as deleted.
    destroy(&env, &deploy_run, &EVERYTHING, &[]).expect_success();
    let again = env.runs()[0].id.clone();
    for step in env.steps(&again) {
        let deleted = step.outputs.as_ref().and_then(|o| o.get("deleted")).cloned().unwrap_or_default();
        assert_eq!(deleted, serde_json::json!([]), "{} found nothing left to delete", step.step_id);
    }
}

#[test]
fn destroy_keeps_data_images_and_a_recovery_window_unless_asked() {
    let env = Env::sqlite();
    let stack = unique_stack("keep");
    deploy(&env, &stack, None, &[]).expect_success();
    let out = destroy(&env, &env.only_run().id, &[], &[]);
    out.expect_success();
    assert!(out.stderr.contains("buckets are kept with their data (--delete-data deletes them)"), "{}", out.stderr);
    expect_nothing_left(&stack, true);
}

#[test]
fn destroy_asks_for_confirmation_and_refuses_without_a_terminal() {
    let env = Env::sqlite();
    let stack = unique_stack("confirm");
    deploy(&env, &stack, None, &[]).expect_success();
    let out = env.run(&["destroy", &env.only_run().id]);
    out.expect_code(2);
    assert!(out.stderr.contains("pass --yes"), "{}", out.stderr);
    assert_eq!(env.runs().len(), 1, "no destroy run was made");
    expect_exactly_the_stack(&stack);
}

#[test]
fn a_destroy_killed_at_each_of_four_points_resumes_and_leaves_nothing() {
    for point in ["after_start:keycloak", "before_commit:keycloak-db", "after_start:nat", "before_commit:igw"] {
        let env = Env::sqlite();
        let stack = unique_stack("kdestroy");
        deploy(&env, &stack, None, &[]).expect_success();
        let out = destroy(&env, &env.only_run().id, &EVERYTHING, &[("CA_A2A_FLOW_FAILPOINT", point)]);
        assert_eq!(out.code, None, "killed at {point}: {}", out.stderr);
        let destroy_run = env.runs()[0].id.clone();
        env.run_with(&["resume", &destroy_run], &[("CA_A2A_FLOW_POLL_INTERVAL", "100ms")]).expect_success();
        expect_nothing_left(&stack, false);
    }
}

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
    assert_eq!(fresh.len(), 55, "every step that makes a resource");
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
            !["Describe", "Get", "List", "HEAD"].iter().any(|read| a.starts_with(read)) && !a.contains("(dry-run)")
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
    assert_eq!(json.json()["waves"].as_array().unwrap().len(), 9, "the full stack runs in 9 waves");
}

#[test]
fn a_run_in_a_region_whose_vpc_quota_is_used_up_is_refused_before_creating_anything() {
    // An earlier attempt's network, recorded in another state file: an orphan here.
    let elsewhere = Env::sqlite();
    let orphan_stack = unique_stack("leftover");
    let net = elsewhere.write("network.yaml", crate::aws_network::NETWORK);
    elsewhere.run(&["run", net.to_str().unwrap(), "--input", &format!("stack={orphan_stack}")]).expect_success();
    let orphan = crate::aws_network::expect_exactly_the_network(&ec2(), &orphan_stack);

    // moto's Service Quotas answers AWS's default, 5 VPCs per region; moto holds more already.
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
    let env = Env::sqlite();
    let out = env.run(&["plan", FULL, "--input", &format!("stack={}", unique_stack("pf")), "--output", "json"]);
    out.expect_success();
    let checks = out.json()["preflight"].as_array().unwrap().clone();
    let status =
        |name: &str| checks.iter().find(|c| c["name"] == name).unwrap()["status"].as_str().unwrap().to_string();
    assert_eq!(status("region"), "pass");
    assert_eq!(status("permissions"), "pass");
    assert_eq!(status("vpc-quota"), "fail", "moto holds more VPCs than the default quota of 5: {checks:?}");
    let region = checks.iter().find(|c| c["name"] == "region").unwrap();
    assert!(region["message"].as_str().unwrap().contains("eu-west-3a, eu-west-3b exist"), "{region}");
}

#[test]
fn gc_lists_exactly_what_a_killed_and_forgotten_deploy_left_and_removes_it() {
    // A deploy killed once its VPC and subnets exist, in a state file then lost.
    let forgotten = Env::sqlite();
    let stack = unique_stack("forgotten");
    let wf = forgotten.write(
        "net.yaml",
        r#"name: net
inputs: { stack: {} }
steps:
  - id: vpc
    uses: aws.ec2.vpc
    with: { stack: "${{ inputs.stack }}", region: eu-west-3, cidr: 10.7.0.0/16 }
  - id: public-a
    uses: aws.ec2.subnet
    with: { stack: "${{ inputs.stack }}", region: eu-west-3, vpc_id: "${{ steps.vpc.outputs.vpc_id }}", cidr: 10.7.1.0/24, availability_zone: eu-west-3a }
  - id: private-b
    uses: aws.ec2.subnet
    with: { stack: "${{ inputs.stack }}", region: eu-west-3, vpc_id: "${{ steps.vpc.outputs.vpc_id }}", cidr: 10.7.2.0/24, availability_zone: eu-west-3b }
  - id: subnets-done
    uses: noop
    needs: [public-a, private-b]
  - id: igw
    uses: aws.ec2.internet_gateway
    needs: [subnets-done]
    with: { stack: "${{ inputs.stack }}", region: eu-west-3, vpc_id: "${{ steps.vpc.outputs.vpc_id }}" }
"#,
    );
    let killed = forgotten.run_with(
        &["run", wf.to_str().unwrap(), "--input", &format!("stack={stack}")],
        &[("CA_A2A_FLOW_FAILPOINT", "after_start:subnets-done")],
    );
    assert_eq!(killed.code, None, "killed: {}", killed.stderr);

    let env = Env::sqlite(); // another state file: it knows nothing of that stack
    let listed = env.run(&["gc", "--stack", &stack, "--region", "eu-west-3", "--output", "json"]);
    listed.expect_success();
    let mut found: Vec<(String, String)> = listed
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|o| (o["step"].as_str().unwrap().to_string(), o["kind"].as_str().unwrap().to_string()))
        .collect();
    found.sort();
    assert_eq!(
        found,
        [
            ("private-b".to_string(), "aws.ec2.subnet".to_string()),
            ("public-a".to_string(), "aws.ec2.subnet".to_string()),
            ("vpc".to_string(), "aws.ec2.vpc".to_string())
        ],
        "exactly the VPC and its two subnets"
    );

    env.run(&["gc", "--stack", &stack, "--region", "eu-west-3", "--delete", "--yes"]).expect_success();
    let config = sdk();
    block_on(async {
        let ec2 = aws_sdk_ec2::Client::new(&config);
        let by_stack = Filter::builder().name("tag:ca-a2a-flow:stack").values(&stack).build();
        assert!(ec2.describe_vpcs().filters(by_stack.clone()).send().await.unwrap().vpcs().is_empty(), "VPC removed");
        assert!(ec2.describe_subnets().filters(by_stack).send().await.unwrap().subnets().is_empty(), "subnets removed");
    });
    let again = env.run(&["gc", "--stack", &stack, "--region", "eu-west-3", "--output", "json"]);
    assert_eq!(again.json(), serde_json::json!([]), "nothing left");

    // The stack of a run this state store knows is never an orphan.
    let known = env.run(&["gc", "--region", "eu-west-3", "--output", "json"]);
    let stacks: Vec<String> =
        known.json().as_array().unwrap().iter().map(|o| o["stack"].as_str().unwrap().to_string()).collect();
    assert!(!stacks.contains(&stack));
}

#[test]
fn stop_sets_every_service_to_zero_and_start_brings_back_the_recorded_counts() {
    let env = Env::sqlite();
    let stack = unique_stack("day2");
    deploy(&env, &stack, None, &[("CA_A2A_FLOW_POLL_INTERVAL", "100ms")]).expect_success();
    let run = env.only_run().id;
    let desired = |env: &Env| -> Vec<(String, i64)> {
        let out = env.run(&["services", &run, "--output", "json"]);
        out.expect_success();
        out.json()
            .as_array()
            .unwrap()
            .iter()
            .map(|s| (s["step"].as_str().unwrap().to_string(), s["desired"].as_i64().unwrap()))
            .collect()
    };
    let all = |n: i64| -> Vec<(String, i64)> {
        ["orchestrator", "extractor", "validator", "archivist", "keycloak"].iter().map(|s| (s.to_string(), n)).collect()
    };
    assert_eq!(desired(&env), all(1), "deployed: one task each");

    let stop = env.run(&["stop", &run]);
    stop.expect_success();
    assert!(stop.stderr.contains(&format!("{stack}-keycloak: desired count 1 -> 0")), "{}", stop.stderr);
    assert_eq!(desired(&env), all(0), "stopped");

    env.run(&["start", &run]).expect_success();
    assert_eq!(desired(&env), all(1), "started at the recorded counts");
    let text = env.run(&["services", &run]);
    assert!(
        text.stdout.contains("DESIRED") && text.stdout.contains(&format!("{stack}-orchestrator")),
        "{}",
        text.stdout
    );
}

#[test]
fn rotating_the_keycloak_admin_password_makes_a_new_value_inside_aws_and_redeploys_keycloak() {
    let env = Env::sqlite();
    let stack = unique_stack("rotate");
    deploy(&env, &stack, None, &[]).expect_success();
    let run = env.only_run().id;
    let config = sdk();
    let read = || {
        block_on(async {
            let sm = aws_sdk_secretsmanager::Client::new(&config);
            let v = sm.get_secret_value().secret_id(format!("{stack}/keycloak-admin")).send().await.unwrap();
            serde_json::from_str::<serde_json::Value>(v.secret_string().unwrap()).unwrap()
        })
    };
    let before = read();
    let out = env.run(&["rotate-secret", &run, "keycloak-admin"]);
    out.expect_success();
    let after = read();
    assert_eq!(after["username"], "admin", "the username is kept");
    assert_ne!(after["password"], before["password"], "a new password");
    assert_eq!(after["password"].as_str().unwrap().len(), 32);
    for value in [&before["password"], &after["password"]] {
        let value = value.as_str().unwrap();
        assert!(!out.stdout.contains(value) && !out.stderr.contains(value), "no password is printed");
        assert!(!env.everything_stored().contains(value), "no password is stored");
    }
    assert!(out.stderr.contains(&format!("{stack}-keycloak: new deployment started")), "{}", out.stderr);
    assert!(!out.stderr.contains(&format!("{stack}-orchestrator")), "only the services that read it: {}", out.stderr);
}

#[test]
fn tail_prints_a_services_cloudwatch_logs() {
    let env = Env::sqlite();
    let stack = unique_stack("tail");
    deploy(&env, &stack, None, &[]).expect_success();
    let config = sdk();
    block_on(async {
        let logs = aws_sdk_cloudwatchlogs::Client::new(&config);
        let group = format!("/ecs/{stack}/keycloak");
        logs.create_log_stream().log_group_name(&group).log_stream_name("keycloak/keycloak/t1").send().await.unwrap();
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
        let event = |i: i64, m: &str| {
            aws_sdk_cloudwatchlogs::types::InputLogEvent::builder().timestamp(now + i).message(m).build().unwrap()
        };
        logs.put_log_events()
            .log_group_name(&group)
            .log_stream_name("keycloak/keycloak/t1")
            .log_events(event(0, "Keycloak 23.0 on JVM started"))
            .log_events(event(1, "Listening on: http://0.0.0.0:8080"))
            .send()
            .await
            .unwrap();
    });
    let out = env.run(&["tail", &env.only_run().id, "keycloak"]);
    out.expect_success();
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{}", out.stdout);
    assert!(lines[0].ends_with("keycloak/keycloak/t1 Keycloak 23.0 on JVM started"), "{}", lines[0]);
    assert!(lines[1].ends_with("Listening on: http://0.0.0.0:8080"), "{}", lines[1]);
}

#[test]
fn a_secret_scheduled_for_deletion_is_restored_not_recreated_under_a_new_name() {
    let env = Env::sqlite();
    let stack = unique_stack("restore");
    let wf = env.write(
        "secret.yaml",
        "name: secret\ninputs: { stack: {} }\nsteps:\n  - id: admin\n    uses: aws.secretsmanager.secret\n    with: { stack: \"${{ inputs.stack }}\", region: eu-west-3, username: admin }\n",
    );
    let input = format!("stack={stack}");
    env.run(&["run", wf.to_str().unwrap(), "--input", &input]).expect_success();
    let first = env.only_run();
    let arn = env.step(&first.id, "admin").outputs.unwrap()["arn"].clone();
    destroy(&env, &first.id, &[], &[]).expect_success(); // a 7-day recovery window

    env.run(&["run", wf.to_str().unwrap(), "--input", &input]).expect_success();
    let again = env.runs()[0].id.clone();
    let outputs = env.step(&again, "admin").outputs.unwrap();
    assert_eq!(outputs["action"], "restored");
    assert_eq!(outputs["arn"], arn, "the same secret, not a new one");
    let logs = env.run(&["logs", &again]);
    assert!(logs.stdout.contains("was scheduled for deletion: restored it"), "{}", logs.stdout);
}
