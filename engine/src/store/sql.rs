//! The SQL both databases understand, expanded once per database by
//! [`sql_store!`] into a concrete `impl Store` (no `sqlx::Any`). Placeholders are
//! `$N`, numbered in order of first appearance, which SQLite and Postgres both
//! bind positionally. What differs between the two (types, autoincrement,
//! connection setup) lives in their migrations and their `open`; the one
//! clause that differs, Postgres's `FOR SHARE` on the fence row, is a parameter.

/// SQL, a condition on `runs o`: a run of stack `$stack` other than run `$run`
/// that has not ended and whose lease is live at `$now`.
macro_rules! stack_driven {
    ($stack:literal, $run:literal, $now:literal) => {
        concat!(
            "o.stack = ",
            $stack,
            " AND o.id <> ",
            $run,
            " AND o.status NOT IN ('succeeded', 'failed', 'cancelled') AND o.cancel_requested = 0",
            " AND o.lease_owner IS NOT NULL AND o.lease_expires_at >= ",
            $now
        )
    };
}
pub(crate) use stack_driven;

/// SQL, a condition on `runs o`: what keeps queued run `$run` (of stack
/// `$stack`, queued at `$queued_at`) waiting at `$now`: another run of its
/// stack driven now, or one queued before it that has not ended.
macro_rules! queued_before {
    ($stack:literal, $run:literal, $queued_at:literal, $now:literal) => {
        concat!(
            "o.stack = ",
            $stack,
            " AND o.id <> ",
            $run,
            " AND o.status NOT IN ('succeeded', 'failed', 'cancelled')",
            " AND ((o.lease_owner IS NOT NULL AND o.lease_expires_at >= ",
            $now,
            ")",
            " OR (o.queued_at IS NOT NULL AND (o.queued_at < ",
            $queued_at,
            " OR (o.queued_at = ",
            $queued_at,
            " AND o.id < ",
            $run,
            "))))"
        )
    };
}
pub(crate) use queued_before;

macro_rules! sql_store {
    ($store:ident, $db:ty, $row:ty, $share_lock:literal, $clock:path, $success_rows:literal, $steps_json:expr, $stack_lock:expr, $claim:path) => {
        use sqlx::Row;

        use super::{
            AttemptRecord, EventRecord, Holder, LeaseInfo, NewEvent, NewRun, RunRecord, RunStatus, RunsQuery, StepRecord, StepStatus,
            Store, Write, parse_json,
        };

        fn run_record(row: &$row) -> Result<RunRecord, StoreError> {
            let owner: Option<String> = row.try_get("lease_owner")?;
            let lease = match owner {
                Some(owner) => Some(LeaseInfo {
                    owner,
                    host: row.try_get::<Option<String>, _>("lease_host")?.unwrap_or_default(),
                    pid: row.try_get::<Option<i64>, _>("lease_pid")?.unwrap_or_default(),
                    expires_at: row.try_get::<Option<i64>, _>("lease_expires_at")?.unwrap_or_default(),
                }),
                None => None,
            };
            Ok(RunRecord {
                id: row.try_get("id")?,
                workflow_name: row.try_get("workflow_name")?,
                workflow_file: row.try_get("workflow_file")?,
                definition: parse_json(&row.try_get::<String, _>("definition")?, "run definition")?,
                inputs: parse_json(&row.try_get::<String, _>("inputs")?, "run inputs")?,
                status: RunStatus::parse(&row.try_get::<String, _>("status")?)?,
                error: row.try_get("error")?,
                created_at: row.try_get("created_at")?,
                updated_at: row.try_get("updated_at")?,
                finished_at: row.try_get("finished_at")?,
                generation: row.try_get("generation")?,
                lease,
                heartbeat_at: row.try_get("heartbeat_at")?,
                cancel_requested: row.try_get::<i64, _>("cancel_requested")? != 0,
                stack: row.try_get("stack")?,
                queued_at: row.try_get("queued_at")?,
                masks: row.try_get("masks")?,
            })
        }

        fn step_record(row: &$row) -> Result<StepRecord, StoreError> {
            let outputs: Option<String> = row.try_get("outputs")?;
            let error: Option<String> = row.try_get("error")?;
            Ok(StepRecord {
                step_id: row.try_get("step_id")?,
                position: row.try_get("position")?,
                kind: row.try_get("kind")?,
                hash: row.try_get("hash")?,
                status: StepStatus::parse(&row.try_get::<String, _>("status")?)?,
                attempt: row.try_get::<i64, _>("attempt")? as u32,
                first_started_at: row.try_get("first_started_at")?,
                attempt_started_at: row.try_get("attempt_started_at")?,
                deadline_at: row.try_get("deadline_at")?,
                next_attempt_at: row.try_get("next_attempt_at")?,
                finished_at: row.try_get("finished_at")?,
                outputs: outputs.map(|o| parse_json(&o, "step outputs")).transpose()?,
                error: error.map(|e| parse_json(&e, "step error")).transpose()?,
            })
        }

        async fn insert_event(
            conn: &mut <$db as sqlx::Database>::Connection,
            run: &str,
            step: Option<String>,
            at: i64,
            level: &str,
            message: String,
        ) -> Result<(), StoreError> {
            sqlx::query("INSERT INTO events (run_id, step_id, at, level, message) VALUES ($1, $2, $3, $4, $5)")
                .bind(run)
                .bind(step)
                .bind(at)
                .bind(level)
                .bind(message)
                .execute(conn)
                .await?;
            Ok(())
        }

        fn to_json<T: serde::Serialize>(value: &T) -> String {
            serde_json::to_string(value).expect("state values serialize")
        }

        impl $store {
            async fn acquire_once(&self, run: &str, holder: &Holder, ttl_ms: i64, now: i64) -> Result<i64, StoreError> {
                let stack: Option<String> = match sqlx::query_scalar("SELECT stack FROM runs WHERE id = $1")
                    .bind(run)
                    .fetch_optional(&self.pool)
                    .await?
                {
                    Some(stack) => stack,
                    None => return Err(StoreError::RunNotFound(run.to_string())),
                };
                let mut tx = self.pool.begin().await?;
                // A run asked to cancel is taken only to record its end: it runs
                // nothing, so its stack's driver does not hold it back.
                // Where the database runs statements side by side (Postgres), the
                // stack's runs are looked at and one of them taken under a lock of
                // the stack; SQLite runs one writer at a time.
                if let (Some(lock), Some(stack)) = ($stack_lock, stack.as_deref()) {
                    sqlx::query(lock).bind(stack).execute(&mut *tx).await?;
                }
                // Expiry is written and compared on the store's clock where it has
                // one, read once the stack's lock is ours.
                let now = $clock(&self.pool, now).await?;
                let row = sqlx::query(concat!(
                    "UPDATE runs SET generation = generation + 1, lease_owner = $1, lease_host = $2, lease_pid = $3,
                            lease_expires_at = $4, heartbeat_at = $5, updated_at = $5
                     WHERE id = $6 AND (lease_owner IS NULL OR lease_expires_at < $5 OR lease_owner = $7)
                       AND (stack IS NULL OR cancel_requested <> 0 OR NOT EXISTS (",
                    "SELECT 1 FROM runs o WHERE ",
                    super::sql::stack_driven!("runs.stack", "runs.id", "$5"),
                    ")) RETURNING generation"
                ))
                .bind(&holder.owner)
                .bind(&holder.host)
                .bind(holder.pid)
                .bind(now + ttl_ms)
                .bind(now)
                .bind(run)
                .bind(&holder.owner)
                .fetch_optional(&mut *tx)
                .await?;
                tx.commit().await?;
                if let Some(row) = row {
                    return Ok(row.try_get("generation")?);
                }
                let record = self.run(run).await?;
                if let Some(lease) = record.lease.clone().filter(|l| l.expires_at >= now && l.owner != holder.owner) {
                    return Err(StoreError::LeaseHeld { run: run.to_string(), holder: lease });
                }
                if let Some(stack) = stack {
                    let other = sqlx::query(concat!("SELECT * FROM runs o WHERE ", super::sql::stack_driven!("$1", "$2", "$3"), " LIMIT 1"))
                        .bind(&stack)
                        .bind(run)
                        .bind(now)
                        .fetch_optional(&self.pool)
                        .await?;
                    if let Some(other) = other {
                        let other = run_record(&other)?;
                        if let Some(lease) = other.lease {
                            return Err(StoreError::StackHeld { run: run.to_string(), stack, by: other.id, holder: lease });
                        }
                    }
                }
                match record.lease {
                    Some(holder) => Err(StoreError::LeaseHeld { run: run.to_string(), holder }),
                    None => Err(StoreError::Corrupt(format!("run `{run}`: lease neither free nor held"))),
                }
            }

        }

        impl Store for $store {
            async fn create_run(&self, run: NewRun<'_>) -> Result<(), StoreError> {
                let mut tx = self.pool.begin().await?;
                sqlx::query(
                    "INSERT INTO runs (id, workflow_name, workflow_file, definition, inputs, status, created_at, updated_at,
                                       stack, queued_at)
                     VALUES ($1, $2, $3, $4, $5, 'pending', $6, $6, $7, $8)",
                )
                .bind(run.id)
                .bind(&run.workflow.name)
                .bind(&run.workflow.file)
                .bind(to_json(run.workflow))
                .bind(to_json(run.inputs))
                .bind(run.now)
                .bind(run.stack)
                .bind(run.queued.then_some(run.now))
                .execute(&mut *tx)
                .await?;
                for (position, step) in run.workflow.steps.iter().enumerate() {
                    sqlx::query(
                        "INSERT INTO steps (run_id, step_id, position, kind, hash, status) VALUES ($1, $2, $3, $4, $5, 'pending')",
                    )
                    .bind(run.id)
                    .bind(&step.id)
                    .bind(position as i64)
                    .bind(&step.uses)
                    .bind(step.hash())
                    .execute(&mut *tx)
                    .await?;
                }
                tx.commit().await?;
                Ok(())
            }

            async fn acquire(&self, run: &str, holder: &Holder, ttl_ms: i64, now: i64) -> Result<i64, StoreError> {
                // The other run of the stack may give it back between the refusal and
                // the look at who holds it: the lease is then tried again.
                let mut tries = 0;
                loop {
                    tries += 1;
                    match self.acquire_once(run, holder, ttl_ms, now).await {
                        Err(StoreError::Corrupt(_)) if tries < 3 => continue,
                        other => return other,
                    }
                }
            }

            async fn claim(&self, holder: &Holder, ttl_ms: i64, now: i64) -> Result<Option<(String, i64)>, StoreError> {
                let now = $clock(&self.pool, now).await?;
                $claim(&self.pool, holder, ttl_ms, now).await
            }

            async fn held_runs(&self) -> Result<Vec<RunRecord>, StoreError> {
                let rows = sqlx::query(
                    "SELECT * FROM runs WHERE lease_owner IS NOT NULL AND status NOT IN ('succeeded', 'failed', 'cancelled')
                     ORDER BY created_at, id",
                )
                .fetch_all(&self.pool)
                .await?;
                rows.iter().map(run_record).collect()
            }

            async fn renew(&self, run: &str, generation: i64, ttl_ms: i64, now: i64) -> Result<bool, StoreError> {
                let now = $clock(&self.pool, now).await?;
                let row = sqlx::query(
                    "UPDATE runs SET lease_expires_at = $1, heartbeat_at = $2 WHERE id = $3 AND generation = $4
                     RETURNING cancel_requested",
                )
                .bind(now + ttl_ms)
                .bind(now)
                .bind(run)
                .bind(generation)
                .fetch_optional(&self.pool)
                .await?;
                match row {
                    Some(row) => Ok(row.try_get::<i64, _>("cancel_requested")? != 0),
                    None => Err(StoreError::Fenced { run: run.to_string(), generation }),
                }
            }

            async fn release(&self, run: &str, generation: i64) -> Result<(), StoreError> {
                sqlx::query(
                    "UPDATE runs SET lease_owner = NULL, lease_host = NULL, lease_pid = NULL, lease_expires_at = NULL
                     WHERE id = $1 AND generation = $2",
                )
                .bind(run)
                .bind(generation)
                .execute(&self.pool)
                .await?;
                Ok(())
            }

            async fn break_lease(&self, run: &str, owner: &str) -> Result<(), StoreError> {
                sqlx::query("UPDATE runs SET lease_expires_at = 0 WHERE id = $1 AND lease_owner = $2")
                    .bind(run)
                    .bind(owner)
                    .execute(&self.pool)
                    .await?;
                Ok(())
            }

            async fn apply(&self, run: &str, generation: i64, writes: Vec<Write>) -> Result<(), StoreError> {
                // The hot paths, one autocommitted statement each, fenced inline (on
                // Postgres the fence row is share-locked, so a takeover waits for the
                // statement or the statement sees the takeover): a step's `started`
                // checkpoint, and its success (the attempt's row is written by the
                // `attempt_ended` trigger in the same statement).
                let single = match writes.as_slice() {
                    [Write::StepStarted { step, attempt, at, deadline_at }] => Some(
                        sqlx::query(concat!(
                            "UPDATE steps SET status = 'running', attempt = $1, attempt_started_at = $2,
                                    first_started_at = COALESCE(first_started_at, $2),
                                    deadline_at = COALESCE(deadline_at, $3), next_attempt_at = NULL
                             WHERE run_id = $4 AND step_id = $5
                               AND EXISTS (SELECT 1 FROM runs WHERE id = $4 AND generation = $6",
                            $share_lock,
                            ")"
                        ))
                        .bind(*attempt as i64)
                        .bind(*at)
                        .bind(*deadline_at)
                        .bind(run)
                        .bind(step)
                        .bind(generation)
                        .execute(&self.pool)
                        .await?,
                    ),
                    [Write::StepSucceeded { step, attempt, started_at, deadline_at, at, outputs }] => Some(
                        sqlx::query(concat!(
                            "UPDATE steps SET status = 'succeeded', finished_at = $1, attempt_ended_at = $1, outputs = $2,
                                    error = NULL, next_attempt_at = NULL, attempt = $3, attempt_started_at = $4,
                                    first_started_at = COALESCE(first_started_at, $4), deadline_at = COALESCE(deadline_at, $5)
                             WHERE run_id = $6 AND step_id = $7
                               AND EXISTS (SELECT 1 FROM runs WHERE id = $6 AND generation = $8",
                            $share_lock,
                            ")"
                        ))
                        .bind(*at)
                        .bind(to_json(outputs))
                        .bind(*attempt as i64)
                        .bind(*started_at)
                        .bind(*deadline_at)
                        .bind(run)
                        .bind(step)
                        .bind(generation)
                        .execute(&self.pool)
                        .await?,
                    ),
                    _ => None,
                };
                if let Some(done) = single {
                    if done.rows_affected() == 0 {
                        return Err(StoreError::Fenced { run: run.to_string(), generation });
                    }
                    return Ok(());
                }
                let mut tx = self.pool.begin().await?;
                // The fence: also takes the write lock on the run before anything else.
                let fenced = sqlx::query("UPDATE runs SET updated_at = $1 WHERE id = $2 AND generation = $3")
                    .bind(crate::now_ms())
                    .bind(run)
                    .bind(generation)
                    .execute(&mut *tx)
                    .await?;
                if fenced.rows_affected() == 0 {
                    return Err(StoreError::Fenced { run: run.to_string(), generation });
                }
                // Successes committed together (steps without side effects,
                // grouped by the executor): one statement for all of them.
                let (succeeded, writes): (Vec<Write>, Vec<Write>) =
                    writes.into_iter().partition(|w| matches!(w, Write::StepSucceeded { .. }));
                if succeeded.len() > 1 {
                    let rows: Vec<serde_json::Value> = succeeded
                        .iter()
                        .filter_map(|w| match w {
                            Write::StepSucceeded { step, attempt, started_at, deadline_at, at, outputs } => {
                                Some(serde_json::json!({
                                    "j_step": step, "j_attempt": attempt, "j_started_at": started_at,
                                    "j_deadline_at": deadline_at, "j_at": at, "j_outputs": to_json(outputs),
                                }))
                            }
                            _ => None,
                        })
                        .collect();
                    sqlx::query(concat!(
                        "WITH j AS MATERIALIZED (",
                        $success_rows,
                        ") UPDATE steps SET status = 'succeeded', finished_at = j_at, attempt_ended_at = j_at,
                                outputs = j_outputs, error = NULL, next_attempt_at = NULL, attempt = j_attempt,
                                attempt_started_at = j_started_at,
                                first_started_at = COALESCE(first_started_at, j_started_at),
                                deadline_at = COALESCE(deadline_at, j_deadline_at)
                         FROM j WHERE steps.run_id = $2 AND steps.step_id = j_step"
                    ))
                    .bind(serde_json::Value::Array(rows).to_string())
                    .bind(run)
                    .execute(&mut *tx)
                    .await?;
                }
                let writes = if succeeded.len() > 1 { writes } else { succeeded.into_iter().chain(writes).collect() };
                for write in writes {
                    match write {
                        Write::StepStarted { step, attempt, at, deadline_at } => {
                            sqlx::query(
                                "UPDATE steps SET status = 'running', attempt = $1, attempt_started_at = $2,
                                        first_started_at = COALESCE(first_started_at, $2),
                                        deadline_at = COALESCE(deadline_at, $3), next_attempt_at = NULL
                                 WHERE run_id = $4 AND step_id = $5",
                            )
                            .bind(attempt as i64)
                            .bind(at)
                            .bind(deadline_at)
                            .bind(run)
                            .bind(&step)
                            .execute(&mut *tx)
                            .await?;
                        }
                        Write::StepSucceeded { step, attempt, started_at, deadline_at, at, outputs } => {
                            sqlx::query(
                                "UPDATE steps SET status = 'succeeded', finished_at = $1, attempt_ended_at = $1, outputs = $2,
                                        error = NULL, next_attempt_at = NULL, attempt = $3, attempt_started_at = $4,
                                        first_started_at = COALESCE(first_started_at, $4), deadline_at = COALESCE(deadline_at, $5)
                                 WHERE run_id = $6 AND step_id = $7",
                            )
                            .bind(at)
                            .bind(to_json(&outputs))
                            .bind(attempt as i64)
                            .bind(started_at)
                            .bind(deadline_at)
                            .bind(run)
                            .bind(&step)
                            .execute(&mut *tx)
                            .await?;
                        }
                        Write::StepRetry { step, at, next_attempt_at, delay_ms, error, .. } => {
                            sqlx::query(
                                "UPDATE steps SET status = 'retry_wait', next_attempt_at = $1, error = $2, attempt_ended_at = $3,
                                        retry_delay_ms = $4
                                 WHERE run_id = $5 AND step_id = $6",
                            )
                            .bind(next_attempt_at)
                            .bind(to_json(&error))
                            .bind(at)
                            .bind(delay_ms)
                            .bind(run)
                            .bind(&step)
                            .execute(&mut *tx)
                            .await?;
                        }
                        Write::StepEnded { step, status, at, error } => {
                            let error = error.as_ref().map(to_json);
                            sqlx::query(
                                "UPDATE steps SET status = $1, finished_at = $2, attempt_ended_at = $2, error = $3, next_attempt_at = NULL
                                 WHERE run_id = $4 AND step_id = $5",
                            )
                            .bind(status.as_str())
                            .bind(at)
                            .bind(&error)
                            .bind(run)
                            .bind(&step)
                            .execute(&mut *tx)
                            .await?;
                        }
                        Write::RunStatus { status, at, error } => {
                            // A run that ends has honoured (or outlived) any cancel request.
                            sqlx::query(
                                "UPDATE runs SET status = $1, error = $2, finished_at = $3,
                                        cancel_requested = CASE WHEN $3 IS NULL THEN cancel_requested ELSE 0 END
                                 WHERE id = $4",
                            )
                                .bind(status.as_str())
                                .bind(error)
                                .bind(status.is_terminal().then_some(at))
                                .bind(run)
                                .execute(&mut *tx)
                                .await?;
                        }
                        Write::Recover { at, outage_ms } => {
                            sqlx::query(
                                "UPDATE steps SET deadline_at = deadline_at + $1
                                 WHERE run_id = $2 AND status IN ('running', 'interrupted', 'retry_wait') AND deadline_at IS NOT NULL",
                            )
                            .bind(outage_ms)
                            .bind(run)
                            .execute(&mut *tx)
                            .await?;
                            // Attempts cut by the death of their process are recorded (by the
                            // trigger) as interrupted.
                            sqlx::query(
                                "UPDATE steps SET status = 'interrupted', attempt_ended_at = $1, error = $2 WHERE run_id = $3 AND status = 'running'",
                            )
                            .bind(at)
                            .bind(to_json(&crate::kind::StepError::retryable(super::ENGINE_DIED)))
                            .bind(run)
                                .execute(&mut *tx)
                                .await?;
                            sqlx::query(
                                "UPDATE steps SET status = 'pending', attempt = 0, error = NULL, first_started_at = NULL,
                                        attempt_started_at = NULL, deadline_at = NULL, next_attempt_at = NULL, finished_at = NULL
                                 WHERE run_id = $1 AND status IN ('failed', 'blocked', 'cancelled')",
                            )
                            .bind(run)
                            .execute(&mut *tx)
                            .await?;
                            sqlx::query("UPDATE runs SET status = 'running', error = NULL, finished_at = NULL WHERE id = $1")
                                .bind(run)
                                .execute(&mut *tx)
                                .await?;
                        }
                        Write::Redefine { definition, reset, removed } => {
                            let reset: std::collections::HashSet<String> = reset.into_iter().collect();
                            sqlx::query("UPDATE runs SET definition = $1, workflow_name = $2 WHERE id = $3")
                                .bind(to_json(&*definition))
                                .bind(&definition.name)
                                .bind(run)
                                .execute(&mut *tx)
                                .await?;
                            for step in &removed {
                                sqlx::query("DELETE FROM steps WHERE run_id = $1 AND step_id = $2")
                                    .bind(run)
                                    .bind(step)
                                    .execute(&mut *tx)
                                    .await?;
                            }
                            for (position, step) in definition.steps.iter().enumerate() {
                                sqlx::query(
                                    "INSERT INTO steps (run_id, step_id, position, kind, hash, status) VALUES ($1, $2, $3, $4, $5, 'pending')
                                     ON CONFLICT (run_id, step_id) DO UPDATE SET position = excluded.position",
                                )
                                .bind(run)
                                .bind(&step.id)
                                .bind(position as i64)
                                .bind(&step.uses)
                                .bind(step.hash())
                                .execute(&mut *tx)
                                .await?;
                                if reset.contains(&step.id) {
                                    sqlx::query(
                                        "UPDATE steps SET status = 'pending', kind = $1, hash = $2, attempt = 0, outputs = NULL, error = NULL,
                                                first_started_at = NULL, attempt_started_at = NULL, deadline_at = NULL,
                                                next_attempt_at = NULL, finished_at = NULL
                                         WHERE run_id = $3 AND step_id = $4",
                                    )
                                    .bind(&step.uses)
                                    .bind(step.hash())
                                    .bind(run)
                                    .bind(&step.id)
                                    .execute(&mut *tx)
                                    .await?;
                                }
                            }
                        }
                        Write::Event { step, level, message, at } => {
                            insert_event(&mut tx, run, step, at, level, message).await?;
                        }
                        Write::Masks { masks } => {
                            sqlx::query("UPDATE runs SET masks = $1 WHERE id = $2").bind(masks).bind(run).execute(&mut *tx).await?;
                        }
                    }
                }
                tx.commit().await?;
                Ok(())
            }

            fn name(&self) -> String {
                self.name.clone()
            }

            async fn append_events(
                &self,
                run: &str,
                generation: i64,
                events: Vec<NewEvent>,
            ) -> Result<(), StoreError> {
                let mut tx = self.pool.begin().await?;
                let fenced = sqlx::query(concat!("SELECT 1 AS held FROM runs WHERE id = $1 AND generation = $2", $share_lock))
                    .bind(run)
                    .bind(generation)
                    .fetch_optional(&mut *tx)
                    .await?;
                if fenced.is_none() {
                    return Err(StoreError::Fenced { run: run.to_string(), generation });
                }
                for (step, level, message, at) in events {
                    insert_event(&mut tx, run, step, at, level, message).await?;
                }
                tx.commit().await?;
                Ok(())
            }

            async fn request_cancel(&self, run: &str) -> Result<(), StoreError> {
                let done = sqlx::query("UPDATE runs SET cancel_requested = 1 WHERE id = $1").bind(run).execute(&self.pool).await?;
                if done.rows_affected() == 0 {
                    return Err(StoreError::RunNotFound(run.to_string()));
                }
                Ok(())
            }

            async fn run(&self, run: &str) -> Result<RunRecord, StoreError> {
                let row = sqlx::query("SELECT * FROM runs WHERE id = $1").bind(run).fetch_optional(&self.pool).await?;
                match row {
                    Some(row) => run_record(&row),
                    None => Err(StoreError::RunNotFound(run.to_string())),
                }
            }

            async fn steps(&self, run: &str) -> Result<Vec<StepRecord>, StoreError> {
                let Some(as_json) = $steps_json else {
                    let rows = sqlx::query("SELECT * FROM steps WHERE run_id = $1 ORDER BY position")
                        .bind(run)
                        .fetch_all(&self.pool)
                        .await?;
                    return rows.iter().map(step_record).collect();
                };
                // One row holding every step as JSON: a run of 10,000 steps is
                // one answer, not 10,000 hand-offs from the database's thread.
                let text: Option<String> = sqlx::query_scalar(as_json).bind(run).fetch_one(&self.pool).await?;
                let Some(text) = text else { return Ok(Vec::new()) };
                #[derive(serde::Deserialize)]
                struct Row {
                    step_id: String,
                    position: i64,
                    kind: String,
                    hash: String,
                    status: String,
                    attempt: i64,
                    first_started_at: Option<i64>,
                    attempt_started_at: Option<i64>,
                    deadline_at: Option<i64>,
                    next_attempt_at: Option<i64>,
                    finished_at: Option<i64>,
                    outputs: Option<String>,
                    error: Option<String>,
                }
                let mut rows: Vec<Row> = parse_json(&text, "steps")?;
                rows.sort_by_key(|r| r.position);
                rows.into_iter()
                    .map(|r| {
                        Ok(StepRecord {
                            step_id: r.step_id,
                            position: r.position,
                            kind: r.kind,
                            hash: r.hash,
                            status: StepStatus::parse(&r.status)?,
                            attempt: r.attempt as u32,
                            first_started_at: r.first_started_at,
                            attempt_started_at: r.attempt_started_at,
                            deadline_at: r.deadline_at,
                            next_attempt_at: r.next_attempt_at,
                            finished_at: r.finished_at,
                            outputs: r.outputs.map(|o| parse_json(&o, "step outputs")).transpose()?,
                            error: r.error.map(|e| parse_json(&e, "step error")).transpose()?,
                        })
                    })
                    .collect()
            }

            async fn attempts(&self, run: &str) -> Result<Vec<AttemptRecord>, StoreError> {
                let rows = sqlx::query("SELECT * FROM attempts WHERE run_id = $1 ORDER BY id").bind(run).fetch_all(&self.pool).await?;
                rows.iter()
                    .map(|row| {
                        let error: Option<String> = row.try_get("error")?;
                        Ok(AttemptRecord {
                            step_id: row.try_get("step_id")?,
                            attempt: row.try_get::<i64, _>("attempt")? as u32,
                            started_at: row.try_get("started_at")?,
                            finished_at: row.try_get("finished_at")?,
                            outcome: row.try_get("outcome")?,
                            error: error.map(|e| parse_json(&e, "attempt error")).transpose()?,
                            retry_delay_ms: row.try_get("retry_delay_ms")?,
                        })
                    })
                    .collect()
            }

            async fn events(&self, run: &str, step: Option<&str>, after_id: i64, limit: i64) -> Result<Vec<EventRecord>, StoreError> {
                let rows = match step {
                    Some(step) => sqlx::query(
                        "SELECT * FROM events WHERE run_id = $1 AND id > $2 AND step_id = $3 ORDER BY id LIMIT $4",
                    )
                    .bind(run)
                    .bind(after_id)
                    .bind(step)
                    .bind(limit)
                    .fetch_all(&self.pool)
                    .await?,
                    None => sqlx::query("SELECT * FROM events WHERE run_id = $1 AND id > $2 ORDER BY id LIMIT $3")
                        .bind(run)
                        .bind(after_id)
                        .bind(limit)
                        .fetch_all(&self.pool)
                        .await?,
                };
                rows.iter()
                    .map(|row| {
                        Ok(EventRecord {
                            id: row.try_get("id")?,
                            step_id: row.try_get("step_id")?,
                            at: row.try_get("at")?,
                            level: row.try_get("level")?,
                            message: row.try_get("message")?,
                        })
                    })
                    .collect()
            }

            async fn list_runs(&self, query: &RunsQuery) -> Result<Vec<RunRecord>, StoreError> {
                // Newest first from the `runs_newest` index, in its order: a
                // page starts where the previous one ended, however many runs.
                // The first page starts after the end of time.
                let (before_at, before_id) = query.before.clone().unwrap_or((i64::MAX, String::new()));
                let rows = sqlx::query(
                    "SELECT * FROM runs
                     WHERE created_at <= $1 AND (created_at < $1 OR id < $2)
                       AND (CAST($3 AS TEXT) IS NULL OR status = $3)
                       AND (CAST($4 AS TEXT) IS NULL OR workflow_name = $4)
                     ORDER BY created_at DESC, id DESC LIMIT $5",
                )
                .bind(before_at)
                .bind(before_id)
                .bind(query.status.map(RunStatus::as_str))
                .bind(query.workflow.as_deref())
                .bind(query.limit)
                .fetch_all(&self.pool)
                .await?;
                rows.iter().map(run_record).collect()
            }
        }
    };
}

pub(crate) use sql_store;
