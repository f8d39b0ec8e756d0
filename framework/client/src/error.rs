//! Errors of the client.

use switchboard_protocol::api::ErrorCode;
use switchboard_protocol::{EntityId, Epoch, Fingerprint, ThreadId};

use crate::keystore::KeystoreError;

/// Why a client operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The relay URL is not `http://HOST:PORT` (or `https://` with the `tls` feature).
    #[error("invalid relay URL {url:?}: {why}")]
    BadUrl {
        /// The URL given.
        url: String,
        /// What is wrong.
        why: &'static str,
    },
    /// The relay could not be reached, or the connection failed mid-request. Retry later.
    #[error("cannot reach the relay at {url}: {detail}")]
    Unreachable {
        /// The relay.
        url: String,
        /// The transport error.
        detail: String,
    },
    /// The relay refused the request with a JSON error.
    #[error("the relay refused {what}: {status} {code}: {message}")]
    Refused {
        /// What was asked.
        what: &'static str,
        /// HTTP status.
        status: u16,
        /// The relay's stable error code ([`ErrorCode::Forbidden`], [`ErrorCode::RateLimited`],
        /// ...; [`ErrorCode::Unknown`] for a code this version does not know or an answer that
        /// is not the relay's JSON error).
        code: ErrorCode,
        /// The relay's message.
        message: String,
        /// Seconds to wait before retrying, for `rate_limited` and `banned`.
        retry_after: Option<u64>,
    },
    /// The relay answered something that is not what the API promises.
    #[error("the relay's answer to {what} is not valid: {detail}")]
    BadAnswer {
        /// What was asked.
        what: &'static str,
        /// What is wrong.
        detail: String,
    },
    /// A protocol check failed (a wrap, commit or message was refused, keys did not verify).
    #[error(transparent)]
    Protocol(#[from] switchboard_protocol::Error),
    /// The keystore could not be used.
    #[error(transparent)]
    Keystore(#[from] KeystoreError),
    /// The keystore's contents are not valid.
    #[error("keystore contents are not valid: {0}")]
    KeystoreContents(String),
    /// The device store ([`crate::store::DeviceStore`]) could not be read or written.
    #[error("device store: {0}")]
    Store(String),
    /// This device holds no state for the thread.
    #[error("this device is not in thread {0}")]
    UnknownThread(ThreadId),
    /// The entity's admin key is not the one this device pinned at first contact. Someone may be
    /// impersonating the entity, or it replaced its admin device: compare fingerprints out of
    /// band, then [`Device::trust_admin_key`](crate::Device::trust_admin_key) to accept the new
    /// key.
    #[error(
        "the admin key of {entity} changed: pinned {pinned}, the relay now serves {served}; \
         compare fingerprints with {entity} before trusting the new key"
    )]
    AdminKeyChanged {
        /// The entity.
        entity: EntityId,
        /// The fingerprint pinned at first contact.
        pinned: Fingerprint,
        /// The fingerprint the relay serves now.
        served: Fingerprint,
    },
    /// At enrolment, the relay served a key whose fingerprint is not the one compared out of
    /// band: the relay (or the network) substituted it, or the fingerprint was mistyped.
    #[error(
        "the relay served a key for {what} with fingerprint {served}, but {expected} was expected; \
         do not proceed: check the fingerprint with the other device's owner, and the relay"
    )]
    FingerprintMismatch {
        /// Whose key it is.
        what: String,
        /// The fingerprint compared out of band.
        expected: Fingerprint,
        /// The fingerprint of the key the relay served.
        served: Fingerprint,
    },
    /// The operation needs a role this device does not have (e.g. committing on a customer
    /// device).
    #[error("{0}")]
    WrongRole(String),
    /// A commit of this thread that the admin made earlier is not posted yet (the relay was
    /// unreachable or refused it for now); a new commit would skip an epoch. It is posted again
    /// at every [`Device::receive`](crate::Device::receive); try again after that.
    #[error(
        "commit for epoch {epoch} of thread {thread} is not posted yet ({reason}); it is retried at the next receive"
    )]
    CommitPending {
        /// The thread.
        thread: ThreadId,
        /// The epoch the unposted commit starts.
        epoch: Epoch,
        /// Why the last attempt failed.
        reason: String,
    },
}

impl ClientError {
    /// Whether retrying later may succeed: the relay was unreachable, busy, rate limiting, or
    /// failed on its side.
    #[must_use]
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Unreachable { .. } => true,
            Self::Refused { status, code, .. } => *status >= 500 || code.is_transient(),
            _ => false,
        }
    }
}

impl From<switchboard_protocol::WireError> for ClientError {
    fn from(e: switchboard_protocol::WireError) -> Self {
        Self::Protocol(e.into())
    }
}

impl From<switchboard_protocol::MessageError> for ClientError {
    fn from(e: switchboard_protocol::MessageError) -> Self {
        Self::Protocol(e.into())
    }
}

impl From<switchboard_protocol::CommitError> for ClientError {
    fn from(e: switchboard_protocol::CommitError) -> Self {
        Self::Protocol(e.into())
    }
}

impl From<switchboard_protocol::KeyError> for ClientError {
    fn from(e: switchboard_protocol::KeyError) -> Self {
        Self::Protocol(e.into())
    }
}
