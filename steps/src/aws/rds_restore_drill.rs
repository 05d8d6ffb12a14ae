//! `aws.rds.restore_drill`: a disaster-recovery drill of one snapshot. It
//! restores the snapshot into a scratch instance `<stack>-<step>` in the
//! source instance's own DB subnet group and security groups, waits until it
//! is available, checks it (engine version and storage as the snapshot's, an
//! endpoint), deletes it, and reports the restore time (RTO) and the
//! snapshot's age when the restore began (RPO).
//!
//! A drill killed at any instant resumes on the same scratch instance (found
//! by its name and the stack's tags; when the restore began is a tag on it),
//! and deletes it before the step ends, whether the checks pass or fail. A
//! drill left unresumed leaves it to `destroy`, and to `gc`'s list.
//! The scratch instance keeps no backups: a restore that keeps them takes its
//! first full backup before it is available (terraform-provider-aws #44104),
//! which no recovery waits for.

use std::time::Duration;

use ca_a2a_flow_engine::duration::HumanDuration;
use ca_a2a_flow_engine::{
    DestroyOptions, KindDoc, Outputs, ParamProblem, Parameters, Plan, Step, StepContext, StepError, now_ms, outputs,
};
use serde::Deserialize;

use super::owner::{Holder, Stack};
use super::wait::{self, Poll};
use super::{AwsResult, Owner};

#[derive(Debug, Deserialize, Parameters)]
#[serde(deny_unknown_fields)]
#[kind(name = "aws.rds.restore_drill", step = RestoreDrill)]
pub struct Params {
    #[param(doc = super::STACK)]
    pub stack: Stack,
    #[param(doc = super::REGION)]
    pub region: Option<String>,
    /// the snapshot to restore (required)
    pub snapshot: String,
    /// the scratch instance's class (default db.t3.micro)
    #[serde(default = "default_class")]
    pub instance_class: String,
    /// deadline for the restore to be available, and then gone (default 60m)
    pub wait: Option<HumanDuration>,
}

fn default_class() -> String {
    "db.t3.micro".into()
}

/// The tag that records when the restore began (ms since the epoch).
const STARTED: &str = "ca-a2a-flow:restore-started";
const ABSENT: &[&str] = &["DBInstanceNotFound", "DBInstanceNotFoundFault"];

use super::rds_db_instance::instance;

fn holder(owner: &Owner, db: &aws_sdk_rds::types::DbInstance) -> Holder {
    owner.holder(db.tag_list().iter().filter_map(|t| Some((t.key()?, t.value()?))))
}

/// Deletes the scratch instance `id` (no final snapshot, no backups kept) and
/// waits until it is gone.
async fn delete(ctx: &StepContext, rds: &aws_sdk_rds::Client, id: &str, limit: Duration) -> Result<(), StepError> {
    if let Some(db) = instance(rds, id).await?.filter(|db| db.db_instance_status() != Some("deleting")) {
        // Restored with protection off; one that has it (moto copies the
        // source's, or someone turned it on) is the drill's own: off again.
        super::rds_db_instance::unprotect(ctx, rds, &db).await?;
        ctx.progress(format!("deleting scratch instance {id}"));
        rds.delete_db_instance()
            .db_instance_identifier(id)
            .skip_final_snapshot(true)
            .delete_automated_backups(true)
            .send()
            .await
            .or_absent("rds:DeleteDBInstance", ABSENT)?;
    }
    wait::until(ctx, &format!("scratch instance {id} gone"), limit, wait::interval(Duration::from_secs(20)), || {
        let (rds, id) = (rds.clone(), id.to_string());
        async move {
            Ok(match instance(&rds, &id).await? {
                None => Poll::Ready(()),
                Some(db) => Poll::Pending(db.db_instance_status().unwrap_or("unknown").to_string()),
            })
        }
    })
    .await
}

impl Step for RestoreDrill {
    async fn plan(&self, ctx: &StepContext, p: Params) -> Result<Plan, StepError> {
        let owner = Owner::new(&p.stack, ctx);
        let id = owner.short_name(63);
        let rds = aws_sdk_rds::Client::new(&super::config(p.region.as_deref()).await);
        Ok(match instance(&rds, &id).await? {
            Some(db) if holder(&owner, &db) != Holder::Ours => {
                Plan::conflict(owner.not_ours("DB instance", &id, &holder(&owner, &db)))
            }
            Some(_) => Plan::none("a drill's scratch instance exists: the drill goes on with it, then deletes it"),
            None => Plan::none("restores the snapshot into a scratch instance, checks it, deletes it"),
        })
    }

    const DESTROYS: bool = true;

    /// A drill that was never finished: its scratch instance is deleted.
    async fn destroy(&self, ctx: &StepContext, p: Params, _o: &DestroyOptions) -> Result<Outputs, StepError> {
        let owner = Owner::new(&p.stack, ctx);
        let id = owner.short_name(63);
        let rds = aws_sdk_rds::Client::new(&super::config(p.region.as_deref()).await);
        let Some(db) = instance(&rds, &id).await? else { return Ok(super::removed(ctx, "scratch instance", &[])) };
        if holder(&owner, &db) != Holder::Ours {
            ctx.log(format!("left alone: {}", owner.not_ours("DB instance", &id, &holder(&owner, &db))));
            return Ok(super::removed(ctx, "scratch instance", &[]));
        }
        delete(ctx, &rds, &id, p.wait.map(|w| w.0).unwrap_or(Duration::from_secs(60 * 60))).await?;
        Ok(super::removed(ctx, "scratch instance", &[id]))
    }

    const DOC: KindDoc = KindDoc {
        summary: "A disaster-recovery drill: restores a snapshot into a scratch instance in the source's subnets and security groups, checks it, deletes it, and reports RTO and RPO.",
        outputs: &[
            ("scratch", "the scratch instance's identifier (deleted when the step ends)"),
            ("snapshot", "the snapshot restored"),
            ("engine_version", "the restored instance's engine version"),
            ("allocated_storage", "its storage, GiB"),
            ("rto_seconds", "from the restore request to an available instance"),
            ("rpo_seconds", "the snapshot's age when the restore began: the data a recovery then would lose"),
        ],
        example: "- id: drill\n  uses: aws.rds.restore_drill\n  with:\n    stack: \"${{ inputs.stack }}\"\n    snapshot: \"${{ steps.snapshot.outputs.identifier }}\"\n",
    };

    fn problems(&self, p: &Params) -> Vec<ParamProblem> {
        let mut problems = Vec::new();
        if p.snapshot.trim().is_empty() {
            problems.push(ParamProblem::at(&["snapshot"], "name the snapshot to restore"));
        }
        if !p.instance_class.starts_with("db.") && !p.instance_class.contains("${{") {
            problems.push(ParamProblem::at(&["instance_class"], "an instance class like db.t3.micro"));
        }
        problems
    }

    async fn run(&self, ctx: &StepContext, p: Params) -> Result<Outputs, StepError> {
        let owner = Owner::new(&p.stack, ctx);
        let id = owner.short_name(63);
        let limit = p.wait.map(|w| w.0).unwrap_or(Duration::from_secs(60 * 60));
        let rds = aws_sdk_rds::Client::new(&super::config(p.region.as_deref()).await);
        let snapshots = rds
            .describe_db_snapshots()
            .db_snapshot_identifier(&p.snapshot)
            .send()
            .await
            .or_step_error("rds:DescribeDBSnapshots")?;
        let Some(snapshot) = snapshots.db_snapshots().first().cloned() else {
            return Err(StepError::fatal(format!("snapshot {} does not exist", p.snapshot)));
        };
        let taken_at = snapshot.snapshot_create_time().map(super::epoch_ms).unwrap_or_default();
        let started = match instance(&rds, &id).await? {
            Some(db) if holder(&owner, &db) != Holder::Ours => {
                return Err(owner.refuse("DB instance", &id, &holder(&owner, &db)));
            }
            Some(db) if db.db_instance_status() == Some("deleting") => {
                // The drill was killed while deleting it: let it go, then drill again.
                delete(ctx, &rds, &id, limit).await?;
                restore(ctx, &rds, &owner, &id, &p, &snapshot).await?
            }
            Some(db) => {
                let tag = db.tag_list().iter().find(|t| t.key() == Some(STARTED)).and_then(|t| t.value());
                tag.and_then(|v| v.parse().ok())
                    .or(db.instance_create_time().map(super::epoch_ms))
                    .unwrap_or_else(now_ms)
            }
            None => restore(ctx, &rds, &owner, &id, &p, &snapshot).await?,
        };
        let what = format!("scratch instance {id}");
        let restored = wait::until(ctx, &what, limit, wait::interval(Duration::from_secs(20)), || {
            let (rds, id, what) = (rds.clone(), id.clone(), what.clone());
            async move {
                let Some(db) = instance(&rds, &id).await? else {
                    return Ok(Poll::Pending("not visible yet".into()));
                };
                let status = db.db_instance_status().unwrap_or("unknown").to_string();
                match status.as_str() {
                    "available" if db.endpoint().and_then(|e| e.address()).is_some() => Ok(Poll::Ready(db)),
                    "failed" | "incompatible-restore" | "incompatible-parameters" | "incompatible-network" => {
                        Err(StepError::fatal(format!("{what} is `{status}`: the snapshot cannot be restored as it is"))
                            .with_hint("see `aws rds describe-events --source-identifier` for the reason"))
                    }
                    _ => Ok(Poll::Pending(status)),
                }
            }
        })
        .await;
        let rto_seconds = (now_ms() - started) / 1000;
        let checked = restored.and_then(|db| {
            let mut wrong = Vec::new();
            if db.engine_version() != snapshot.engine_version() {
                wrong.push(format!(
                    "engine version {} (the snapshot's: {})",
                    db.engine_version().unwrap_or("?"),
                    snapshot.engine_version().unwrap_or("?")
                ));
            }
            if db.allocated_storage() < snapshot.allocated_storage() {
                wrong.push(format!(
                    "{} GiB of storage (the snapshot's: {})",
                    db.allocated_storage().unwrap_or_default(),
                    snapshot.allocated_storage().unwrap_or_default()
                ));
            }
            if wrong.is_empty() {
                Ok(db)
            } else {
                Err(StepError::fatal(format!("{what} was restored with {}", wrong.join(" and ")))
                    .with_hint("the snapshot does not restore the database it copies: take a new one and drill again"))
            }
        });
        // Deleted whatever the checks found: a drill leaves nothing behind.
        delete(ctx, &rds, &id, limit).await?;
        let db = checked?;
        let rpo_seconds = (started - taken_at).max(0) / 1000;
        ctx.log(format!(
            "drill of {}: restored in {} (RTO), from a snapshot {} old (RPO); the scratch instance is deleted",
            p.snapshot,
            ca_a2a_flow_engine::duration::format(Duration::from_secs(rto_seconds as u64)),
            ca_a2a_flow_engine::duration::format(Duration::from_secs(rpo_seconds as u64)),
        ));
        Ok(outputs! {
            scratch: id,
            snapshot: p.snapshot,
            engine_version: db.engine_version().unwrap_or_default(),
            allocated_storage: db.allocated_storage().unwrap_or_default(),
            rto_seconds,
            rpo_seconds,
        })
    }
}

/// Asks RDS to restore `snapshot` as `id`, in the source instance's subnet
/// group and security groups; returns when the restore began.
async fn restore(
    ctx: &StepContext,
    rds: &aws_sdk_rds::Client,
    owner: &Owner,
    id: &str,
    p: &Params,
    snapshot: &aws_sdk_rds::types::DbSnapshot,
) -> Result<i64, StepError> {
    let source = snapshot.db_instance_identifier().unwrap_or_default();
    let Some(db) = instance(rds, source).await? else {
        return Err(StepError::fatal(format!("the snapshot's instance {source} is gone: no subnets to restore into"))
            .with_hint("a drill restores next to the instance it protects; restore by hand into a DB subnet group"));
    };
    let group = db.db_subnet_group().and_then(|g| g.db_subnet_group_name()).unwrap_or_default().to_string();
    let security: Vec<String> =
        db.vpc_security_groups().iter().filter_map(|g| g.vpc_security_group_id()).map(String::from).collect();
    let started = now_ms();
    let mut tags: Vec<aws_sdk_rds::types::Tag> =
        owner.tags().into_iter().map(|(k, v)| aws_sdk_rds::types::Tag::builder().key(k).value(v).build()).collect();
    tags.push(aws_sdk_rds::types::Tag::builder().key(STARTED).value(started.to_string()).build());
    ctx.progress(format!("restoring {} into scratch instance {id} (DB subnet group {group})", p.snapshot));
    rds.restore_db_instance_from_db_snapshot()
        .db_instance_identifier(id)
        .db_snapshot_identifier(&p.snapshot)
        .db_instance_class(&p.instance_class)
        .db_subnet_group_name(&group)
        .set_vpc_security_group_ids(Some(security))
        .publicly_accessible(false)
        .multi_az(false)
        .backup_retention_period(0)
        .deletion_protection(false)
        .set_tags(Some(tags))
        .send()
        .await
        .or_step_error("rds:RestoreDBInstanceFromDBSnapshot")?;
    Ok(started)
}

impl super::facts::Facts for RestoreDrill {
    const GC_RANK: u8 = 0;

    /// Scratch instances of drills that were never finished.
    async fn leftovers(at: &super::facts::Sweep) -> Result<Vec<super::facts::Leftover>, StepError> {
        let rds = aws_sdk_rds::Client::new(&at.config);
        let mut pages = rds.describe_db_instances().into_paginator().send();
        let mut found = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| super::classify(&super::failure("rds:DescribeDBInstances", &e)))?;
            for db in page.db_instances() {
                let tags: Vec<(String, String)> =
                    db.tag_list().iter().filter_map(|t| Some((t.key()?.to_string(), t.value()?.to_string()))).collect();
                if !tags.iter().any(|(k, _)| k == STARTED) {
                    continue;
                }
                // What its destroy needs (which snapshot it came from is not known here, nor needed).
                let detail = serde_json::json!({ "snapshot": "unknown" });
                found.push(super::facts::Leftover::new(tags, db.db_instance_identifier(), 0.0, detail));
            }
        }
        Ok(found)
    }
}
