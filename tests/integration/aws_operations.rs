//! What comes after a deploy, against moto: `gc` of forgotten leftovers, `stop`
//! and `start`, `rotate-secret`, `tail`.

use aws_sdk_ec2::types::Filter;

use crate::support::aws::{deploy, sdk, unique_stack};
use crate::support::{Env, block_on};

/// ListSecrets answers 100 secrets a page (AWS's default, which moto keeps).
#[test]
fn gc_finds_leftovers_past_the_first_page_of_an_answer() {
    let stack = unique_stack("paged");
    let config = sdk();
    block_on(async {
        let sm = aws_sdk_secretsmanager::Client::new(&config);
        for n in 0..101 {
            let tag = |k: &str, v: &str| aws_sdk_secretsmanager::types::Tag::builder().key(k).value(v).build();
            sm.create_secret()
                .name(format!("{stack}/secret-{n}"))
                .secret_string("x")
                .tags(tag("ca-a2a-flow:stack", &stack))
                .tags(tag("ca-a2a-flow:step", &format!("secret-{n}")))
                .tags(tag("ca-a2a-flow:run", "r-20260101-000000-abcd"))
                .send()
                .await
                .expect("moto creates the secret");
        }
    });
    let env = Env::sqlite(); // no run of that stack: every secret is a leftover
    let listed = env.run(&["gc", "--stack", &stack, "--region", "eu-west-3", "--output", "json"]);
    listed.expect_success();
    let secrets = listed.json().as_array().unwrap().iter().filter(|o| o["kind"] == "aws.secretsmanager.secret").count();
    assert_eq!(secrets, 101, "every page of ListSecrets was read");
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
fn rotating_keycloaks_database_password_sets_it_on_the_database_before_it_is_current_and_keycloak_restarts_on_it() {
    let env = Env::sqlite();
    let stack = unique_stack("rotatedb");
    deploy(&env, &stack, None, &[]).expect_success();
    let run = env.only_run().id;
    let config = sdk();
    let (sm, rds, ecs) = (
        aws_sdk_secretsmanager::Client::new(&config),
        aws_sdk_rds::Client::new(&config),
        aws_sdk_ecs::Client::new(&config),
    );
    let secret = format!("{stack}/keycloak-db-credentials");
    let db =
        block_on(rds.describe_db_instances().db_instance_identifier(format!("{stack}-keycloak-db")).send()).unwrap();
    assert!(
        db.db_instances()[0].master_user_secret().is_none(),
        "not RDS's own secret, which RDS rotates every 7 days"
    );
    let before = block_on(sm.get_secret_value().secret_id(&secret).send()).unwrap();

    let proxy = crate::support::faults::FaultProxy::start(&std::env::var("AWS_ENDPOINT_URL").unwrap(), vec![]);
    let out = env.run_with(&["rotate-secret", &run, "keycloak-db-credentials"], &[("AWS_ENDPOINT_URL", &proxy.url)]);
    out.expect_success();
    assert!(
        out.stderr.contains(&format!("database {stack}-keycloak-db: its master password is the new value")),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains(&format!("{stack}-keycloak: new deployment started")), "{}", out.stderr);
    let progress = format!("database {stack}-keycloak-db taking its new master password: ");
    assert!(
        out.stderr.contains(&progress) && out.stderr.contains(" / 15m"),
        "the wait shows its progress: {}",
        out.stderr
    );
    let order: Vec<String> = proxy
        .actions()
        .into_iter()
        .filter(|a| {
            ["PutSecretValue", "ModifyDBInstance", "UpdateSecretVersionStage", "UpdateService"].contains(&a.as_str())
        })
        .collect();
    assert_eq!(
        order,
        ["PutSecretValue", "ModifyDBInstance", "UpdateSecretVersionStage", "UpdateService"],
        "staged, set on the database, made current, then Keycloak restarted"
    );
    let after = block_on(sm.get_secret_value().secret_id(&secret).send()).unwrap();
    assert_ne!(after.version_id(), before.version_id(), "the current version is the new one");
    let value = |v: &aws_sdk_secretsmanager::operation::get_secret_value::GetSecretValueOutput| {
        serde_json::from_str::<serde_json::Value>(v.secret_string().unwrap()).unwrap()
    };
    assert_eq!(value(&after)["username"], "keycloak");
    assert_ne!(value(&after)["password"], value(&before)["password"]);
    for v in [&before, &after] {
        let password = value(v)["password"].as_str().unwrap().to_string();
        assert!(!out.stdout.contains(&password) && !out.stderr.contains(&password), "no password is printed");
        assert!(!env.everything_stored().contains(&password), "no password is stored");
    }

    // Keycloak ends on tasks started after the new value became current: they read it.
    let made_current = block_on(sm.describe_secret().secret_id(&secret).send()).unwrap();
    let since = made_current.last_changed_date().unwrap().secs();
    let service = || {
        let d = block_on(
            ecs.describe_services()
                .cluster(format!("{stack}-cluster"))
                .services(format!("{stack}-keycloak"))
                .include(aws_sdk_ecs::types::ServiceField::Tags)
                .send(),
        )
        .unwrap();
        d.services()[0].clone()
    };
    env.wait_until("Keycloak's new deployment", std::time::Duration::from_secs(60), || {
        std::thread::sleep(std::time::Duration::from_millis(100));
        let s = service();
        s.deployments().len() == 1 && s.running_count() == 1
    });
    let deployment = service().deployments()[0].clone();
    assert!(deployment.created_at().unwrap().secs() >= since, "its tasks started after the rotation: {deployment:?}");
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
