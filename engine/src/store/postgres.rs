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
        let pool =
            // No ping before each use (a round trip per checkpoint): a broken
            // connection fails its statement, and the engine retries or stops.
            PgPoolOptions::new()
                .max_connections(8)
                .test_before_acquire(false)
                .acquire_timeout(Duration::from_secs(15))
                .connect(url)
                .await?;
        sqlx::migrate!("../migrations/postgres").run(&pool).await?;
        Ok(Self { pool, name: super::shown_url(url) })
    }
}

/// Leases are written and compared on the database's clock: processes on
/// machines whose clocks disagree still agree on when a lease expires.
async fn database_clock(pool: &PgPool, _local: i64) -> Result<i64, StoreError> {
    use sqlx::Row;
    let row =
        sqlx::query("SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint AS now").fetch_one(pool).await?;
    Ok(row.try_get("now")?)
}

super::sql::sql_store!(PgStore, sqlx::Postgres, sqlx::postgres::PgRow, " FOR SHARE", database_clock);
