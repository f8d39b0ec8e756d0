//! The bot's state store: per-thread state, the inbound journal and the outbox.
//!
//! (A minimal copy for the runtime: the in-memory store only. The SQLite and PostgreSQL
//! backends replace this module.)

use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use switchboard_protocol::{DeviceId, ThreadId};
use zeroize::Zeroizing;

pub mod memory;

/// What went wrong in the store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database failed (connection lost, I/O error): try again.
    #[error("database: {0}")]
    Database(String),
    /// Another writer changed the thread since it was loaded: reload and redo.
    #[error("thread {thread} was changed by another writer")]
    Conflict {
        /// The thread.
        thread: ThreadId,
    },
    /// Stored data does not decrypt or decode.
    #[error("corrupt store data: {0}")]
    Corrupt(String),
    /// The store URL or settings are not valid.
    #[error("store configuration: {0}")]
    Config(String),
    /// The store was closed.
    #[error("the store is closed")]
    Closed,
}

impl StoreError {
    /// Whether trying again may succeed (database errors).
    #[must_use]
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Database(_))
    }
}

/// The secret that encrypts state at rest, derived from the device's keystore seed.
// The SQLite and PostgreSQL backends read the key; the memory store does not.
#[allow(dead_code)]
pub struct StoreKey(Zeroizing<[u8; 32]>);

impl StoreKey {
    /// Derives the key (HKDF-SHA256, info "switchboard/1 bot store") from the device seed.
    #[must_use]
    pub fn derive(device_seed: &[u8; 32]) -> Self {
        let hk = hkdf::Hkdf::<sha2::Sha256>::new(None, device_seed);
        let mut key = Zeroizing::new([0u8; 32]);
        // 32 bytes is always a valid HKDF-SHA256 output length.
        let _ = hk.expand(b"switchboard/1 bot store", key.as_mut_slice());
        Self(key)
    }
}

impl Debug for StoreKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StoreKey(..)")
    }
}

/// What the store holds of one thread.
#[derive(Clone)]
pub struct ThreadRecord {
    /// Version, for compare-and-swap.
    pub version: u64,
    /// The (decrypted) blob the runtime serialises.
    pub data: Vec<u8>,
}

impl Debug for ThreadRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ThreadRecord")
            .field("version", &self.version)
            .field("bytes", &self.data.len())
            .finish()
    }
}

/// One handled event, written in one transaction.
#[derive(Clone)]
pub struct Effects {
    /// The thread.
    pub thread: ThreadId,
    /// None = the thread row must not exist yet; Some(v) = CAS on version.
    pub expected_version: Option<u64>,
    /// New thread blob (None = leave as is).
    pub data: Option<Vec<u8>>,
    /// Journal keys of the handled inbox items.
    pub handled: Vec<String>,
    /// Sealed messages to post.
    pub outbox: Vec<OutboxEntry>,
}

impl Debug for Effects {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Effects")
            .field("thread", &self.thread)
            .field("expected_version", &self.expected_version)
            .field("handled", &self.handled)
            .field("outbox", &self.outbox.len())
            .finish_non_exhaustive()
    }
}

/// A sealed message waiting to be posted.
#[derive(Clone, Debug)]
pub struct OutboxEntry {
    /// Assigned by the store.
    pub id: u64,
    /// The thread.
    pub thread: ThreadId,
    /// The message id.
    pub message_id: String,
    /// The serialised `SealedMessage`.
    pub body: Vec<u8>,
}

/// Where a bot keeps its device state.
#[async_trait]
pub trait BotStore: Send + Sync + Debug + 'static {
    /// The thread's record, if any.
    async fn load(&self, thread: ThreadId) -> Result<Option<ThreadRecord>, StoreError>;
    /// Whether this journal key was handled already (inbound dedupe).
    async fn handled(&self, thread: ThreadId, key: &str) -> Result<bool, StoreError>;
    /// Commits one event's effects atomically; returns the new version.
    async fn commit(&self, effects: Effects) -> Result<u64, StoreError>;
    /// Up to `limit` unsent outbox entries, oldest first.
    async fn outbox(&self, limit: u32) -> Result<Vec<OutboxEntry>, StoreError>;
    /// Marks the outbox entry of this message sent.
    async fn sent(&self, message_id: &str) -> Result<(), StoreError>;
    /// A device-wide small value.
    async fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// Sets a device-wide small value.
    async fn put_meta(&self, key: &str, value: &[u8]) -> Result<(), StoreError>;
    /// Deletes journal entries older than `older_than` (seconds since epoch).
    async fn prune_journal(&self, older_than: u64) -> Result<u64, StoreError>;
}

/// Opens the store a URL names (this copy: `"memory"` only).
///
/// # Errors
/// [`StoreError::Config`] for any other URL.
pub async fn open(
    url: &str,
    _device: DeviceId,
    _key: StoreKey,
) -> Result<Arc<dyn BotStore>, StoreError> {
    match url {
        "memory" => Ok(Arc::new(memory::MemoryStore::new())),
        other => Err(StoreError::Config(format!(
            "unsupported store URL {other:?} (this build has the \"memory\" store only)"
        ))),
    }
}
