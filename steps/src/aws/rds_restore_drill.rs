//! `aws.rds.restore_drill`: a disaster-recovery drill of one snapshot. It
//! restores the snapshot into a scratch instance `<stack>-<step>` in the
//! source instance's own DB subnet group and security groups, waits until it
//! is available, checks it (engine version and storage as the snapshot's, an
//! endpoint), deletes it, and reports the restore time (RTO) and the
//! snapshot's age when the restore began (RPO).
//!
//! Given `check_from` (the builder: an instance in the database's VPC, reached
//! through SSM, with the Postgres client), the scratch instance also gets a
//! security group of the drill's own that admits that instance's groups on
//! the database port, and the drill runs `pg_isready` there against it: a
//! restore that no client can reach is no recovery. The group goes with the
//! scratch instance.
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

use super::ec2_security_group::Ingress;
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
    /// an instance in the database's VPC, reached through SSM, with the Postgres client (the builder): `pg_isready` runs there against the scratch instance (default none: no connection check; empty counts as none)
    pub check_from: Option<String>,
}

impl Params {
    fn check_from(&self) -> Option<&str> {
        self.check_from.as_deref().map(str::trim).filter(|i| !i.is_empty())
    }
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

    /// A drill that was never finished: its scratch instance is deleted, then
    /// the security group of its connection check.
    async fn destroy(&self, ctx: &StepContext, p: Params, _o: &DestroyOptions) -> Result<Outputs, StepError> {
        let owner = Owner::new(&p.stack, ctx);
        let id = owner.short_name(63);
        let rds = aws_sdk_rds::Client::new(&super::config(p.region.as_deref()).await);
        let mut deleted = Vec::new();
        match instance(&rds, &id).await? {
            Some(db) if holder(&owner, &db) != Holder::Ours => {
                ctx.log(format!("left alone: {}", owner.not_ours("DB instance", &id, &holder(&owner, &db))));
                return Ok(super::removed(ctx, "scratch instance", &[]));
            }
            Some(_) => {
                delete(ctx, &rds, &id, p.wait.map(|w| w.0).unwrap_or(Duration::from_secs(60 * 60))).await?;
                deleted.push(id);
            }
            None => {}
        }
        let ec2 = super::ec2(p.region.as_deref()).await;
        super::owned::delete_all::<aws_sdk_ec2::types::SecurityGroup>(ctx, &ec2, &owner).await?;
        Ok(super::removed(ctx, "scratch instance", &deleted))
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
            (
                "connection",
                "what `pg_isready` said from `check_from` (\"…:5432 - accepting connections\"), or that nothing was checked",
            ),
        ],
        example: "- id: drill\n  uses: aws.rds.restore_drill\n  with:\n    stack: \"${{ inputs.stack }}\"\n    snapshot: \"${{ steps.snapshot.outputs.identifier }}\"\n    check_from: i-0123456789abcdef0\n",
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
        let ec2 = super::ec2(p.region.as_deref()).await;
        let access = match p.check_from() {
            Some(from) => Some(access(ctx, &ec2, &owner, &rds, &snapshot, from).await?),
            None => None,
        };
        let access = access.as_deref();
        let started = match instance(&rds, &id).await? {
            Some(db) if holder(&owner, &db) != Holder::Ours => {
                return Err(owner.refuse("DB instance", &id, &holder(&owner, &db)));
            }
            Some(db) if db.db_instance_status() == Some("deleting") => {
                // The drill was killed while deleting it: let it go, then drill again.
                delete(ctx, &rds, &id, limit).await?;
                restore(ctx, &rds, &owner, &id, &p, &snapshot, access).await?
            }
            Some(db) => {
                let tag = db.tag_list().iter().find(|t| t.key() == Some(STARTED)).and_then(|t| t.value());
                tag.and_then(|v| v.parse().ok())
                    .or(db.instance_create_time().map(super::epoch_ms))
                    .unwrap_or_else(now_ms)
            }
            None => restore(ctx, &rds, &owner, &id, &p, &snapshot, access).await?,
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
        let checked = match (checked, p.check_from()) {
            (Ok(db), Some(from)) => connect(ctx, &p, from, &db).await.map(|said| (db, said)),
            (Ok(db), None) => Ok((db, "not checked (no `check_from`)".to_string())),
            (Err(e), _) => Err(e),
        };
        // Deleted whatever the checks found: a drill leaves nothing behind.
        delete(ctx, &rds, &id, limit).await?;
        super::owned::delete_all::<aws_sdk_ec2::types::SecurityGroup>(ctx, &ec2, &owner).await?;
        let (db, connection) = checked?;
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
            connection,
        })
    }
}

/// The instance `source` a snapshot copies, which the drill restores next to.
async fn source_of(
    rds: &aws_sdk_rds::Client,
    snapshot: &aws_sdk_rds::types::DbSnapshot,
) -> Result<aws_sdk_rds::types::DbInstance, StepError> {
    let source = snapshot.db_instance_identifier().unwrap_or_default();
    instance(rds, source).await?.ok_or_else(|| {
        StepError::fatal(format!("the snapshot's instance {source} is gone: no subnets to restore into"))
            .with_hint("a drill restores next to the instance it protects; restore by hand into a DB subnet group")
    })
}

/// The drill's own security group in the database's VPC, admitting the
/// security groups of `from` on the database port: its id. `from` must be in
/// that VPC (a builder in the default VPC has no route to it).
async fn access(
    ctx: &StepContext,
    ec2: &aws_sdk_ec2::Client,
    owner: &Owner,
    rds: &aws_sdk_rds::Client,
    snapshot: &aws_sdk_rds::types::DbSnapshot,
    from: &str,
) -> Result<String, StepError> {
    let db = source_of(rds, snapshot).await?;
    let vpc = db.db_subnet_group().and_then(|g| g.vpc_id()).unwrap_or_default().to_string();
    let found = ec2
        .describe_instances()
        .instance_ids(from)
        .send()
        .await
        .or_absent("ec2:DescribeInstances", &["InvalidInstanceID.NotFound", "InvalidInstanceID.Malformed"])?;
    let checker = found.and_then(|f| f.reservations().iter().flat_map(|r| r.instances()).next().cloned());
    let Some(checker) = checker.filter(|i| i.state().and_then(|s| s.name()).map(|n| n.as_str()) != Some("terminated"))
    else {
        return Err(StepError::fatal(format!("instance {from} (`check_from`) does not exist")).with_hint(
            "give the builder's instance id (the `builder` step's output `instance_id`), or leave `check_from` empty",
        ));
    };
    if checker.vpc_id() != Some(vpc.as_str()) {
        return Err(StepError::fatal(format!(
            "instance {from} (`check_from`) is in VPC {}, the database in VPC {vpc}: it cannot reach the scratch instance",
            checker.vpc_id().unwrap_or("?")
        ))
        .with_hint("make the builder in a subnet of the stack's VPC (`--input builder_subnet=` one of its private subnets), or leave `check_from` empty"));
    }
    let port = db.endpoint().and_then(|e| e.port()).unwrap_or(5432);
    let ingress: Vec<Ingress> = checker
        .security_groups()
        .iter()
        .filter_map(|g| g.group_id())
        .map(|g| Ingress {
            port: u16::try_from(port).unwrap_or(5432),
            protocol: "tcp".into(),
            cidr: None,
            source_group_id: Some(g.to_string()),
            description: Some(format!("a restore drill's connection check from {from}")),
        })
        .collect();
    let described = "a restore drill's connection check: the database port from the checking instance";
    let (id, _) = super::ec2_security_group::converge(ctx, ec2, owner, &vpc, described, &ingress).await?;
    Ok(id)
}

/// Runs `pg_isready` on `from` against the restored instance `db` (through
/// SSM): what it said, or an error with its exit code and output.
async fn connect(
    ctx: &StepContext,
    p: &Params,
    from: &str,
    db: &aws_sdk_rds::types::DbInstance,
) -> Result<String, StepError> {
    let endpoint = db.endpoint().and_then(|e| e.address()).unwrap_or_default();
    let port = db.endpoint().and_then(|e| e.port()).unwrap_or(5432);
    // The address is AWS's, but still a value: quoted, never code.
    let script = format!("pg_isready -h {} -p {port} -t 10", crate::image_build_push::shell_quote(endpoint));
    ctx.progress(format!("checking a connection to {endpoint}:{port} from {from}"));
    let request = super::ssm_run_command::Request {
        region: p.region.as_deref(),
        instance_id: from,
        commands: &script,
        working_directory: None,
        tail_lines: 5,
        timeout: Duration::from_secs(300),
    };
    let ran = super::ssm_run_command::run(ctx, request).await.map_err(|e| {
        let meaning = "pg_isready exits 1 when the server rejects connections, 2 when nothing answers (security groups, routes), 3 when it could not try";
        let hint = match &e.hint {
            Some(h) => format!("{h}; {meaning}"),
            None => meaning.to_string(),
        };
        StepError { hint: Some(hint), ..e }
    })?;
    let said = ran.shown.trim().to_string();
    ctx.log(format!("connection from {from}: {said}"));
    Ok(said)
}

/// Asks RDS to restore `snapshot` as `id`, in the source instance's subnet
/// group and security groups (and `access`, the connection check's); returns
/// when the restore began.
async fn restore(
    ctx: &StepContext,
    rds: &aws_sdk_rds::Client,
    owner: &Owner,
    id: &str,
    p: &Params,
    snapshot: &aws_sdk_rds::types::DbSnapshot,
    access: Option<&str>,
) -> Result<i64, StepError> {
    let db = source_of(rds, snapshot).await?;
    let group = db.db_subnet_group().and_then(|g| g.db_subnet_group_name()).unwrap_or_default().to_string();
    let mut security: Vec<String> =
        db.vpc_security_groups().iter().filter_map(|g| g.vpc_security_group_id()).map(String::from).collect();
    security.extend(access.map(String::from));
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
