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
    /// A read failed (the database file unreadable, out of memory, ...). Retry later.
    #[error("the database failed a read: {0}")]
    ReadFailed(String),
    /// The group commit holding this post failed; the post was not stored. Retry.
    #[error("the database could not commit the batch holding this post: {0}")]
    CommitFailed(String),
    /// A stored value could not be read back (corruption or a bug).
    #[error("stored data is invalid: {0}")]
    Corrupt(String),
    /// The sender of a message is not a member of the thread: nothing was written.
    #[error("not a member: {0}")]
    NotMember(String),
    /// The request's nonce was used before (a replayed request): nothing was written.
    #[error("the request was seen before (its nonce was used)")]
    Replayed,
}

/// A request's nonce, to be spent in the same transaction as the request's write (see
/// [`Store::post_once`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestNonce {
    /// The requesting device.
    pub device: DeviceId,
    /// The nonce.
    pub nonce: Vec<u8>,
    /// Until when it is remembered (Unix seconds).
    pub expires_at: u64,
    /// Now (Unix seconds): nonces that expired before it are forgotten.
    pub now: u64,
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

/// What kind of item an inbox holds: the protocol's one list, stored by its name
/// ([`ItemKind::as_str`]).
pub use switchboard_protocol::api::ItemKind;

fn parse_kind(text: &str) -> Result<ItemKind, StoreError> {
    text.parse()
        .map_err(|_| StoreError::Corrupt(format!("unknown item kind {text:?}")))
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

/// What identifies a message among a thread's posts, so that a message posted again (a retry
/// after a lost answer) is stored once: its epoch, sender and generation, and a digest of its
/// bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PostKey {
    /// The message's epoch.
    pub epoch: u64,
    /// The sender's generation counter in that epoch.
    pub generation: u64,
    /// SHA-256 of the posted bytes.
    pub digest: [u8; 32],
}

/// What a device is to the relay, as its records say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeviceRole {
    /// A customer device (or a device in no thread yet).
    Customer,
    /// A member of an entity's threads other than their customer and admin.
    Agent(EntityId),
    /// The admin device of an entity.
    Admin(EntityId),
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
    /// For messages: posted again with the same key and bytes, the post is answered as stored
    /// before; with the same key and other bytes, it is refused as a conflict.
    pub key: Option<PostKey>,
}

/// The inbox items of device `$1` available to instance `$2` at time `$3` past cursor `$4`:
/// those of threads nobody holds (or whose lease expired), and those of the instance's own
/// threads past its cursor. The `FROM ... WHERE` of a leased fetch.
pub(crate) const LEASE_AVAILABLE: &str = "FROM inbox i LEFT JOIN leases l \
       ON l.device_id = i.device_id AND l.thread_id = i.thread_id \
     WHERE i.device_id = $1 \
       AND (l.instance IS NULL OR l.expires_at <= $3 OR l.instance = $2) \
       AND (i.seq > $4 OR l.instance IS NULL OR l.expires_at <= $3)";

/// A leased inbox fetch (see [`Store::fetch_leased`]), owned so that a writer task can run it.
#[derive(Debug, Clone)]
pub(crate) struct LeasedFetch {
    pub(crate) device: DeviceId,
    pub(crate) instance: String,
    pub(crate) after: u64,
    pub(crate) limit: u32,
    pub(crate) max_bytes: u64,
    pub(crate) now: u64,
    pub(crate) lease_secs: u64,
}

/// An acknowledgement up to a position (see [`Store::ack`]), of the threads `instance` holds
/// if it is set (see [`Store::ack_leased`]).
#[derive(Debug, Clone)]
pub(crate) struct AckUpTo {
    pub(crate) device: DeviceId,
    pub(crate) instance: Option<String>,
    pub(crate) up_to: u64,
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
    pub(crate) key: Option<PostKey>,
    /// The request's nonce, spent in the post's transaction (see [`Store::post_once`]).
    pub(crate) nonce: Option<RequestNonce>,
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
            key: post.key,
            nonce: None,
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
            key: self.key,
        }
    }
}

/// Where a post went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Posted {
    /// Its position in the thread.
    pub thread_seq: u64,
    /// The devices it was queued for (empty when `stored_before`).
    pub recipients: Vec<DeviceId>,
    /// The same message was stored before (see [`Post::key`]); nothing was queued now.
    pub stored_before: bool,
    /// How many devices it was queued for (the first time, when `stored_before`).
    pub recipient_count: u64,
}

impl Posted {
    /// A new post queued for `recipients` at `thread_seq`.
    #[must_use]
    pub fn new(thread_seq: u64, recipients: Vec<DeviceId>) -> Self {
        let recipient_count = recipients.len() as u64;
        Self {
            thread_seq,
            recipients,
            stored_before: false,
            recipient_count,
        }
    }
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
    ///
    /// A message (`ItemKind::Message`) is refused with [`StoreError::NotMember`] unless its
    /// sender is a member of the thread.
    async fn post(&self, post: &Post<'_>) -> Result<Posted, StoreError>;

    /// [`post`](Self::post) and [`use_nonce`](Self::use_nonce) in one transaction (one fsync
    /// instead of two): refused with [`StoreError::Replayed`], nothing posted, if the nonce was
    /// used before. The nonce stays spent even if the post is refused.
    async fn post_once(&self, post: &Post<'_>, nonce: &RequestNonce) -> Result<Posted, StoreError>;

    /// Up to `limit` unacknowledged items of `device` with `seq > after`, oldest first, and no
    /// more than `max_bytes` of payload in all, except that the first item always comes.
    async fn fetch(
        &self,
        device: DeviceId,
        after: u64,
        limit: u32,
        max_bytes: u64,
    ) -> Result<Vec<InboxItem>, StoreError>;

    /// For one instance of a device run as several processes: up to `limit` items that this
    /// `instance` may handle, oldest first. An item is available when its thread is leased to
    /// nobody, to this instance, or on an expired lease; the instance then leases (or renews) the
    /// thread until `now + lease_secs`. Items are those with `seq > after`, plus every
    /// unacknowledged item of a thread this instance has just taken over, so a takeover
    /// redelivers in order what the previous holder left unacknowledged. Paged by
    /// `max_bytes` as [`Store::fetch`].
    #[allow(clippy::too_many_arguments)]
    async fn fetch_leased(
        &self,
        device: DeviceId,
        instance: &str,
        after: u64,
        limit: u32,
        max_bytes: u64,
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

    /// What `device` is: the admin of an entity, an agent in an entity's threads, or a customer.
    async fn device_role(&self, device: DeviceId) -> Result<DeviceRole, StoreError>;

    /// Whether the database answers (for `/readyz`).
    async fn ping(&self) -> Result<(), StoreError>;

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
        kind: parse_kind(&kind)?,
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

/// A page of an inbox in one statement: `$ROWS` (the `FROM ... WHERE` of the items that may
/// be fetched, selecting `i.seq AS s, length(i.payload) AS len` and whatever else the page
/// needs, ordered by `i.seq` and limited) is cut where the payloads passed `$MAX` bytes in
/// all, but keeps its first item. Only the lengths of the rows past the cut are read.
pub(crate) fn page_sql(columns: &str, rows: &str, max: &str) -> String {
    format!(
        "SELECT i.seq, i.thread_id, i.thread_seq, i.sender, i.kind, i.payload{columns} \
         FROM inbox i JOIN (SELECT page.*, \
           SUM(page.len) OVER (ORDER BY page.s ROWS UNBOUNDED PRECEDING) AS running, \
           ROW_NUMBER() OVER (ORDER BY page.s) AS n FROM ({rows}) page) p \
         ON i.device_id = $1 AND i.seq = p.s \
         WHERE p.n = 1 OR p.running <= {max} ORDER BY i.seq"
    )
}

/// The last `seq` of a page of `sizes` (`(seq, payload bytes)`, in order) holding at most
/// `max_bytes`, but at least the first item.
fn page_end(sizes: &[(i64, i64)], max_bytes: u64) -> Option<i64> {
    let mut total: u64 = 0;
    let mut end = None;
    for (seq, size) in sizes {
        total = total.saturating_add(u64::try_from(*size).unwrap_or(0));
        if end.is_some() && total > max_bytes {
            break;
        }
        end = Some(*seq);
    }
    end
}

/// The refusal of a message whose sender is not a member of its thread.
fn not_member(post: &Post<'_>) -> StoreError {
    StoreError::NotMember(format!(
        "device {} is not a member of thread {}",
        post.sender, post.thread
    ))
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
