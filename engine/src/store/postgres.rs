//! Shared state in PostgreSQL, for runs driven from several machines.

use std::time::Duration;

use sqlx::postgres::{PgPool, PgPoolOptions};

use super::StoreError;

#[derive(Clone, Debug)]
pub struct PgStore {
    pub(super) pool: PgPool,
    name: String,
}

impl PgStore {
    /// Connects (with a deadline) and runs migrations.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let pool = pool_options().connect_with(connect_options(url)?).await?;
        sqlx::migrate!("../migrations/postgres").run(&pool).await?;
        Ok(Self { pool, name: super::shown_url(url) })
    }
}

/// No ping before each use (a round trip per checkpoint): a broken connection
/// fails its statement, and the engine retries or stops. No idle reaper, as on
/// SQLite (transact-rs/sqlx#3645): the store's connections live as long as it.
fn pool_options() -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(8)
        .test_before_acquire(false)
        .acquire_timeout(Duration::from_secs(15))
        .idle_timeout(None)
        .max_lifetime(None)
}

/// The URL's options; on a loopback host with no `sslmode` given, TLS is not
/// tried (it protects nothing there, and readying it costs each process about
/// 150 ms of entropy gathering). Any `sslmode` in the URL is kept as written.
fn connect_options(url: &str) -> Result<sqlx::postgres::PgConnectOptions, StoreError> {
    use std::str::FromStr;
    let options = sqlx::postgres::PgConnectOptions::from_str(url)?;
    let loopback = matches!(options.get_host(), "127.0.0.1" | "localhost" | "::1" | "[::1]")
        || options.get_host().starts_with('/');
    if loopback && !url.contains("sslmode=") {
        return Ok(options.ssl_mode(sqlx::postgres::PgSslMode::Disable));
    }
    Ok(options)
}

/// Leases are written and compared on the database's clock: processes on
/// machines whose clocks disagree still agree on when a lease expires.
async fn database_clock(pool: &PgPool, _local: i64) -> Result<i64, StoreError> {
    use sqlx::Row;
    let row =
        sqlx::query("SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint AS now").fetch_one(pool).await?;
    Ok(row.try_get("now")?)
}

/// Workers pick queued runs with `FOR UPDATE SKIP LOCKED`, so two of them
/// never wait on the same row, leaving out those whose stack is busy (so runs
/// waiting for a busy stack never hide others). A run's stack is then looked at
/// again under the stack's advisory lock (tried, not waited for: a stack
/// another claim or acquire is taking is skipped), so no two runs of one stack
/// are taken. The lock's first key, 3234, keeps ca-a2a-flow's stack locks apart
/// from other users of advisory locks on the same database.
async fn claim(
    pool: &PgPool,
    holder: &super::Holder,
    ttl_ms: i64,
    now: i64,
) -> Result<Option<(String, i64)>, StoreError> {
    use sqlx::Row;
    let mut tx = pool.begin().await?;
    let candidates = sqlx::query(concat!(
        "SELECT r.id, r.stack, r.queued_at FROM runs r
             WHERE r.queued_at IS NOT NULL AND r.status NOT IN ('succeeded', 'failed', 'cancelled')
               AND (r.lease_owner IS NULL OR r.lease_expires_at < $1)
               AND (r.stack IS NULL OR NOT EXISTS (SELECT 1 FROM runs o WHERE ",
        super::sql::queued_before!("r.stack", "r.id", "r.queued_at", "$1"),
        ")) ORDER BY r.queued_at, r.id LIMIT 16 FOR UPDATE OF r SKIP LOCKED"
    ))
    .bind(now)
    .fetch_all(&mut *tx)
    .await?;
    for row in candidates {
        let id: String = row.try_get("id")?;
        let stack: Option<String> = row.try_get("stack")?;
        let queued_at: i64 = row.try_get("queued_at")?;
        if let Some(stack) = &stack {
            let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock(3234, hashtext($1))")
                .bind(stack)
                .fetch_one(&mut *tx)
                .await?;
            let busy: bool = locked
                && sqlx::query_scalar(concat!(
                    "SELECT EXISTS (SELECT 1 FROM runs o WHERE ",
                    super::sql::queued_before!("$1", "$2", "$3", "$4"),
                    ")"
                ))
                .bind(stack)
                .bind(&id)
                .bind(queued_at)
                .bind(now)
                .fetch_one(&mut *tx)
                .await?;
            if !locked || busy {
                continue;
            }
        }
        // The last heartbeat is left as it was: the driver learns from it how
        // long nobody drove the run.
        let generation: i64 = sqlx::query_scalar(
            "UPDATE runs SET generation = generation + 1, lease_owner = $1, lease_host = $2, lease_pid = $3,
                    lease_expires_at = $4, updated_at = $5
             WHERE id = $6 RETURNING generation",
        )
        .bind(&holder.owner)
        .bind(&holder.host)
        .bind(holder.pid)
        .bind(now + ttl_ms)
        .bind(now)
        .bind(&id)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        return Ok(Some((id, generation)));
    }
    tx.commit().await?;
    Ok(None)
}

super::sql::sql_store!(
    PgStore,
    sqlx::Postgres,
    sqlx::postgres::PgRow,
    " FOR SHARE",
    database_clock,
    "SELECT * FROM jsonb_to_recordset($1::jsonb)
        AS r(j_step text, j_attempt bigint, j_started_at bigint, j_deadline_at bigint, j_at bigint, j_outputs text)",
    // Rows, as they come: on Postgres (one socket, no worker thread) they are
    // faster than building one JSON document of them.
    None::<&'static str>,
    Some("SELECT pg_advisory_xact_lock(3234, hashtext($1))"),
    claim
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_is_not_tried_on_loopback_unless_the_url_asks_for_it() {
        let mode = |url: &str| format!("{:?}", connect_options(url).unwrap().get_ssl_mode());
        assert_eq!(mode("postgres://u@127.0.0.1:5432/db"), "Disable");
        assert_eq!(mode("postgres://u@localhost/db?sslmode=require"), "Require");
        assert_eq!(mode("postgres://u@db.internal:5432/db"), "Prefer");
    }

    /// As on SQLite: sqlx's idle reaper can spin at full CPU and keep the
    /// process from exiting; the store's few connections live as long as it.
    #[test]
    fn the_pool_runs_no_idle_reaper() {
        let options = pool_options();
        assert_eq!((options.get_idle_timeout(), options.get_max_lifetime()), (None, None));
    }
}
