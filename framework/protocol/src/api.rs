//! The JSON bodies of the relay's HTTP API (besides the wire values it carries), shared by the
//! relay and its clients. The relay's `/openapi.json` documents the routes that use them.

use serde::{Deserialize, Serialize};

use crate::ids::{DeviceId, EntityId, ThreadId};
use crate::keys::KeyBundle;
use crate::wire::{Version, WireType};

/// The answer to `POST /v1/devices` (registration).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Registration {
    /// Protocol version.
    pub v: Version,
    /// The device.
    pub device: DeviceId,
    /// Its fingerprint, for people to compare.
    pub fingerprint: String,
    /// Whether it was new.
    pub created: bool,
}

impl WireType for Registration {
    const WHAT: &'static str = "registration";
}

/// Body of `POST /v1/entities`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewEntity {
    /// Protocol version.
    pub v: Version,
    /// The entity's name.
    pub entity: EntityId,
    /// What customers see.
    pub display_name: String,
}

impl WireType for NewEntity {
    const WHAT: &'static str = "new entity";
}

/// An entity's directory record (`GET /v1/entities/{entity}`): what a customer's device fetches
/// (and pins) before opening a thread.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirectoryRecord {
    /// Protocol version.
    pub v: Version,
    /// The entity.
    pub entity: EntityId,
    /// What customers see.
    pub display_name: String,
    /// The admin device's key bundle.
    pub admin: KeyBundle,
}

impl WireType for DirectoryRecord {
    const WHAT: &'static str = "directory record";
}

/// Where a post went, as answered to the poster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostAnswer {
    /// Protocol version.
    pub v: Version,
    /// The thread.
    pub thread: ThreadId,
    /// The post's position in the thread.
    pub thread_seq: u64,
    /// How many devices it was queued for.
    pub recipients: usize,
}

impl WireType for PostAnswer {
    const WHAT: &'static str = "post answer";
}

/// What an inbox item carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ItemKind {
    /// A [`ThreadOpen`](crate::ThreadOpen), to the admin.
    ThreadOpen,
    /// A [`Commit`](crate::Commit), to old and new members.
    Commit,
    /// A [`SealedMessage`](crate::SealedMessage), to the other members.
    Message,
    /// A [`HistoryGrant`](crate::HistoryGrant), to the one member it is for.
    History,
}

/// One inbox item.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InboxItem {
    /// The cursor: acknowledge up to here.
    pub seq: u64,
    /// The thread.
    pub thread: ThreadId,
    /// Position in the thread.
    pub thread_seq: u64,
    /// The sender, as the relay authenticated it (the payload's own signature is what counts).
    pub sender: DeviceId,
    /// What the payload is.
    pub kind: ItemKind,
    /// The wire value, as posted.
    pub payload: serde_json::Value,
}

/// The answer of `GET /v1/inbox`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InboxAnswer {
    /// Protocol version.
    pub v: Version,
    /// Items after the cursor, oldest first.
    pub items: Vec<InboxItem>,
}

impl WireType for InboxAnswer {
    const WHAT: &'static str = "inbox";
}

/// Body of `POST /v1/inbox/ack`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ack {
    /// Protocol version.
    pub v: Version,
    /// Acknowledge every item with `seq <= up_to`.
    pub up_to: u64,
    /// With leases: only the items of threads this instance holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
}

impl WireType for Ack {
    const WHAT: &'static str = "ack";
}

/// Every refusal of the relay: `{"error": {"code": ..., "message": ...}}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// The inside of an [`ErrorBody`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// A stable code (`unauthenticated`, `forbidden`, `rate_limited`, ...).
    pub code: String,
    /// A sentence for people.
    pub message: String,
}
