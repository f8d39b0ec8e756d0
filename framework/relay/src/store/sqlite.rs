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

/// A [`Store`](super::Store) on SQLite.
///
/// Posts are group-committed: concurrent posts queue for one writer task, which applies up to
/// [`MAX_BATCH`] of them in one transaction (one fsync) and answers each only after the commit.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    writer: mpsc::Sender<(OwnedPost, oneshot::Sender<Result<Posted, StoreError>>)>,
}

/// The most posts one group commit holds.
pub const MAX_BATCH: usize = 256;

/// The writer task: takes whatever posts are queued (at least one), commits them together,
/// answers each.
async fn group_commit(
    pool: SqlitePool,
    mut queue: mpsc::Receiver<(OwnedPost, oneshot::Sender<Result<Posted, StoreError>>)>,
) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while queue.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let posts: Vec<OwnedPost> = batch.iter().map(|(post, _)| post.clone()).collect();
        match post_batch(&pool, &posts).await {
            Ok(results) => {
                for ((_, answer), result) in batch.drain(..).zip(results) {
                    let _ = answer.send(result);
                }
            }
            Err(e) => {
                tracing::error!(error = %e, posts = batch.len(), "group commit failed");
                for (_, answer) in batch.drain(..) {
                    let _ = answer.send(Err(StoreError::CommitFailed(e.to_string())));
                }
            }
        }
    }
}

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
        tokio::spawn(group_commit(pool.clone(), queue));
        Ok(Self { pool, writer })
    }

    async fn post_committed(&self, post: &super::Post<'_>) -> Result<Posted, StoreError> {
        let (answer, result) = oneshot::channel();
        self.writer
            .send((OwnedPost::from_post(post), answer))
            .await
            .map_err(|_| StoreError::CommitFailed("the writer task has stopped".to_owned()))?;
        result
            .await
            .map_err(|_| StoreError::CommitFailed("the writer task has stopped".to_owned()))?
    }
}

impl_store!(SqliteStore, sqlx::Sqlite, "BEGIN IMMEDIATE");
