//! Resources found by their name are adopted, or deleted, only when their tags
//! say this stack made them. One made by another tool or by hand (the report's
//! leftovers `ca-a2a-cluster`, `/ecs/ca-a2a/*`) is a conflict in `plan`, a fatal
//! error naming it in `run`, and left alone by `destroy`, unless the step says
//! `take_over: true`.

use crate::support::aws::{a_db_instance_made_by_hand, behind_aws_sim, destroy, one_aws_step, sdk, unique_stack};
use crate::support::{Env, block_on};

/// A cluster named as the stack's step `cluster` names its own, made without tags.
fn a_cluster_made_by_hand(name: &str) {
    let ecs = aws_sdk_ecs::Client::new(&sdk());
    block_on(ecs.create_cluster().cluster_name(name).send()).expect("moto makes the cluster");
}

/// The cluster's tags, if it is ACTIVE.
fn cluster_tags(name: &str) -> Option<Vec<(String, String)>> {
    let ecs = aws_sdk_ecs::Client::new(&sdk());
    let found = block_on(ecs.describe_clusters().clusters(name).include(aws_sdk_ecs::types::ClusterField::Tags).send())
        .unwrap();
    let c = found.clusters().iter().find(|c| c.status() == Some("ACTIVE"))?;
    Some(c.tags().iter().map(|t| (t.key().unwrap_or("").into(), t.value().unwrap_or("").into())).collect())
}

/// Runs `wf` for `stack`: it fails, naming `what` `name` as not made by
/// ca-a2a-flow; then `destroy` of that run (with `flags`) succeeds.
fn refused_then_destroyed_around(env: &Env, wf: &std::path::Path, stack: &str, what: &str, name: &str, flags: &[&str]) {
    let out = env.run(&["run", wf.to_str().unwrap(), "--input", &format!("stack={stack}")]);
    out.expect_code(1);
    let said = format!("{what} {name} exists without ca-a2a-flow's ownership tags");
    assert!(out.stderr.contains(&said), "{}", out.stderr);
    assert!(out.stderr.contains("take_over: true"), "the hint names the way to adopt it: {}", out.stderr);
    destroy(env, &env.only_run().id, flags, &[]).expect_success();
}

#[test]
fn a_cluster_another_tool_made_is_a_conflict_in_plan_fatal_in_run_and_never_destroyed() {
    behind_aws_sim();
    let stack = unique_stack("byhand");
    let name = format!("{stack}-cluster");
    a_cluster_made_by_hand(&name);
    let env = Env::sqlite();
    let wf = one_aws_step(&env, "cluster", "aws.ecs.cluster", &[]);
    let input = format!("stack={stack}");

    let plan = env.run(&["plan", wf.to_str().unwrap(), "--input", &input, "--output", "json"]);
    plan.expect_success();
    let step = plan.json()["steps"].as_array().unwrap().iter().find(|s| s["id"] == "cluster").unwrap().clone();
    assert_eq!(step["action"], "conflict", "{step}");

    refused_then_destroyed_around(&env, &wf, &stack, "cluster", &name, &[]);
    assert_eq!(cluster_tags(&name), Some(Vec::new()), "run and destroy left it as it was, untagged");
}

#[test]
fn a_cluster_taken_over_is_tagged_as_the_stacks_and_then_destroyed_with_it() {
    behind_aws_sim();
    let stack = unique_stack("takeover");
    let name = format!("{stack}-cluster");
    a_cluster_made_by_hand(&name);
    let env = Env::sqlite();
    let wf = one_aws_step(&env, "cluster", "aws.ecs.cluster", &[("take_over", "true")]);
    env.run(&["run", wf.to_str().unwrap(), "--input", &format!("stack={stack}")]).expect_success();
    let run = env.only_run().id;
    assert_eq!(env.step(&run, "cluster").outputs.unwrap()["action"], "taken-over");
    let tags = cluster_tags(&name).unwrap();
    assert!(tags.contains(&("ca-a2a-flow:stack".into(), stack.clone())), "{tags:?}");

    destroy(&env, &run, &[], &[]).expect_success();
    assert_eq!(cluster_tags(&name), None, "the stack's now: destroyed with it");
}

#[test]
fn a_log_group_another_tool_made_is_refused_and_never_destroyed() {
    behind_aws_sim();
    let stack = unique_stack("oldlogs");
    let name = format!("/ecs/{stack}/orchestrator");
    let logs = aws_sdk_cloudwatchlogs::Client::new(&sdk());
    block_on(logs.create_log_group().log_group_name(&name).send()).expect("moto makes the group");
    let env = Env::sqlite();
    let wf = one_aws_step(&env, "orchestrator-logs", "aws.logs.log_group", &[("name", &name)]);
    refused_then_destroyed_around(&env, &wf, &stack, "log group", &name, &[]);
    let left = block_on(logs.describe_log_groups().log_group_name_prefix(&name).send()).unwrap();
    assert_eq!(left.log_groups().len(), 1, "destroy leaves what the stack did not make");
}

#[test]
fn a_role_another_tool_made_is_refused_and_never_destroyed() {
    behind_aws_sim();
    let stack = unique_stack("oldrole");
    let name = format!("{stack}-execution-role");
    let iam = aws_sdk_iam::Client::new(&sdk());
    let trust = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"ecs-tasks.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#;
    block_on(iam.create_role().role_name(&name).assume_role_policy_document(trust).send()).expect("moto makes it");
    let env = Env::sqlite();
    let wf = one_aws_step(&env, "execution-role", "aws.iam.role", &[("service", "ecs-tasks.amazonaws.com")]);
    refused_then_destroyed_around(&env, &wf, &stack, "role", &name, &[]);
    assert!(block_on(iam.get_role().role_name(&name).send()).is_ok(), "destroy leaves what the stack did not make");
}

#[test]
fn a_repository_another_tool_made_is_refused_and_never_destroyed_even_with_its_images() {
    behind_aws_sim();
    let stack = unique_stack("oldrepo");
    let name = format!("{stack}/orchestrator");
    let ecr = aws_sdk_ecr::Client::new(&sdk());
    block_on(ecr.create_repository().repository_name(&name).send()).expect("moto makes it");
    let env = Env::sqlite();
    let wf = one_aws_step(&env, "orchestrator-repo", "aws.ecr.repository", &[("name", &name)]);
    refused_then_destroyed_around(&env, &wf, &stack, "repository", &name, &["--delete-images"]);
    let left = block_on(ecr.describe_repositories().repository_names(&name).send());
    assert!(left.is_ok(), "destroy --delete-images leaves what the stack did not make");
}

#[test]
fn a_target_group_another_tool_made_is_refused_and_never_destroyed() {
    behind_aws_sim();
    let stack = unique_stack("oldtg");
    let name = format!("{stack}-api-tg");
    let config = sdk();
    let (vpc, elb) = block_on(async {
        let ec2 = aws_sdk_ec2::Client::new(&config);
        let vpc = ec2
            .create_vpc()
            .cidr_block("10.7.0.0/16")
            .send()
            .await
            .unwrap()
            .vpc()
            .unwrap()
            .vpc_id()
            .unwrap()
            .to_string();
        crate::support::aws::seen(|| ec2.describe_vpcs().vpc_ids(&vpc).send()).await;
        let elb = aws_sdk_elasticloadbalancingv2::Client::new(&config);
        elb.create_target_group()
            .name(&name)
            .protocol(aws_sdk_elasticloadbalancingv2::types::ProtocolEnum::Http)
            .port(8000)
            .vpc_id(&vpc)
            .target_type(aws_sdk_elasticloadbalancingv2::types::TargetTypeEnum::Ip)
            .send()
            .await
            .expect("moto makes it");
        (vpc, elb)
    });
    let env = Env::sqlite();
    let wf = one_aws_step(&env, "api-tg", "aws.elbv2.target_group", &[("vpc_id", &vpc), ("port", "8000")]);
    refused_then_destroyed_around(&env, &wf, &stack, "target group", &name, &[]);
    assert!(
        block_on(elb.describe_target_groups().names(&name).send()).is_ok(),
        "destroy leaves what the stack did not make"
    );
}

#[test]
fn a_database_another_tool_made_is_refused_and_never_destroyed() {
    behind_aws_sim();
    let stack = unique_stack("olddb");
    let id = format!("{stack}-keycloak-db");
    let rds = aws_sdk_rds::Client::new(&sdk());
    a_db_instance_made_by_hand(&id);
    let env = Env::sqlite();
    let with = [
        ("db_subnet_group", "default"),
        ("security_group_ids", "[sg-1]"),
        ("db_name", "keycloak"),
        ("master_username", "keycloak"),
    ];
    let wf = one_aws_step(&env, "keycloak-db", "aws.rds.db_instance", &with);
    refused_then_destroyed_around(&env, &wf, &stack, "DB instance", &id, &["--skip-final-snapshot", "--delete-data"]);
    let left = block_on(rds.describe_db_instances().db_instance_identifier(&id).send()).unwrap();
    assert_eq!(left.db_instances().len(), 1, "destroy leaves a database the stack did not make");
    assert_ne!(left.db_instances()[0].db_instance_status(), Some("deleting"));
}

#[test]
fn a_service_another_tool_made_is_refused_and_never_destroyed() {
    behind_aws_sim();
    let stack = unique_stack("oldsvc");
    let cluster = format!("{stack}-byhand");
    let name = format!("{stack}-orchestrator");
    let ecs = aws_sdk_ecs::Client::new(&sdk());
    let task = block_on(async {
        ecs.create_cluster().cluster_name(&cluster).send().await.unwrap();
        let container =
            aws_sdk_ecs::types::ContainerDefinition::builder().name("app").image("nginx").memory(512).build();
        let td = ecs.register_task_definition().family(format!("{stack}-app")).container_definitions(container).send();
        let arn = td.await.unwrap().task_definition().unwrap().task_definition_arn().unwrap().to_string();
        ecs.create_service()
            .cluster(&cluster)
            .service_name(&name)
            .task_definition(&arn)
            .desired_count(0)
            .send()
            .await
            .unwrap();
        arn
    });
    let env = Env::sqlite();
    let with = [
        ("cluster", cluster.as_str()),
        ("task_definition_arn", task.as_str()),
        ("subnet_ids", "[subnet-1]"),
        ("security_group_ids", "[sg-1]"),
        ("desired_count", "0"),
    ];
    let wf = one_aws_step(&env, "orchestrator", "aws.ecs.service", &with);
    refused_then_destroyed_around(&env, &wf, &stack, "service", &name, &[]);
    let left = block_on(
        ecs.describe_services()
            .cluster(&cluster)
            .services(&name)
            .include(aws_sdk_ecs::types::ServiceField::Tags)
            .send(),
    )
    .unwrap();
    assert_eq!(left.services()[0].status(), Some("ACTIVE"), "destroy leaves a service the stack did not make");
}

/// An S3 client of the test's endpoint, addressing buckets by path.
fn s3() -> aws_sdk_s3::Client {
    aws_sdk_s3::Client::from_conf(aws_sdk_s3::config::Builder::from(&sdk()).force_path_style(true).build())
}

/// The bucket's tags; `None` once it is gone.
fn bucket_tags(name: &str) -> Option<Vec<(String, String)>> {
    let s3 = s3();
    block_on(s3.head_bucket().bucket(name).send()).ok()?;
    let tags = block_on(s3.get_bucket_tagging().bucket(name).send()).map(|t| t.tag_set().to_vec()).unwrap_or_default();
    Some(tags.iter().map(|t| (t.key().to_string(), t.value().to_string())).collect())
}

#[test]
fn a_bucket_another_tool_made_is_a_conflict_in_plan_refused_in_run_and_never_destroyed_even_with_its_data() {
    behind_aws_sim();
    let stack = unique_stack("oldbucket");
    let name = format!("{stack}-documents");
    let location = aws_sdk_s3::types::CreateBucketConfiguration::builder()
        .location_constraint(aws_sdk_s3::types::BucketLocationConstraint::EuWest3)
        .build();
    block_on(s3().create_bucket().bucket(&name).create_bucket_configuration(location).send()).expect("moto makes it");
    let env = Env::sqlite();
    let wf = one_aws_step(&env, "documents", "aws.s3.bucket", &[("name", &name)]);

    let plan = env.run(&["plan", wf.to_str().unwrap(), "--input", &format!("stack={stack}"), "--output", "json"]);
    plan.expect_success();
    let step = plan.json()["steps"].as_array().unwrap().iter().find(|s| s["id"] == "documents").unwrap().clone();
    assert_eq!(step["action"], "conflict", "{step}");

    refused_then_destroyed_around(&env, &wf, &stack, "bucket", &name, &["--delete-data"]);
    assert_eq!(bucket_tags(&name), Some(Vec::new()), "run and destroy --delete-data left it as it was, untagged");
}

#[test]
fn a_new_bucket_is_waited_for_until_s3_answers_for_it_and_is_set_up_in_one_attempt() {
    // The layer at AWS's own pace: a new bucket answers NoSuchBucket for 0.5 to 2 s.
    let proxy = crate::support::faults::FaultProxy::start(&crate::support::aws::moto(), vec![]);
    let env = Env::sqlite();
    let stack = unique_stack("newbucket");
    let name = format!("{stack}-contexts");
    let wf = one_aws_step(&env, "contexts", "aws.s3.bucket", &[("name", &name)]);
    let once =
        std::fs::read_to_string(&wf).unwrap().replace("steps:", "defaults: { retry: { max_attempts: 1 } }\nsteps:");
    std::fs::write(&wf, once).unwrap();
    let out = env.run_with(
        &["run", wf.to_str().unwrap(), "--input", &format!("stack={stack}")],
        &[("AWS_ENDPOINT_URL", &proxy.url), ("CA_A2A_FLOW_POLL_INTERVAL", "100ms")],
    );
    out.expect_success();
    let versioning = block_on(s3().get_bucket_versioning().bucket(&name).send()).unwrap();
    assert_eq!(versioning.status().map(|s| s.as_str()), Some("Enabled"), "set up once it answered");
}

#[test]
fn a_bucket_the_stack_creates_carries_its_tags_from_its_creation_and_a_taken_over_one_keeps_its_own() {
    behind_aws_sim();
    let stack = unique_stack("newbucket");
    let name = format!("{stack}-documents");
    let env = Env::sqlite();
    let wf = one_aws_step(&env, "documents", "aws.s3.bucket", &[("name", &name)]);
    env.run(&["run", wf.to_str().unwrap(), "--input", &format!("stack={stack}")]).expect_success();
    let created = env.only_run().id;
    assert_eq!(env.step(&created, "documents").outputs.unwrap()["action"], "created");
    let tags = bucket_tags(&name).unwrap();
    assert!(tags.contains(&("ca-a2a-flow:stack".into(), stack.clone())), "{tags:?}");
    destroy(&env, &created, &["--delete-data"], &[]).expect_success();
    assert_eq!(bucket_tags(&name), None, "the stack's: destroyed with --delete-data");

    let other = format!("{stack}-reports");
    let location = aws_sdk_s3::types::CreateBucketConfiguration::builder()
        .location_constraint(aws_sdk_s3::types::BucketLocationConstraint::EuWest3)
        .build();
    block_on(s3().create_bucket().bucket(&other).create_bucket_configuration(location).send()).unwrap();
    let team = aws_sdk_s3::types::Tag::builder().key("team").value("docs").build().unwrap();
    let tagging = aws_sdk_s3::types::Tagging::builder().tag_set(team).build().unwrap();
    block_on(s3().put_bucket_tagging().bucket(&other).tagging(tagging).send()).unwrap();
    let env = Env::sqlite();
    let wf = one_aws_step(&env, "reports", "aws.s3.bucket", &[("name", &other), ("take_over", "true")]);
    env.run(&["run", wf.to_str().unwrap(), "--input", &format!("stack={stack}")]).expect_success();
    assert_eq!(env.step(&env.only_run().id, "reports").outputs.unwrap()["action"], "taken-over");
    let tags = bucket_tags(&other).unwrap();
    assert!(tags.contains(&("ca-a2a-flow:stack".into(), stack.clone())), "{tags:?}");
    assert!(tags.contains(&("team".into(), "docs".into())), "its own tags are kept: {tags:?}");
}

#[test]
fn a_secret_another_tool_made_is_refused_and_never_deleted_even_when_forced() {
    behind_aws_sim();
    let stack = unique_stack("oldsecret");
    let name = format!("{stack}/keycloak-admin");
    let sm = aws_sdk_secretsmanager::Client::new(&sdk());
    block_on(sm.create_secret().name(&name).secret_string("made by hand").send()).expect("moto makes it");
    let env = Env::sqlite();
    let wf = one_aws_step(&env, "keycloak-admin", "aws.secretsmanager.secret", &[("username", "admin")]);
    refused_then_destroyed_around(&env, &wf, &stack, "secret", &name, &["--force-delete-secrets"]);
    let left = block_on(sm.describe_secret().secret_id(&name).send()).expect("still there");
    assert!(left.deleted_date().is_none(), "not even scheduled for deletion");
    let value = block_on(sm.get_secret_value().secret_id(&name).send()).unwrap();
    assert_eq!(value.secret_string(), Some("made by hand"), "its value untouched");
}

#[test]
fn a_secret_taken_over_says_so_and_keeps_its_value() {
    behind_aws_sim();
    let stack = unique_stack("takesecret");
    let name = format!("{stack}/keycloak-admin");
    let sm = aws_sdk_secretsmanager::Client::new(&sdk());
    block_on(sm.create_secret().name(&name).secret_string("made by hand").send()).expect("moto makes it");
    let env = Env::sqlite();
    let wf = one_aws_step(&env, "keycloak-admin", "aws.secretsmanager.secret", &[("take_over", "true")]);
    env.run(&["run", wf.to_str().unwrap(), "--input", &format!("stack={stack}")]).expect_success();
    assert_eq!(env.step(&env.only_run().id, "keycloak-admin").outputs.unwrap()["action"], "taken-over");
    let value = block_on(sm.get_secret_value().secret_id(&name).send()).unwrap();
    assert_eq!(value.secret_string(), Some("made by hand"), "its value untouched");
}

#[test]
fn a_db_subnet_group_another_tool_made_is_refused_and_never_deleted() {
    behind_aws_sim();
    let stack = unique_stack("oldgroup");
    let name = format!("{stack}-db-subnets");
    let ec2 = aws_sdk_ec2::Client::new(&sdk());
    let default = aws_sdk_ec2::types::Filter::builder().name("default-for-az").values("true").build();
    let found = block_on(ec2.describe_subnets().filters(default).send()).unwrap();
    let mut by_zone: Vec<(String, String)> = found
        .subnets()
        .iter()
        .map(|s| (s.availability_zone().unwrap().to_string(), s.subnet_id().unwrap().to_string()))
        .collect();
    by_zone.sort();
    by_zone.dedup_by(|a, b| a.0 == b.0);
    let subnets: Vec<String> = by_zone.into_iter().take(2).map(|(_, id)| id).collect();
    let rds = aws_sdk_rds::Client::new(&sdk());
    let made = rds
        .create_db_subnet_group()
        .db_subnet_group_name(&name)
        .db_subnet_group_description("made by hand")
        .set_subnet_ids(Some(subnets.clone()));
    block_on(made.send()).expect("moto makes it");
    let env = Env::sqlite();
    let list = format!("[{}]", subnets.join(", "));
    let wf = one_aws_step(&env, "db-subnets", "aws.rds.db_subnet_group", &[("subnet_ids", &list)]);
    refused_then_destroyed_around(&env, &wf, &stack, "DB subnet group", &name, &[]);
    let left = block_on(rds.describe_db_subnet_groups().db_subnet_group_name(&name).send());
    assert!(left.is_ok(), "destroy leaves what the stack did not make");
}
