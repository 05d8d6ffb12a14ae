//! `destroy` of a deployed stack against moto: everything, in dependency order,
//! except what it keeps on purpose; asked for on a terminal; resumable.

use aws_sdk_ec2::types::Filter;

use crate::support::aws::{
    EVERYTHING, FULL, OwnLayer, behind_aws_sim, deploy, deploy_with, destroy, expect_exactly_the_stack,
    expect_nothing_left, local_images, one_aws_step, sdk, unique_stack,
};
use crate::support::{Env, block_on};

/// IAM answers ListAttachedRolePolicies in pages (aws-sim cuts them at 5): a
/// role holding more managed policies than a page is planned as it is, and
/// destroyed whole (a role with a policy still attached cannot be deleted).
#[test]
fn a_role_with_more_managed_policies_than_a_page_is_planned_and_destroyed_whole() {
    behind_aws_sim();
    let stack = unique_stack("policies");
    let config = sdk();
    let iam = aws_sdk_iam::Client::new(&config);
    let policies: Vec<String> = block_on(async {
        let mut arns = Vec::new();
        for n in 0..7 {
            let document =
                r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":"s3:GetObject","Resource":"*"}]}"#;
            let made = iam.create_policy().policy_name(format!("{stack}-p{n}")).policy_document(document).send().await;
            arns.push(made.expect("moto creates the policy").policy().unwrap().arn().unwrap().to_string());
        }
        arns
    });
    let env = Env::sqlite();
    let policies = format!("[{}]", policies.join(", "));
    let with = [("service", "ecs-tasks.amazonaws.com"), ("managed_policy_arns", policies.as_str())];
    let wf = one_aws_step(&env, "app-role", "aws.iam.role", &with);
    let (wf, input) = (wf.to_str().unwrap(), format!("stack={stack}"));
    env.run(&["run", wf, "--input", &input]).expect_success();

    let plan = env.run(&["plan", wf, "--input", &input, "--output", "json"]);
    plan.expect_success();
    let role = &plan.json()["steps"][0];
    assert_eq!(role["action"], "adopt", "every attached policy was read: {role}");

    destroy(&env, &env.only_run().id, &[], &[]).expect_success();
    let gone = block_on(iam.get_role().role_name(format!("{stack}-app-role")).send());
    assert!(gone.is_err(), "the role is deleted, its policies detached first");
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
fn a_database_with_deletion_protection_stops_destroy_before_anything_is_deleted_unless_delete_data() {
    let env = Env::sqlite();
    let stack = unique_stack("protected");
    deploy(&env, &stack, None, &[]).expect_success();
    let rds = aws_sdk_rds::Client::new(&sdk());
    let id = format!("{stack}-keycloak-db");
    let db = block_on(rds.describe_db_instances().db_instance_identifier(&id).send()).unwrap();
    assert_eq!(db.db_instances()[0].deletion_protection(), Some(true), "on by default");

    let refused = destroy(&env, &env.only_run().id, &["--skip-final-snapshot"], &[]);
    refused.expect_code(2);
    assert!(refused.stderr.contains("keycloak-db") && refused.stderr.contains("--delete-data"), "{}", refused.stderr);
    assert_eq!(env.runs().len(), 1, "no destroy run was made");
    expect_exactly_the_stack(&stack);

    // Turned off by hand: the plan says so, and the next run turns it on again.
    block_on(
        rds.modify_db_instance().db_instance_identifier(&id).deletion_protection(false).apply_immediately(true).send(),
    )
    .unwrap();
    let input = format!("stack={stack}");
    let plan = env.run(&["plan", FULL, "--input", &input, "--input", "mcp=false", "--output", "json"]);
    let db_plan = plan.json()["steps"].as_array().unwrap().iter().find(|s| s["id"] == "keycloak-db").unwrap().clone();
    assert!(db_plan.to_string().contains("deletion_protection: false -> true"), "{db_plan}");
    deploy(&env, &stack, None, &[]).expect_success();
    let again = env.runs()[0].id.clone();
    assert_eq!(env.step(&again, "keycloak-db").outputs.unwrap()["action"], "updated");
    let db = block_on(rds.describe_db_instances().db_instance_identifier(&id).send()).unwrap();
    assert_eq!(db.db_instances()[0].deletion_protection(), Some(true), "converged");

    destroy(&env, &again, &EVERYTHING, &[]).expect_success();
    expect_nothing_left(&stack, false);
}

#[test]
fn destroy_keeps_data_images_and_a_recovery_window_unless_asked() {
    let env = Env::sqlite();
    let stack = unique_stack("keep");
    // Without --delete-data a protected database stops the destroy: this one is not.
    deploy_with(&env, &stack, None, &[], &["db_deletion_protection=false"]).expect_success();
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
    let out = env.run(&["destroy", &env.only_run().id, "--delete-data"]);
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

/// A family with more revisions than one page of ListTaskDefinitions (aws-sim
/// answers in pages, as AWS does): destroy deregisters them all.
#[test]
fn destroy_deregisters_every_revision_of_a_task_definition_not_only_the_first_page() {
    crate::support::aws::behind_aws_sim();
    let env = Env::sqlite();
    let stack = unique_stack("revs");
    let wf = env.write(
        "task.yaml",
        r#"name: task
inputs: { stack: {} }
steps:
  - id: app-task
    uses: aws.ecs.task_definition
    with:
      stack: "${{ inputs.stack }}"
      region: eu-west-3
      cpu: 256
      memory: 512
      execution_role_arn: arn:aws:iam::123456789012:role/exec
      containers:
        - { name: app, image: "public.ecr.aws/nginx/nginx:latest", port: 80 }
"#,
    );
    env.run(&["run", wf.to_str().unwrap(), "--input", &format!("stack={stack}")]).expect_success();
    let family = format!("{stack}-app-task");
    let ecs = aws_sdk_ecs::Client::new(&sdk());
    let active = || {
        block_on(async {
            let mut pages = ecs.list_task_definitions().family_prefix(&family).into_paginator().send();
            let mut all = Vec::new();
            while let Some(page) = pages.next().await {
                all.extend(page.unwrap().task_definition_arns().to_vec());
            }
            all
        })
    };
    // Six more revisions: what redeploys that changed the definition leave.
    block_on(async {
        for _ in 0..6 {
            let app = aws_sdk_ecs::types::ContainerDefinition::builder().name("app").image("nginx").memory(512).build();
            ecs.register_task_definition().family(&family).container_definitions(app).send().await.unwrap();
        }
    });
    assert_eq!(active().len(), 7, "seven revisions, more than one page");

    destroy(&env, &env.only_run().id, &[], &[]).expect_success();
    assert_eq!(active(), Vec::<String>::new(), "every revision deregistered");
}

#[test]
fn destroy_waits_for_a_deleted_load_balancers_network_interfaces_instead_of_giving_up() {
    behind_aws_sim();
    let env = Env::sqlite();
    let stack = unique_stack("eni");
    let edge = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("workflows/stack/edge.yaml");
    env.run(&["run", edge.to_str().unwrap(), "--input", &format!("stack={stack}")]).expect_success();
    let run = env.only_run().id;

    // AWS's clock at twice real time: the load balancer's interfaces hold its security
    // group, its subnets, the internet gateway and the VPC for a real minute after it is
    // deleted, twice what the steps' five attempts used to give them.
    let aws = OwnLayer::start(&["--time-scale", "2"]);
    let out = destroy(&env, &run, &[], &[("AWS_ENDPOINT_URL", &aws.url), ("CA_A2A_FLOW_POLL_INTERVAL", "1s")]);
    out.expect_success();
    let logs = env.run(&["logs", &env.runs()[0].id]);
    assert!(logs.stdout.contains("has a dependent object"), "the wait said what held the group: {}", logs.stdout);
    let config = sdk();
    block_on(async {
        let ec2 = aws_sdk_ec2::Client::new(&config);
        let by_stack = Filter::builder().name("tag:ca-a2a-flow:stack").values(&stack).build();
        assert!(ec2.describe_vpcs().filters(by_stack).send().await.unwrap().vpcs().is_empty(), "the VPC is gone");
    });
}

/// At most one of each EC2 resource the stack makes by its tags (four subnets,
/// two route tables, seven groups): whatever instant a kill came at, no
/// attempt left a second one behind.
fn expect_no_duplicate(stack: &str, when: &str) {
    let config = sdk();
    block_on(async {
        let ec2 = aws_sdk_ec2::Client::new(&config);
        let ours = || Filter::builder().name("tag:ca-a2a-flow:stack").values(stack).build();
        let vpcs = ec2.describe_vpcs().filters(ours()).send().await.unwrap().vpcs().to_vec();
        let counts = [
            ("VPC", vpcs.len(), 1),
            ("subnet", ec2.describe_subnets().filters(ours()).send().await.unwrap().subnets().len(), 4),
            (
                "internet gateway",
                ec2.describe_internet_gateways().filters(ours()).send().await.unwrap().internet_gateways().len(),
                1,
            ),
            ("route table", ec2.describe_route_tables().filters(ours()).send().await.unwrap().route_tables().len(), 2),
            (
                "security group",
                ec2.describe_security_groups().filters(ours()).send().await.unwrap().security_groups().len(),
                7,
            ),
            ("Elastic IP", ec2.describe_addresses().filters(ours()).send().await.unwrap().addresses().len(), 1),
        ];
        for (what, found, most) in counts {
            assert!(found <= most, "{when}: {found} {what}s of stack {stack}, at most {most}");
        }
        if let Some(vpc) = vpcs.first().and_then(|v| v.vpc_id()) {
            let live = Filter::builder().name("state").values("pending").values("available").build();
            let in_vpc = Filter::builder().name("vpc-id").values(vpc).build();
            let nats = ec2.describe_nat_gateways().filter(in_vpc).filter(live).send().await.unwrap();
            assert!(nats.nat_gateways().len() <= 1, "{when}: {} live NAT gateways", nats.nat_gateways().len());
        }
    });
}

/// Drives `first` (then `resume RUN`) to its end, SIGKILLing it `kills` times at
/// random instants (`within` milliseconds into each process), each followed by
/// a resume; after each kill, no duplicate. The run's id and the kills made.
fn killed_and_resumed(
    env: &Env,
    first: &[&str],
    vars: &[(&str, &str)],
    (kills, within): (usize, std::ops::Range<u64>),
    stack: &str,
    rng: &mut fastrand::Rng,
) -> (String, usize) {
    let before = env.runs().len();
    let mut done = 0;
    let mut args: Vec<String> = first.iter().map(|s| s.to_string()).collect();
    let mut run = None;
    while done < kills {
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut child = env.spawn(&argv, vars);
        std::thread::sleep(std::time::Duration::from_millis(rng.u64(within.clone())));
        let ended = child.try_wait().unwrap().is_some();
        if !ended {
            unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
        }
        let out = child.wait_with_output().unwrap();
        if run.is_none() {
            // Killed before it recorded its run (while it validated): it starts again.
            let runs = env.runs();
            run = (runs.len() > before).then(|| runs[0].id.clone());
        }
        let said = String::from_utf8_lossy(&out.stderr);
        if ended && said.contains("the engine died during this step") {
            // A step whose every attempt was cut by a kill (the database's long wait) fails
            // instead of being run once more, and says to resume: as its hint says, resume.
            args = vec!["resume".into(), run.clone().expect("its run")];
            continue;
        }
        if ended {
            assert!(out.status.success(), "{said}");
            return (run.expect("a finished process recorded its run"), done);
        }
        done += 1;
        eprintln!("soak: kill {done} of `{}` {}", first[0], run.as_deref().unwrap_or("(before its run)"));
        expect_no_duplicate(stack, &format!("after kill {done} of `{}`", first[0]));
        if let Some(id) = &run {
            args = vec!["resume".into(), id.clone()];
        }
    }
    let id = match run {
        Some(id) => id,
        None => {
            env.run_with(first, vars).expect_success();
            return (env.runs()[0].id.clone(), done);
        }
    };
    // The last resume runs undisturbed; a step whose attempts the kills used up fails
    // first, saying to resume, and the resume after that finishes.
    for _ in 0..3 {
        let out = env.run_with(&["resume", &id], vars);
        if out.code == Some(0) {
            return (id, done);
        }
        assert!(out.stderr.contains("the engine died during this step"), "{}", out.stderr);
    }
    panic!("run {id} did not finish in three undisturbed resumes");
}

#[test]
fn thirty_kills_at_random_instants_across_deploy_and_destroy_leave_exactly_the_stack_then_nothing() {
    // AWS's clock at 30 simulated seconds a second (a NAT gateway pending ~4 s, the database
    // creating ~12 s, a deleted load balancer's interfaces held ~4 s), throttling on, reads
    // that lag: the suite's layer is kinder (300).
    let aws = OwnLayer::start(&["--time-scale", "30", "--throttle", "on"]);
    let seed = fastrand::u64(..);
    eprintln!("soak seed {seed}");
    let mut rng = fastrand::Rng::with_seed(seed);
    let env = Env::sqlite();
    let stack = unique_stack("soak");
    let input = format!("stack={stack}");
    let vars = [("AWS_ENDPOINT_URL", aws.url.as_str())];
    let deploy_args = [
        &["run", FULL, "--input", &input, "--input", "healthy_targets=0", "--input", "mcp=false"][..],
        &local_images(),
    ]
    .concat();
    let (deployed, deploy_kills) = killed_and_resumed(&env, &deploy_args, &vars, (20, 50..1000), &stack, &mut rng);
    assert_eq!(env.run_record(&deployed).status, ca_a2a_flow_engine::RunStatus::Succeeded, "seed {seed}");
    expect_exactly_the_stack(&stack);

    let mut destroy_args = vec!["destroy", deployed.as_str(), "--yes"];
    destroy_args.extend_from_slice(&EVERYTHING);
    let rest = (30 - deploy_kills, 20..300);
    let (_, destroy_kills) = killed_and_resumed(&env, &destroy_args, &vars, rest, &stack, &mut rng);
    expect_nothing_left(&stack, false);
    assert_eq!(deploy_kills + destroy_kills, 30, "seed {seed}: every kill came before its process ended");
}
