//! The embedded default backend: SQLite in WAL mode, a file or in memory.

use std::borrow::Cow;
use std::str::FromStr as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
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
mod read;

/// A [`Store`](super::Store) on SQLite.
///
/// Writes on the hot path are group-committed: concurrent posts, request nonces, leased
/// fetches (they write leases) and acknowledgements queue for one writer, on an OS thread of
/// its own over a synchronous connection, which applies up to [`MAX_BATCH`] of them in one
/// transaction (one fsync) and answers each only after the commit. No two of them ever wait
/// for SQLite's write lock (whose busy handler sleeps whole milliseconds). Reads run beside it
/// (WAL): inbox pages on synchronous connections of the store's own, on the asking task
/// (module `read`), the rest on an sqlx pool.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    writer: mpsc::Sender<batch::Op>,
    readers: Arc<read::Readers>,
    /// The temporary file behind `sqlite::memory:`, removed with the last clone.
    _temporary: Option<Arc<Temporary>>,
}

/// The private file behind `sqlite::memory:`: a new name under the system's temporary
/// directory, removed (with its `-wal` and `-shm` files) on drop. (The writer's own connection
/// could not see an in-memory database of the pool's.)
#[derive(Debug)]
struct Temporary(std::path::PathBuf);

impl Temporary {
    fn new() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let name = format!(
            "switchboard-relay-{}-{nanos}-{}.db",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        Self(std::env::temp_dir().join(name))
    }
}

impl Drop for Temporary {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm"] {
            let mut path = self.0.clone().into_os_string();
            path.push(suffix);
            // Gone already, or never created: nothing to do.
            let _ = std::fs::remove_file(path);
        }
    }
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
    /// Opens (creating if missing) `sqlite://PATH`, or `sqlite::memory:` (a private temporary
    /// file without fsync, removed when the store is dropped); WAL journal, full fsync on
    /// commit, foreign keys on; applies migrations.
    ///
    /// # Errors
    /// [`StoreError::Database`] if the file cannot be opened, [`StoreError::Migration`] if the
    /// schema cannot be brought up to date.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let memory = url.contains(":memory:");
        let (options, temporary) = if memory {
            let temporary = Temporary::new();
            let options = SqliteConnectOptions::new().filename(&temporary.0);
            (options, Some(Arc::new(temporary)))
        } else {
            (SqliteConnectOptions::from_str(url)?, None)
        };
        let path = options.get_filename().to_path_buf();
        let options = options
            .create_if_missing(true)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10))
            .synchronous(if memory {
                SqliteSynchronous::Off
            } else {
                SqliteSynchronous::Full
            })
            .journal_mode(SqliteJournalMode::Wal);
        // No ping before each use: a file has no connection to lose.
        let pool = SqlitePoolOptions::new()
            .test_before_acquire(false)
            .max_connections(4)
            .idle_timeout(Some(Duration::from_secs(600)))
            .max_lifetime(Some(Duration::from_secs(3600)))
            .connect_with(options)
            .await?;
        migrator().run(&pool).await?;
        let writer = batch::start(&path, !memory)?;
        Ok(Self {
            pool,
            writer,
            readers: read::Readers::new(&path),
            _temporary: temporary,
        })
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

    async fn open_thread_committed(
        &self,
        t: &super::ThreadRecord,
        open: &[u8],
    ) -> Result<Posted, StoreError> {
        let (answer, result) = oneshot::channel();
        self.queue(batch::Op::Open(t.clone(), open.to_vec(), answer))
            .await?;
        result.await.map_err(|_| writer_stopped())?
    }

    async fn post_once_committed(
        &self,
        post: &super::Post<'_>,
        nonce: &super::RequestNonce,
    ) -> Result<Posted, StoreError> {
        let (answer, result) = oneshot::channel();
        let mut owned = OwnedPost::from_post(post);
        owned.nonce = Some(nonce.clone());
        self.queue(batch::Op::Post(owned, answer)).await?;
        result.await.map_err(|_| writer_stopped())?
    }

    async fn fetch_leased_committed(
        &self,
        fetch: super::LeasedFetch,
    ) -> Result<Vec<super::InboxItem>, StoreError> {
        if let Some(items) = self.fetch_leased_read(&fetch).await? {
            return Ok(items);
        }
        let (answer, result) = oneshot::channel();
        self.queue(batch::Op::Fetch(fetch, answer)).await?;
        result.await.map_err(|_| writer_stopped())?
    }

    /// A leased fetch that writes nothing, read beside the writer: when every item of the page
    /// belongs to a thread the instance holds with more than half its lease left (the
    /// steady state of a busy instance), or nothing is available. `None`: the fetch takes or
    /// renews leases, so it goes through the writer. Nobody else can take a lease that has
    /// not expired, so what this read saw stays true.
    async fn fetch_leased_read(
        &self,
        f: &super::LeasedFetch,
    ) -> Result<Option<Vec<super::InboxItem>>, StoreError> {
        use super::to_i64;
        let now = to_i64(f.now, "time")?;
        let after = to_i64(f.after, "cursor")?;
        let renew_before = to_i64(f.now.saturating_add(f.lease_secs / 2), "lease expiry")?;
        let rows = self.readers.leased_page(f, now, after).await?;
        let held = |(_, instance, expires_at): &read::LeasedRow| {
            instance.as_deref() == Some(f.instance.as_str())
                && expires_at.is_some_and(|at| at >= renew_before)
        };
        if !rows.iter().all(held) {
            return Ok(None);
        }
        rows.into_iter()
            .map(|(row, _, _)| super::inbox_item(row))
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }

    /// `Store::fetch` (`device` as stored, the numbers converted).
    async fn fetch_page(
        &self,
        device: String,
        after: i64,
        limit: i64,
        max_bytes: i64,
    ) -> Result<Vec<super::InboxItem>, StoreError> {
        self.readers.page(device, after, limit, max_bytes).await
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
