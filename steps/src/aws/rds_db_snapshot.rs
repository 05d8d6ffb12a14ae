//! `aws.rds.db_snapshot`: a manual snapshot of a DB instance, one per run,
//! named `<stack>-<step>-<run id>`: a resumed run finds the snapshot it asked
//! for (by that name, and the stack's tags on it) instead of taking another;
//! a new run takes a new one. Waits (deadline, RDS's percent done) until
//! `available`. Snapshots are data: `destroy` keeps them unless `--delete-data`.

use std::time::Duration;

use ca_a2a_flow_engine::duration::HumanDuration;
use ca_a2a_flow_engine::{
    DestroyOptions, KindDoc, Outputs, ParamProblem, Parameters, Plan, Step, StepContext, StepError, outputs,
};
use serde::Deserialize;

use super::owner::{Holder, Stack};
use super::wait::{self, Poll};
use super::{AwsResult, Owner};

#[derive(Debug, Deserialize, Parameters)]
#[serde(deny_unknown_fields)]
#[kind(name = "aws.rds.db_snapshot", step = DbSnapshot)]
pub struct Params {
    #[param(doc = super::STACK)]
    pub stack: Stack,
    #[param(doc = super::REGION)]
    pub region: Option<String>,
    /// the identifier of the DB instance to snapshot (required)
    pub db_instance: String,
    /// deadline for `available` (default 30m)
    pub wait: Option<HumanDuration>,
}

/// The snapshot's identifier: `<stack>-<step>-<run id>`.
fn identifier(owner: &Owner, run_id: &str) -> String {
    snapshot_id(&format!("{}-{run_id}", owner.name()))
}

/// `raw` as RDS takes a snapshot identifier: lowercase letters, digits and
/// single hyphens, a letter first, no hyphen last, at most 255 characters.
fn snapshot_id(raw: &str) -> String {
    let mut id = String::with_capacity(raw.len());
    for c in raw.chars() {
        let c = if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' };
        if !(c == '-' && (id.is_empty() || id.ends_with('-'))) {
            id.push(c);
        }
    }
    if !id.starts_with(|c: char| c.is_ascii_alphabetic()) {
        id.insert_str(0, "s-");
    }
    let mut id: String = id.chars().take(255).collect();
    while id.ends_with('-') {
        id.pop();
    }
    id
}

fn holder(owner: &Owner, s: &aws_sdk_rds::types::DbSnapshot) -> Holder {
    owner.holder(s.tag_list().iter().filter_map(|t| Some((t.key()?, t.value()?))))
}

/// The snapshot `id`, if it exists.
async fn find(rds: &aws_sdk_rds::Client, id: &str) -> Result<Option<aws_sdk_rds::types::DbSnapshot>, StepError> {
    let found = rds
        .describe_db_snapshots()
        .db_snapshot_identifier(id)
        .send()
        .await
        .or_absent("rds:DescribeDBSnapshots", &["DBSnapshotNotFound", "DBSnapshotNotFoundFault"])?;
    Ok(found.and_then(|f| f.db_snapshots().first().cloned()))
}

impl Step for DbSnapshot {
    async fn plan(&self, ctx: &StepContext, p: Params) -> Result<Plan, StepError> {
        let owner = Owner::new(&p.stack, ctx);
        let id = identifier(&owner, &ctx.run_id);
        let rds = aws_sdk_rds::Client::new(&super::config(p.region.as_deref()).await);
        Ok(match find(&rds, &id).await? {
            None => Plan::create(),
            Some(s) if holder(&owner, &s) != Holder::Ours => {
                Plan::conflict(owner.not_ours("DB snapshot", &id, &holder(&owner, &s)))
            }
            Some(_) => Plan::changes(Vec::new()),
        })
    }

    const DESTROYS: bool = true;

    fn kept_on_destroy(&self, options: &DestroyOptions) -> Option<&'static str> {
        (!options.delete_data).then_some("DB snapshots are kept (--delete-data deletes them)")
    }

    async fn destroy(&self, ctx: &StepContext, p: Params, o: &DestroyOptions) -> Result<Outputs, StepError> {
        let owner = Owner::new(&p.stack, ctx);
        // The deploy run's snapshot: its id is the deploy's, not this destroy run's.
        let run = ctx.destroy_of.as_deref().unwrap_or(&ctx.run_id);
        let id = identifier(&owner, run);
        let rds = aws_sdk_rds::Client::new(&super::config(p.region.as_deref()).await);
        let Some(s) = find(&rds, &id).await? else { return Ok(super::removed(ctx, "DB snapshot", &[])) };
        let whose = holder(&owner, &s);
        if whose != Holder::Ours {
            ctx.log(format!("left alone: {}", owner.not_ours("DB snapshot", &id, &whose)));
            return Ok(super::removed(ctx, "DB snapshot", &[]));
        }
        if !o.delete_data {
            ctx.log(format!("kept: DB snapshot {id} (--delete-data deletes it)"));
            return Ok(super::removed(ctx, "DB snapshot", &[]));
        }
        ctx.progress(format!("deleting DB snapshot {id}"));
        let gone = rds
            .delete_db_snapshot()
            .db_snapshot_identifier(&id)
            .send()
            .await
            .or_absent("rds:DeleteDBSnapshot", &["DBSnapshotNotFound", "DBSnapshotNotFoundFault"])?;
        Ok(super::removed(ctx, "DB snapshot", &gone.map(|_| vec![id]).unwrap_or_default()))
    }

    const DOC: KindDoc = KindDoc {
        summary: "A manual snapshot of a DB instance, one per run (`<stack>-<step>-<run id>`), waited for until available; kept by `destroy` unless `--delete-data`.",
        outputs: &[
            ("identifier", "the snapshot"),
            ("arn", "its ARN"),
            ("db_instance", "the instance it copies"),
            ("created_at", "when RDS took it (ms since the epoch): the restore point"),
            ("engine_version", "the instance's engine version then"),
            ("allocated_storage", "its storage, GiB"),
            ("action", "`created` or `adopted` (a resumed run's own)"),
        ],
        example: "- id: keycloak-snapshot\n  uses: aws.rds.db_snapshot\n  with:\n    stack: \"${{ inputs.stack }}\"\n    db_instance: \"${{ steps.keycloak-db.outputs.identifier }}\"\n",
    };

    fn problems(&self, p: &Params) -> Vec<ParamProblem> {
        let mut problems = Vec::new();
        if p.db_instance.trim().is_empty() {
            problems.push(ParamProblem::at(&["db_instance"], "name the DB instance to snapshot"));
        }
        problems
    }

    async fn run(&self, ctx: &StepContext, p: Params) -> Result<Outputs, StepError> {
        let owner = Owner::new(&p.stack, ctx);
        let id = identifier(&owner, &ctx.run_id);
        let rds = aws_sdk_rds::Client::new(&super::config(p.region.as_deref()).await);
        let action = match find(&rds, &id).await? {
            Some(s) if holder(&owner, &s) != Holder::Ours => {
                return Err(owner.refuse("DB snapshot", &id, &holder(&owner, &s)));
            }
            Some(_) => "adopted",
            None => {
                ctx.progress(format!("snapshotting DB instance {} as {id}", p.db_instance));
                let tags =
                    owner.tags().into_iter().map(|(k, v)| aws_sdk_rds::types::Tag::builder().key(k).value(v).build());
                rds.create_db_snapshot()
                    .db_snapshot_identifier(&id)
                    .db_instance_identifier(&p.db_instance)
                    .set_tags(Some(tags.collect()))
                    .send()
                    .await
                    .or_step_error("rds:CreateDBSnapshot")?;
                "created"
            }
        };
        let limit = p.wait.map(|w| w.0).unwrap_or(Duration::from_secs(30 * 60));
        let what = format!("DB snapshot {id}");
        let snapshot = wait::until(ctx, &what, limit, wait::interval(Duration::from_secs(15)), || {
            let (rds, id, what) = (rds.clone(), id.clone(), what.clone());
            async move {
                let Some(s) = find(&rds, &id).await? else {
                    return Ok(Poll::Pending("not visible yet".into()));
                };
                let status = s.status().unwrap_or("unknown").to_string();
                match status.as_str() {
                    "available" => Ok(Poll::Ready(s)),
                    "failed" | "error" => Err(StepError::fatal(format!("{what} is `{status}`")).with_hint(
                        "see the instance's events (`aws rds describe-events --source-type db-snapshot`); delete the snapshot, then resume",
                    )),
                    _ => Ok(Poll::Pending(match s.percent_progress() {
                        Some(done) => format!("{status}, {done}%"),
                        None => status,
                    })),
                }
            }
        })
        .await?;
        let created_at = snapshot.snapshot_create_time().map(super::epoch_ms).unwrap_or_default();
        ctx.log(format!("{action} {what} of {}", p.db_instance));
        Ok(outputs! {
            identifier: id,
            arn: snapshot.db_snapshot_arn().unwrap_or_default(),
            db_instance: p.db_instance,
            created_at,
            engine_version: snapshot.engine_version().unwrap_or_default(),
            allocated_storage: snapshot.allocated_storage().unwrap_or_default(),
            action,
        })
    }
}

impl super::facts::Facts for DbSnapshot {
    fn console(o: &std::collections::BTreeMap<String, serde_json::Value>, r: &str) -> Option<String> {
        use super::facts::{console_in, output, url_part};
        let id = output(o, "identifier")?;
        console_in(r, &format!("rds/home?region={r}#db-snapshot:id={}", url_part(id)))
    }
}

#[cfg(test)]
mod tests {
    use super::snapshot_id;

    #[test]
    fn a_snapshot_identifier_is_one_rds_accepts() {
        assert_eq!(snapshot_id("Blue_stack--snap-r-20261130-1a2b"), "blue-stack-snap-r-20261130-1a2b");
        assert_eq!(snapshot_id("9lives-snap-"), "s-9lives-snap");
        let long = snapshot_id(&format!("a{}-b", "x".repeat(300)));
        assert!(long.len() <= 255 && !long.ends_with('-'), "{long}");
    }
}
