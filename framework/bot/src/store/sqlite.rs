//! The embedded default backend: SQLite in WAL mode with full fsync, a file or in memory.

use std::path::Path;
use std::str::FromStr as _;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use switchboard_protocol::DeviceId;

use super::sql::{impl_bot_store, migrator};
use super::{StoreError, StoreKey, redact};

/// A [`BotStore`](super::BotStore) on SQLite.
///
/// Commits are group-committed by one writer task (`BEGIN IMMEDIATE`, one fsync per group);
/// reads run on the pool's other connections beside it (WAL).
#[derive(Debug)]
pub struct SqliteStore {
    pool: SqlitePool,
    device: DeviceId,
    device_hex: String,
    key: StoreKey,
    group: super::group::GroupCommit,
}

/// The batch writer behind [`SqliteStore`].
#[derive(Debug)]
struct SqliteWriter {
    pool: SqlitePool,
    device: String,
}

impl SqliteStore {
    /// Opens `sqlite://PATH` (the file is created with mode 0600 if missing) or
    /// `sqlite::memory:` (one connection), and brings the schema up to date.
    ///
    /// # Errors
    /// [`StoreError::Config`] for a URL SQLite does not understand or a newer schema,
    /// [`StoreError::Database`] if the file cannot be created or opened.
    pub async fn open(url: &str, device: DeviceId, key: StoreKey) -> Result<Self, StoreError> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|e| StoreError::Config(format!("bad SQLite URL {:?}: {e}", redact(url))))?;
        let memory = url.contains(":memory:") || url.contains("mode=memory");
        if !memory {
            create_private(options.get_filename()).await?;
        }
        let options = options
            .create_if_missing(true)
            .busy_timeout(Duration::from_secs(10))
            .synchronous(SqliteSynchronous::Full);
        let (options, pool) = if memory {
            // Every connection would be a database of its own: keep exactly one, for good.
            let pool = SqlitePoolOptions::new()
                .test_before_acquire(false)
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None);
            (options, pool)
        } else {
            // The writer task plus readers beside it (WAL lets them read during a commit).
            // No ping before each use: a file has no connection to lose.
            let pool = SqlitePoolOptions::new()
                .test_before_acquire(false)
                .max_connections(4)
                .idle_timeout(Duration::from_secs(600));
            (options.journal_mode(SqliteJournalMode::Wal), pool)
        };
        let pool = pool.connect_with(options).await?;
        migrator(include_str!("migrations/sqlite/0001_init.sql"))
            .run(&pool)
            .await?;
        Ok(Self::start(pool, device, key))
    }
}

/// Creates the database file, empty and readable by its owner only, unless it exists (SQLite
/// gives its `-wal` and `-shm` files the same mode).
async fn create_private(path: &Path) -> Result<(), StoreError> {
    let mut create = tokio::fs::OpenOptions::new();
    create.write(true).create_new(true);
    #[cfg(unix)]
    create.mode(0o600);
    match create.open(path).await {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(StoreError::Database(format!(
            "cannot create the store file {}: {e}",
            path.display()
        ))),
    }
}

impl_bot_store!(SqliteStore, SqliteWriter, sqlx::Sqlite, "BEGIN IMMEDIATE");
