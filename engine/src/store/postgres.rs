//! Shared state in PostgreSQL, for runs driven from several machines.

use std::time::Duration;

use sqlx::postgres::{PgPool, PgPoolOptions};

use super::StoreError;

#[derive(Clone, Debug)]
pub struct PgStore {
    pub(super) pool: PgPool,
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
        Ok(Self { pool })
    }
}

super::sql::sql_store!(PgStore, sqlx::Postgres, sqlx::postgres::PgRow, " FOR SHARE");
