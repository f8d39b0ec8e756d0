//! Messages: content types, the header bound as AAD, per-message keys derived from the epoch
//! secret and a random reuse guard, sender signatures, and the receive window that refuses
//! duplicates and wild generation jumps and reports equivocation.

use chacha20poly1305::aead::{Aead as _, Payload};
use chacha20poly1305::{ChaCha20Poly1305, KeyInit as _, Nonce};
use hkdf::Hkdf;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use zeroize::Zeroizing;

use crate::encoding::{Tbs, b64, b64_array};
use crate::error::MessageError;
use crate::ids::{DeviceId, Epoch, MessageId, ThreadId};
use crate::keys::{IdentityKeyPair, IdentityPublicKey, Signature};
use crate::roster::RosterHash;
use crate::wire::{Version, WireType};
use crate::wrap::EpochSecret;

/// The largest text a message may carry, in bytes (64 KiB).
pub const MAX_TEXT_BYTES: usize = 64 * 1024;

/// Length of a message's random reuse guard, in bytes.
pub const REUSE_GUARD_BYTES: usize = 16;

/// SHA-256 of what a sender signed for one message (its AAD and ciphertext): receivers keep it
/// per generation while the replay window holds it, to tell a redelivery (same digest) from
/// equivocation (another message under a generation already seen).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MessageDigest(#[serde(with = "b64_array")] pub [u8; 32]);

impl std::fmt::Display for MessageDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl std::fmt::Debug for MessageDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MessageDigest({self})")
    }
}

/// The kind of content a message carries. Part of the authenticated header, so a receiver knows
/// what it is opening before it parses the plaintext.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ContentType {
    /// Plain text.
    Text,
    /// Text replying to the message named in the header's `quoted` field.
    Reply,
    /// Delivered or read receipts.
    Receipt,
    /// Typing indicator.
    Typing,
    /// An agent asks the admin to hand the thread to a team or a named agent.
    HandoffRequest,
    /// A notice from the entity's admin device (joined, left, transferred); only the admin may
    /// send it.
    SystemNotice,
}

impl ContentType {
    fn code(self) -> u8 {
        match self {
            Self::Text => 1,
            Self::Reply => 2,
            Self::Receipt => 3,
            Self::Typing => 4,
            Self::HandoffRequest => 5,
            Self::SystemNotice => 6,
        }
    }

    /// Whether an agent without the floor may still send this (receipts and typing only).
    #[must_use]
    pub fn allowed_without_floor(self) -> bool {
        matches!(self, Self::Receipt | Self::Typing)
    }
}

/// Delivered or read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReceiptKind {
    /// The device received the messages.
    Delivered,
    /// A person has seen the messages.
    Read,
}

/// Where a bot wants a thread handed.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(
    tag = "to",
    content = "name",
    rename_all = "snake_case",
    deny_unknown_fields
)]
pub enum HandoffTarget {
    /// Any member of a team, e.g. "billing".
    Team(String),
    /// A named agent device.
    Agent(DeviceId),
    /// Whoever the admin's policy picks among humans.
    AnyHuman,
}

/// The decrypted content of a message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Content {
    /// Plain text.
    Text {
        /// The text.
        text: String,
    },
    /// A reply quoting the message named in the header.
    Reply {
        /// The text.
        text: String,
    },
    /// Receipts for messages.
    Receipt {
        /// Delivered or read.
        kind: ReceiptKind,
        /// The messages.
        messages: Vec<MessageId>,
    },
    /// Typing started or stopped.
    Typing {
        /// Whether typing is in progress.
        active: bool,
    },
    /// Ask the admin for a handoff.
    HandoffRequest {
        /// Where to.
        target: HandoffTarget,
        /// A note for whoever takes over.
        note: String,
    },
    /// A system notice.
    SystemNotice {
        /// The notice.
        text: String,
    },
}

impl From<String> for Content {
    /// Text content.
    fn from(text: String) -> Self {
        Self::Text { text }
    }
}

impl From<&str> for Content {
    /// Text content.
    fn from(text: &str) -> Self {
        Self::Text {
            text: text.to_owned(),
        }
    }
}

impl Content {
    /// Text content.
    #[must_use]
    pub fn text(text: impl Into<String>) -> Self {
        Self::Text { text: text.into() }
    }

    /// The content type of this content.
    #[must_use]
    pub fn content_type(&self) -> ContentType {
        match self {
            Self::Text { .. } => ContentType::Text,
            Self::Reply { .. } => ContentType::Reply,
            Self::Receipt { .. } => ContentType::Receipt,
            Self::Typing { .. } => ContentType::Typing,
            Self::HandoffRequest { .. } => ContentType::HandoffRequest,
            Self::SystemNotice { .. } => ContentType::SystemNotice,
        }
    }

    /// The text, for content that has some.
    #[must_use]
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Self::Text { text } | Self::Reply { text } | Self::SystemNotice { text } => Some(text),
            Self::HandoffRequest { note, .. } => Some(note),
            Self::Receipt { .. } | Self::Typing { .. } => None,
        }
    }

    /// Checks sizes and the relation to the header's `quoted` field.
    pub(crate) fn check(&self, quoted: Option<MessageId>) -> Result<(), MessageError> {
        if let Some(text) = self.as_text()
            && text.len() > MAX_TEXT_BYTES
        {
            return Err(MessageError::InvalidContent(format!(
                "text of {} bytes exceeds the {MAX_TEXT_BYTES}-byte limit",
                text.len()
            )));
        }
        match (self, quoted) {
            (Self::Reply { .. }, None) => Err(MessageError::InvalidContent(
                "a reply must name the quoted message in its header".to_owned(),
            )),
            (
                Self::HandoffRequest {
                    target: HandoffTarget::Team(team),
                    ..
                },
                _,
            ) if team.is_empty() || team.chars().count() > 64 => Err(MessageError::InvalidContent(
                "a handoff team name must have 1 to 64 characters".to_owned(),
            )),
            (Self::Receipt { messages, .. }, _) if messages.len() > 1024 => Err(
                MessageError::InvalidContent("a receipt may name at most 1024 messages".to_owned()),
            ),
            _ => Ok(()),
        }
    }
}

/// The message header: sent in the clear (the relay routes by it), authenticated as AAD and
/// covered by the sender's signature.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MessageHeader {
    /// The thread.
    pub thread: ThreadId,
    /// The epoch whose secret encrypts the message.
    pub epoch: Epoch,
    /// The sending device.
    pub sender: DeviceId,
    /// The sender's message counter in this epoch, from 0.
    pub generation: u64,
    /// 16 random bytes drawn for this message alone and mixed into its key and nonce: a sender
    /// whose counter was rolled back (an old snapshot restored, two processes of one bot) never
    /// encrypts two plaintexts under one key and nonce.
    #[serde(with = "b64_array")]
    pub reuse_guard: [u8; REUSE_GUARD_BYTES],
    /// What the ciphertext holds.
    pub content_type: ContentType,
    /// The message this one quotes (replies); `null` when none. Required on the wire.
    #[serde(deserialize_with = "Option::deserialize")]
    pub quoted: Option<MessageId>,
    /// The roster of `epoch`, as the sender sees it.
    pub roster_hash: RosterHash,
}

impl MessageHeader {
    /// The message's id.
    #[must_use]
    pub fn message_id(&self) -> MessageId {
        MessageId::derive(self.thread, self.epoch, self.sender, self.generation)
    }

    /// The AAD: the canonical encoding of the header with the protocol version.
    fn aad(&self) -> Tbs {
        let mut tbs = Tbs::new("switchboard/1 message");
        tbs.u64(crate::wire::PROTOCOL_VERSION)
            .fixed(self.thread.as_bytes())
            .u64(self.epoch.0)
            .fixed(self.sender.as_bytes())
            .u64(self.generation)
            .fixed(&self.reuse_guard)
            .u8(self.content_type.code())
            .opt_fixed(
                self.quoted
                    .as_ref()
                    .map(MessageId::as_bytes)
                    .map(|b| &b[..]),
            )
            .fixed(&self.roster_hash.0);
        tbs
    }
}

/// An encrypted, signed message as it travels.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SealedMessage {
    /// Protocol version.
    pub v: Version,
    /// The header.
    pub header: MessageHeader,
    /// ChaCha20Poly1305 ciphertext of the JSON content.
    #[serde(with = "b64")]
    pub ciphertext: Vec<u8>,
    /// The sender's signature over (AAD, ciphertext).
    pub signature: Signature,
}

impl WireType for SealedMessage {
    const WHAT: &'static str = "message";
}

fn signed_bytes(aad: &[u8], ciphertext: &[u8]) -> Vec<u8> {
    let mut tbs = Tbs::new("switchboard/1 message-signature");
    tbs.bytes(aad).bytes(ciphertext);
    tbs.into_vec()
}

impl SealedMessage {
    /// The digest of what the sender signed (AAD and ciphertext): equal for a redelivery,
    /// different for another message under the same generation.
    #[must_use]
    pub fn digest(&self) -> MessageDigest {
        let aad = self.header.aad();
        MessageDigest(Sha256::digest(signed_bytes(aad.as_slice(), &self.ciphertext)).into())
    }
}

/// The per-epoch message key schedule: HKDF-Extract over the epoch secret once, then one
/// HKDF-Expand per message for its key and nonce. The HMAC state inside is zeroized when the
/// schedule is dropped (sha2's `zeroize` feature), as are the derived key bytes after use.
#[derive(Clone)]
pub(crate) struct MessageKeySchedule(Hkdf<Sha256>);

impl MessageKeySchedule {
    pub(crate) fn new(secret: &EpochSecret) -> Self {
        Self(Hkdf::<Sha256>::new(
            Some(b"switchboard/1 message-keys"),
            secret.as_bytes(),
        ))
    }

    /// The AEAD (its key zeroized on drop) and nonce for (thread, epoch, sender, generation,
    /// reuse guard).
    fn derive(&self, header: &MessageHeader) -> Result<(ChaCha20Poly1305, Nonce), MessageError> {
        let mut info = [0u8; 8 + 16 + 8 + 16 + 8 + REUSE_GUARD_BYTES];
        let (label, rest) = info.split_at_mut(8);
        label.copy_from_slice(b"sb1 msgk");
        let (thread, rest) = rest.split_at_mut(16);
        thread.copy_from_slice(header.thread.as_bytes());
        let (epoch, rest) = rest.split_at_mut(8);
        epoch.copy_from_slice(&header.epoch.0.to_be_bytes());
        let (sender, rest) = rest.split_at_mut(16);
        sender.copy_from_slice(header.sender.as_bytes());
        let (generation, guard) = rest.split_at_mut(8);
        generation.copy_from_slice(&header.generation.to_be_bytes());
        guard.copy_from_slice(&header.reuse_guard);
        let mut okm = Zeroizing::new([0u8; 44]);
        self.0
            .expand(&info, okm.as_mut())
            .map_err(|_| MessageError::CannotSend("key derivation failed"))?;
        let (key, nonce) = okm.split_at(32);
        let aead = ChaCha20Poly1305::new_from_slice(key)
            .map_err(|_| MessageError::CannotSend("key length"))?;
        let nonce = Nonce::try_from(nonce).map_err(|_| MessageError::CannotSend("nonce length"))?;
        Ok((aead, nonce))
    }
}

/// Encrypts and signs `content` under `header`.
pub(crate) fn seal(
    schedule: &MessageKeySchedule,
    header: MessageHeader,
    content: &Content,
    signer: &IdentityKeyPair,
) -> Result<SealedMessage, MessageError> {
    content.check(header.quoted)?;
    let plaintext = Zeroizing::new(
        serde_json::to_vec(content).map_err(|e| MessageError::InvalidContent(e.to_string()))?,
    );
    let (aead, nonce) = schedule.derive(&header)?;
    let aad = header.aad();
    let ciphertext = aead
        .encrypt(
            &nonce,
            Payload {
                msg: &plaintext,
                aad: aad.as_slice(),
            },
        )
        .map_err(|_| MessageError::CannotSend("encryption failed"))?;
    let signature = signer.sign(&signed_bytes(aad.as_slice(), &ciphertext));
    Ok(SealedMessage {
        v: Version,
        header,
        ciphertext,
        signature,
    })
}

/// Verifies the sender's signature.
pub(crate) fn verify_signature(
    message: &SealedMessage,
    sender_key: &IdentityPublicKey,
) -> Result<(), MessageError> {
    let aad = message.header.aad();
    if sender_key.verify(
        &signed_bytes(aad.as_slice(), &message.ciphertext),
        &message.signature,
    ) {
        Ok(())
    } else {
        Err(MessageError::BadSignature {
            sender: message.header.sender,
        })
    }
}

/// Decrypts and parses the content, checking it against the header.
pub(crate) fn decrypt(
    schedule: &MessageKeySchedule,
    message: &SealedMessage,
) -> Result<Content, MessageError> {
    let header = &message.header;
    let (aead, nonce) = schedule.derive(header)?;
    let aad = header.aad();
    let plaintext = Zeroizing::new(
        aead.decrypt(
            &nonce,
            Payload {
                msg: &message.ciphertext,
                aad: aad.as_slice(),
            },
        )
        .map_err(|_| MessageError::Decrypt)?,
    );
    let content: Content = serde_json::from_slice(&plaintext)
        .map_err(|e| MessageError::InvalidContent(e.to_string()))?;
    if content.content_type() != header.content_type {
        return Err(MessageError::InvalidContent(format!(
            "header says {:?} but the content is {:?}",
            header.content_type,
            content.content_type()
        )));
    }
    content.check(header.quoted)?;
    Ok(content)
}

/// Limits on what a receiver accepts from one sender in one epoch, and how long it accepts
/// messages of an epoch it has moved past.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplayPolicy {
    /// How far ahead of the highest generation seen a new one may be (a larger jump means many
    /// lost messages or a forged counter).
    pub max_jump: u64,
    /// How long, in seconds after this device installed the next epoch, it still accepts
    /// messages of an older epoch (late deliveries). After that they are refused as
    /// [`MessageError::StaleEpoch`]: a relay that withholds a commit from one member cannot
    /// keep the old epoch (and the removed agent that still holds its secret) alive.
    pub old_epoch_grace_secs: u64,
}

/// Default of [`ReplayPolicy::old_epoch_grace_secs`]: 10 minutes.
pub const DEFAULT_OLD_EPOCH_GRACE_SECS: u64 = 600;

impl Default for ReplayPolicy {
    fn default() -> Self {
        Self {
            max_jump: 1024,
            old_epoch_grace_secs: DEFAULT_OLD_EPOCH_GRACE_SECS,
        }
    }
}

/// How far behind the highest generation a late (reordered) message may be: 128.
pub const REORDER_WINDOW: u64 = 128;

/// The digest of the message accepted under one generation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SeenDigest {
    generation: u64,
    digest: MessageDigest,
}

/// Generations seen from one sender in one epoch: the highest, a bitmap of the
/// [`REORDER_WINDOW`] below it, and the digest of each message accepted in that window (at most
/// [`REORDER_WINDOW`] of them, oldest first).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReceiveWindow {
    highest: Option<u64>,
    /// Bit i set: generation `highest - i` was received.
    bits: u128,
    /// Digests of the accepted generations still inside the window.
    digests: Vec<SeenDigest>,
}

impl ReceiveWindow {
    /// Checks `generation` without recording it. A generation already seen is a
    /// [`MessageError::Duplicate`] when `digest` is the digest recorded for it (a redelivery),
    /// and [`MessageError::Equivocation`] when it differs: the sender signed two different
    /// messages under one generation.
    pub(crate) fn check(
        &self,
        sender: DeviceId,
        epoch: Epoch,
        generation: u64,
        digest: &MessageDigest,
        policy: ReplayPolicy,
    ) -> Result<(), MessageError> {
        let highest = self.highest;
        let out_of_window = || MessageError::GenerationOutOfWindow {
            sender,
            generation,
            highest: highest.unwrap_or(0),
            max_jump: policy.max_jump,
            window: REORDER_WINDOW,
        };
        match highest {
            None if generation <= policy.max_jump => Ok(()),
            None => Err(out_of_window()),
            Some(h) if generation > h => {
                if generation - h <= policy.max_jump {
                    Ok(())
                } else {
                    Err(out_of_window())
                }
            }
            Some(h) => {
                let behind = h - generation;
                if behind >= REORDER_WINDOW {
                    Err(out_of_window())
                } else if self.bits & (1u128 << behind) != 0 {
                    match self.digests.iter().find(|d| d.generation == generation) {
                        Some(first) if first.digest != *digest => Err(MessageError::Equivocation {
                            sender,
                            epoch,
                            generation,
                            first: first.digest,
                            second: *digest,
                        }),
                        _ => Err(MessageError::Duplicate {
                            sender,
                            epoch,
                            generation,
                        }),
                    }
                } else {
                    Ok(())
                }
            }
        }
    }

    /// Records `generation` and its message's digest (after [`ReceiveWindow::check`] passed).
    pub(crate) fn record(&mut self, generation: u64, digest: MessageDigest) {
        match self.highest {
            Some(h) if generation <= h => {
                let behind = h - generation;
                if behind < REORDER_WINDOW {
                    self.bits |= 1u128 << behind;
                }
            }
            Some(h) => {
                let shift = generation - h;
                self.bits = if shift >= REORDER_WINDOW {
                    0
                } else {
                    self.bits << shift
                };
                self.bits |= 1;
                self.highest = Some(generation);
            }
            None => {
                self.bits = 1;
                self.highest = Some(generation);
            }
        }
        if self
            .highest
            .is_some_and(|h| h - generation < REORDER_WINDOW)
        {
            self.digests.push(SeenDigest { generation, digest });
        }
        self.prune();
    }

    /// Drops digests that fell out of the window (bounding them to [`REORDER_WINDOW`]).
    pub(crate) fn prune(&mut self) {
        let Some(h) = self.highest else {
            self.digests.clear();
            return;
        };
        self.digests
            .retain(|d| d.generation <= h && h - d.generation < REORDER_WINDOW);
        self.digests.sort_by_key(|d| d.generation);
        self.digests.dedup_by_key(|d| d.generation);
    }

    /// Whether the window is one this crate could have written (digests only of seen
    /// generations inside the window, each once).
    pub(crate) fn is_consistent(&self) -> bool {
        let Some(h) = self.highest else {
            return self.bits == 0 && self.digests.is_empty();
        };
        let mut previous = None;
        self.digests.iter().all(|d| {
            let in_window = d.generation <= h
                && h - d.generation < REORDER_WINDOW
                && self.bits & (1u128 << (h - d.generation)) != 0;
            let ordered = previous.is_none_or(|p| p < d.generation);
            previous = Some(d.generation);
            in_window && ordered
        })
    }

    /// Forgets the digests (for epochs whose late messages are no longer accepted).
    pub(crate) fn forget_digests(&mut self) {
        self.digests = Vec::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: DeviceId = DeviceId::from_bytes([1; 16]);

    fn digest_of(g: u64) -> MessageDigest {
        let mut d = [0u8; 32];
        d[..8].copy_from_slice(&g.to_be_bytes());
        MessageDigest(d)
    }

    fn accept(w: &mut ReceiveWindow, g: u64) -> Result<(), MessageError> {
        w.check(D, Epoch(0), g, &digest_of(g), ReplayPolicy::default())?;
        w.record(g, digest_of(g));
        Ok(())
    }

    #[test]
    fn window_accepts_reordering_and_refuses_duplicates() {
        let mut w = ReceiveWindow::default();
        accept(&mut w, 0).unwrap();
        accept(&mut w, 2).unwrap();
        accept(&mut w, 1).unwrap();
        assert!(matches!(
            accept(&mut w, 1),
            Err(MessageError::Duplicate { .. })
        ));
        assert!(matches!(
            accept(&mut w, 2),
            Err(MessageError::Duplicate { .. })
        ));
        accept(&mut w, 200).unwrap();
        // 2 is now more than REORDER_WINDOW behind 200.
        assert!(matches!(
            accept(&mut w, 2),
            Err(MessageError::GenerationOutOfWindow { .. })
        ));
        accept(&mut w, 100).unwrap();
        assert!(matches!(
            accept(&mut w, 100),
            Err(MessageError::Duplicate { .. })
        ));
    }

    #[test]
    fn window_refuses_large_jumps() {
        let mut w = ReceiveWindow::default();
        assert!(matches!(
            accept(&mut w, 1025),
            Err(MessageError::GenerationOutOfWindow { .. })
        ));
        accept(&mut w, 1024).unwrap();
        assert!(matches!(
            accept(&mut w, 2049),
            Err(MessageError::GenerationOutOfWindow { .. })
        ));
        accept(&mut w, 2048).unwrap();
    }

    #[test]
    fn another_message_under_a_seen_generation_is_equivocation_not_a_duplicate() {
        let mut w = ReceiveWindow::default();
        accept(&mut w, 3).unwrap();
        let other = MessageDigest([0xee; 32]);
        let err = w
            .check(D, Epoch(0), 3, &other, ReplayPolicy::default())
            .unwrap_err();
        assert_eq!(
            err,
            MessageError::Equivocation {
                sender: D,
                epoch: Epoch(0),
                generation: 3,
                first: digest_of(3),
                second: other,
            }
        );
        assert!(matches!(
            w.check(D, Epoch(0), 3, &digest_of(3), ReplayPolicy::default()),
            Err(MessageError::Duplicate { .. })
        ));
    }

    #[test]
    fn window_digests_stay_bounded_by_the_window() {
        let mut w = ReceiveWindow::default();
        for g in 0..1000 {
            accept(&mut w, g).unwrap();
            assert!(w.digests.len() as u64 <= REORDER_WINDOW);
        }
        assert_eq!(w.digests.len() as u64, REORDER_WINDOW);
        assert!(w.is_consistent());
        // A jump past the window forgets every digest but the new one.
        accept(&mut w, 1500).unwrap();
        assert_eq!(w.digests.len(), 1);
    }
}
