//! The embedded default backend: SQLite in WAL mode, a file (or, for `sqlite::memory:`, a
//! private temporary file removed when the store is dropped).
//!
//! Writes go through one writer on an OS thread of its own, over a synchronous `rusqlite`
//! connection: a group of commits costs its statements as plain function calls and no fsync; a
//! sync costs one fdatasync of the write-ahead log, for every commit before it.
//! Reads run on an sqlx pool beside it (WAL lets them read during a commit).

use std::path::{Path, PathBuf};
use std::str::FromStr as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rusqlite::{OptionalExtension as _, TransactionBehavior, params};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use switchboard_protocol::DeviceId;

use super::group::{ApplySync, GroupCommit, Prepared, Write, in_lock_order};
use super::sql::{self, impl_bot_store, migrator};
use super::{StoreError, StoreKey, redact};

/// How long a statement waits for another process's write lock before failing.
pub(super) const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// A [`BotStore`](super::BotStore) on SQLite.
///
/// Commits are group-committed by one writer thread (`BEGIN IMMEDIATE`); a commit returns once
/// it is in the write-ahead log, and [`BotStore::sync`](super::BotStore::sync) puts everything
/// committed so far on disk with one fsync. Reads run on the pool's connections beside it (WAL).
#[derive(Debug)]
pub struct SqliteStore {
    pool: SqlitePool,
    device: DeviceId,
    device_hex: String,
    key: StoreKey,
    group: GroupCommit,
    /// The temporary file behind `sqlite::memory:`, removed on drop.
    _temporary: Option<Temporary>,
}

impl SqliteStore {
    /// Opens `sqlite://PATH` (the file is created with mode 0600 if missing) or
    /// `sqlite::memory:` (a private temporary file, without fsync, removed when the store is
    /// dropped), and brings the schema up to date.
    ///
    /// # Errors
    /// [`StoreError::Config`] for a URL SQLite does not understand or a newer schema,
    /// [`StoreError::Database`] if the file cannot be created or opened.
    pub async fn open(url: &str, device: DeviceId, key: StoreKey) -> Result<Self, StoreError> {
        let (pool, path, temporary) = migrated(url).await?;
        let durable = temporary.is_none();
        let device_hex = device.to_string();
        let writer = SyncWriter::open(&path, device_hex.clone(), durable)?;
        let group = GroupCommit::start_thread(writer, "bot-store-writer", durable)?;
        Ok(Self {
            pool,
            device,
            device_hex,
            key,
            group,
            _temporary: temporary,
        })
    }
}

/// The migrations of the SQLite schema, in order (the bot store's and the device store's).
const MIGRATIONS: [(&str, &str); 4] = [
    ("bot store", include_str!("migrations/sqlite/0001_init.sql")),
    (
        "history rows",
        include_str!("migrations/sqlite/0002_history.sql"),
    ),
    (
        "outbox by thread",
        include_str!("migrations/sqlite/0003_outbox_by_thread.sql"),
    ),
    (
        "device store",
        include_str!("migrations/sqlite/0004_device_store.sql"),
    ),
];

/// Opens `sqlite://PATH` (the file created with mode 0600 if missing) or `sqlite::memory:` (a
/// private temporary file) and brings the schema up to date. Returns a pool of readers, the
/// database file and, for `sqlite::memory:`, the temporary file to remove with the store.
pub(super) async fn migrated(
    url: &str,
) -> Result<(SqlitePool, PathBuf, Option<Temporary>), StoreError> {
    let memory = url.contains(":memory:") || url.contains("mode=memory");
    let (options, temporary) = if memory {
        let temporary = Temporary::new();
        let options = SqliteConnectOptions::new().filename(&temporary.0);
        (options, Some(temporary))
    } else {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|e| StoreError::Config(format!("bad SQLite URL {:?}: {e}", redact(url))))?;
        (options, None)
    };
    let path = options.get_filename().to_path_buf();
    create_private(&path).await?;
    // The pool only reads (and runs the migrations).
    let synchronous = if memory {
        SqliteSynchronous::Off
    } else {
        SqliteSynchronous::Full
    };
    let options = options
        .create_if_missing(true)
        .busy_timeout(BUSY_TIMEOUT)
        .synchronous(synchronous)
        .journal_mode(SqliteJournalMode::Wal);
    // No ping before each use: a file has no connection to lose.
    let pool = SqlitePoolOptions::new()
        .test_before_acquire(false)
        .max_connections(4)
        .idle_timeout(Duration::from_secs(600))
        .connect_with(options)
        .await?;
    migrator(MIGRATIONS).run(&pool).await?;
    Ok((pool, path, temporary))
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

/// The private file behind `sqlite::memory:`: a new name under the system's temporary
/// directory, removed (with its `-wal` and `-shm` files) on drop.
#[derive(Debug)]
pub(super) struct Temporary(PathBuf);

impl Temporary {
    fn new() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let name = format!(
            "switchboard-botstore-{}-{nanos}-{}.db",
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

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        Self::Database(e.to_string())
    }
}

/// The writer's own connection.
struct SyncWriter {
    conn: rusqlite::Connection,
    device: String,
    /// The database file (its write-ahead log is this path with `-wal`).
    path: PathBuf,
    /// A file store (fsyncs on [`Write::Sync`]), not a private temporary one (never fsyncs).
    durable: bool,
    /// The write-ahead log, opened at the first sync.
    wal: Option<std::fs::File>,
    /// Something was committed since the last fsync.
    dirty: bool,
}

/// SQLite's `synchronous` setting of the writer: `NORMAL` for a file (a commit is in the
/// write-ahead log when it returns, which survives the process being killed, and reaches the
/// disk with the next [`Write::Sync`] or checkpoint), `OFF` for a private temporary store.
fn synchronous(durable: bool) -> &'static str {
    if durable { "NORMAL" } else { "OFF" }
}

impl SyncWriter {
    fn open(path: &Path, device: String, durable: bool) -> Result<Self, StoreError> {
        let conn = rusqlite::Connection::open(path)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", synchronous(durable))?;
        Ok(Self {
            conn,
            device,
            path: path.to_path_buf(),
            durable,
            wal: None,
            dirty: false,
        })
    }

    /// Puts every commit so far on disk: one fdatasync of the write-ahead log (what
    /// `synchronous=FULL` does at every commit). Returns the number of fsyncs (0 when nothing
    /// was committed since the last one).
    fn sync_log(&mut self) -> Result<u64, StoreError> {
        if !self.durable || !self.dirty {
            return Ok(0);
        }
        let wal = match &self.wal {
            Some(wal) => wal,
            None => {
                let mut name = self.path.clone().into_os_string();
                name.push("-wal");
                let wal = std::fs::File::open(&name).map_err(|e| {
                    StoreError::Database(format!(
                        "cannot open the write-ahead log {}: {e}",
                        Path::new(&name).display()
                    ))
                })?;
                self.wal.insert(wal)
            }
        };
        wal.sync_data()
            .map_err(|e| StoreError::Database(format!("cannot sync the write-ahead log: {e}")))?;
        self.dirty = false;
        Ok(1)
    }

    /// Applies the writes of a batch other than syncs in one transaction.
    fn transaction(&mut self, batch: &[Write]) -> Result<Vec<Result<u64, StoreError>>, StoreError> {
        let device = self.device.as_str();
        let mut tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        if let [Write::Event(p)] = batch {
            // Alone in its transaction: a conflict rolls the whole of it back.
            return match write_event(&tx, device, p)? {
                Some(version) => {
                    tx.commit()?;
                    Ok(vec![Ok(version)])
                }
                None => {
                    tx.rollback()?;
                    Ok(vec![Err(p.conflict())])
                }
            };
        }
        let mut outcomes: Vec<Result<u64, StoreError>> =
            batch.iter().map(|_| Err(StoreError::Closed)).collect();
        for (i, write) in in_lock_order(batch) {
            let outcome = match write {
                Write::Event(p) => {
                    // Each event under a savepoint: a conflicting one is rolled back alone.
                    let savepoint = tx.savepoint()?;
                    match write_event(&savepoint, device, p)? {
                        Some(version) => {
                            savepoint.commit()?;
                            Ok(version)
                        }
                        None => {
                            // Dropping the savepoint rolls it back.
                            drop(savepoint);
                            Err(p.conflict())
                        }
                    }
                }
                // Answered by the caller, after the transaction.
                Write::Sync => Ok(0),
                other => write_other(&tx, device, other),
            };
            if let Some(slot) = outcomes.get_mut(i) {
                *slot = outcome;
            }
        }
        tx.commit()?;
        Ok(outcomes)
    }
}

impl ApplySync for SyncWriter {
    fn apply(&mut self, batch: &[Write]) -> Result<Vec<Result<u64, StoreError>>, StoreError> {
        let syncs = batch.iter().filter(|w| matches!(w, Write::Sync)).count();
        let mut outcomes = if syncs == batch.len() {
            batch.iter().map(|_| Ok(0)).collect()
        } else {
            let outcomes = self.transaction(batch)?;
            self.dirty = true;
            outcomes
        };
        if syncs > 0 {
            // After the transaction, so that the batch's own commits are on disk too. A failed
            // fsync fails the syncs, not the commits (they are committed, in the log).
            let mut synced = self.sync_log().map_err(|e| e.to_string());
            for (write, outcome) in batch.iter().zip(outcomes.iter_mut()) {
                if matches!(write, Write::Sync) {
                    *outcome = synced.clone().map_err(StoreError::Database);
                    // The fsync is counted once.
                    synced = synced.map(|_| 0);
                }
            }
        }
        Ok(outcomes)
    }
}

/// Writes one event; `Ok(None)` if it conflicts (the caller rolls it back).
fn write_event(
    conn: &rusqlite::Connection,
    device: &str,
    p: &Prepared,
) -> Result<Option<u64>, StoreError> {
    let thread = p.thread_hex.as_str();
    let thread_ok = match (p.expected, &p.sealed) {
        (None, Some((nonce, ciphertext))) => {
            conn.prepare_cached(sql::INSERT_THREAD)?
                .execute(params![device, thread, nonce, ciphertext, p.now])?
                == 1
        }
        (None, None) => conn
            .prepare_cached(sql::THREAD_EXISTS)?
            .query_row(params![device, thread], |_| Ok(()))
            .optional()?
            .is_none(),
        // Without a new blob the version stays, but the row must still be at it.
        (Some(expected), sealed) => {
            let (nonce, ciphertext) = sealed
                .as_ref()
                .map(|(n, c)| (n.as_slice(), c.as_slice()))
                .unzip();
            conn.prepare_cached(sql::UPDATE_THREAD)?.execute(params![
                i64::from(sealed.is_some()),
                nonce,
                ciphertext,
                p.now,
                device,
                thread,
                expected
            ])? == 1
        }
    };
    if !thread_ok {
        return Ok(None);
    }
    let mut journal = conn.prepare_cached(sql::INSERT_JOURNAL)?;
    for key in &p.handled {
        if journal.execute(params![device, thread, key, p.now])? != 1 {
            return Ok(None);
        }
    }
    let mut outbox = conn.prepare_cached(sql::INSERT_OUTBOX)?;
    for (message_id, body) in &p.outbox {
        if outbox.execute(params![device, thread, message_id, body, p.now])? != 1 {
            return Ok(None);
        }
    }
    let mut history = conn.prepare_cached(sql::INSERT_HISTORY)?;
    for (index, nonce, ciphertext) in &p.history {
        if history.execute(params![device, thread, index, nonce, ciphertext])? != 1 {
            return Ok(None);
        }
    }
    if p.history_from > 0 {
        conn.prepare_cached(sql::PRUNE_HISTORY)?.execute(params![
            device,
            thread,
            p.history_from
        ])?;
    }
    Ok(Some(p.new_version))
}

/// Writes what is not an event (see [`Write`]).
fn write_other(
    conn: &rusqlite::Connection,
    device: &str,
    write: &Write,
) -> Result<u64, StoreError> {
    let rows = match write {
        Write::Event(_) | Write::Sync => 0,
        Write::Sent(message_id) => conn
            .prepare_cached(sql::DELETE_SENT)?
            .execute(params![device, message_id])?,
        Write::Meta(key, value) => conn
            .prepare_cached(sql::UPSERT_META)?
            .execute(params![device, key, value])?,
        Write::PruneJournal(older_than) => conn
            .prepare_cached(sql::PRUNE_JOURNAL)?
            .execute(params![device, older_than])?,
    };
    Ok(u64::try_from(rows).unwrap_or(u64::MAX))
}

impl_bot_store!(SqliteStore);

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_file_commits_to_the_log_and_a_temporary_store_never_syncs() {
        assert_eq!(synchronous(true), "NORMAL");
        assert_eq!(synchronous(false), "OFF");
    }

    #[tokio::test]
    async fn a_memory_store_lives_in_a_private_file_that_goes_with_it() {
        let device = DeviceId::from_bytes([7; 16]);
        let key = StoreKey::derive(&[1; 32]);
        let store = SqliteStore::open("sqlite::memory:", device, key)
            .await
            .unwrap();
        let path = store._temporary.as_ref().unwrap().0.clone();
        assert!(path.exists());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "readable by its owner only: {mode:o}");
        }
        let other = SqliteStore::open("sqlite::memory:", device, StoreKey::derive(&[1; 32]))
            .await
            .unwrap();
        assert_ne!(other._temporary.as_ref().unwrap().0, path, "each its own");
        drop(store);
        assert!(!path.exists());
    }
}
