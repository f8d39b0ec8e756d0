//! The PostgreSQL backend: several relay processes can share one database.

use std::borrow::Cow;
use std::time::Duration;

use sqlx::SqlSafeStr as _;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::postgres::{PgPool, PgPoolOptions};

use super::StoreError;
use super::sql::impl_store;

/// A [`Store`](super::Store) on PostgreSQL.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
}

fn migrator() -> Migrator {
    Migrator::with_migrations(vec![
        Migration::new(
            1,
            Cow::Borrowed("init"),
            MigrationType::Simple,
            include_str!("../../migrations/postgres/0001_init.sql").into_sql_str(),
            false,
        ),
        Migration::new(
            2,
            Cow::Borrowed("leases"),
            MigrationType::Simple,
            include_str!("../../migrations/postgres/0002_leases.sql").into_sql_str(),
            false,
        ),
        Migration::new(
            3,
            Cow::Borrowed("robustness"),
            MigrationType::Simple,
            include_str!("../../migrations/postgres/0003_robustness.sql").into_sql_str(),
            false,
        ),
    ])
}

impl PostgresStore {
    /// Connects to `postgres://...` and applies migrations (under PostgreSQL's advisory lock, so
    /// several relays starting at once migrate once).
    ///
    /// # Errors
    /// [`StoreError::Database`] if the database cannot be reached, [`StoreError::Migration`] if
    /// the schema cannot be brought up to date.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(10))
            .connect(url)
            .await?;
        migrator().run(&pool).await?;
        Ok(Self { pool })
    }

    /// Drops every relay table (for tests that need an empty database).
    ///
    /// # Errors
    /// [`StoreError::Database`] if the statements fail.
    pub async fn reset(url: &str) -> Result<(), StoreError> {
        let pool = PgPoolOptions::new().max_connections(1).connect(url).await?;
        sqlx::raw_sql(
            "DROP TABLE IF EXISTS posted_messages, leases, inbox, nonces, thread_members, threads, entities, devices, \
             _sqlx_migrations CASCADE",
        )
        .execute(&pool)
        .await?;
        pool.close().await;
        Ok(())
    }
}

impl PostgresStore {
    /// One post, one transaction: PostgreSQL serves concurrent connections and groups their
    /// commits itself.
    async fn post_committed(&self, post: &super::Post<'_>) -> Result<super::Posted, StoreError> {
        let mut tx = self.pool.begin().await?;
        let posted = post_in(&mut tx, post).await?;
        tx.commit().await?;
        Ok(posted)
    }

    async fn open_thread_committed(
        &self,
        t: &super::ThreadRecord,
        open: &[u8],
    ) -> Result<super::Posted, StoreError> {
        use super::{ItemKind, to_i64};
        let mut tx = self.pool.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO threads (thread_id, entity, customer, admin, epoch, next_seq) \
             VALUES ($1, $2, $3, $4, $5, 1) ON CONFLICT (thread_id) DO NOTHING",
        )
        .bind(t.thread.to_string())
        .bind(t.entity.as_str())
        .bind(t.customer.to_string())
        .bind(t.admin.to_string())
        .bind(to_i64(t.epoch, "epoch")?)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if inserted == 0 {
            return Err(StoreError::Conflict(format!("thread {} exists", t.thread)));
        }
        for member in &t.members {
            sqlx::query("INSERT INTO thread_members (thread_id, device_id) VALUES ($1, $2)")
                .bind(t.thread.to_string())
                .bind(member.to_string())
                .execute(&mut *tx)
                .await?;
        }
        let thread_seq = bump_thread(&mut tx, t.thread).await?;
        enqueue(
            &mut tx,
            t.admin,
            t.thread,
            thread_seq,
            t.customer,
            ItemKind::ThreadOpen,
            open,
        )
        .await?;
        tx.commit().await?;
        Ok(super::Posted::new(thread_seq, vec![t.admin]))
    }

    async fn post_once_committed(
        &self,
        post: &super::Post<'_>,
        nonce: &super::RequestNonce,
    ) -> Result<super::Posted, StoreError> {
        let mut tx = self.pool.begin().await?;
        if !nonce_in(
            &mut tx,
            nonce.device,
            &nonce.nonce,
            nonce.expires_at,
            nonce.now,
        )
        .await?
        {
            // Spent before: nothing to write.
            tx.rollback().await?;
            return Err(StoreError::Replayed);
        }
        // The nonce stays spent even if the post is refused: the post runs under a savepoint.
        sqlx::query("SAVEPOINT post").execute(&mut *tx).await?;
        let result = post_in(&mut tx, post).await;
        if result.is_err() {
            sqlx::query("ROLLBACK TO SAVEPOINT post")
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        result
    }

    async fn fetch_leased_committed(
        &self,
        fetch: super::LeasedFetch,
    ) -> Result<Vec<super::InboxItem>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let items = fetch_leased_in(&mut tx, &fetch).await?;
        tx.commit().await?;
        Ok(items)
    }

    /// `Store::fetch` (`device` as stored, the numbers converted).
    async fn fetch_page(
        &self,
        device: String,
        after: i64,
        limit: i64,
        max_bytes: i64,
    ) -> Result<Vec<super::InboxItem>, StoreError> {
        // One statement: the page's lengths first, the payloads of the page only.
        let sql = super::page_sql(
            "",
            "SELECT seq AS s, CAST(length(payload) AS BIGINT) AS len FROM inbox \
             WHERE device_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
            "$4",
        );
        let rows: Vec<super::InboxRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(device)
            .bind(after)
            .bind(limit)
            .bind(max_bytes)
            .fetch_all(&self.pool)
            .await?;
        rows.into_iter().map(super::inbox_item).collect()
    }

    async fn ack_committed(&self, ack: super::AckUpTo) -> Result<u64, StoreError> {
        let mut tx = self.pool.begin().await?;
        let done = ack_in(&mut tx, &ack).await?;
        tx.commit().await?;
        Ok(done)
    }

    async fn use_nonce_committed(
        &self,
        device: switchboard_protocol::DeviceId,
        nonce: &[u8],
        expires_at: u64,
        now: u64,
    ) -> Result<bool, StoreError> {
        use_nonce_alone(&self.pool, device, nonce, expires_at, now).await
    }
}

impl_store!(PostgresStore, sqlx::Postgres, "BEGIN");
