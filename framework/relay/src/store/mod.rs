//! Storage behind the relay: the [`Store`] trait and its SQLite and PostgreSQL backends.
//!
//! The relay is stateless over its store: several relay processes can share one PostgreSQL
//! database. Every method is one transaction. Payloads are opaque bytes (the JSON of protocol
//! wire values): the store never sees a message text or a key, only ciphertext and routing
//! metadata.

mod postgres;
mod sql;
mod sqlite;

pub use postgres::PostgresStore;
pub use sqlite::{MAX_BATCH, SqliteStore};

use async_trait::async_trait;
use switchboard_protocol::{DeviceId, EntityId, ThreadId};

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The value exists with different content (a device id registered with another key, an
    /// entity with another admin, a thread id taken).
    #[error("conflict: {0}")]
    Conflict(String),
    /// A referenced row does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// The database URL is not one this relay understands.
    #[error("unsupported database URL {0:?}: use sqlite://PATH, sqlite::memory: or postgres://...")]
    UnsupportedUrl(String),
    /// The database failed (connection lost, disk full, ...). Retry later.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// Applying migrations failed.
    #[error("database migration failed: {0}")]
    Migration(#[from] sqlx::migrate::MigrateError),
    /// The group commit holding this post failed; the post was not stored. Retry.
    #[error("the database could not commit the batch holding this post: {0}")]
    CommitFailed(String),
    /// A stored value could not be read back (corruption or a bug).
    #[error("stored data is invalid: {0}")]
    Corrupt(String),
}

/// A registered device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceRecord {
    /// The device.
    pub device: DeviceId,
    /// Its Ed25519 identity key (request signatures are checked against it).
    pub identity_key: [u8; 32],
    /// Its key bundle, as wire JSON.
    pub bundle: Vec<u8>,
    /// Registration time (Unix seconds).
    pub registered_at: u64,
}

/// Whether [`Store::register_device`] created the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Registered {
    /// A new device.
    Created,
    /// The same device with the same identity key was registered before; its bundle was updated.
    Updated,
}

/// An entity in the directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntityRecord {
    /// The entity.
    pub entity: EntityId,
    /// Its admin device.
    pub admin: DeviceId,
    /// The display name customers see.
    pub display_name: String,
}

/// A thread's routing state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ThreadRecord {
    /// The thread.
    pub thread: ThreadId,
    /// The entity.
    pub entity: EntityId,
    /// The customer's device.
    pub customer: DeviceId,
    /// The entity's admin device.
    pub admin: DeviceId,
    /// The current epoch as far as the relay knows (from commits).
    pub epoch: u64,
    /// Current members, sorted.
    pub members: Vec<DeviceId>,
}

/// What kind of item an inbox holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ItemKind {
    /// A customer opened a thread (to the admin).
    ThreadOpen,
    /// A roster commit (to old and new members).
    Commit,
    /// A message (to the other members).
    Message,
    /// A history grant (to the one member it is for).
    History,
}

impl ItemKind {
    /// The stored name.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::ThreadOpen => "thread_open",
            Self::Commit => "commit",
            Self::Message => "message",
            Self::History => "history",
        }
    }

    fn parse(text: &str) -> Result<Self, StoreError> {
        match text {
            "thread_open" => Ok(Self::ThreadOpen),
            "commit" => Ok(Self::Commit),
            "message" => Ok(Self::Message),
            "history" => Ok(Self::History),
            other => Err(StoreError::Corrupt(format!("unknown item kind {other:?}"))),
        }
    }
}

/// One item in a device's inbox.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InboxItem {
    /// Position in this device's inbox: strictly increasing, the cursor.
    pub seq: u64,
    /// The thread.
    pub thread: ThreadId,
    /// Position in the thread: items of one thread reach every member in this order.
    pub thread_seq: u64,
    /// The sending device.
    pub sender: DeviceId,
    /// What it is.
    pub kind: ItemKind,
    /// The wire JSON.
    pub payload: Vec<u8>,
}

/// A post to a thread, as the relay accepted it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Post<'a> {
    /// The thread.
    pub thread: ThreadId,
    /// The sender (already checked to be allowed to post).
    pub sender: DeviceId,
    /// What it is.
    pub kind: ItemKind,
    /// The wire JSON.
    pub payload: &'a [u8],
    /// For commits: the new epoch and members. The commit is delivered to the union of old and
    /// new members (so a removed member learns it was removed), then membership changes.
    pub new_roster: Option<(u64, &'a [DeviceId])>,
    /// Deliver to this member only (history grants); `None`: to every other member.
    pub to: Option<DeviceId>,
}

/// A [`Post`] that owns its data (to queue it for group commit).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct OwnedPost {
    pub(crate) thread: ThreadId,
    pub(crate) sender: DeviceId,
    pub(crate) kind: ItemKind,
    pub(crate) payload: Vec<u8>,
    pub(crate) new_roster: Option<(u64, Vec<DeviceId>)>,
    pub(crate) to: Option<DeviceId>,
}

impl OwnedPost {
    pub(crate) fn from_post(post: &Post<'_>) -> Self {
        Self {
            thread: post.thread,
            sender: post.sender,
            kind: post.kind,
            payload: post.payload.to_vec(),
            new_roster: post
                .new_roster
                .map(|(epoch, members)| (epoch, members.to_vec())),
            to: post.to,
        }
    }

    pub(crate) fn as_post(&self) -> Post<'_> {
        Post {
            thread: self.thread,
            sender: self.sender,
            kind: self.kind,
            payload: &self.payload,
            new_roster: self
                .new_roster
                .as_ref()
                .map(|(epoch, members)| (*epoch, members.as_slice())),
            to: self.to,
        }
    }
}

/// Where a post went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Posted {
    /// Its position in the thread.
    pub thread_seq: u64,
    /// The devices it was queued for.
    pub recipients: Vec<DeviceId>,
}

/// The relay's storage. Every method is atomic.
#[async_trait]
pub trait Store: Send + Sync + std::fmt::Debug {
    /// Registers a device, or updates the bundle of a device registered with the same identity
    /// key.
    ///
    /// # Errors
    /// [`StoreError::Conflict`] if the device id is registered with another identity key.
    async fn register_device(&self, device: &DeviceRecord) -> Result<Registered, StoreError>;

    /// A device by id.
    async fn device(&self, device: DeviceId) -> Result<Option<DeviceRecord>, StoreError>;

    /// Creates an entity.
    ///
    /// # Errors
    /// [`StoreError::Conflict`] if it exists with another admin; [`StoreError::NotFound`] if the
    /// admin device is not registered.
    async fn create_entity(&self, entity: &EntityRecord) -> Result<(), StoreError>;

    /// An entity by id.
    async fn entity(&self, entity: &EntityId) -> Result<Option<EntityRecord>, StoreError>;

    /// Creates a thread with members {customer, admin} and queues `open` for the admin.
    ///
    /// # Errors
    /// [`StoreError::Conflict`] if the thread id is taken.
    async fn open_thread(&self, thread: &ThreadRecord, open: &[u8]) -> Result<Posted, StoreError>;

    /// A thread by id.
    async fn thread(&self, thread: ThreadId) -> Result<Option<ThreadRecord>, StoreError>;

    /// Queues a post for the thread's members (except the sender), in thread order, and applies
    /// a commit's new roster.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] if the thread does not exist.
    async fn post(&self, post: &Post<'_>) -> Result<Posted, StoreError>;

    /// Up to `limit` unacknowledged items of `device` with `seq > after`, oldest first.
    async fn fetch(
        &self,
        device: DeviceId,
        after: u64,
        limit: u32,
    ) -> Result<Vec<InboxItem>, StoreError>;

    /// For one instance of a device run as several processes: up to `limit` items that this
    /// `instance` may handle, oldest first. An item is available when its thread is leased to
    /// nobody, to this instance, or on an expired lease; the instance then leases (or renews) the
    /// thread until `now + lease_secs`. Items are those with `seq > after`, plus every
    /// unacknowledged item of a thread this instance has just taken over, so a takeover
    /// redelivers in order what the previous holder left unacknowledged.
    async fn fetch_leased(
        &self,
        device: DeviceId,
        instance: &str,
        after: u64,
        limit: u32,
        now: u64,
        lease_secs: u64,
    ) -> Result<Vec<InboxItem>, StoreError>;

    /// Acknowledges the items with `seq <= up_to` of the threads `instance` holds.
    async fn ack_leased(
        &self,
        device: DeviceId,
        instance: &str,
        up_to: u64,
    ) -> Result<u64, StoreError>;

    /// Acknowledges (deletes) every item of `device` with `seq <= up_to`. Returns how many.
    async fn ack(&self, device: DeviceId, up_to: u64) -> Result<u64, StoreError>;

    /// Records a request nonce of `device` until `expires_at`. Returns `false` if it was used
    /// before (a replayed request). Forgets nonces that expired before `now`.
    async fn use_nonce(
        &self,
        device: DeviceId,
        nonce: &[u8],
        expires_at: u64,
        now: u64,
    ) -> Result<bool, StoreError>;
}

/// Opens the store a URL names: `sqlite://PATH` (created if missing), `sqlite::memory:`, or
/// `postgres://...`. Applies migrations.
///
/// # Errors
/// [`StoreError::UnsupportedUrl`] for other schemes; [`StoreError::Database`] or
/// [`StoreError::Migration`] if the database cannot be opened or migrated.
pub async fn open(url: &str) -> Result<Box<dyn Store>, StoreError> {
    if url.starts_with("sqlite:") {
        Ok(Box::new(SqliteStore::open(url).await?))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Box::new(PostgresStore::open(url).await?))
    } else {
        Err(StoreError::UnsupportedUrl(url.to_owned()))
    }
}

/// An inbox row as selected: seq, thread, thread_seq, sender, kind, payload.
pub(crate) type InboxRow = (i64, String, i64, String, String, Vec<u8>);

/// Reads an inbox row back, refusing values the relay could not have written.
pub(crate) fn inbox_item(
    (seq, thread, thread_seq, sender, kind, payload): InboxRow,
) -> Result<InboxItem, StoreError> {
    Ok(InboxItem {
        seq: to_u64(seq, "inbox sequence")?,
        thread: thread_from_text(&thread)?,
        thread_seq: to_u64(thread_seq, "thread sequence")?,
        sender: device_from_text(&sender)?,
        kind: ItemKind::parse(&kind)?,
        payload,
    })
}

/// Converts a stored integer to u64, refusing negatives.
fn to_u64(value: i64, what: &str) -> Result<u64, StoreError> {
    u64::try_from(value).map_err(|_| StoreError::Corrupt(format!("negative {what}: {value}")))
}

/// Converts a u64 to a stored integer, refusing values past i64::MAX.
fn to_i64(value: u64, what: &str) -> Result<i64, StoreError> {
    i64::try_from(value)
        .map_err(|_| StoreError::Conflict(format!("{what} {value} is too large to store")))
}

fn device_from_text(text: &str) -> Result<DeviceId, StoreError> {
    text.parse()
        .map_err(|e| StoreError::Corrupt(format!("device id: {e}")))
}

fn thread_from_text(text: &str) -> Result<ThreadId, StoreError> {
    text.parse()
        .map_err(|e| StoreError::Corrupt(format!("thread id: {e}")))
}

fn entity_from_text(text: &str) -> Result<EntityId, StoreError> {
    EntityId::new(text).map_err(|e| StoreError::Corrupt(format!("entity id: {e}")))
}

fn key_from_bytes(bytes: &[u8]) -> Result<[u8; 32], StoreError> {
    bytes
        .try_into()
        .map_err(|_| StoreError::Corrupt(format!("identity key of {} bytes", bytes.len())))
}

/// The devices a post goes to: current members (plus, for commits, new members), minus the
/// sender, only `post.to` if set, sorted (a fixed order also fixes the lock order, so concurrent posts cannot deadlock).
fn recipients(members: &[DeviceId], post: &Post<'_>) -> Vec<DeviceId> {
    let mut out: Vec<DeviceId> = members.to_vec();
    if let Some((_, new)) = post.new_roster {
        out.extend_from_slice(new);
    }
    out.sort_unstable();
    out.dedup();
    out.retain(|d| *d != post.sender && post.to.is_none_or(|to| to == *d));
    out
}
