//! Backups of the stack's database: `aws.rds.db_snapshot`, one snapshot per
//! run, found again by a resumed run, kept by `destroy` unless `--delete-data`.

use crate::support::aws::{behind_aws_sim, destroy, one_aws_step, sdk, unique_stack};
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
    block_on(
        rds.create_db_instance()
            .db_instance_identifier(&db)
            .engine("postgres")
            .db_instance_class("db.t3.micro")
            .allocated_storage(20)
            .master_username("keycloak")
            .master_user_password("a-password-for-moto")
            .send(),
    )
    .expect("moto makes the instance");
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
