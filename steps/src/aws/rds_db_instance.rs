//! `aws.rds.db_instance`: a PostgreSQL instance `<stack>-<step>`: encrypted gp3
//! storage, automated backups, not publicly accessible, in a DB subnet group.
//! Its master password is managed by RDS in Secrets Manager
//! (`ManageMasterUserPassword`): no password exists in the workflow, and the
//! secret does not depend on the endpoint, so there is no secret/endpoint cycle.
//! Waits (deadline, progress with RDS's status) until `available`. Deletion
//! protection is on by default: `destroy` refuses to start without
//! `--delete-data`, and with it turns the protection off before deleting.

use std::time::Duration;

use ca_a2a_flow_engine::duration::HumanDuration;
use ca_a2a_flow_engine::{
    Deadline, DestroyOptions, KindDoc, Outputs, ParamProblem, Parameters, Plan, Step, StepContext, StepError, outputs,
};
use serde::Deserialize;

use super::owner::{Holder, Stack, claim, planned_claim};
use super::wait::{self, Poll};
use super::{AwsResult, Owner};

#[derive(Debug, Deserialize, Parameters)]
#[serde(deny_unknown_fields)]
#[kind(name = "aws.rds.db_instance", step = DbInstance)]
pub struct Params {
    #[param(doc = super::STACK)]
    pub stack: Stack,
    #[param(doc = super::REGION)]
    pub region: Option<String>,
    /// the DB subnet group (required)
    pub db_subnet_group: String,
    /// its security groups (required)
    pub security_group_ids: Vec<String>,
    /// default db.t3.micro
    #[serde(default = "default_class")]
    pub instance_class: String,
    /// default 15
    #[serde(default = "default_version")]
    pub engine_version: String,
    /// GiB of gp3, default 20
    #[serde(default = "twenty")]
    pub allocated_storage: i32,
    /// default false
    #[serde(default)]
    pub multi_az: bool,
    /// default 7
    #[serde(default = "seven")]
    pub backup_retention_days: i32,
    /// the database to create (required)
    pub db_name: String,
    /// the master user (required)
    pub master_username: String,
    /// the ARN of a secret `{"username", "password"}` whose password is the master
    /// password; it changes only through `rotate-secret`, which sets it on the
    /// instance and then redeploys the services that read it. Empty: RDS manages
    /// the password in a secret of its own, which it rotates every 7 days (a task
    /// that read it at start cannot open connections after that)
    pub master_password_secret_arn: Option<String>,
    /// deadline for `available` (default 40m)
    pub wait: Option<HumanDuration>,
    /// refuse every deletion, `destroy`'s included unless `--delete-data`
    /// (default true)
    #[serde(default = "yes")]
    pub deletion_protection: bool,
    #[param(doc = super::owner::TAKE_OVER)]
    #[serde(default)]
    pub take_over: bool,
}

/// Whose the instance `db`, found by its identifier, is.
fn holder(owner: &Owner, db: &aws_sdk_rds::types::DbInstance) -> Holder {
    owner.holder(db.tag_list().iter().filter_map(|t| Some((t.key()?, t.value()?))))
}

fn default_class() -> String {
    "db.t3.micro".into()
}
fn default_version() -> String {
    "15".into()
}
fn twenty() -> i32 {
    20
}
fn seven() -> i32 {
    7
}
fn yes() -> bool {
    true
}

const BROKEN: &[&str] = &[
    "failed",
    "incompatible-network",
    "incompatible-parameters",
    "incompatible-restore",
    "inaccessible-encryption-credentials",
    "storage-full",
];

impl Step for DbInstance {
    /// Creating or modifying an instance waits up to 40 minutes (`wait`) for `available`.
    const DEADLINE: Option<Deadline> = Some(Deadline::minutes(50, 45));

    async fn plan(&self, ctx: &StepContext, p: Params) -> Result<Plan, StepError> {
        let id = Owner::new(&p.stack, ctx).short_name(63);
        let rds = aws_sdk_rds::Client::new(&super::config(p.region.as_deref()).await);
        let found = by_id(&rds, &id).await?;
        let owner = Owner::new(&p.stack, ctx);
        Ok(match found.and_then(|f| f.db_instances().first().cloned()) {
            None => Plan::create(),
            Some(db) => {
                let mut changes = match planned_claim(&owner, "DB instance", &id, &holder(&owner, &db), p.take_over) {
                    Ok(changes) => changes,
                    Err(conflict) => return Ok(conflict),
                };
                if db.db_instance_class() != Some(p.instance_class.as_str()) {
                    changes.push(format!(
                        "instance_class: {} -> {} (not applied by a run)",
                        db.db_instance_class().unwrap_or("?"),
                        p.instance_class
                    ));
                }
                if db.multi_az() != Some(p.multi_az) {
                    changes.push(format!(
                        "multi_az: {} -> {} (not applied by a run)",
                        db.multi_az().unwrap_or(false),
                        p.multi_az
                    ));
                }
                if let Some(secret) = own_secret(&p).filter(|_| db.master_user_secret().is_some()) {
                    changes.push(format!("master password: RDS-managed secret -> {secret}"));
                }
                if db.deletion_protection() != Some(p.deletion_protection) {
                    changes.push(format!(
                        "deletion_protection: {} -> {}",
                        db.deletion_protection().unwrap_or(false),
                        p.deletion_protection
                    ));
                }
                Plan::changes(changes)
            }
        })
    }

    const DESTROYS: bool = true;

    fn kept_on_destroy(&self, options: &DestroyOptions) -> Option<&'static str> {
        (!options.skip_final_snapshot).then_some("databases get a final snapshot (--skip-final-snapshot skips it)")
    }

    fn destroy_refused(&self, p: &Params, options: &DestroyOptions) -> Option<String> {
        (p.deletion_protection && !options.delete_data).then(|| {
            "its database has deletion protection: `destroy --delete-data` turns it off and deletes the database \
             (after a final snapshot, unless --skip-final-snapshot); without it, nothing is destroyed"
                .to_string()
        })
    }

    async fn destroy(&self, ctx: &StepContext, p: Params, o: &DestroyOptions) -> Result<Outputs, StepError> {
        let owner = Owner::new(&p.stack, ctx);
        let id = owner.short_name(63);
        let rds = aws_sdk_rds::Client::new(&super::config(p.region.as_deref()).await);
        let absent = &["DBInstanceNotFound", "DBInstanceNotFoundFault"];
        let found = by_id(&rds, &id).await?;
        let Some(db) = found.and_then(|f| f.db_instances().first().cloned()) else {
            return Ok(super::removed(ctx, "DB instance", &[]));
        };
        let whose = holder(&owner, &db);
        if whose != Holder::Ours {
            ctx.log(format!("left alone: {}", owner.not_ours("DB instance", &id, &whose)));
            return Ok(super::removed(ctx, "DB instance", &[]));
        }
        if db.db_instance_status() != Some("deleting") && db.deletion_protection() == Some(true) {
            // Turned on since the deploy (by hand, or by a later run of it).
            if !o.delete_data {
                return Err(StepError::fatal(format!("DB instance {id} has deletion protection"))
                    .with_hint("`destroy --delete-data` turns it off and deletes the database"));
            }
            unprotect(ctx, &rds, &db).await?;
        }
        if db.db_instance_status() != Some("deleting") {
            let mut delete = rds.delete_db_instance().db_instance_identifier(&id);
            if o.skip_final_snapshot {
                delete = delete.skip_final_snapshot(true);
            } else {
                // The same name on every attempt of this destroy run.
                let snapshot = format!("{id}-final-{}", ctx.run_id);
                ctx.log(format!("final snapshot: {snapshot}"));
                delete = delete.final_db_snapshot_identifier(snapshot);
            }
            ctx.progress(format!("deleting DB instance {id}"));
            delete.send().await.or_absent("rds:DeleteDBInstance", absent)?;
        }
        let limit = p.wait.map(|w| w.0).unwrap_or(Duration::from_secs(40 * 60));
        wait::until(ctx, &format!("rds {id}"), limit, wait::interval(Duration::from_secs(20)), || {
            let (rds, id) = (rds.clone(), id.clone());
            async move {
                let d = by_id(&rds, &id).await?;
                Ok(
                    match d
                        .and_then(|d| d.db_instances().first().and_then(|db| db.db_instance_status().map(String::from)))
                    {
                        None => Poll::Ready(()),
                        Some(status) => Poll::Pending(status),
                    },
                )
            }
        })
        .await?;
        Ok(super::removed(ctx, "DB instance", &[id]))
    }

    const DOC: KindDoc = KindDoc {
        summary: "An encrypted PostgreSQL RDS instance with an RDS-managed master password, waited for until available.",
        outputs: &[
            ("identifier", "the instance identifier"),
            ("arn", "its ARN"),
            ("endpoint", "its DNS address"),
            ("port", "its port"),
            ("master_secret_arn", "the RDS-managed secret holding username and password"),
            (
                "action",
                "`created`, `adopted`, `updated` (deletion protection or password converged) or `taken-over` (`take_over`)",
            ),
        ],
        example: "- id: keycloak-db\n  uses: aws.rds.db_instance\n  with:\n    stack: \"${{ inputs.stack }}\"\n    db_subnet_group: \"${{ steps.db-subnets.outputs.name }}\"\n    security_group_ids: [\"${{ steps.rds-sg.outputs.group_id }}\"]\n    db_name: keycloak\n    master_username: keycloak\n",
    };

    fn problems(&self, p: &Params) -> Vec<ParamProblem> {
        let mut problems = Vec::new();
        if !(20..=65536).contains(&p.allocated_storage) {
            problems.push(ParamProblem::at(&["allocated_storage"], "gp3 takes 20 to 65536 GiB"));
        }
        if !(1..=35).contains(&p.backup_retention_days) {
            problems.push(ParamProblem::at(&["backup_retention_days"], "keep backups 1 to 35 days"));
        }
        if !p.instance_class.starts_with("db.") && !p.instance_class.contains("${{") {
            problems.push(ParamProblem::at(
                &["instance_class"],
                format!("`{}` is not an instance class like db.t3.micro", p.instance_class),
            ));
        }
        problems
    }

    async fn run(&self, ctx: &StepContext, p: Params) -> Result<Outputs, StepError> {
        let owner = Owner::new(&p.stack, ctx);
        let id = owner.short_name(63);
        let rds = aws_sdk_rds::Client::new(&super::config(p.region.as_deref()).await);
        let found = by_id(&rds, &id).await?;
        let action = match found.and_then(|f| f.db_instances().first().cloned()) {
            Some(db) if db.db_instance_status() == Some("deleting") => {
                return Err(StepError::retryable(format!("DB instance {id} is being deleted"))
                    .with_hint("the next attempt creates it again once the deletion is over"));
            }
            Some(db) if holder(&owner, &db) != Holder::Ours && !p.take_over => {
                return Err(owner.refuse("DB instance", &id, &holder(&owner, &db)));
            }
            Some(db)
                if db.db_subnet_group().and_then(|g| g.db_subnet_group_name()) != Some(p.db_subnet_group.as_str()) =>
            {
                let detail = format!(
                    "is in DB subnet group {}, not {}",
                    db.db_subnet_group().and_then(|g| g.db_subnet_group_name()).unwrap_or("?"),
                    p.db_subnet_group
                );
                return Err(owner.conflict(
                    "DB instance",
                    &id,
                    detail,
                    "an instance cannot change VPC in place: snapshot and delete it, then resume",
                ));
            }
            Some(db) if holder(&owner, &db) != Holder::Ours => {
                claim(&owner, "DB instance", &id, &holder(&owner, &db), p.take_over)?;
                ctx.progress(format!("taking over DB instance {id}: tagging it as stack {}'s", p.stack));
                let tags =
                    owner.tags().into_iter().map(|(k, v)| aws_sdk_rds::types::Tag::builder().key(k).value(v).build());
                rds.add_tags_to_resource()
                    .resource_name(db.db_instance_arn().unwrap_or_default())
                    .set_tags(Some(tags.collect()))
                    .send()
                    .await
                    .or_step_error("rds:AddTagsToResource")?;
                "taken-over"
            }
            Some(db) => {
                let mut action = "adopted";
                if db.deletion_protection() != Some(p.deletion_protection) {
                    ctx.progress(format!("DB instance {id}: deletion protection -> {}", p.deletion_protection));
                    rds.modify_db_instance()
                        .db_instance_identifier(&id)
                        .deletion_protection(p.deletion_protection)
                        .apply_immediately(true)
                        .send()
                        .await
                        .or_step_error("rds:ModifyDBInstance")?;
                    action = "updated";
                }
                if let Some(secret) = own_secret(&p).filter(|_| db.master_user_secret().is_some()) {
                    // Its password leaves the RDS-managed secret for the step's, which only `rotate-secret` changes.
                    ctx.progress(format!("DB instance {id}: the master password moves to secret {secret}"));
                    let password = password_of(p.region.as_deref(), secret).await?;
                    rds.modify_db_instance()
                        .db_instance_identifier(&id)
                        .manage_master_user_password(false)
                        .master_user_password(password)
                        .apply_immediately(true)
                        .send()
                        .await
                        .or_step_error("rds:ModifyDBInstance")?;
                    action = "updated";
                }
                action
            }
            None => {
                ctx.progress(format!("creating DB instance {id}"));
                let tags =
                    owner.tags().into_iter().map(|(k, v)| aws_sdk_rds::types::Tag::builder().key(k).value(v).build());
                rds.create_db_instance()
                    .db_instance_identifier(&id)
                    .engine("postgres")
                    .engine_version(&p.engine_version)
                    .db_instance_class(&p.instance_class)
                    .allocated_storage(p.allocated_storage)
                    .storage_type("gp3")
                    .storage_encrypted(true)
                    .multi_az(p.multi_az)
                    .publicly_accessible(false)
                    .backup_retention_period(p.backup_retention_days)
                    .db_subnet_group_name(&p.db_subnet_group)
                    .set_vpc_security_group_ids(Some(p.security_group_ids.clone()))
                    .db_name(&p.db_name)
                    .master_username(&p.master_username)
                    .set_manage_master_user_password(own_secret(&p).is_none().then_some(true))
                    .set_master_user_password(match own_secret(&p) {
                        Some(secret) => Some(password_of(p.region.as_deref(), secret).await?),
                        None => None,
                    })
                    .copy_tags_to_snapshot(true)
                    .deletion_protection(p.deletion_protection)
                    .set_tags(Some(tags.collect()))
                    .send()
                    .await
                    .or_step_error("rds:CreateDBInstance")?;
                "created"
            }
        };
        let limit = p.wait.map(|w| w.0).unwrap_or(Duration::from_secs(40 * 60));
        let what = format!("rds {id}");
        let db = wait::until(ctx, &what, limit, wait::interval(Duration::from_secs(20)), || {
            let (rds, id, what) = (rds.clone(), id.clone(), what.clone());
            async move {
                let d = rds
                    .describe_db_instances()
                    .db_instance_identifier(&id)
                    .send()
                    .await
                    .or_step_error_created("rds:DescribeDBInstances", true)?;
                let Some(db) = d.db_instances().first().cloned() else {
                    return Ok(Poll::Pending("not visible yet".into()));
                };
                let status = db.db_instance_status().unwrap_or("unknown").to_string();
                if status == "available" && db.endpoint().and_then(|e| e.address()).is_some() {
                    return Ok(Poll::Ready(db));
                }
                if BROKEN.contains(&status.as_str()) {
                    return Err(StepError::fatal(format!("{what} is `{status}`"))
                        .with_hint("see the instance's events in the RDS console (`aws rds describe-events --source-identifier ...`); fix the cause, delete the instance, then resume"));
                }
                Ok(Poll::Pending(status))
            }
        })
        .await?;
        let endpoint = db.endpoint().and_then(|e| e.address()).unwrap_or_default().to_string();
        let port = db.endpoint().and_then(|e| e.port()).unwrap_or(5432);
        let managed = db.master_user_secret().and_then(|s| s.secret_arn()).unwrap_or_default().to_string();
        let secret = own_secret(&p).map(String::from).unwrap_or(managed);
        if secret.is_empty() {
            return Err(StepError::fatal(format!("{what} has no RDS-managed master secret"))
                .with_hint("the instance was made without ManageMasterUserPassword: enable it (`aws rds modify-db-instance --manage-master-user-password`), then resume"));
        }
        ctx.log(format!("{action} {what}: available at {endpoint}:{port}"));
        Ok(
            outputs! { identifier: id, arn: db.db_instance_arn().unwrap_or_default(), endpoint, port, master_secret_arn: secret, action },
        )
    }
}

/// The step's own master password secret, if it names one.
fn own_secret(p: &Params) -> Option<&str> {
    p.master_password_secret_arn.as_deref().filter(|s| !s.trim().is_empty())
}

/// The `password` of the secret `arn` (`{"username", "password"}`, or the bare
/// value): read to hand to RDS, never logged, printed or kept.
pub(crate) async fn password_of(region: Option<&str>, arn: &str) -> Result<String, StepError> {
    let sm = aws_sdk_secretsmanager::Client::new(&super::config(region).await);
    let value = sm.get_secret_value().secret_id(arn).send().await.or_step_error("secretsmanager:GetSecretValue")?;
    let text = value.secret_string().unwrap_or_default();
    let password = match serde_json::from_str::<serde_json::Value>(text) {
        Ok(serde_json::Value::Object(m)) => m.get("password").and_then(|v| v.as_str()).map(String::from),
        _ => Some(text.to_string()),
    };
    password.filter(|p| !p.is_empty()).ok_or_else(|| {
        StepError::fatal(format!("secret {arn} holds no password"))
            .with_hint("give the master password secret a `password` (an aws.secretsmanager.secret step makes one)")
    })
}

/// The instance `id` (`None`: there is none).
/// The DB instance `id`, if it exists.
pub(crate) async fn instance(
    rds: &aws_sdk_rds::Client,
    id: &str,
) -> Result<Option<aws_sdk_rds::types::DbInstance>, StepError> {
    Ok(by_id(rds, id).await?.and_then(|f| f.db_instances().first().cloned()))
}

/// Turns deletion protection off on `db`, one of the stack's own, when it is on.
pub(crate) async fn unprotect(
    ctx: &StepContext,
    rds: &aws_sdk_rds::Client,
    db: &aws_sdk_rds::types::DbInstance,
) -> Result<(), StepError> {
    if db.deletion_protection() != Some(true) {
        return Ok(());
    }
    let id = db.db_instance_identifier().unwrap_or_default();
    ctx.progress(format!("DB instance {id}: turning deletion protection off"));
    rds.modify_db_instance()
        .db_instance_identifier(id)
        .deletion_protection(false)
        .apply_immediately(true)
        .send()
        .await
        .or_step_error("rds:ModifyDBInstance")?;
    Ok(())
}

async fn by_id(
    rds: &aws_sdk_rds::Client,
    id: &str,
) -> Result<Option<aws_sdk_rds::operation::describe_db_instances::DescribeDbInstancesOutput>, StepError> {
    rds.describe_db_instances()
        .db_instance_identifier(id)
        .send()
        .await
        .or_absent("rds:DescribeDBInstances", &["DBInstanceNotFound", "DBInstanceNotFoundFault"])
}

use super::cost::{CostLine, Pricing};
use super::facts::Facts;

impl Facts for DbInstance {
    fn console(o: &std::collections::BTreeMap<String, serde_json::Value>, r: &str) -> Option<String> {
        use super::facts::{console_in, output, url_part};
        // arn:aws:rds:REGION:ACCOUNT:db:IDENTIFIER
        let id = output(o, "arn")?.rsplit_once(":db:")?.1;
        console_in(r, &format!("rds/home?region={r}#database:id={};is-cluster=false", url_part(id)))
    }

    fn monthly(p: &Params, at: &Pricing) -> Result<Vec<CostLine>, String> {
        let (h, prices, class) = (at.hours, at.prices, &p.instance_class);
        let Some(hourly) = prices.rds_postgres_hour.get(class) else {
            return Err(format!(
                "no price for RDS class `{class}` in {}; known: {}",
                at.region,
                prices.rds_postgres_hour.keys().cloned().collect::<Vec<_>>().join(", ")
            ));
        };
        let copies = if p.multi_az { 2.0 } else { 1.0 };
        let gb = p.allocated_storage as f64;
        Ok(vec![
            CostLine::new(
                format!(
                    "{class}{} {h} h x ${hourly} + {gb} GB gp3 x ${} + managed secret ${}",
                    if p.multi_az { " Multi-AZ (x2)" } else { "" },
                    prices.rds_gp3_gb_month,
                    prices.secret_month
                ),
                copies * (h * hourly + gb * prices.rds_gp3_gb_month) + prices.secret_month,
            )
            .database(),
        ])
    }
}
