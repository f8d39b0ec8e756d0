//! The bot's state store: per-thread state sealed at rest, an inbound journal, an outbox of
//! sealed replies and a few device-wide values, committed together for every handled event.
//!
//! [`open`] picks a backend from a URL: `sqlite://PATH` (the embedded default; the file is
//! created with mode 0600), `sqlite::memory:`, `postgres://...` (several instances of one bot
//! share it) or `memory` ([`memory::MemoryStore`], for tests).
//!
//! # Exactly-once effects
//! [`BotStore::commit`] writes one handled event in one transaction: its journal keys, the
//! thread's new state (a compare-and-swap on the thread's version) and its outbox entries. If
//! another instance changed the thread first, or already journaled one of the keys, the commit
//! is refused with [`StoreError::Conflict`] and writes nothing. Concurrent commits share one
//! database transaction (group commit); each keeps its own outcome.
//!
//! # Durability
//! A commit that returned survives the process being killed. On a SQLite file it is in the
//! write-ahead log but not yet fsynced: [`BotStore::sync`] puts every commit so far on disk with
//! one fsync, and the runtime calls it before acknowledging inbox items, so that its replies are
//! posted without waiting for the disk while an item is let go by the relay only once its
//! commit cannot be lost. What a power failure can cost then: the events committed since the
//! last sync are delivered again and handled again; a reply that was posted from a lost commit
//! is sealed again under the same generation, which the receivers that got the first refuse as
//! equivocation (protocol §5), so each of them still shows one reply.
//!
//! # Encryption at rest
//! Thread blobs are sealed with ChaCha20-Poly1305 under a [`StoreKey`] derived from the device's
//! keystore seed, with a random nonce per write and the device id, thread id and version as
//! associated data: a row moved to another thread or device, or given another version number,
//! fails to open ([`StoreError::Corrupt`]). The database never holds a plaintext thread blob.
//! What encryption cannot detect: someone with write access to the database putting back a
//! whole older copy of a row (or of the database) together with its version. The protocol's
//! nonce-misuse guard makes a rolled-back send counter harmless; keep backups of the database as
//! private as the keystore. Journal keys, outbox bodies (sealed messages, already end-to-end
//! encrypted) and meta values are stored as they are given.

mod device;
mod group;
mod key;
pub mod memory;
mod postgres;
mod sql;
mod sqlite;

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use switchboard_protocol::{DeviceId, ThreadId};

pub use device::{
    DeviceStoreStats, MAX_DEVICE_RECORD, MAX_THREADS_PER_WRITE, SqlDeviceStore, open_device_store,
};
pub use key::StoreKey;
pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

/// The largest thread blob ([`Effects::data`]) a store accepts: 4 MiB.
pub const MAX_THREAD_DATA: usize = 4 * 1024 * 1024;
/// The largest meta value ([`BotStore::put_meta`]): 64 KiB.
pub const MAX_META_VALUE: usize = 64 * 1024;
/// The longest journal key, meta key or outbox message id, in bytes.
pub const MAX_KEY_LEN: usize = 256;
/// The largest outbox body (a sealed message as JSON): 1 MiB.
pub const MAX_OUTBOX_BODY: usize = 1024 * 1024;
/// The most journal keys one event may record.
pub const MAX_HANDLED_PER_EVENT: usize = 1024;
/// The most outbox entries one event may queue.
pub const MAX_OUTBOX_PER_EVENT: usize = 256;
/// The most history entries one commit may append.
pub const MAX_HISTORY_PER_EVENT: usize = 256;
/// The most bytes of one history entry.
pub const MAX_HISTORY_ENTRY: usize = 256 * 1024;
/// The most entries one [`BotStore::outbox`] call returns, whatever `limit` asks for.
pub const MAX_OUTBOX_PAGE: u32 = 1000;
/// The most commits one group-commit transaction holds.
pub const MAX_BATCH: usize = 256;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database failed (connection lost, disk full, the transaction holding this commit
    /// failed, ...). Nothing of the operation was written; try again later.
    #[error("database error: {0}")]
    Database(String),
    /// Another instance changed this thread (its version moved) or already handled one of the
    /// event's journal keys, or one of its outbox message ids is queued already. Nothing of the
    /// event was written: reload the thread and handle the event again, or drop it.
    #[error("conflict on thread {thread}: it was changed or the event was handled elsewhere")]
    Conflict {
        /// The thread.
        thread: ThreadId,
    },
    /// A stored value could not be read back: wrong store key, tampering or corruption.
    #[error("stored data cannot be read: {0}")]
    Corrupt(String),
    /// The store cannot be opened or used as configured (bad URL, a schema from a newer
    /// version, no randomness).
    #[error("store configuration: {0}")]
    Config(String),
    /// A value is larger than the store accepts.
    #[error("{what} is {len} bytes, more than the {max} bytes the store accepts")]
    TooLarge {
        /// What was too large.
        what: &'static str,
        /// Its size (bytes or entries).
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The store was shut down.
    #[error("the store is closed")]
    Closed,
}

impl StoreError {
    /// Whether trying again later may succeed: true for database errors.
    #[must_use]
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Database(_))
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        Self::Database(e.to_string())
    }
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        Self::Config(format!(
            "the bot store schema cannot be brought up to date: {e}"
        ))
    }
}

/// What the store holds of one thread: its version and its (decrypted) blob.
#[derive(Clone, PartialEq, Eq)]
pub struct ThreadRecord {
    /// Bumped by every commit that writes the blob; the compare-and-swap token.
    pub version: u64,
    /// The plaintext blob the runtime serialised (sealed at rest by the store).
    pub data: Vec<u8>,
    /// The thread's history entries kept (oldest first), each sealed at rest on its own.
    pub history: Vec<HistoryEntry>,
}

/// One entry of a thread's history (a message the bot saw), at its position in the thread's
/// history. Appended by [`Effects::history`], pruned by [`Effects::history_from`].
#[derive(Clone, PartialEq, Eq)]
pub struct HistoryEntry {
    /// Its position (increasing per thread).
    pub index: u64,
    /// The plaintext the runtime serialised (sealed at rest by the store).
    pub data: Vec<u8>,
}

impl fmt::Debug for HistoryEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HistoryEntry")
            .field("index", &self.index)
            .field("data_len", &self.data.len())
            .finish()
    }
}

impl fmt::Debug for ThreadRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ThreadRecord")
            .field("version", &self.version)
            .field("data_len", &self.data.len())
            .field("history", &self.history.len())
            .finish()
    }
}

/// One handled event, written in one transaction by [`BotStore::commit`].
#[derive(Clone)]
pub struct Effects {
    /// The thread.
    pub thread: ThreadId,
    /// `None`: the thread row must not exist yet. `Some(v)`: the row must be at version `v`.
    pub expected_version: Option<u64>,
    /// The thread's new blob; `None` leaves it (and its version) as it is.
    pub data: Option<Vec<u8>>,
    /// Journal keys of the handled inbox items (message ids or `seq:<n>`).
    pub handled: Vec<String>,
    /// Sealed messages to post.
    pub outbox: Vec<OutboxEntry>,
    /// History entries to append (positions not used yet), written only with a new blob.
    pub history: Vec<HistoryEntry>,
    /// History entries at positions below this one are dropped (0: none).
    pub history_from: u64,
}

impl fmt::Debug for Effects {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Effects")
            .field("thread", &self.thread)
            .field("expected_version", &self.expected_version)
            .field("data_len", &self.data.as_ref().map(Vec::len))
            .field("handled", &self.handled)
            .field("outbox", &self.outbox)
            .field("history", &self.history)
            .field("history_from", &self.history_from)
            .finish()
    }
}

/// A sealed message waiting in the outbox.
#[derive(Clone, PartialEq, Eq)]
pub struct OutboxEntry {
    /// Assigned by the store (increasing: the order of commits); ignored by `commit`.
    pub id: u64,
    /// The thread it is posted to.
    pub thread: ThreadId,
    /// The message id (unique per device while queued).
    pub message_id: String,
    /// The serialised sealed message (not secret: end-to-end encrypted already).
    pub body: Vec<u8>,
}

impl fmt::Debug for OutboxEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutboxEntry")
            .field("id", &self.id)
            .field("thread", &self.thread)
            .field("message_id", &self.message_id)
            .field("body_len", &self.body.len())
            .finish()
    }
}

/// Counters of a store since it was opened (for metrics and benchmarks).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StoreStats {
    /// Commits that succeeded.
    pub commits: u64,
    /// Commits refused with [`StoreError::Conflict`].
    pub conflicts: u64,
    /// Database transactions committed for commits (fewer than `commits` when grouped).
    pub transactions: u64,
    /// Group-commit transactions that failed (each failed every commit it held).
    pub failed_transactions: u64,
    /// Fsyncs [`BotStore::sync`] made (stores whose commits are on disk when they return
    /// make none).
    pub syncs: u64,
}

/// The bot's state store. Every method is safe to call concurrently.
#[async_trait]
pub trait BotStore: Send + Sync + fmt::Debug + 'static {
    /// The thread's state, or `None` if the store holds none.
    async fn load(&self, thread: ThreadId) -> Result<Option<ThreadRecord>, StoreError>;
    /// Whether this journal key was handled already (inbound dedupe).
    async fn handled(&self, thread: ThreadId, key: &str) -> Result<bool, StoreError>;
    /// Commits one event's effects atomically; returns the thread's version after it (the
    /// expected version if `data` is `None`, 0 for a thread without a row). `Err(Conflict)` if
    /// the compare-and-swap failed or a journal key or outbox message id exists already: nothing
    /// of it was written. Concurrent calls are grouped into one transaction (group commit), each
    /// with its own compare-and-swap; a conflict of one does not fail the others.
    ///
    /// A commit that returned is seen by every later read and survives the process being
    /// killed; whether it also survives a power failure before [`BotStore::sync`] depends on
    /// the backend (SQLite files: not until `sync`; PostgreSQL and memory: at once).
    async fn commit(&self, effects: Effects) -> Result<u64, StoreError>;
    /// Waits until every write that returned before this call is on disk, so that a power
    /// failure cannot take it back. The runtime calls it before it acknowledges inbox items:
    /// an item whose commit a power failure took back is delivered again. The default does
    /// nothing (for stores whose writes are on disk when they return).
    async fn sync(&self) -> Result<(), StoreError> {
        Ok(())
    }
    /// Up to `limit` (at most [`MAX_OUTBOX_PAGE`]) unsent outbox entries, oldest first.
    async fn outbox(&self, limit: u32) -> Result<Vec<OutboxEntry>, StoreError>;
    /// Up to `limit` (at most [`MAX_OUTBOX_PAGE`]) unsent outbox entries of one thread, oldest
    /// first (whichever instance committed them).
    async fn outbox_for(
        &self,
        thread: ThreadId,
        limit: u32,
    ) -> Result<Vec<OutboxEntry>, StoreError>;
    /// Marks the outbox entry of this message sent (deletes it; unknown ids are not an error).
    async fn sent(&self, message_id: &str) -> Result<(), StoreError>;
    /// A device-wide small value (e.g. the inbox cursor of an instance).
    async fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// Sets a device-wide small value (at most [`MAX_META_VALUE`] bytes).
    async fn put_meta(&self, key: &str, value: &[u8]) -> Result<(), StoreError>;
    /// Deletes journal entries handled before `older_than` (seconds since the Unix epoch);
    /// returns how many. Call it periodically: the journal grows with every event.
    async fn prune_journal(&self, older_than: u64) -> Result<u64, StoreError>;
    /// Counters since the store was opened (zeros for a store that keeps none).
    fn stats(&self) -> StoreStats {
        StoreStats::default()
    }
}

/// The metadata key under which a store keeps its key's check value.
const KEY_CHECK: &str = "store_key_check";

/// Makes sure `store` was written under `key` (or is new: then it is marked as `key`'s).
///
/// # Errors
/// [`StoreError::Corrupt`] if the store holds another key's check value: it was written by
/// this device under another keystore seed (a keystore restored from elsewhere, another
/// bot's store); store errors.
pub async fn check_key(store: &dyn BotStore, key: &StoreKey) -> Result<(), StoreError> {
    let check = key.check_value();
    match store.get_meta(KEY_CHECK).await? {
        None => store.put_meta(KEY_CHECK, &check).await,
        Some(stored) if stored.as_slice() == check.as_slice() => Ok(()),
        Some(_) => Err(StoreError::Corrupt(
            "this store was written under another store key: the keystore (its seed) is not \
             the one this store belongs to"
                .to_owned(),
        )),
    }
}

/// Opens the store a URL names, for the bot `device`, sealing thread state under `key`:
/// `sqlite://PATH` (created with mode 0600 if missing; WAL), `sqlite::memory:`,
/// `postgres://...` (or `postgresql://`), or `memory` (in-process, for tests).
///
/// # Errors
/// [`StoreError::Config`] for another URL or a schema this version cannot use,
/// [`StoreError::Database`] if the database cannot be reached or created.
pub async fn open(
    url: &str,
    device: DeviceId,
    key: StoreKey,
) -> Result<Arc<dyn BotStore>, StoreError> {
    if url == "memory" {
        Ok(Arc::new(memory::MemoryStore::new()))
    } else if url.starts_with("sqlite:") {
        Ok(Arc::new(SqliteStore::open(url, device, key).await?))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(PostgresStore::open(url, device, key).await?))
    } else {
        Err(StoreError::Config(format!(
            "unsupported store URL {:?}: use sqlite://PATH, sqlite::memory:, postgres://... or memory",
            redact(url)
        )))
    }
}

/// The URL without its user, password and query, so that no secret ends up in a log.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.split('?').next().unwrap_or_default().to_owned();
    };
    let host = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    format!("{scheme}://{}", host.split('?').next().unwrap_or_default())
}

/// Checks an event's effects against the store's limits.
fn validate(effects: &Effects) -> Result<(), StoreError> {
    if let Some(data) = &effects.data {
        at_most("the thread state", data.len(), MAX_THREAD_DATA)?;
    }
    at_most(
        "the list of handled keys (entries)",
        effects.handled.len(),
        MAX_HANDLED_PER_EVENT,
    )?;
    at_most(
        "the outbox of one event (entries)",
        effects.outbox.len(),
        MAX_OUTBOX_PER_EVENT,
    )?;
    for key in &effects.handled {
        at_most("a journal key", key.len(), MAX_KEY_LEN)?;
    }
    for entry in &effects.outbox {
        at_most("an outbox message id", entry.message_id.len(), MAX_KEY_LEN)?;
        at_most("an outbox body", entry.body.len(), MAX_OUTBOX_BODY)?;
    }
    at_most(
        "the history of one event (entries)",
        effects.history.len(),
        MAX_HISTORY_PER_EVENT,
    )?;
    for entry in &effects.history {
        at_most("a history entry", entry.data.len(), MAX_HISTORY_ENTRY)?;
        if i64::try_from(entry.index).is_err() {
            return Err(StoreError::Config(format!(
                "history position {} does not fit the database",
                entry.index
            )));
        }
    }
    if !effects.history.is_empty() && effects.data.is_none() {
        return Err(StoreError::Config(
            "history entries are appended only with a new thread state".to_owned(),
        ));
    }
    Ok(())
}

/// Checks a meta key and value against the limits.
fn validate_meta(key: &str, value: Option<&[u8]>) -> Result<(), StoreError> {
    at_most("a meta key", key.len(), MAX_KEY_LEN)?;
    if let Some(value) = value {
        at_most("a meta value", value.len(), MAX_META_VALUE)?;
    }
    Ok(())
}

fn at_most(what: &'static str, len: usize, max: usize) -> Result<(), StoreError> {
    if len > max {
        Err(StoreError::TooLarge { what, len, max })
    } else {
        Ok(())
    }
}

/// The thread's version after a commit of `effects`.
fn next_version(effects: &Effects) -> Result<u64, StoreError> {
    match (effects.expected_version, effects.data.is_some()) {
        (None, true) => Ok(1),
        (None, false) => Ok(0),
        (Some(v), false) => Ok(v),
        (Some(v), true) => v
            .checked_add(1)
            .filter(|next| i64::try_from(*next).is_ok())
            .ok_or_else(|| StoreError::Config(format!("thread version {v} cannot grow"))),
    }
}

/// Seconds since the Unix epoch.
fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Live counters behind [`StoreStats`].
#[derive(Debug, Default)]
struct Counters {
    commits: AtomicU64,
    conflicts: AtomicU64,
    transactions: AtomicU64,
    failed_transactions: AtomicU64,
    syncs: AtomicU64,
}

impl Counters {
    fn outcome(&self, outcome: &Result<u64, StoreError>) {
        match outcome {
            Ok(_) => self.commits.fetch_add(1, Ordering::Relaxed),
            Err(StoreError::Conflict { .. }) => self.conflicts.fetch_add(1, Ordering::Relaxed),
            Err(_) => 0,
        };
    }

    fn snapshot(&self) -> StoreStats {
        StoreStats {
            commits: self.commits.load(Ordering::Relaxed),
            conflicts: self.conflicts.load(Ordering::Relaxed),
            transactions: self.transactions.load(Ordering::Relaxed),
            failed_transactions: self.failed_transactions.load(Ordering::Relaxed),
            syncs: self.syncs.load(Ordering::Relaxed),
        }
    }
}
