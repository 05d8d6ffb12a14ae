//! Backups of the stack's database: `aws.rds.db_snapshot`, one snapshot per
//! run, found again by a resumed run, kept by `destroy` unless `--delete-data`;
//! `workflows/dr-drill.yaml`, which restores one and reports RTO and RPO.

use std::time::Duration;

use crate::support::aws::{a_db_instance_made_by_hand, behind_aws_sim, destroy, moto, one_aws_step, sdk, unique_stack};
use crate::support::faults::{Fault, FaultProxy, Rule, invocation};
use crate::support::{Env, block_on};

/// The manual snapshots of DB instance `db`, by identifier.
fn snapshots_of(db: &str) -> Vec<String> {
    let rds = aws_sdk_rds::Client::new(&sdk());
    let found = block_on(rds.describe_db_snapshots().db_instance_identifier(db).snapshot_type("manual").send());
    let mut ids: Vec<String> =
        found.unwrap().db_snapshots().iter().filter_map(|s| s.db_snapshot_identifier()).map(String::from).collect();
    ids.sort();
    ids
}

#[test]
fn a_snapshot_is_taken_once_per_run_found_again_by_a_resumed_run_and_deleted_only_with_delete_data() {
    behind_aws_sim();
    let stack = unique_stack("snap");
    let db = format!("{stack}-db");
    let rds = aws_sdk_rds::Client::new(&sdk());
    a_db_instance_made_by_hand(&db);
    let env = Env::sqlite();
    let wf = one_aws_step(&env, "snap", "aws.rds.db_snapshot", &[("db_instance", &db)]);
    let (wf, input) = (wf.to_str().unwrap(), format!("stack={stack}"));

    // Killed after RDS took the snapshot, before the run recorded it: the resume finds it.
    let killed = env.run_with(&["run", wf, "--input", &input], &[("CA_A2A_FLOW_FAILPOINT", "before_commit:snap")]);
    assert_eq!(killed.code, None, "killed: {}", killed.stderr);
    let first = env.only_run().id;
    env.run(&["resume", &first]).expect_success();
    let outputs = env.step(&first, "snap").outputs.unwrap();
    assert_eq!(outputs["action"], "adopted", "{outputs:?}");
    let id = outputs["identifier"].as_str().unwrap().to_string();
    assert!(id.starts_with(&format!("{stack}-snap-r-")), "{id}");
    assert_eq!(snapshots_of(&db), vec![id.clone()], "one snapshot for the run, however many processes drove it");
    assert_eq!(outputs["db_instance"], db.as_str());
    assert!(outputs["created_at"].as_i64().unwrap() > 0, "the restore point");
    let tags = block_on(rds.describe_db_snapshots().db_snapshot_identifier(&id).send()).unwrap();
    let tagged = tags.db_snapshots()[0]
        .tag_list()
        .iter()
        .any(|t| t.key() == Some("ca-a2a-flow:stack") && t.value() == Some(&stack));
    assert!(tagged, "the stack's tags are on it");

    // A new run takes a new one.
    env.run(&["run", wf, "--input", &input]).expect_success();
    assert_eq!(snapshots_of(&db).len(), 2);

    let kept = destroy(&env, &first, &[], &[]);
    kept.expect_success();
    assert!(kept.stderr.contains("DB snapshots are kept (--delete-data deletes them)"), "{}", kept.stderr);
    assert_eq!(snapshots_of(&db).len(), 2, "kept without --delete-data");
    destroy(&env, &first, &["--delete-data"], &[]).expect_success();
    let left = snapshots_of(&db);
    assert_eq!(left.len(), 1, "the first run's snapshot is deleted, the second run's kept: {left:?}");
    assert!(!left.contains(&id));
}

/// The stack's data (network, bucket, secrets, database) for a drill.
fn a_stack_with_its_database(env: &Env, stack: &str) {
    let data = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("workflows/stack/data.yaml");
    let input = format!("stack={stack}");
    env.run_with(
        &["run", data.to_str().unwrap(), "--input", &input, "--input", "region=eu-west-3"],
        &[("CA_A2A_FLOW_POLL_INTERVAL", "100ms")],
    )
    .expect_success();
}

fn drill(env: &Env, stack: &str, failpoint: Option<&str>) -> crate::support::Out {
    let wf = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("workflows/dr-drill.yaml");
    let input = format!("stack={stack}");
    let mut vars = vec![("CA_A2A_FLOW_POLL_INTERVAL", "100ms")];
    if let Some(point) = failpoint {
        vars.push(("CA_A2A_FLOW_FAILPOINT", point));
    }
    env.run_with(&["run", wf.to_str().unwrap(), "--input", &input, "--input", "region=eu-west-3"], &vars)
}

/// Whether the drill's scratch instance exists.
fn scratch_exists(stack: &str) -> bool {
    let rds = aws_sdk_rds::Client::new(&sdk());
    block_on(rds.describe_db_instances().db_instance_identifier(format!("{stack}-drill")).send())
        .is_ok_and(|d| !d.db_instances().is_empty())
}

#[test]
fn a_drill_restores_the_snapshot_checks_it_deletes_the_scratch_instance_and_reports_rto_and_rpo() {
    let env = Env::sqlite();
    let stack = unique_stack("drill");
    a_stack_with_its_database(&env, &stack);
    drill(&env, &stack, None).expect_success();
    let run = env.runs()[0].id.clone();
    let outputs = env.step(&run, "drill").outputs.unwrap();
    assert_eq!(outputs["scratch"], format!("{stack}-drill").as_str());
    assert_eq!(outputs["engine_version"], env.step(&run, "snapshot").outputs.unwrap()["engine_version"]);
    assert!(outputs["rto_seconds"].as_i64().is_some() && outputs["rpo_seconds"].as_i64().is_some(), "{outputs:?}");
    assert!(!scratch_exists(&stack), "the scratch instance is deleted");
    let status = env.run(&["status", &run, "--output", "json"]);
    assert!(status.stdout.contains("rto_seconds") && status.stdout.contains("rpo_seconds"), "in status");
}

#[test]
fn a_drill_killed_before_and_after_its_restore_resumes_and_leaves_no_scratch_instance() {
    for point in ["after_start:drill", "before_commit:drill"] {
        let env = Env::sqlite();
        let stack = unique_stack("drillkill");
        a_stack_with_its_database(&env, &stack);
        let killed = drill(&env, &stack, Some(point));
        assert_eq!(killed.code, None, "killed at {point}: {}", killed.stderr);
        let run = env.runs()[0].id.clone();
        env.run_with(&["resume", &run], &[("CA_A2A_FLOW_POLL_INTERVAL", "100ms")]).expect_success();
        assert!(!scratch_exists(&stack), "{point}: no scratch instance left");
    }
}

#[test]
fn a_drill_killed_while_its_scratch_instance_is_restoring_resumes_on_it_and_deletes_it() {
    let env = Env::sqlite();
    let stack = unique_stack("drillwait");
    a_stack_with_its_database(&env, &stack);
    // Every instance shows `creating` through this proxy: the drill waits on its scratch instance.
    let rule = Rule {
        action: "DescribeDBInstances",
        fault: Fault::Rewrite {
            when: "DBInstanceIdentifier",
            from: "<DBInstanceStatus>available</DBInstanceStatus>",
            to: "<DBInstanceStatus>creating</DBInstanceStatus>".into(),
        },
        times: None,
    };
    let proxy = FaultProxy::start(&moto(), vec![rule]);
    let wf = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("workflows/dr-drill.yaml");
    let input = format!("stack={stack}");
    let args = ["run", wf.to_str().unwrap(), "--input", &input, "--input", "region=eu-west-3"];
    let child = env.spawn(&args, &[("AWS_ENDPOINT_URL", proxy.url.as_str()), ("CA_A2A_FLOW_POLL_INTERVAL", "100ms")]);
    env.wait_until("the drill to wait on its scratch instance", Duration::from_secs(60), || {
        proxy.actions().iter().filter(|a| a.as_str() == "DescribeDBInstances!rewritten").count() >= 4
            && scratch_exists(&stack)
    });
    crate::support::signal(&child, libc::SIGKILL);
    assert_eq!(child.wait_with_output().unwrap().status.code(), None, "killed");
    // Had the state been lost, `gc` would find the scratch instance.
    let elsewhere = Env::sqlite();
    let listed = elsewhere.run(&["gc", "--stack", &stack, "--region", "eu-west-3", "--output", "json"]);
    listed.expect_success();
    let found = listed
        .json()
        .as_array()
        .unwrap()
        .iter()
        .any(|o| o["kind"] == "aws.rds.restore_drill" && o["id"] == format!("{stack}-drill").as_str());
    assert!(found, "{}", listed.stdout);
    let run = env.runs()[0].id.clone();
    env.run_with(&["resume", &run], &[("CA_A2A_FLOW_POLL_INTERVAL", "100ms")]).expect_success();
    assert!(!scratch_exists(&stack), "the resumed drill deleted its scratch instance");
    let logs = env.run(&["logs", &run]).stdout;
    assert_eq!(logs.matches("restoring ").count(), 1, "one restore, the resume went on with it:\n{logs}");
}

/// An instance launched by hand (the builder's stand-in), in `subnet` or, without
/// one, in the default VPC: its id.
fn an_instance_in(subnet: Option<&str>) -> String {
    let ec2 = aws_sdk_ec2::Client::new(&sdk());
    let images = block_on(ec2.describe_images().owners("amazon").send()).unwrap();
    let image = images.images()[0].image_id().unwrap().to_string();
    let launched = block_on(
        ec2.run_instances().image_id(image).min_count(1).max_count(1).set_subnet_id(subnet.map(String::from)).send(),
    )
    .unwrap();
    launched.instances()[0].instance_id().unwrap().to_string()
}

/// The drill run with `check_from`, through `proxy` (the SSM agent's stand-in).
fn drill_from(env: &Env, stack: &str, from: &str, proxy: &FaultProxy) -> crate::support::Out {
    let wf = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("workflows/dr-drill.yaml");
    let (stack, from) = (format!("stack={stack}"), format!("check_from={from}"));
    env.run_with(
        &["run", wf.to_str().unwrap(), "--input", &stack, "--input", "region=eu-west-3", "--input", &from],
        &[("AWS_ENDPOINT_URL", proxy.url.as_str()), ("CA_A2A_FLOW_POLL_INTERVAL", "100ms")],
    )
}

/// The security groups the drill step of `stack` owns.
fn drill_groups(stack: &str) -> Vec<String> {
    use aws_sdk_ec2::types::Filter;
    let ec2 = aws_sdk_ec2::Client::new(&sdk());
    let tag = |k: &str, v: &str| Filter::builder().name(format!("tag:{k}")).values(v).build();
    let found = block_on(
        ec2.describe_security_groups()
            .filters(tag("ca-a2a-flow:stack", stack))
            .filters(tag("ca-a2a-flow:step", "drill"))
            .send(),
    )
    .unwrap();
    found.security_groups().iter().filter_map(|g| g.group_id()).map(String::from).collect()
}

/// The scripts SSM was asked to run on `instance`.
fn scripts_sent_to(instance: &str) -> Vec<String> {
    let ssm = aws_sdk_ssm::Client::new(&sdk());
    let listed = block_on(ssm.list_commands().instance_id(instance).send()).unwrap();
    listed
        .commands()
        .iter()
        .filter_map(|c| c.parameters().and_then(|p| p.get("commands")).and_then(|c| c.first()).cloned())
        .collect()
}

#[test]
fn a_drill_from_a_builder_in_the_stacks_vpc_checks_a_connection_with_pg_isready_and_leaves_nothing() {
    let env = Env::sqlite();
    let stack = unique_stack("drillpg");
    a_stack_with_its_database(&env, &stack);
    let subnet = env.step(&env.only_run().id, "private-a").outputs.unwrap()["subnet_id"].as_str().unwrap().to_string();
    let builder = an_instance_in(Some(&subnet));
    let said = "scratch:5432 - accepting connections\n";
    let proxy = FaultProxy::start(&moto(), vec![invocation("Success", 0, said)]);
    drill_from(&env, &stack, &builder, &proxy).expect_success();

    let outputs = env.step(&env.runs()[0].id, "drill").outputs.unwrap();
    assert!(outputs["connection"].as_str().unwrap().contains("accepting connections"), "{outputs:?}");
    let sent = scripts_sent_to(&builder);
    assert_eq!(sent.len(), 1, "one check: {sent:?}");
    let endpoint = format!("'{stack}-drill.");
    assert!(sent[0].starts_with("pg_isready -h ") && sent[0].contains(&endpoint), "{}", sent[0]);
    assert!(!scratch_exists(&stack), "the scratch instance is deleted");
    assert!(drill_groups(&stack).is_empty(), "its security group is deleted");
}

#[test]
fn a_drill_whose_connection_check_fails_says_what_pg_isready_said_and_still_leaves_nothing() {
    let env = Env::sqlite();
    let stack = unique_stack("drillno");
    a_stack_with_its_database(&env, &stack);
    let subnet = env.step(&env.only_run().id, "private-a").outputs.unwrap()["subnet_id"].as_str().unwrap().to_string();
    let builder = an_instance_in(Some(&subnet));
    let proxy = FaultProxy::start(&moto(), vec![invocation("Failed", 2, "scratch:5432 - no response\n")]);
    let out = drill_from(&env, &stack, &builder, &proxy);
    assert_ne!(out.code, Some(0), "the drill fails");
    assert!(out.stderr.contains("no response") && out.stderr.contains("2 when nothing answers"), "{}", out.stderr);
    assert!(!scratch_exists(&stack), "the scratch instance is deleted all the same");
    assert!(drill_groups(&stack).is_empty(), "and its security group");
}

#[test]
fn a_drill_from_an_instance_in_another_vpc_is_refused_before_anything_is_restored() {
    let env = Env::sqlite();
    let stack = unique_stack("drillvpc");
    a_stack_with_its_database(&env, &stack);
    let elsewhere = an_instance_in(None);
    let proxy = FaultProxy::start(&moto(), vec![]);
    let out = drill_from(&env, &stack, &elsewhere, &proxy);
    assert_ne!(out.code, Some(0), "refused");
    assert!(out.stderr.contains(&format!("instance {elsewhere} (`check_from`) is in VPC")), "{}", out.stderr);
    assert!(out.stderr.contains("builder_subnet"), "says how to fix it: {}", out.stderr);
    assert!(!scratch_exists(&stack), "nothing was restored");
    assert!(drill_groups(&stack).is_empty(), "no security group was made");
}
