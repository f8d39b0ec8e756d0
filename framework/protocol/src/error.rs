//! Errors, one enum per operation, plus [`Error`] which any of them converts into.
//!
//! Every message says what went wrong and, where there is something to do, what to do. Refusals
//! caused by input (a bad signature, a replay) are distinct from [`Error::Internal`], which
//! means a bug in this crate.

use crate::ids::{DeviceId, EntityId, Epoch, ThreadId, Timestamp, WrapId};
use crate::keys::KemKeyId;
use crate::suite::CipherSuite;

/// The operating system could not provide randomness.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the operating system's random source failed: {detail}; retry, and check the host's entropy source"
)]
pub struct RandomnessError {
    /// What the operating system reported.
    pub detail: String,
}

/// Decoding a wire value failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The value is not valid JSON of the expected shape, or a field has an invalid encoding.
    #[error("malformed {what}: {detail}")]
    Malformed {
        /// Which kind of value was being decoded.
        what: &'static str,
        /// What the decoder found wrong.
        detail: String,
    },
    /// The value declares a protocol version this build does not speak.
    #[error(
        "unsupported protocol version {found} in {what}: this build speaks switchboard/{supported}; upgrade the peer or this device"
    )]
    UnsupportedVersion {
        /// Which kind of value was being decoded.
        what: &'static str,
        /// The version found on the wire.
        found: u64,
        /// The version this build speaks.
        supported: u64,
    },
}

/// A key, key bundle or fingerprint was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The bytes are not a valid Ed25519 public key.
    #[error("invalid Ed25519 identity key: {detail}")]
    InvalidIdentityKey {
        /// Why it was refused.
        detail: String,
    },
    /// The Ed25519 key is of small order (for example all zero): anyone could forge its signatures.
    #[error("weak (small-order) Ed25519 identity key refused")]
    WeakIdentityKey,
    /// The KEM public key has the wrong length or is not a valid key for its suite.
    #[error("invalid {suite} KEM public key: {detail}")]
    InvalidKemKey {
        /// The suite the key claims.
        suite: CipherSuite,
        /// Why it was refused.
        detail: String,
    },
    /// The X25519 public key is all zero or of small order: a wrap to it would not be secret.
    #[error("small-order (for example all-zero) X25519 key refused")]
    WeakKemKey,
    /// The key bundle's self-signature does not verify.
    #[error("key bundle of device {device} has an invalid signature")]
    BadBundleSignature {
        /// The device the bundle claims to be.
        device: DeviceId,
    },
    /// A thread was opened to keys that are not this admin's current keys.
    #[error(
        "the thread was opened with keys that are not this admin device's current keys; the customer has a stale directory record and must fetch it again"
    )]
    StaleKeys,
    /// A bundle meant to replace a member's bundle (a key rotation) changes the identity key.
    #[error(
        "updated key bundle of device {device} has another identity key; a rotation replaces only the KEM key"
    )]
    IdentityChanged {
        /// The device.
        device: DeviceId,
    },
    /// A bundle meant to replace a member's bundle is not newer than the one it replaces.
    #[error(
        "updated key bundle of device {device} was created at {found}, not after the bundle it replaces ({current}); an older bundle is refused (rollback)"
    )]
    NotNewer {
        /// The device.
        device: DeviceId,
        /// `created_at` of the bundle held.
        current: Timestamp,
        /// `created_at` of the offered bundle.
        found: Timestamp,
    },
    /// The bundle belongs to a different device than expected.
    #[error("key bundle is for device {found}, expected {expected}")]
    WrongDevice {
        /// The device that was expected.
        expected: DeviceId,
        /// The device in the bundle.
        found: DeviceId,
    },
}

/// An agent credential was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialError {
    /// The signature does not verify under the entity's admin identity key.
    #[error("agent credential for device {device} is not signed by the entity's admin")]
    BadSignature {
        /// The agent device named in the credential.
        device: DeviceId,
    },
    /// The credential has expired.
    #[error(
        "agent credential for device {device} expired at {expires_at} (now {now}); ask the admin to issue a new one"
    )]
    Expired {
        /// The agent device named in the credential.
        device: DeviceId,
        /// When it expired.
        expires_at: Timestamp,
        /// The time it was checked at.
        now: Timestamp,
    },
    /// The credential names another entity or another admin device.
    #[error("agent credential for device {device} was issued for another entity or admin")]
    WrongIssuer {
        /// The agent device named in the credential.
        device: DeviceId,
    },
    /// The credential's identity key differs from the device's key bundle.
    #[error(
        "agent credential for device {device} names a different identity key than its key bundle"
    )]
    KeyMismatch {
        /// The agent device named in the credential.
        device: DeviceId,
    },
    /// The display name is empty, too long or contains control characters.
    #[error("invalid agent display name: {detail}")]
    InvalidDisplayName {
        /// What is wrong with it.
        detail: String,
    },
}

/// Opening (or sealing) a key wrap failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WrapError {
    /// The wrap uses another suite than the recipient's KEM key.
    #[error("wrap uses suite {found} but the recipient's key is {expected}")]
    SuiteMismatch {
        /// The recipient key's suite.
        expected: CipherSuite,
        /// The suite named in the wrap.
        found: CipherSuite,
    },
    /// The wrap is addressed to another device.
    #[error("wrap {wrap_id} is addressed to device {found}, not to this device {expected}")]
    WrongRecipient {
        /// The wrap.
        wrap_id: WrapId,
        /// This device.
        expected: DeviceId,
        /// The addressee in the wrap.
        found: DeviceId,
    },
    /// The wrap claims a sender other than the one this device accepts wraps from.
    #[error("wrap {wrap_id} claims sender {found}; only {expected} may wrap keys for this thread")]
    UnexpectedSender {
        /// The wrap.
        wrap_id: WrapId,
        /// The accepted sender (the pinned admin, or the customer who opened the thread).
        expected: DeviceId,
        /// The sender in the wrap.
        found: DeviceId,
    },
    /// The wrap's signature does not verify under the expected sender's identity key.
    #[error(
        "wrap {wrap_id} has an invalid signature (unsigned, tampered, or signed by someone other than {sender})"
    )]
    BadSignature {
        /// The wrap.
        wrap_id: WrapId,
        /// The sender whose key was used.
        sender: DeviceId,
    },
    /// The wrap has expired.
    #[error("wrap {wrap_id} expired at {expires_at} (now {now})")]
    Expired {
        /// The wrap.
        wrap_id: WrapId,
        /// When it expired.
        expires_at: Timestamp,
        /// The time it was checked at.
        now: Timestamp,
    },
    /// A wrap with this id was opened before.
    #[error("wrap {wrap_id} was already opened once: replay refused")]
    Replayed {
        /// The wrap.
        wrap_id: WrapId,
    },
    /// The wrap is for another thread, epoch or roster than the caller expects.
    #[error("wrap {wrap_id} does not match the expected {field}")]
    ContextMismatch {
        /// The wrap.
        wrap_id: WrapId,
        /// Which context field differs.
        field: &'static str,
    },
    /// The wrap is sealed to a KEM key this device does not hold: a key it never had, or one it
    /// rotated away and deleted after the grace period.
    #[error(
        "wrap {wrap_id} is sealed to KEM key {key}, which this device does not hold (never had, or deleted after a rotation); the sender must wrap to the device's current bundle"
    )]
    UnknownKemKey {
        /// The wrap.
        wrap_id: WrapId,
        /// The key it names.
        key: KemKeyId,
    },
    /// HPKE decapsulation or decryption failed: the wrap was tampered with or is not for this key.
    #[error("wrap {wrap_id} could not be decrypted with this device's KEM key")]
    Decrypt {
        /// The wrap.
        wrap_id: WrapId,
    },
    /// The recipient's key could not be used.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// A thread open names another entity than this admin serves.
    #[error("thread was opened with entity {found} but this admin serves {expected}")]
    WrongEntity {
        /// The admin's entity.
        expected: EntityId,
        /// The entity in the thread open.
        found: EntityId,
    },
    /// The customer and the admin are the same device.
    #[error("a device cannot open a thread with itself")]
    SelfThread,
    /// A [`ThreadSnapshot`](crate::ThreadSnapshot) is not one this crate could have written, or
    /// belongs to another device.
    #[error("invalid thread snapshot: {0}")]
    Snapshot(String),
    /// A bug in this crate.
    #[error("internal error while {0}; please report this")]
    Internal(&'static str),
}

/// Creating or applying a roster commit (forward, add, remove, transfer) failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommitError {
    /// The commit is for another thread.
    #[error("commit is for thread {found}, not {expected}")]
    WrongThread {
        /// This thread.
        expected: ThreadId,
        /// The thread in the commit.
        found: ThreadId,
    },
    /// The commit is not signed by the entity's admin.
    #[error("commit for epoch {epoch} is not signed by the thread's admin {admin}")]
    BadSignature {
        /// The epoch the commit would start.
        epoch: Epoch,
        /// The admin device whose key was checked.
        admin: DeviceId,
    },
    /// The commit does not start the epoch after the current one.
    #[error(
        "commit starts epoch {found} but this device is at epoch {current}; commits must be applied in order"
    )]
    EpochMismatch {
        /// This device's current epoch.
        current: Epoch,
        /// The epoch the commit starts.
        found: Epoch,
    },
    /// The commit was made on top of a different roster than this device has.
    #[error(
        "commit for epoch {epoch} builds on a different roster than this device's; the views have diverged"
    )]
    RosterMismatch {
        /// The epoch the commit would start.
        epoch: Epoch,
    },
    /// The action is not valid for the current roster.
    #[error("invalid roster change: {0}")]
    InvalidAction(String),
    /// A member's updated key bundle (a KEM key rotation) in the commit is refused.
    #[error("commit's key update for device {device} refused: {reason}")]
    KeyUpdate {
        /// The device the update is for.
        device: DeviceId,
        /// Why.
        reason: String,
    },
    /// This device is not a member of the new epoch (it was removed).
    #[error("device {device} is not a member of epoch {epoch}: it was removed from the thread")]
    Removed {
        /// This device.
        device: DeviceId,
        /// The new epoch.
        epoch: Epoch,
    },
    /// The commit names this device as a member but carries no wrap for it.
    #[error("commit for epoch {epoch} makes device {device} a member but has no key wrap for it")]
    MissingWrap {
        /// This device.
        device: DeviceId,
        /// The new epoch.
        epoch: Epoch,
    },
    /// The epoch secret this device unwrapped is not the one the admin committed to: the admin
    /// gave members different secrets.
    #[error(
        "the secret wrapped to this device for epoch {epoch} does not match the commit's confirmation: members were given different secrets"
    )]
    ConfirmationMismatch {
        /// The new epoch.
        epoch: Epoch,
    },
    /// The commit's roster is for another entity.
    #[error("commit is for entity {found}, but this device serves {expected}")]
    WrongEntity {
        /// This device's entity.
        expected: EntityId,
        /// The entity in the commit.
        found: EntityId,
    },
    /// This device's wrap in the commit is refused.
    #[error("key wrap in commit refused: {0}")]
    Wrap(#[from] WrapError),
    /// A member's credential was refused.
    #[error("member credential refused: {0}")]
    Credential(#[from] CredentialError),
    /// A member's key bundle was refused.
    #[error("member key bundle refused: {0}")]
    Key(#[from] KeyError),
    /// Only the admin device can make commits.
    #[error("only the thread's admin device can change the roster")]
    NotAdmin,
    /// A commit would add this device to a thread it has already seen at that epoch or later
    /// (and may have been removed from): a replayed or stale commit, refused so that the device
    /// never restarts an epoch it already sent in.
    #[error(
        "commit for epoch {epoch} would add this device to thread {thread}, but it has already seen epoch {highest} of it{}: a replayed or stale commit is refused; the admin must add the device again with a new commit",
        if *removed { " and was removed" } else { "" }
    )]
    StaleJoin {
        /// The thread.
        thread: ThreadId,
        /// The epoch the commit starts.
        epoch: Epoch,
        /// The highest epoch of the thread this device has seen.
        highest: Epoch,
        /// Whether this device was removed at `highest`.
        removed: bool,
    },
    /// The device's memory of threads and opened wraps is full of entries that may still
    /// matter: the join is refused rather than forgetting what protects other threads.
    #[error(
        "this device remembers {limit} threads or key wraps that may still be replayed, its limit; joining another thread is refused until old ones expire (raise the limit with DeviceMemory::with_limit)"
    )]
    MemoryFull {
        /// The limit.
        limit: usize,
    },
}

/// Sealing or opening a message failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    /// The message is for another thread.
    #[error("message is for thread {found}, not {expected}")]
    WrongThread {
        /// This thread.
        expected: ThreadId,
        /// The thread in the header.
        found: ThreadId,
    },
    /// This device holds no secret for the message's epoch (too old, deleted by policy, or never
    /// granted).
    #[error(
        "no key for epoch {epoch} of this thread (current epoch {current}): not granted, or deleted by the retention policy"
    )]
    UnknownEpoch {
        /// The message's epoch.
        epoch: Epoch,
        /// This device's current epoch.
        current: Epoch,
    },
    /// The header's roster hash differs from the roster of its epoch.
    #[error("message claims a roster that differs from this device's roster for epoch {epoch}")]
    RosterMismatch {
        /// The message's epoch.
        epoch: Epoch,
    },
    /// The sender is not a member of the message's epoch.
    #[error("sender {sender} is not a member of epoch {epoch}")]
    UnknownSender {
        /// The claimed sender.
        sender: DeviceId,
        /// The message's epoch.
        epoch: Epoch,
    },
    /// The message is from an older epoch and its sender has since been removed: a removed
    /// agent keeps old epoch secrets, so its messages in old epochs are refused once the
    /// receiver has seen the removal.
    #[error(
        "sender {sender} was removed from the thread; its message in old epoch {epoch} is refused"
    )]
    SenderRemoved {
        /// The removed sender.
        sender: DeviceId,
        /// The old epoch the message claims.
        epoch: Epoch,
    },
    /// The signature does not verify under the claimed sender's identity key.
    #[error(
        "message signature does not verify for sender {sender}: tampered, or sent by another member"
    )]
    BadSignature {
        /// The claimed sender.
        sender: DeviceId,
    },
    /// The message (sender, epoch, generation) was seen before.
    #[error(
        "duplicate message: generation {generation} of {sender} in epoch {epoch} was already received"
    )]
    Duplicate {
        /// The sender.
        sender: DeviceId,
        /// The epoch.
        epoch: Epoch,
        /// The generation.
        generation: u64,
    },
    /// The sender signed another message under a generation this device already accepted a
    /// message for: it equivocates (or its state was rolled back), and members may disagree
    /// about what it said. The first message stands; report this one (the admin audits it).
    #[error(
        "equivocation: {sender} sent a different message under generation {generation} of epoch {epoch} (first {first}, this one {second}); the first stands, report this"
    )]
    Equivocation {
        /// The sender.
        sender: DeviceId,
        /// The epoch.
        epoch: Epoch,
        /// The generation used twice.
        generation: u64,
        /// Digest of the message accepted first.
        first: crate::message::MessageDigest,
        /// Digest of this message.
        second: crate::message::MessageDigest,
    },
    /// A message of an older epoch arrived after the grace period that followed this device's
    /// install of the next epoch: refused, so that a withheld commit cannot keep an old epoch
    /// (and a removed agent holding its secret) alive. The admin audits these.
    #[error(
        "late message: {sender}'s message in old epoch {epoch} arrived at {now}, but epoch {next} was installed at {next_installed_at} and old epochs are accepted for {grace_secs} s only; the sender may have missed a commit"
    )]
    StaleEpoch {
        /// The sender.
        sender: DeviceId,
        /// The message's (old) epoch.
        epoch: Epoch,
        /// The epoch installed after it.
        next: Epoch,
        /// When this device installed `next`.
        next_installed_at: Timestamp,
        /// The grace period ([`ReplayPolicy::old_epoch_grace_secs`](crate::ReplayPolicy)).
        grace_secs: u64,
        /// The time it was checked at.
        now: Timestamp,
    },
    /// The generation is too far ahead of, or too far behind, what was seen from this sender.
    #[error(
        "generation {generation} of {sender} is outside the accepted window (highest seen {highest}, max jump {max_jump}, window {window})"
    )]
    GenerationOutOfWindow {
        /// The sender.
        sender: DeviceId,
        /// The generation in the header.
        generation: u64,
        /// The highest generation seen from this sender in this epoch.
        highest: u64,
        /// How far ahead a generation may jump.
        max_jump: u64,
        /// How far behind a late message may be.
        window: u64,
    },
    /// AEAD decryption failed.
    #[error("message could not be decrypted: tampered ciphertext or header")]
    Decrypt,
    /// The decrypted content does not match the header's content type, or is malformed.
    #[error("message content is invalid: {0}")]
    InvalidContent(String),
    /// An agent that does not hold the floor sent something other than a receipt or typing
    /// indicator.
    #[error("agent {sender} does not hold the floor in epoch {epoch} and may not post")]
    NoFloor {
        /// The agent.
        sender: DeviceId,
        /// The epoch.
        epoch: Epoch,
    },
    /// The sender's agent credential has expired: its messages are refused until the admin
    /// renews the credential or removes the agent.
    #[error("agent {sender}'s credential expired at {expires_at} (now {now})")]
    SenderExpired {
        /// The agent.
        sender: DeviceId,
        /// When its credential expired.
        expires_at: Timestamp,
        /// The time it was checked at.
        now: Timestamp,
    },
    /// Only the entity's admin device may send this content type.
    #[error("only the admin may send {content_type:?}; {sender} is not the admin")]
    AdminOnly {
        /// The sender.
        sender: DeviceId,
        /// The content type.
        content_type: crate::message::ContentType,
    },
    /// This device cannot send: it is not a member, or its generation counter is exhausted.
    #[error("cannot send: {0}")]
    CannotSend(&'static str),
}

/// Why a history grant was refused (or could not be made).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HistoryError {
    /// The grant is for another thread.
    #[error("history grant for thread {found}, expected {expected}")]
    WrongThread {
        /// This thread.
        expected: ThreadId,
        /// The grant's.
        found: ThreadId,
    },
    /// The grant is addressed to another device.
    #[error("history grant addressed to {to}, not this device")]
    NotForMe {
        /// Its addressee.
        to: DeviceId,
    },
    /// The grant is not from, or not signed by, the pinned admin.
    #[error("history grant is not signed by the thread's admin")]
    BadSignature,
    /// A granted epoch is not before this device's current epoch, or appears twice; or a
    /// message is not of a granted epoch.
    #[error("history grant holds epoch {epoch}, which is not an earlier epoch granted once")]
    NotEarlier {
        /// The epoch.
        epoch: Epoch,
    },
    /// A granted roster is not this entity's with the pinned admin.
    #[error("history grant's roster of epoch {epoch} is not this thread's")]
    RosterMismatch {
        /// The epoch.
        epoch: Epoch,
    },
    /// A granted roster has a member whose bundle or credential does not verify (credential
    /// expiry excepted), or another customer than the thread's.
    #[error("history grant's roster of epoch {epoch} is invalid: {detail}")]
    InvalidRoster {
        /// The epoch.
        epoch: Epoch,
        /// What is wrong.
        detail: String,
    },
    /// The granted epochs do not form the chain of roster hashes that ends in the roster the
    /// commit that added this device built on (each granted epoch's `prev_roster_hash` is the
    /// hash of the granted roster before it; the last granted roster is the join commit's
    /// `prev_roster_hash`), or this device did not join through a commit.
    #[error(
        "history grant's epoch {epoch} does not chain to the roster this device joined on: refused"
    )]
    BrokenChain {
        /// The epoch where the chain breaks.
        epoch: Epoch,
    },
    /// A granted epoch's wrap was refused.
    #[error(transparent)]
    Wrap(#[from] WrapError),
    /// A granted message was refused: the whole grant is.
    #[error("message {index} of the history grant: {error}")]
    Message {
        /// Its position in the grant.
        index: usize,
        /// Why.
        error: MessageError,
    },
    /// Too many messages for one grant.
    #[error("history grant of {messages} messages exceeds the limit of 1000")]
    TooLarge {
        /// How many.
        messages: usize,
    },
    /// Only the thread's admin device grants history.
    #[error("only the thread's admin device grants history")]
    NotAdmin,
    /// The grantee is not a current member.
    #[error("{device} is not a member of the thread")]
    NotAMember {
        /// The device.
        device: DeviceId,
    },
}

/// Any error of this crate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// See [`RandomnessError`].
    #[error(transparent)]
    Randomness(#[from] RandomnessError),
    /// See [`WireError`].
    #[error(transparent)]
    Wire(#[from] WireError),
    /// See [`KeyError`].
    #[error(transparent)]
    Key(#[from] KeyError),
    /// See [`CredentialError`].
    #[error(transparent)]
    Credential(#[from] CredentialError),
    /// See [`WrapError`].
    #[error(transparent)]
    Wrap(#[from] WrapError),
    /// See [`CommitError`].
    #[error(transparent)]
    Commit(#[from] CommitError),
    /// See [`MessageError`].
    #[error(transparent)]
    Message(#[from] MessageError),
    /// A history grant was refused.
    #[error(transparent)]
    History(#[from] HistoryError),
    /// A thread open names another entity than this admin serves.
    #[error("thread was opened with entity {found} but this admin serves {expected}")]
    WrongEntity {
        /// The admin's entity.
        expected: EntityId,
        /// The entity in the thread open.
        found: EntityId,
    },
    /// The customer and the admin are the same device.
    #[error("a device cannot open a thread with itself")]
    SelfThread,
    /// A [`ThreadSnapshot`](crate::ThreadSnapshot) is not one this crate could have written, or
    /// belongs to another device.
    #[error("invalid thread snapshot: {0}")]
    Snapshot(String),
    /// A bug in this crate.
    #[error("internal error while {0}; please report this")]
    Internal(&'static str),
}
