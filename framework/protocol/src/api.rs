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

/// What an inbox item carries. The one list of item kinds: the relay stores and serves these
/// names, the client dispatches on them.
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

impl ItemKind {
    /// Every kind.
    pub const ALL: [Self; 4] = [Self::ThreadOpen, Self::Commit, Self::Message, Self::History];

    /// The name on the wire and in the relay's store (`thread_open`, `commit`, ...).
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::ThreadOpen => "thread_open",
            Self::Commit => "commit",
            Self::Message => "message",
            Self::History => "history",
        }
    }

    /// The largest payload (wire JSON bytes) the relay accepts and stores for an item of this
    /// kind. A message holds at most [`MAX_TEXT_BYTES`](crate::message::MAX_TEXT_BYTES) of text
    /// (base64 and header on top); a thread open two bundles and a wrap; a commit (a roster with
    /// its bundles, credentials and wraps, for groups of any size) and a history grant up to
    /// [`MAX_WIRE_BYTES`](crate::wire::MAX_WIRE_BYTES).
    #[must_use]
    pub const fn max_payload_bytes(self) -> usize {
        match self {
            Self::ThreadOpen => 256 * 1024,
            Self::Commit => crate::wire::MAX_WIRE_BYTES,
            // 64 KiB of text that JSON escapes six-fold (control characters), then base64.
            Self::Message => 768 * 1024,
            Self::History => crate::wire::MAX_WIRE_BYTES,
        }
    }
}

impl std::fmt::Display for ItemKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for ItemKind {
    type Err = UnknownName;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|kind| kind.as_str() == text)
            .ok_or_else(|| UnknownName(text.chars().take(64).collect()))
    }
}

/// A name that is not one of the known values (an item kind, an error code).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown name {0:?}")]
pub struct UnknownName(pub String);

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

/// The most payload bytes one inbox answer carries: the relay stops adding items once the next
/// one would pass this, but always answers at least one item (which is then at most
/// [`MAX_WIRE_BYTES`](crate::wire::MAX_WIRE_BYTES)).
pub const MAX_INBOX_PAGE_BYTES: usize = 4 * 1024 * 1024;

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
    /// A stable code.
    pub code: ErrorCode,
    /// A sentence for people.
    pub message: String,
}

/// The stable, machine-readable code of every refusal of the relay: the one list, used by the
/// relay to answer and by clients to decide (retry, re-register, give up). A code this version
/// does not know (a newer relay) reads as [`ErrorCode::Unknown`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorCode {
    /// Authentication headers are missing or malformed (401).
    Unauthenticated,
    /// The request signature does not verify (401).
    BadSignature,
    /// The request's timestamp is too far from the relay's clock (401).
    StaleRequest,
    /// The request's nonce was used before (401).
    ReplayedRequest,
    /// The requesting device is not registered (401).
    UnknownDevice,
    /// The request names a session the relay does not hold (never opened, expired, or lost
    /// with a restart): open another, or sign the request (401).
    UnknownSession,
    /// The body, path or query is not valid (400).
    Malformed,
    /// The body declares a protocol version the relay does not speak (400).
    UnsupportedVersion,
    /// The body is larger than the route allows (413).
    TooLarge,
    /// The body did not arrive in time (408).
    RequestTimeout,
    /// The resource exists with other content (409).
    Conflict,
    /// The resource or route does not exist (404).
    NotFound,
    /// The route exists but not with this HTTP method (405).
    MethodNotAllowed,
    /// The requester may not do this (403).
    Forbidden,
    /// Too many requests: wait `Retry-After` seconds (429).
    RateLimited,
    /// Kept ignoring `Retry-After`: banned for `Retry-After` seconds (403).
    Banned,
    /// The relay is busy or its store unreachable: retry later (503).
    Unavailable,
    /// A bug in the relay (500).
    Internal,
    /// A code this version does not know.
    #[serde(other)]
    Unknown,
}

impl ErrorCode {
    /// Every code the relay answers with (not [`ErrorCode::Unknown`]).
    pub const ALL: [Self; 18] = [
        Self::Unauthenticated,
        Self::BadSignature,
        Self::StaleRequest,
        Self::ReplayedRequest,
        Self::UnknownDevice,
        Self::UnknownSession,
        Self::Malformed,
        Self::UnsupportedVersion,
        Self::TooLarge,
        Self::RequestTimeout,
        Self::Conflict,
        Self::NotFound,
        Self::MethodNotAllowed,
        Self::Forbidden,
        Self::RateLimited,
        Self::Banned,
        Self::Unavailable,
        Self::Internal,
    ];

    /// The code as it is written in an answer.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Unauthenticated => "unauthenticated",
            Self::BadSignature => "bad_signature",
            Self::StaleRequest => "stale_request",
            Self::ReplayedRequest => "replayed_request",
            Self::UnknownDevice => "unknown_device",
            Self::UnknownSession => "unknown_session",
            Self::Malformed => "malformed",
            Self::UnsupportedVersion => "unsupported_version",
            Self::TooLarge => "too_large",
            Self::RequestTimeout => "request_timeout",
            Self::Conflict => "conflict",
            Self::NotFound => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::Forbidden => "forbidden",
            Self::RateLimited => "rate_limited",
            Self::Banned => "banned",
            Self::Unavailable => "unavailable",
            Self::Internal => "internal",
            Self::Unknown => "unknown",
        }
    }

    /// The HTTP status the relay answers this code with.
    #[must_use]
    pub const fn status(self) -> u16 {
        match self {
            Self::Unauthenticated
            | Self::BadSignature
            | Self::StaleRequest
            | Self::ReplayedRequest
            | Self::UnknownDevice
            | Self::UnknownSession => 401,
            Self::Malformed | Self::UnsupportedVersion => 400,
            Self::TooLarge => 413,
            Self::RequestTimeout => 408,
            Self::Conflict => 409,
            Self::NotFound => 404,
            Self::MethodNotAllowed => 405,
            Self::Forbidden | Self::Banned => 403,
            Self::RateLimited => 429,
            Self::Unavailable => 503,
            Self::Internal | Self::Unknown => 500,
        }
    }

    /// Whether retrying later may succeed (busy, rate limited, banned for a while, or failed on
    /// the relay's side).
    #[must_use]
    pub const fn is_transient(self) -> bool {
        matches!(
            self,
            Self::RateLimited | Self::Banned | Self::Unavailable | Self::Internal
        )
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for ErrorCode {
    type Err = UnknownName;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|code| code.as_str() == text)
            .ok_or_else(|| UnknownName(text.chars().take(64).collect()))
    }
}

#[cfg(test)]
mod tests {
    use super::{ErrorCode, ItemKind};

    #[test]
    fn codes_and_kinds_read_back_as_written() {
        for code in ErrorCode::ALL {
            let json = serde_json::to_string(&code).unwrap_or_default();
            assert_eq!(json, format!("\"{code}\""));
            assert_eq!(code.as_str().parse(), Ok(code));
        }
        let newer: ErrorCode =
            serde_json::from_str("\"payment_required\"").unwrap_or(ErrorCode::Internal);
        assert_eq!(newer, ErrorCode::Unknown);
        for kind in ItemKind::ALL {
            let json = serde_json::to_string(&kind).unwrap_or_default();
            assert_eq!(json, format!("\"{kind}\""));
            assert_eq!(kind.as_str().parse(), Ok(kind));
        }
    }
}
