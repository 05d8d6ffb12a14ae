//! The Keycloak cutover (`workflows/keycloak-rds.yaml`) against moto: a stack
//! whose Keycloak runs `start-dev` on H2 gets a production revision on RDS;
//! the service runs it when its deployment completes, and goes back to the dev
//! revision when the deployment fails. Moto's deployments always complete and
//! it stops no task, so the fault layer makes the new deployment FAILED and
//! answers the stopped task's reason (at the SDK's HTTP layer, on top of moto).

use std::collections::BTreeMap;

use aws_sdk_ecs::types::{
    AssignPublicIp, AwsVpcConfiguration, Compatibility, ContainerDefinition, LaunchType, NetworkConfiguration,
    NetworkMode,
};

use crate::support::aws::{sdk, unique_stack};
use crate::support::block_on;
use crate::support::faults::{Fault, FaultProxy, Rule};
use crate::support::{Env, Out};

const CUTOVER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/workflows/keycloak-rds.yaml");

/// The bash deployment's Keycloak: `start-dev` on H2, one Fargate task. Returns its revision.
fn keycloak_on_h2(ecs: &aws_sdk_ecs::Client, stack: &str) -> String {
    let ec2 = aws_sdk_ec2::Client::new(&sdk());
    let subnets = block_on(
        ec2.describe_subnets()
            .filters(aws_sdk_ec2::types::Filter::builder().name("default-for-az").values("true").build())
            .send(),
    )
    .unwrap();
    let subnet = subnets.subnets()[0].subnet_id().unwrap().to_string();
    let groups = block_on(
        ec2.describe_security_groups()
            .filters(aws_sdk_ec2::types::Filter::builder().name("group-name").values("default").build())
            .filters(
                aws_sdk_ec2::types::Filter::builder()
                    .name("vpc-id")
                    .values(subnets.subnets()[0].vpc_id().unwrap())
                    .build(),
            )
            .send(),
    )
    .unwrap();
    let group = groups.security_groups()[0].group_id().unwrap().to_string();
    block_on(ecs.create_cluster().cluster_name(format!("{stack}-legacy")).send()).unwrap();
    let registered = block_on(
        ecs.register_task_definition()
            .family(format!("{stack}-keycloak-dev"))
            .requires_compatibilities(Compatibility::Fargate)
            .network_mode(NetworkMode::Awsvpc)
            .cpu("512")
            .memory("1024")
            .container_definitions(
                ContainerDefinition::builder()
                    .name("keycloak")
                    .image("quay.io/keycloak/keycloak:23.0")
                    .command("start-dev")
                    .essential(true)
                    .build(),
            )
            .send(),
    )
    .unwrap();
    let dev = registered.task_definition().unwrap().task_definition_arn().unwrap().to_string();
    block_on(
        ecs.create_service()
            .cluster(format!("{stack}-legacy"))
            .service_name(format!("{stack}-keycloak"))
            .task_definition(&dev)
            .desired_count(1)
            .launch_type(LaunchType::Fargate)
            .network_configuration(
                NetworkConfiguration::builder()
                    .awsvpc_configuration(
                        AwsVpcConfiguration::builder()
                            .subnets(subnet)
                            .security_groups(group)
                            .assign_public_ip(AssignPublicIp::Disabled)
                            .build()
                            .unwrap(),
                    )
                    .build(),
            )
            .send(),
    )
    .unwrap();
    dev
}

fn service_revision(ecs: &aws_sdk_ecs::Client, stack: &str) -> String {
    let found = block_on(
        ecs.describe_services()
            .cluster(format!("{stack}-legacy"))
            .services(format!("{stack}-keycloak"))
            .include(aws_sdk_ecs::types::ServiceField::Tags)
            .send(),
    )
    .unwrap();
    found.services()[0].task_definition().unwrap().to_string()
}

/// `run keycloak-rds.yaml` on the H2 Keycloak of `stack`; `extra` comes last (a repeated input wins).
fn cutover_args(stack: &str, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = ["run", CUTOVER].iter().map(|s| s.to_string()).collect();
    for input in [
        format!("stack={stack}"),
        format!("cluster={stack}-legacy"),
        format!("service={stack}-keycloak"),
        "healthy_targets=0".into(),
        "cutover_deadline=20s".into(),
    ] {
        args.extend(["--input".to_string(), input]);
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

fn cutover(env: &Env, endpoint: &str, stack: &str, extra: &[&str]) -> Out {
    let args = cutover_args(stack, extra);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    env.run_with(&args, &[("AWS_ENDPOINT_URL", endpoint), ("CA_A2A_FLOW_POLL_INTERVAL", "100ms")])
}

/// No task of the answer's services runs: each is pending, its deployments in progress.
fn nothing_runs(doc: &mut serde_json::Value) -> bool {
    for s in doc["services"].as_array_mut().into_iter().flatten() {
        let desired = s["desiredCount"].clone();
        s["runningCount"] = 0.into();
        s["pendingCount"] = desired.clone();
        for d in s["deployments"].as_array_mut().into_iter().flatten() {
            d["runningCount"] = 0.into();
            d["pendingCount"] = desired.clone();
            d["rolloutState"] = "IN_PROGRESS".into();
        }
    }
    true
}

/// The service's PRIMARY deployment failed, as ECS's circuit breaker says it.
fn the_deployment_failed(doc: &mut serde_json::Value) -> bool {
    let mut failed = false;
    for s in doc["services"].as_array_mut().into_iter().flatten() {
        for d in s["deployments"].as_array_mut().into_iter().flatten().filter(|d| d["status"] == "PRIMARY") {
            d["rolloutState"] = "FAILED".into();
            d["rolloutStateReason"] = "ECS deployment circuit breaker: tasks failed to start.".into();
            failed = true;
        }
    }
    failed
}

/// A fault proxy before the suite's layer: while the service is on the new revision, its task never starts.
fn the_new_revision_never_runs(stack: &str) -> FaultProxy {
    FaultProxy::start(
        &std::env::var("AWS_ENDPOINT_URL").unwrap(),
        vec![Rule {
            action: "DescribeServices",
            fault: Fault::EditAnswer {
                contains: format!("task-definition/{stack}-keycloak-rds-task:"),
                edit: nothing_runs,
            },
            times: None,
        }],
    )
}

#[test]
fn the_cutover_puts_the_database_in_the_services_own_vpc_registers_a_production_revision_and_the_service_runs_it() {
    let config = sdk();
    let (ecs, rds) = (aws_sdk_ecs::Client::new(&config), aws_sdk_rds::Client::new(&config));
    let env = Env::sqlite();
    let stack = unique_stack("cutover");
    let dev = keycloak_on_h2(&ecs, &stack);
    let moto = std::env::var("AWS_ENDPOINT_URL").unwrap();

    cutover(&env, &moto, &stack, &["--yes"]).expect_success();

    let now = service_revision(&ecs, &stack);
    assert_ne!(now, dev, "the service left the H2 revision");
    assert!(now.contains(&format!("task-definition/{stack}-keycloak-rds-task:")), "{now}");
    let run = env.only_run();
    let out = env.step(&run.id, "keycloak-cutover").outputs.unwrap();
    assert_eq!(out["previous_task_definition_arn"], dev.as_str());
    assert_eq!(out["action"], "rolled-out");

    let td = block_on(ecs.describe_task_definition().task_definition(&now).send()).unwrap();
    let td = td.task_definition().unwrap();
    let c = &td.container_definitions()[0];
    assert_eq!(c.command(), ["start"], "production mode, not start-dev");
    let env_vars: BTreeMap<&str, &str> =
        c.environment().iter().map(|kv| (kv.name().unwrap(), kv.value().unwrap())).collect();
    let db =
        block_on(rds.describe_db_instances().db_instance_identifier(format!("{stack}-keycloak-db")).send()).unwrap();
    let db = &db.db_instances()[0];
    let endpoint = db.endpoint().unwrap();

    // The service runs in the default VPC (the bash deployment's, not one of the stack's): the database is
    // there, reachable from the service's security group only, and the stack made no network of its own.
    let ec2 = aws_sdk_ec2::Client::new(&config);
    let service = block_on(
        ecs.describe_services()
            .cluster(format!("{stack}-legacy"))
            .services(format!("{stack}-keycloak"))
            .include(aws_sdk_ecs::types::ServiceField::Tags)
            .send(),
    )
    .unwrap();
    let network = service.services()[0].network_configuration().unwrap().awsvpc_configuration().unwrap().clone();
    let subnet = block_on(ec2.describe_subnets().subnet_ids(&network.subnets()[0]).send()).unwrap();
    let vpc = subnet.subnets()[0].vpc_id().unwrap().to_string();
    assert_eq!(db.db_subnet_group().unwrap().vpc_id(), Some(vpc.as_str()), "the database is in the service's VPC");
    let rds_sg = db.vpc_security_groups()[0].vpc_security_group_id().unwrap().to_string();
    let sg = block_on(ec2.describe_security_groups().group_ids(&rds_sg).send()).unwrap();
    let sg = &sg.security_groups()[0];
    assert_eq!(sg.vpc_id(), Some(vpc.as_str()));
    let rules = sg.ip_permissions();
    assert_eq!(rules.len(), 1, "{rules:?}");
    assert_eq!(rules[0].from_port(), Some(5432));
    let from: Vec<&str> = rules[0].user_id_group_pairs().iter().filter_map(|p| p.group_id()).collect();
    assert_eq!(from, [network.security_groups()[0].as_str()], "5432 from the service's group only");
    let tagged = aws_sdk_ec2::types::Filter::builder().name("tag:ca-a2a-flow:stack").values(&stack).build();
    assert!(block_on(ec2.describe_vpcs().filters(tagged).send()).unwrap().vpcs().is_empty(), "no VPC of the stack");

    assert_eq!(env_vars["KC_DB"], "postgres");
    assert_eq!(
        env_vars["KC_DB_URL"],
        format!("jdbc:postgresql://{}:{}/keycloak", endpoint.address().unwrap(), endpoint.port().unwrap())
    );
    assert_eq!(env_vars["KC_HTTP_RELATIVE_PATH"], "/auth");
    assert_eq!(env_vars["KC_PROXY"], "edge");
    assert_eq!(env_vars["KC_HEALTH_ENABLED"], "true");
    assert!(!env_vars.keys().any(|k| k.contains("PASSWORD")), "no password in the environment: {env_vars:?}");
    let secrets: BTreeMap<&str, &str> = c.secrets().iter().map(|s| (s.name(), s.value_from())).collect();
    assert!(db.master_user_secret().is_none(), "not RDS's own secret, which RDS rotates every 7 days");
    let sm = aws_sdk_secretsmanager::Client::new(&config);
    let own = block_on(sm.describe_secret().secret_id(format!("{stack}/keycloak-db-credentials")).send()).unwrap();
    let own = own.arn().unwrap();
    assert_eq!(
        secrets["KC_DB_USERNAME"],
        format!("{own}:username::"),
        "the stack's own secret, rotated by rotate-secret"
    );
    assert_eq!(secrets["KC_DB_PASSWORD"], format!("{own}:password::"));
    assert!(secrets["KEYCLOAK_ADMIN_PASSWORD"].ends_with(":password::"));
    assert_eq!(c.port_mappings()[0].container_port(), Some(8080));
    assert!(td.execution_role_arn().unwrap().ends_with(&format!("role/{stack}-keycloak-execution-role")));

    cutover(&env, &moto, &stack, &["--yes"]).expect_success();
    let again = env.runs()[0].id.clone();
    assert_eq!(env.step(&again, "keycloak-cutover").outputs.unwrap()["action"], "adopted");
    assert_eq!(service_revision(&ecs, &stack), now, "a second run changes nothing");
}

#[test]
fn a_new_revision_whose_deployment_fails_is_rolled_back_and_the_run_fails_with_the_stopped_tasks_reasons() {
    let config = sdk();
    let ecs = aws_sdk_ecs::Client::new(&config);
    let env = Env::sqlite();
    let stack = unique_stack("rollback");
    let dev = keycloak_on_h2(&ecs, &stack);
    let proxy = FaultProxy::start(
        &std::env::var("AWS_ENDPOINT_URL").unwrap(),
        vec![
            Rule {
                action: "DescribeServices",
                fault: Fault::EditAnswer {
                    contains: format!("task-definition/{stack}-keycloak-rds-task:"),
                    edit: the_deployment_failed,
                },
                times: None,
            },
            Rule {
                action: "ListTasks",
                fault: Fault::Answer {
                    body: r#"{"taskArns":["arn:aws:ecs:eu-west-3:123456789012:task/legacy/0f1e2d"]}"#.into(),
                },
                times: None,
            },
            Rule {
                action: "DescribeTasks",
                fault: Fault::Answer {
                    body: serde_json::json!({"tasks": [{
                        "taskArn": "arn:aws:ecs:eu-west-3:123456789012:task/legacy/0f1e2d",
                        "stoppedReason": "Essential container in task exited",
                        "containers": [{"name": "keycloak", "reason": "exit code 1: FATAL: password authentication failed"}]
                    }], "failures": []})
                    .to_string(),
                },
                times: None,
            },
        ],
    );

    let out = cutover(&env, &proxy.url, &stack, &["--yes"]);
    out.expect_code(1);
    assert!(proxy.actions().iter().any(|a| a == "DescribeServices!rewritten"), "the deployment was made to fail");
    assert_eq!(service_revision(&ecs, &stack), dev, "the service is back on the H2 revision");
    assert!(
        out.stderr.contains(
            "did not become healthy (ECS says the deployment failed (ECS deployment circuit breaker: tasks failed to start.))"
        ),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains(&format!("rolled back to {stack}-keycloak-dev:1 (it runs again)")), "{}", out.stderr);
    assert!(
        out.stderr.contains("stopped tasks: Essential container in task exited; keycloak: exit code 1: FATAL: password authentication failed"),
        "{}",
        out.stderr
    );
    let updates = proxy.actions().iter().filter(|a| *a == "UpdateService").count();
    assert_eq!(updates, 2, "one update to the new revision, one back");
}

#[test]
fn an_aws_error_while_the_cutover_waits_is_retried_and_not_taken_for_a_failed_deployment() {
    let config = sdk();
    let ecs = aws_sdk_ecs::Client::new(&config);
    let env = Env::sqlite();
    let stack = unique_stack("blip");
    let dev = keycloak_on_h2(&ecs, &stack);
    // ECS answers its first four reads of the service on the new revision with
    // an error on its side: the SDK's three tries of one read, then one more.
    let proxy = FaultProxy::start(
        &std::env::var("AWS_ENDPOINT_URL").unwrap(),
        vec![Rule {
            action: "DescribeServices",
            fault: Fault::ErrorInstead {
                contains: format!("task-definition/{stack}-keycloak-rds-task:"),
                status: 500,
                code: "ServerException",
                message: "Service Unavailable. Please try again later.".into(),
            },
            times: Some(4),
        }],
    );

    cutover(&env, &proxy.url, &stack, &["--yes"]).expect_success();

    let now = service_revision(&ecs, &stack);
    assert!(now.contains(&format!("task-definition/{stack}-keycloak-rds-task:")), "not rolled back: {now}");
    let updates = proxy.actions().iter().filter(|a| a.as_str() == "UpdateService").count();
    assert_eq!(updates, 1, "moved to the new revision once, never back: {:?}", proxy.actions());
    let run = env.only_run();
    let attempts = env.attempts(&run.id, "keycloak-cutover");
    let first = attempts[0].error.as_ref().expect("the first attempt met the error");
    assert!(first.message.contains("ecs:DescribeServices"), "{first:?}");
    let out = env.step(&run.id, "keycloak-cutover").outputs.unwrap();
    assert_eq!(out["previous_task_definition_arn"], dev.as_str(), "the next attempt knew the revision before");
}

#[test]
fn a_new_revision_that_does_not_run_before_its_deadline_is_rolled_back() {
    let config = sdk();
    let ecs = aws_sdk_ecs::Client::new(&config);
    let env = Env::sqlite();
    let stack = unique_stack("deadline");
    let dev = keycloak_on_h2(&ecs, &stack);
    let proxy = the_new_revision_never_runs(&stack);

    let out = cutover(&env, &proxy.url, &stack, &["--yes", "--input", "cutover_deadline=2s"]);
    out.expect_code(1);
    assert_eq!(service_revision(&ecs, &stack), dev, "the service is back on the H2 revision");
    assert!(
        out.stderr.contains(&format!(
            "{stack}-keycloak-rds-task:1 did not become healthy (service {stack}-keycloak on {stack}-keycloak-rds-task:1 still deployment in_progress, 0/1 running, 1 deployments after "
        )),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains(&format!("rolled back to {stack}-keycloak-dev:1 (it runs again)")), "{}", out.stderr);
    assert!(out.stderr.contains("stopped tasks: no stopped task found"), "{}", out.stderr);
}

#[test]
fn a_cutover_killed_while_it_waits_rolls_back_on_resume_to_the_revision_it_replaced() {
    let config = sdk();
    let ecs = aws_sdk_ecs::Client::new(&config);
    let env = Env::sqlite();
    let stack = unique_stack("killwait");
    let dev = keycloak_on_h2(&ecs, &stack);
    let proxy = the_new_revision_never_runs(&stack);
    let args = cutover_args(&stack, &["--input", "cutover_deadline=3s", "--yes"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let vars = [("AWS_ENDPOINT_URL", proxy.url.as_str()), ("CA_A2A_FLOW_POLL_INTERVAL", "100ms")];
    let mut child = env.spawn(&args, &vars);
    // Killed once the service is on the new revision, in the middle of the wait.
    env.wait_until("the service on the new revision", std::time::Duration::from_secs(120), || {
        std::thread::sleep(std::time::Duration::from_millis(50));
        service_revision(&ecs, &stack) != dev
    });
    crate::support::signal(&child, libc::SIGKILL);
    let _ = child.wait();

    let run = env.only_run();
    let out = env.run_with(&["resume", &run.id, "--yes"], &vars);
    out.expect_code(1);
    assert_eq!(service_revision(&ecs, &stack), dev, "rolled back to the revision the killed attempt replaced");
    assert!(out.stderr.contains(&format!("rolled back to {stack}-keycloak-dev:1")), "{}", out.stderr);
}

#[test]
fn the_cutover_needs_approval_and_without_a_terminal_or_yes_nothing_is_done() {
    let config = sdk();
    let ecs = aws_sdk_ecs::Client::new(&config);
    let env = Env::sqlite();
    let stack = unique_stack("approve");
    let dev = keycloak_on_h2(&ecs, &stack);
    let proxy = FaultProxy::start(&std::env::var("AWS_ENDPOINT_URL").unwrap(), vec![]);

    let out = cutover(&env, &proxy.url, &stack, &[]);
    out.expect_code(2);
    assert!(out.stderr.contains("need approval"), "{}", out.stderr);
    assert!(out.stderr.contains("keycloak-cutover (") && out.stderr.contains("keycloak-rds.yaml:"), "{}", out.stderr);
    assert!(out.stderr.contains("pass --yes"), "{}", out.stderr);
    assert!(proxy.actions().is_empty(), "no AWS call: {:?}", proxy.actions());
    assert!(env.runs().is_empty(), "no run recorded");
    assert_eq!(service_revision(&ecs, &stack), dev);
}

/// Runs the cutover on a terminal (a pty from `script`) and types `answer` at its question.
fn cutover_on_a_terminal(env: &Env, endpoint: &str, stack: &str, answer: &str) -> Out {
    let line = format!(
        "'{}' --state '{}' run '{CUTOVER}' --input stack={stack} --input cluster={stack}-legacy --input service={stack}-keycloak --input healthy_targets=0",
        env!("CARGO_BIN_EXE_ca-a2a-flow"),
        env.state
    );
    let mut child = std::process::Command::new("script")
        .args(["-q", "-e", "-c", &line, "/dev/null"])
        .current_dir(env.dir.path())
        .env("AWS_ENDPOINT_URL", endpoint)
        .env("CA_A2A_FLOW_POLL_INTERVAL", "100ms")
        .env("CA_A2A_FLOW_SKIP_PREFLIGHT", "vpc-quota,eip-quota")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("script(1) from util-linux");
    use std::io::Write;
    child.stdin.take().unwrap().write_all(format!("{answer}\n").as_bytes()).unwrap();
    Out::from(child.wait_with_output().unwrap())
}

#[test]
fn on_a_terminal_the_cutover_asks_first_and_does_nothing_unless_told_yes() {
    let config = sdk();
    let ecs = aws_sdk_ecs::Client::new(&config);
    let moto = std::env::var("AWS_ENDPOINT_URL").unwrap();

    let env = Env::sqlite();
    let stack = unique_stack("asked");
    let dev = keycloak_on_h2(&ecs, &stack);
    let declined = cutover_on_a_terminal(&env, &moto, &stack, "no");
    declined.expect_success();
    assert!(declined.stdout.contains("this run has steps that cannot be undone"), "{}", declined.stdout);
    assert!(declined.stdout.contains("Type `yes` to go on"), "{}", declined.stdout);
    assert!(declined.stdout.contains("not approved: nothing was done"), "{}", declined.stdout);
    assert!(env.runs().is_empty(), "no run recorded");
    assert_eq!(service_revision(&ecs, &stack), dev);

    let approved = cutover_on_a_terminal(&env, &moto, &stack, "yes");
    approved.expect_success();
    assert_ne!(service_revision(&ecs, &stack), dev, "typed yes: the service runs the RDS revision");
}
