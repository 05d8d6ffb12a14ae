//! `workflows/full.yaml`, the whole CA-A2A stack, deployed against moto (a real
//! AWS emulator) by the real binary, then inspected through the AWS SDK: exactly
//! the stack of STACK.md, nothing twice, no secret value anywhere of ours; and
//! deploys under adversity: killed mid-creation, throttled, denied, a NAT
//! gateway that fails, leftovers in another VPC.
//!
//! Through the suite's realistic layer the deploy waits for each service's
//! target to be healthy: the layer starts the tasks moto's ECS does not run,
//! registers them and passes their health checks in AWS's time. Behind fault
//! rules alone (moto's ECS, no target ever registers) it runs with
//! `healthy_targets=0`.

use std::time::Duration;

use ca_a2a_flow_engine::RunStatus;

use crate::support::aws::{
    FULL, deploy, destroy, expect_exactly_the_stack, local_images, moto, sdk, secret_values, unique_stack,
};
use crate::support::faults::{Fault, FaultProxy, Rule};
use crate::support::{Env, block_on};

#[test]
fn the_full_stack_is_deployed_exactly_and_a_second_run_adopts_everything_and_no_secret_leaks() {
    let env = Env::sqlite();
    let stack = unique_stack("full");
    let first = deploy(&env, &stack, None, &[]);
    first.expect_success();
    let counts = expect_exactly_the_stack(&stack);
    let run = env.only_run().id;
    let dns = env.step(&run, "alb").outputs.unwrap()["dns_name"].as_str().unwrap().to_string();
    assert_eq!(
        crate::support::aws::task_environment(&env, &run, "orchestrator-task", "KEYCLOAK_URL"),
        Some(format!("http://{dns}/auth")),
        "without a domain the agents reach Keycloak over plain HTTP on the load balancer"
    );

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
    let args = [
        &["run", FULL, "--input", &stack_input, "--input", "healthy_targets=0", "--input", "mcp=false"][..],
        &local_images(),
    ]
    .concat();
    let child = env.spawn(&args, &[("AWS_ENDPOINT_URL", proxy.url.as_str()), ("CA_A2A_FLOW_POLL_INTERVAL", "100ms")]);
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

/// AWS refuses an internet-facing load balancer in a VPC without an internet
/// gateway (aws-sim says so as AWS does): the load balancer waits for the
/// gateway, however long its attachment takes.
#[test]
fn the_load_balancer_waits_for_the_internet_gateway_however_long_it_takes_to_attach() {
    crate::support::aws::behind_aws_sim();
    let held = Rule {
        action: "AttachInternetGateway",
        fault: Fault::Error {
            status: 400,
            code: "DependencyViolation",
            message: "held back by the test: the gateway attaches late".into(),
        },
        times: Some(3),
    };
    let proxy = FaultProxy::start(&moto(), vec![held]);
    let env = Env::sqlite();
    let stack = unique_stack("igw-late");
    let out = deploy(&env, &stack, Some(&proxy.url), &[]);
    assert!(
        !out.stderr.contains("has no internet gateway"),
        "the load balancer was made before its VPC had a gateway:\n{}",
        out.stderr
    );
    out.expect_success();
    let actions = proxy.actions();
    let attached = actions.iter().rposition(|a| a == "AttachInternetGateway").expect("attached at last");
    let balanced = actions.iter().position(|a| a == "CreateLoadBalancer").expect("a load balancer");
    assert!(attached < balanced, "CreateLoadBalancer came before the gateway was attached: {actions:?}");
    expect_exactly_the_stack(&stack);

    // And `destroy` removes the load balancer before it detaches the gateway, which AWS
    // refuses while the load balancer maps public addresses.
    let seen_before = proxy.actions().len();
    let run = env.only_run();
    destroy(
        &env,
        &run.id,
        &["--delete-data", "--delete-images", "--force-delete-secrets"],
        &[("AWS_ENDPOINT_URL", &proxy.url)],
    )
    .expect_success();
    let actions = proxy.actions()[seen_before..].to_vec();
    let deleted = actions.iter().position(|a| a == "DeleteLoadBalancer").expect("the load balancer deleted");
    let detached: Vec<usize> =
        actions.iter().enumerate().filter(|(_, a)| *a == "DetachInternetGateway").map(|(i, _)| i).collect();
    // The deleted load balancer's interfaces still map public addresses for a while (aws-sim
    // holds them two simulated minutes), so AWS may refuse the first detaches: destroy asks
    // again until they are released, and never before the load balancer is deleted.
    assert!(!detached.is_empty(), "the gateway was detached: {actions:?}");
    assert!(detached.iter().all(|&d| deleted < d), "a detach came before the load balancer was gone: {actions:?}");
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
    assert!(
        out.stderr.contains("(request id sim-"),
        "the request id of the answer (written by aws-sim's HTTP module): {}",
        out.stderr
    );
    assert!(out.stderr.contains("organisation policy (SCP) forbids rds:CreateDBInstance"), "{}", out.stderr);
    assert_eq!(env.attempts(&env.only_run().id, "keycloak-db").len(), 1, "fatal: tried once");
}

#[test]
fn a_db_subnet_group_left_in_another_vpc_is_a_fatal_error_with_the_fix_and_no_database_is_made() {
    let stack = unique_stack("oldgroup");
    let config = sdk();
    block_on(async {
        // What an earlier attempt of the stack left (with its tags): the same name, in another VPC.
        let ec2 = aws_sdk_ec2::Client::new(&config);
        let vpc = ec2.create_vpc().cidr_block("10.9.0.0/16").send().await.unwrap();
        let vpc = vpc.vpc().unwrap().vpc_id().unwrap().to_string();
        crate::support::aws::seen(|| ec2.describe_vpcs().vpc_ids(&vpc).send()).await;
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
            .tags(aws_sdk_rds::types::Tag::builder().key("ca-a2a-flow:stack").value(&stack).build())
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
            r#"name: health
steps:
  - id: healthy
    uses: aws.elbv2.wait_healthy
    with: {{ target_group_arn: "{tg}", wait: 1m }}
"#
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

#[test]
fn a_secret_scheduled_for_deletion_is_restored_not_recreated_under_a_new_name() {
    let env = Env::sqlite();
    let stack = unique_stack("restore");
    let wf = env.write(
        "secret.yaml",
        r#"name: secret
inputs: { stack: {} }
steps:
  - id: admin
    uses: aws.secretsmanager.secret
    with: { stack: "${{ inputs.stack }}", region: eu-west-3, username: admin }
"#,
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

#[test]
fn a_role_whose_statements_are_taken_away_loses_the_inline_policy_they_made() {
    // The agents' execution role read Keycloak's secrets until they got a role of their
    // own: a stack deployed before must lose that read, not keep it.
    let env = Env::sqlite();
    let stack = unique_stack("role");
    let input = format!("stack={stack}");
    let reads = [
        ("service", "ecs-tasks.amazonaws.com"),
        ("statements", "[{ actions: [secretsmanager:GetSecretValue], resources: [\"*\"] }]"),
    ];
    let wf = crate::support::aws::one_aws_step(&env, "execution-role", "aws.iam.role", &reads);
    env.run(&["run", wf.to_str().unwrap(), "--input", &input]).expect_success();
    let iam = aws_sdk_iam::Client::new(&sdk());
    let inline = || {
        let found = block_on(iam.list_role_policies().role_name(format!("{stack}-execution-role")).send()).unwrap();
        found.policy_names().to_vec()
    };
    assert_eq!(inline().len(), 1, "the statements' inline policy");

    let wf = crate::support::aws::one_aws_step(&env, "execution-role", "aws.iam.role", &reads[..1]);
    let plan = env.run(&["plan", wf.to_str().unwrap(), "--input", &input]);
    assert!(plan.stdout.contains("remove the inline policy"), "plan says so: {}", plan.stdout);
    env.run(&["run", wf.to_str().unwrap(), "--input", &input]).expect_success();
    assert_eq!(inline(), Vec::<String>::new(), "no statement declared, no inline policy left");
}

#[test]
fn on_an_account_new_to_ecs_the_service_waits_until_ecs_can_use_the_role_its_first_cluster_made() {
    // 5 simulated seconds a second: ECS can use its new role 2 s after the first cluster.
    let aws = crate::support::aws::OwnLayer::start(&["--time-scale", "5", "--throttle", "off"]);
    let account = crate::support::aws::AnotherAccount::new(&aws.url);
    // The new account's default network, which moto makes with the account.
    let ec2 = aws_sdk_ec2::Client::new(&account.sdk(&aws.url));
    let default = aws_sdk_ec2::types::Filter::builder().name("default-for-az").values("true").build();
    let subnets = block_on(ec2.describe_subnets().filters(default).send()).unwrap();
    let subnet = subnets.subnets()[0].subnet_id().unwrap().to_string();
    let named_default = aws_sdk_ec2::types::Filter::builder().name("group-name").values("default").build();
    let groups = block_on(ec2.describe_security_groups().filters(named_default).send()).unwrap();
    let group = groups.security_groups()[0].group_id().unwrap().to_string();
    let env = Env::sqlite();
    let stack = unique_stack("newaccount");
    let wf = env.write(
        "first-cluster.yaml",
        &r#"name: first-cluster
inputs: { stack: {} }
defaults:
  retry: { max_attempts: 5, initial_delay: 1s, max_delay: 4s }
  with: { stack: "${{ inputs.stack }}", region: eu-west-3 }
steps:
  - id: cluster
    uses: aws.ecs.cluster
  - id: task
    uses: aws.ecs.task_definition
    with:
      cpu: 256
      memory: 512
      execution_role_arn: "arn:aws:iam::000000000000:role/none"
      containers: [{ name: app, image: "app:1" }]
  - id: app
    uses: aws.ecs.service
    with:
      cluster: "${{ steps.cluster.outputs.name }}"
      task_definition_arn: "${{ steps.task.outputs.arn }}"
      subnet_ids: [SUBNET]
      security_group_ids: [GROUP]
      desired_count: 0
"#
        .replace("SUBNET", &subnet)
        .replace("GROUP", &group),
    );
    let mut vars = vec![("AWS_ENDPOINT_URL", aws.url.as_str())];
    vars.extend(account.vars());
    let out = env.run_with(&["run", wf.to_str().unwrap(), "--input", &format!("stack={stack}")], &vars);
    out.expect_success();
    let run = env.only_run().id;
    let app = env.step(&run, "app");
    assert!(app.attempt > 1, "the first CreateService was refused: ECS could not use its role yet");
    assert_eq!(app.outputs.unwrap()["action"], "created");
    let logs = env.run(&["logs", &run, "--step", "app"]);
    assert!(logs.stdout.contains("Unable to assume the service linked role"), "the retry says why: {}", logs.stdout);
}
