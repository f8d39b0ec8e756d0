//! The bot store's databases as a [`DeviceStore`] for `switchboard_client`'s `Device`: the
//! admin device of an entity (whose inbox carries every message of every thread) keeps a row
//! per thread here instead of rewriting its whole keystore at every event.
//!
//! [`SqlDeviceStore::open`] takes the URLs of [`open`](super::open): `sqlite://PATH` (created
//! with mode 0600 if missing; WAL), `sqlite::memory:` (a private temporary file) or
//! `postgres://...`. The schema is the bot store's (same migrations, two more tables,
//! `device_state` and `device_threads`), so one database can hold bots and admins.
//!
//! Every call goes to one writer thread of the store, which takes every request queued while it
//! was busy and writes them in one transaction (group commit: one fsync for the devices writing
//! at once). A write returns once it is durable: on SQLite the transaction is committed with
//! `synchronous=FULL` (the write-ahead log is fsynced), on PostgreSQL it is committed. The rows
//! arrive sealed by the device (see `switchboard_client::store`): the database never holds a
//! plaintext secret and this store needs no key.

use std::fmt;
use std::str::FromStr as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use rusqlite::{OptionalExtension as _, TransactionBehavior, params};
use sqlx::Row as _;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use switchboard_client::store::{DeviceStore, StoreFailure, StoreWrite, StoredDevice};
use switchboard_protocol::{DeviceId, ThreadId};

use super::sqlite::{BUSY_TIMEOUT, Temporary};
use super::{MAX_BATCH, MAX_THREAD_DATA, StoreError, at_most, postgres, redact, sqlite};

/// The largest device state record a [`SqlDeviceStore`] accepts: 64 MiB.
pub const MAX_DEVICE_RECORD: usize = 64 * 1024 * 1024;
/// The most thread rows one [`DeviceStore::write`] may change (a device moving in from its
/// keystore writes every thread at once).
pub const MAX_THREADS_PER_WRITE: usize = 1_000_000;
/// How long one PostgreSQL transaction may take before it fails, plus [`PG_TIMEOUT_PER_ROW`]
/// for each row it writes.
const PG_TIMEOUT: Duration = Duration::from_secs(30);
/// How long reading a device's rows from PostgreSQL may take before it fails.
const PG_LOAD_TIMEOUT: Duration = Duration::from_secs(120);
/// The time a transaction may take per thread row, besides [`PG_TIMEOUT`] (a device moving in
/// writes all of its threads in one).
const PG_TIMEOUT_PER_ROW: Duration = Duration::from_millis(2);

/// The device's state record (replaced at every write).
const UPSERT_STATE: &str = "INSERT INTO device_state (device, record, updated_at) \
     VALUES ($1, $2, $3) ON CONFLICT (device) DO UPDATE \
     SET record = excluded.record, updated_at = excluded.updated_at";
/// A thread's row.
const UPSERT_THREAD: &str = "INSERT INTO device_threads (device, thread, row) \
     VALUES ($1, $2, $3) ON CONFLICT (device, thread) DO UPDATE SET row = excluded.row";
/// A thread's row goes.
const DELETE_THREAD: &str = "DELETE FROM device_threads WHERE device = $1 AND thread = $2";
/// The state record of device $1.
const SELECT_STATE: &str = "SELECT record FROM device_state WHERE device = $1";
/// The thread rows of device $1.
const SELECT_THREADS: &str =
    "SELECT thread, row FROM device_threads WHERE device = $1 ORDER BY thread";

/// A [`DeviceStore`] on the bot store's SQLite or PostgreSQL database.
pub struct SqlDeviceStore {
    queue: mpsc::SyncSender<Request>,
    counters: Arc<Counters>,
    /// The URL without secrets, for `Debug`.
    url: String,
}

impl fmt::Debug for SqlDeviceStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqlDeviceStore")
            .field("url", &self.url)
            .field("stats", &self.stats())
            .finish()
    }
}

/// Counters of a [`SqlDeviceStore`] since it was opened.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeviceStoreStats {
    /// Loads and writes handed to the writer thread so far.
    pub requests: u64,
    /// Writes that succeeded.
    pub writes: u64,
    /// Writes that failed.
    pub failed_writes: u64,
    /// Database transactions committed for writes (fewer than `writes` when grouped).
    pub transactions: u64,
}

#[derive(Debug, Default)]
struct Counters {
    requests: AtomicU64,
    writes: AtomicU64,
    failed_writes: AtomicU64,
    transactions: AtomicU64,
}

/// A device's change, owned (the writer thread outlives the caller's borrow).
struct Change {
    device: String,
    state: Vec<u8>,
    threads: Vec<(String, Option<Vec<u8>>)>,
}

type Reply<T> = mpsc::SyncSender<Result<T, StoreError>>;

enum Request {
    Load(DeviceId, Reply<Loaded>),
    Write(Change, Reply<()>),
}

/// One database behind the writer thread.
trait Rows: Send + 'static {
    /// What is stored for `device` (lowercase hex): its record and its rows as stored.
    fn load(&mut self, device: &str) -> Result<Loaded, StoreError>;
    /// Writes `changes` in one transaction, durably, in order.
    fn write(&mut self, changes: &[&Change]) -> Result<(), StoreError>;
}

/// A device's state record and thread rows (thread ids as stored).
type Loaded = (Option<Vec<u8>>, Vec<(String, Vec<u8>)>);

impl SqlDeviceStore {
    /// Opens the database `url` names (`sqlite://PATH`, `sqlite::memory:` or `postgres://...`)
    /// and brings its schema up to date.
    ///
    /// # Errors
    /// [`StoreError::Config`] for another URL or a newer schema, [`StoreError::Database`] if
    /// the database cannot be reached or created.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        let (queue, requests) = mpsc::sync_channel(MAX_BATCH);
        let counters = Arc::new(Counters::default());
        if url.starts_with("sqlite:") {
            let rows = SqliteRows::open(url).await?;
            start(rows, requests, Arc::clone(&counters), "device-store-sqlite")?;
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let options = PgConnectOptions::from_str(url).map_err(|e| {
                StoreError::Config(format!("bad PostgreSQL URL {:?}: {e}", redact(url)))
            })?;
            PostgresRows::start(options, requests, Arc::clone(&counters)).await?;
        } else {
            return Err(StoreError::Config(format!(
                "unsupported device store URL {:?}: use sqlite://PATH, sqlite::memory: or \
                 postgres://...",
                redact(url)
            )));
        }
        Ok(Self {
            queue,
            counters,
            url: redact(url),
        })
    }

    /// Counters since the store was opened.
    #[must_use]
    pub fn stats(&self) -> DeviceStoreStats {
        DeviceStoreStats {
            requests: self.counters.requests.load(Ordering::Relaxed),
            writes: self.counters.writes.load(Ordering::Relaxed),
            failed_writes: self.counters.failed_writes.load(Ordering::Relaxed),
            transactions: self.counters.transactions.load(Ordering::Relaxed),
        }
    }

    /// Sends `request` to the writer thread and waits for its answer.
    fn ask<T>(&self, request: impl FnOnce(Reply<T>) -> Request) -> Result<T, StoreError> {
        let (reply, answer) = mpsc::sync_channel(1);
        self.queue
            .send(request(reply))
            .map_err(|_| StoreError::Closed)?;
        self.counters.requests.fetch_add(1, Ordering::Relaxed);
        answer.recv().map_err(|_| StoreError::Closed)?
    }
}

/// Opens the device store `url` names: [`SqlDeviceStore::open`], or `memory` for a
/// [`MemoryStore`](switchboard_client::store::MemoryStore) (tests; nothing survives the
/// process).
///
/// # Errors
/// As [`SqlDeviceStore::open`].
pub async fn open_device_store(url: &str) -> Result<Arc<dyn DeviceStore>, StoreError> {
    if url == "memory" {
        return Ok(Arc::new(switchboard_client::store::MemoryStore::new()));
    }
    Ok(Arc::new(SqlDeviceStore::open(url).await?))
}

impl DeviceStore for SqlDeviceStore {
    fn load(&self, device: DeviceId) -> Result<StoredDevice, StoreFailure> {
        let (state, rows) = self
            .ask(|reply| Request::Load(device, reply))
            .map_err(|e| failure(&e))?;
        let threads = rows
            .into_iter()
            .map(|(thread, row)| {
                ThreadId::from_str(&thread)
                    .map(|thread| (thread, row))
                    .map_err(|e| {
                        failure(&StoreError::Corrupt(format!("thread id {thread:?}: {e}")))
                    })
            })
            .collect::<Result<_, _>>()?;
        Ok(StoredDevice { state, threads })
    }

    fn write(&self, device: DeviceId, change: &StoreWrite) -> Result<(), StoreFailure> {
        let change = owned(device, change).map_err(|e| failure(&e))?;
        let outcome = self.ask(|reply| Request::Write(change, reply));
        let counter = match outcome {
            Ok(()) => &self.counters.writes,
            Err(_) => &self.counters.failed_writes,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        outcome.map_err(|e| failure(&e))
    }
}

/// `change` checked against the limits and copied for the writer thread.
fn owned(device: DeviceId, change: &StoreWrite) -> Result<Change, StoreError> {
    at_most(
        "the device state record",
        change.state.len(),
        MAX_DEVICE_RECORD,
    )?;
    at_most(
        "the thread rows of one write (entries)",
        change.threads.len(),
        MAX_THREADS_PER_WRITE,
    )?;
    let threads = change
        .threads
        .iter()
        .map(|(thread, row)| {
            if let Some(row) = row {
                at_most("a thread row", row.len(), MAX_THREAD_DATA)?;
            }
            Ok((thread.to_string(), row.clone()))
        })
        .collect::<Result<_, StoreError>>()?;
    Ok(Change {
        device: device.to_string(),
        state: change.state.clone(),
        threads,
    })
}

fn failure(e: &StoreError) -> StoreFailure {
    StoreFailure(e.to_string())
}

/// Starts the writer thread serving `requests` from `rows`.
fn start(
    rows: impl Rows,
    requests: mpsc::Receiver<Request>,
    counters: Arc<Counters>,
    name: &str,
) -> Result<(), StoreError> {
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || serve(rows, &requests, &counters))
        .map(drop)
        .map_err(|e| StoreError::Database(format!("cannot start the device store's writer: {e}")))
}

/// The writer thread: every request queued while it was busy, in order; consecutive writes in
/// one transaction. Ends when the store is dropped.
fn serve(mut rows: impl Rows, requests: &mpsc::Receiver<Request>, counters: &Counters) {
    while let Ok(first) = requests.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match requests.try_recv() {
                Ok(request) => batch.push(request),
                Err(_) => break,
            }
        }
        let mut writes = Vec::new();
        for request in batch {
            match request {
                Request::Write(change, reply) => writes.push((change, reply)),
                Request::Load(device, reply) => {
                    // Earlier writes first: a load sees every write queued before it.
                    flush(&mut rows, &mut writes, counters);
                    // The caller may have gone (its thread ended): nothing to answer then.
                    let _ = reply.send(rows.load(&device.to_string()));
                }
            }
        }
        flush(&mut rows, &mut writes, counters);
    }
}

/// Writes `writes` in one transaction and answers each; if that transaction fails, each is
/// tried alone, so that one write the database refuses fails alone.
fn flush(rows: &mut impl Rows, writes: &mut Vec<(Change, Reply<()>)>, counters: &Counters) {
    if writes.is_empty() {
        return;
    }
    let changes: Vec<&Change> = writes.iter().map(|(change, _)| change).collect();
    let outcome = rows.write(&changes);
    match outcome {
        Ok(()) => {
            counters.transactions.fetch_add(1, Ordering::Relaxed);
            for (_, reply) in writes.drain(..) {
                let _ = reply.send(Ok(()));
            }
        }
        Err(e) if writes.len() == 1 => {
            if let Some((_, reply)) = writes.pop() {
                let _ = reply.send(Err(e));
            }
        }
        Err(_) => {
            for (change, reply) in writes.drain(..) {
                let outcome = rows.write(&[&change]);
                if outcome.is_ok() {
                    counters.transactions.fetch_add(1, Ordering::Relaxed);
                }
                let _ = reply.send(outcome);
            }
        }
    }
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// SQLite through the writer's own synchronous connection.
struct SqliteRows {
    conn: rusqlite::Connection,
    /// The file behind `sqlite::memory:`, removed when the writer ends.
    _temporary: Option<Temporary>,
}

impl SqliteRows {
    async fn open(url: &str) -> Result<Self, StoreError> {
        let (pool, path, temporary) = sqlite::migrated(url).await?;
        // The writer reads and writes through its own connection.
        pool.close().await;
        let conn = rusqlite::Connection::open(&path)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // FULL: a commit returns once the write-ahead log is on disk (the device acknowledges
        // inbox items and posts messages after a write returns). A private temporary store
        // never syncs.
        let synchronous = if temporary.is_some() { "OFF" } else { "FULL" };
        conn.pragma_update(None, "synchronous", synchronous)?;
        Ok(Self {
            conn,
            _temporary: temporary,
        })
    }
}

impl Rows for SqliteRows {
    fn load(&mut self, device: &str) -> Result<Loaded, StoreError> {
        let state = self
            .conn
            .prepare_cached(SELECT_STATE)?
            .query_row(params![device], |row| row.get(0))
            .optional()?;
        let threads = self
            .conn
            .prepare_cached(SELECT_THREADS)?
            .query_map(params![device], |row| Ok((row.get(0)?, row.get(1)?)))?
            .collect::<Result<_, _>>()?;
        Ok((state, threads))
    }

    fn write(&mut self, changes: &[&Change]) -> Result<(), StoreError> {
        let now = now_secs();
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        for change in changes {
            let device = change.device.as_str();
            tx.prepare_cached(UPSERT_STATE)?
                .execute(params![device, change.state, now])?;
            let mut upsert = tx.prepare_cached(UPSERT_THREAD)?;
            let mut delete = tx.prepare_cached(DELETE_THREAD)?;
            for (thread, row) in &change.threads {
                match row {
                    Some(row) => upsert.execute(params![device, thread, row])?,
                    None => delete.execute(params![device, thread])?,
                };
            }
        }
        tx.commit()?;
        Ok(())
    }
}

/// PostgreSQL through a pool on the writer thread's own single-threaded runtime (the caller
/// blocks on the store's answer, so the store's I/O must not need the caller's runtime).
struct PostgresRows {
    runtime: tokio::runtime::Runtime,
    pool: PgPool,
}

impl PostgresRows {
    /// Starts the writer thread, which connects and migrates before it serves.
    async fn start(
        options: PgConnectOptions,
        requests: mpsc::Receiver<Request>,
        counters: Arc<Counters>,
    ) -> Result<(), StoreError> {
        let (ready, opened) = tokio::sync::oneshot::channel();
        let spawned = std::thread::Builder::new()
            .name("device-store-postgres".to_owned())
            .spawn(move || match Self::connect(options) {
                Ok(rows) => {
                    if ready.send(Ok(())).is_ok() {
                        serve(rows, &requests, &counters);
                    }
                }
                Err(e) => {
                    let _ = ready.send(Err(e));
                }
            });
        spawned.map_err(|e| {
            StoreError::Database(format!("cannot start the device store's writer: {e}"))
        })?;
        opened.await.map_err(|_| StoreError::Closed)?
    }

    fn connect(options: PgConnectOptions) -> Result<Self, StoreError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| StoreError::Database(format!("cannot start a runtime: {e}")))?;
        let pool = runtime.block_on(async {
            let pool = PgPoolOptions::new()
                .max_connections(2)
                .acquire_timeout(Duration::from_secs(10))
                .connect_with(options)
                .await?;
            postgres::migrate(&pool).await?;
            Ok::<_, StoreError>(pool)
        })?;
        Ok(Self { runtime, pool })
    }

    /// Runs `work` on the writer's runtime, failing it after `limit`.
    fn run<T>(
        &self,
        limit: Duration,
        work: impl Future<Output = Result<T, StoreError>>,
    ) -> Result<T, StoreError> {
        self.runtime.block_on(async {
            tokio::time::timeout(limit, work).await.map_err(|_| {
                StoreError::Database(format!(
                    "PostgreSQL did not answer within {} s",
                    limit.as_secs()
                ))
            })?
        })
    }
}

impl Rows for PostgresRows {
    fn load(&mut self, device: &str) -> Result<Loaded, StoreError> {
        let pool = &self.pool;
        self.run(PG_LOAD_TIMEOUT, async move {
            let state = sqlx::query_scalar::<_, Vec<u8>>(SELECT_STATE)
                .bind(device)
                .fetch_optional(pool)
                .await?;
            let threads = sqlx::query(SELECT_THREADS)
                .bind(device)
                .fetch_all(pool)
                .await?
                .into_iter()
                .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
                .collect::<Result<_, sqlx::Error>>()?;
            Ok((state, threads))
        })
    }

    fn write(&mut self, changes: &[&Change]) -> Result<(), StoreError> {
        let pool = &self.pool;
        let now = now_secs();
        let rows: usize = changes.iter().map(|c| c.threads.len() + 1).sum();
        let limit =
            PG_TIMEOUT + PG_TIMEOUT_PER_ROW.saturating_mul(u32::try_from(rows).unwrap_or(u32::MAX));
        self.run(limit, async move {
            let mut tx = pool.begin().await?;
            for change in changes {
                let device = change.device.as_str();
                sqlx::query(UPSERT_STATE)
                    .bind(device)
                    .bind(&change.state)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                for (thread, row) in &change.threads {
                    let query = match row {
                        Some(row) => sqlx::query(UPSERT_THREAD)
                            .bind(device)
                            .bind(thread)
                            .bind(row),
                        None => sqlx::query(DELETE_THREAD).bind(device).bind(thread),
                    };
                    query.execute(&mut *tx).await?;
                }
            }
            tx.commit().await?;
            Ok(())
        })
    }
}
