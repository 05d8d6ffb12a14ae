//! The embedded default: a SQLite file in WAL mode.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};

use super::StoreError;

#[derive(Clone, Debug)]
pub struct SqliteStore {
    pub(super) pool: SqlitePool,
    name: String,
}

impl SqliteStore {
    /// Opens the file (creating it and its directory), in WAL mode with
    /// `synchronous = NORMAL` (a commit survives a process crash; WAL is
    /// checkpointed safely), then runs migrations.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| StoreError::Database(sqlx::Error::Io(e)))?;
        }
        let options = SqliteConnectOptions::from_str(&format!("sqlite://{}", path.display()))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(30));
        let pool = pool_options().connect_with(options).await?;
        // SQLite has no lock for migrations: two processes opening a new file
        // at once (a `run` and a `status`) may apply the same one. Each is
        // applied in a transaction with its record, so the loser fails whole,
        // and on its next try finds it applied.
        let mut tries = 0u64;
        loop {
            match sqlx::migrate!("../migrations/sqlite").run(&pool).await {
                Ok(()) => break,
                Err(_) if tries < 5 => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(20 * tries + fastrand::u64(..20))).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(Self { pool, name: path.display().to_string() })
    }
}

/// One connection: SQLite takes one writer at a time anyway, and a single
/// connection keeps its page cache warm (another connection writing would
/// invalidate it). No ping before each use: the file is local. No idle reaper:
/// sqlx 0.9's can spin at full CPU and keep the process from exiting
/// (transact-rs/sqlx#3645), and a connection kept for the process's life has
/// nothing to reap.
fn pool_options() -> SqlitePoolOptions {
    SqlitePoolOptions::new().max_connections(1).test_before_acquire(false).idle_timeout(None).max_lifetime(None)
}

/// SQLite serves one machine: its processes share this clock.
async fn local_clock(_: &SqlitePool, now: i64) -> Result<i64, StoreError> {
    Ok(now)
}

/// One statement picks and takes the run: SQLite runs one writer at a time,
/// so no other claim or acquire sees the stack between the two. The last
/// heartbeat is left as it was: the driver learns from it how long nobody
/// drove the run.
async fn claim(
    pool: &SqlitePool,
    holder: &super::Holder,
    ttl_ms: i64,
    now: i64,
) -> Result<Option<(String, i64)>, StoreError> {
    let claimed: Option<(String, i64)> = sqlx::query_as(concat!(
        "UPDATE runs SET generation = generation + 1, lease_owner = $1, lease_host = $2, lease_pid = $3,
                lease_expires_at = $4, updated_at = $5
         WHERE id = (SELECT r.id FROM runs r
                     WHERE r.queued_at IS NOT NULL AND r.status NOT IN ('succeeded', 'failed', 'cancelled')
                       AND (r.lease_owner IS NULL OR r.lease_expires_at < $5)
                       AND (r.stack IS NULL OR NOT EXISTS (SELECT 1 FROM runs o WHERE ",
        super::sql::queued_before!("r.stack", "r.id", "r.queued_at", "$5"),
        ")) ORDER BY r.queued_at, r.id LIMIT 1)
         RETURNING id, generation"
    ))
    .bind(&holder.owner)
    .bind(&holder.host)
    .bind(holder.pid)
    .bind(now + ttl_ms)
    .bind(now)
    .fetch_optional(pool)
    .await?;
    Ok(claimed)
}

super::sql::sql_store!(
    SqliteStore,
    sqlx::Sqlite,
    sqlx::sqlite::SqliteRow,
    "",
    local_clock,
    "SELECT json_extract(value, '$.j_step') AS j_step, json_extract(value, '$.j_attempt') AS j_attempt,
             json_extract(value, '$.j_started_at') AS j_started_at, json_extract(value, '$.j_deadline_at') AS j_deadline_at,
             json_extract(value, '$.j_at') AS j_at, json_extract(value, '$.j_outputs') AS j_outputs
     FROM json_each($1)",
    Some("SELECT json_group_array(json_object('step_id', step_id, 'position', position, 'kind', kind, 'hash', hash, 'status', status, 'attempt', attempt, 'first_started_at', first_started_at, 'attempt_started_at', attempt_started_at, 'deadline_at', deadline_at, 'next_attempt_at', next_attempt_at, 'finished_at', finished_at, 'outputs', outputs, 'error', error))
     FROM (SELECT * FROM steps WHERE run_id = $1 ORDER BY position)"),
    None::<&'static str>,
    claim
);

#[cfg(test)]
mod tests {
    /// sqlx's idle reaper can read its idle count while a connection is handed
    /// back and taken at once, see it wrapped around to 2^64, and spin at full
    /// CPU; the process then never exits once its run is done. A pool that
    /// keeps one connection for the process's life has nothing to reap.
    #[test]
    fn the_pool_runs_no_idle_reaper() {
        let options = super::pool_options();
        assert_eq!((options.get_idle_timeout(), options.get_max_lifetime()), (None, None));
    }
}
