//! The embedded default backend: SQLite in WAL mode, a file or in memory.

use std::borrow::Cow;
use std::str::FromStr as _;
use std::time::Duration;

use sqlx::SqlSafeStr as _;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use tokio::sync::{mpsc, oneshot};

use super::sql::impl_store;
use super::{OwnedPost, Posted, StoreError};

mod batch;

/// A [`Store`](super::Store) on SQLite.
///
/// Writes on the hot path are group-committed: concurrent posts, request nonces, leased
/// fetches (they write leases) and acknowledgements queue for one writer task, which applies up
/// to [`MAX_BATCH`] of them in one transaction (one fsync) with a handful of multi-row
/// statements, and answers each only after the commit. No two of them ever wait for SQLite's
/// write lock (whose busy handler sleeps whole milliseconds).
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    writer: mpsc::Sender<batch::Op>,
}

/// The most writes one group commit holds.
pub const MAX_BATCH: usize = 256;

fn migrator() -> Migrator {
    Migrator::with_migrations(vec![
        Migration::new(
            1,
            Cow::Borrowed("init"),
            MigrationType::Simple,
            include_str!("../../migrations/sqlite/0001_init.sql").into_sql_str(),
            false,
        ),
        Migration::new(
            2,
            Cow::Borrowed("leases"),
            MigrationType::Simple,
            include_str!("../../migrations/sqlite/0002_leases.sql").into_sql_str(),
            false,
        ),
        Migration::new(
            3,
            Cow::Borrowed("robustness"),
            MigrationType::Simple,
            include_str!("../../migrations/sqlite/0003_robustness.sql").into_sql_str(),
            false,
        ),
    ])
}

impl SqliteStore {
    /// Opens (creating if missing) `sqlite://PATH`, or `sqlite::memory:`; WAL journal, full
    /// fsync on commit, foreign keys on; applies migrations.
    ///
    /// # Errors
    /// [`StoreError::Database`] if the file cannot be opened, [`StoreError::Migration`] if the
    /// schema cannot be brought up to date.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let memory = url.contains(":memory:");
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10))
            .synchronous(SqliteSynchronous::Full);
        let options = if memory {
            options
        } else {
            options.journal_mode(SqliteJournalMode::Wal)
        };
        // In memory, every connection would be its own database: keep exactly one.
        let pool = SqlitePoolOptions::new()
            .max_connections(if memory { 1 } else { 4 })
            .min_connections(if memory { 1 } else { 0 })
            .idle_timeout(if memory {
                None
            } else {
                Some(Duration::from_secs(600))
            })
            .max_lifetime(if memory {
                None
            } else {
                Some(Duration::from_secs(3600))
            })
            .connect_with(options)
            .await?;
        migrator().run(&pool).await?;
        let (writer, queue) = mpsc::channel(4 * MAX_BATCH);
        tokio::spawn(batch::writer(pool.clone(), queue));
        Ok(Self { pool, writer })
    }

    async fn post_committed(&self, post: &super::Post<'_>) -> Result<Posted, StoreError> {
        let (answer, result) = oneshot::channel();
        self.queue(batch::Op::Post(OwnedPost::from_post(post), answer))
            .await?;
        result.await.map_err(|_| writer_stopped())?
    }

    async fn use_nonce_committed(
        &self,
        device: switchboard_protocol::DeviceId,
        nonce: &[u8],
        expires_at: u64,
        now: u64,
    ) -> Result<bool, StoreError> {
        let (answer, result) = oneshot::channel();
        let nonce = batch::NonceUse {
            device,
            nonce: nonce.to_vec(),
            expires_at,
            now,
        };
        self.queue(batch::Op::Nonce(nonce, answer)).await?;
        result.await.map_err(|_| writer_stopped())?
    }

    async fn fetch_leased_committed(
        &self,
        fetch: super::LeasedFetch,
    ) -> Result<Vec<super::InboxItem>, StoreError> {
        let (answer, result) = oneshot::channel();
        self.queue(batch::Op::Fetch(fetch, answer)).await?;
        result.await.map_err(|_| writer_stopped())?
    }

    async fn ack_committed(&self, ack: super::AckUpTo) -> Result<u64, StoreError> {
        let (answer, result) = oneshot::channel();
        self.queue(batch::Op::Ack(ack, answer)).await?;
        result.await.map_err(|_| writer_stopped())?
    }

    async fn queue(&self, op: batch::Op) -> Result<(), StoreError> {
        self.writer.send(op).await.map_err(|_| writer_stopped())
    }
}

fn writer_stopped() -> StoreError {
    StoreError::CommitFailed("the writer task has stopped".to_owned())
}

impl_store!(SqliteStore, sqlx::Sqlite, "BEGIN IMMEDIATE");
