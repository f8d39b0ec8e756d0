//! Key wraps: an epoch secret sealed with single-shot HPKE Base mode to one recipient, every
//! piece of context bound in `info`, and the whole wrap signed by the sender's identity key
//! (Base mode does not authenticate the sender; the signature does).

use std::collections::HashMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::encoding::{Tbs, b64};
use crate::error::WrapError;
use crate::ids::{DeviceId, Epoch, ThreadId, Timestamp, WrapId};
use crate::keys::{DeviceKeys, IdentityPublicKey, KemKeyId, KeyBundle, Signature};
use crate::rng::Csprng;
use crate::roster::RosterHash;
use crate::suite::{CipherSuite, hpke_open, hpke_seal};
use crate::wire::{Version, WireType};

/// The secret of one epoch of a thread. Zeroized on drop; never printed; compared in constant
/// time.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct EpochSecret([u8; 32]);

impl PartialEq for EpochSecret {
    fn eq(&self, other: &Self) -> bool {
        use subtle::ConstantTimeEq as _;
        self.0.ct_eq(&other.0).into()
    }
}

impl Eq for EpochSecret {}

impl EpochSecret {
    /// A fresh secret from `rng`.
    pub fn generate(rng: &mut Csprng) -> Self {
        Self(rng.array())
    }

    /// The secret from raw bytes (for keystores and test vectors).
    #[must_use]
    pub const fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The raw bytes (for keystores).
    #[must_use]
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl fmt::Debug for EpochSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EpochSecret(..)")
    }
}

/// How long a wrap stays valid by default: 30 days, so that a phone that was off for a few weeks
/// can still apply the commits it missed. A device offline for longer needs the admin to wrap the
/// current epoch to it again.
pub const DEFAULT_WRAP_LIFETIME_SECS: u64 = 30 * 24 * 3600;

/// An epoch secret wrapped to one device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyWrap {
    /// Protocol version.
    pub v: Version,
    /// The recipient's suite.
    pub suite: CipherSuite,
    /// The thread.
    pub thread: ThreadId,
    /// The epoch whose secret this is.
    pub epoch: Epoch,
    /// The device that made the wrap.
    pub sender: DeviceId,
    /// The device it is for.
    pub recipient: DeviceId,
    /// The recipient's KEM key it is sealed to (the id of the key in the bundle the sender
    /// used), so that a device holding several keys during a rotation picks the right one.
    pub recipient_key: KemKeyId,
    /// The roster of `epoch`.
    pub roster_hash: RosterHash,
    /// Unique id; receivers refuse a wrap id twice.
    pub wrap_id: WrapId,
    /// After this time the wrap is refused.
    pub expires_at: Timestamp,
    /// The HPKE encapsulated key.
    #[serde(with = "b64")]
    pub enc: Vec<u8>,
    /// The HPKE ciphertext of the epoch secret.
    #[serde(with = "b64")]
    pub ciphertext: Vec<u8>,
    /// The sender's signature over (info, enc, ciphertext).
    pub signature: Signature,
}

impl WireType for KeyWrap {
    const WHAT: &'static str = "key wrap";
}

/// The context a wrap is made for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WrapContext {
    /// The thread.
    pub thread: ThreadId,
    /// The epoch whose secret is wrapped.
    pub epoch: Epoch,
    /// The roster of that epoch.
    pub roster_hash: RosterHash,
    /// When the wrap stops being valid.
    pub expires_at: Timestamp,
}

/// What the receiver of a wrap expects: the sender it accepts wraps from, and the context.
#[derive(Clone, Copy, Debug)]
pub struct ExpectedWrap<'a> {
    /// The only device this receiver accepts the wrap from (pinned admin, or the customer).
    pub sender: DeviceId,
    /// That device's identity key.
    pub sender_key: &'a IdentityPublicKey,
    /// The thread.
    pub thread: ThreadId,
    /// The epoch.
    pub epoch: Epoch,
    /// The roster hash the wrap must carry.
    pub roster_hash: RosterHash,
}

impl KeyWrap {
    /// HPKE `info`: every piece of context, canonically encoded.
    fn info(&self) -> Vec<u8> {
        let mut info = Tbs::new("switchboard/1 thread-key");
        info.u16(self.suite.kem_id())
            .u16(self.suite.kdf_id())
            .u16(self.suite.aead_id())
            .fixed(self.thread.as_bytes())
            .u64(self.epoch.0)
            .fixed(self.sender.as_bytes())
            .fixed(self.recipient.as_bytes())
            .fixed(&self.recipient_key.0)
            .fixed(&self.roster_hash.0)
            .fixed(self.wrap_id.as_bytes())
            .u64(self.expires_at.0);
        info.into_vec()
    }

    /// Signs the wrap again, as it now is, with `sender`'s identity key: for negative test
    /// vectors (a value whose signature is valid but which a receiver must still refuse). Test
    /// vectors only (the `test-util` feature).
    #[cfg(any(test, feature = "test-util"))]
    pub fn sign_as(&mut self, sender: &crate::IdentityKeyPair) {
        self.signature = sender.sign(&self.signed_bytes(&self.info()));
    }

    fn signed_bytes(&self, info: &[u8]) -> Vec<u8> {
        let mut tbs = Tbs::new("switchboard/1 wrap-signature");
        tbs.bytes(info).bytes(&self.enc).bytes(&self.ciphertext);
        tbs.into_vec()
    }

    /// Wraps `secret` to `recipient` (whose bundle the caller has verified), signed by `sender`.
    ///
    /// # Errors
    /// [`WrapError::Internal`] if HPKE encapsulation fails, which cannot happen for a validated
    /// recipient key.
    pub fn seal(
        sender: &DeviceKeys,
        recipient: &KeyBundle,
        context: &WrapContext,
        secret: &EpochSecret,
        rng: &mut Csprng,
    ) -> Result<Self, WrapError> {
        let mut wrap = Self {
            v: Version,
            suite: recipient.kem_key.suite(),
            thread: context.thread,
            epoch: context.epoch,
            sender: sender.device(),
            recipient: recipient.device,
            recipient_key: KemKeyId::of(&recipient.kem_key),
            roster_hash: context.roster_hash,
            wrap_id: WrapId::random(rng),
            expires_at: context.expires_at,
            enc: Vec::new(),
            ciphertext: Vec::new(),
            signature: Signature::from_bytes([0; 64]),
        };
        let info = wrap.info();
        let (enc, ciphertext) =
            hpke_seal(recipient.kem_key.parsed(), &info, &secret.0, &[], rng)
                .map_err(|_| WrapError::Internal("encapsulating to a validated key"))?;
        wrap.enc = enc;
        wrap.ciphertext = ciphertext;
        wrap.signature = sender.identity().sign(&wrap.signed_bytes(&info));
        Ok(wrap)
    }

    /// Opens a wrap addressed to `me`. Checks, in order: suite, addressee, sender, context,
    /// expiry, signature, replay, that `me` holds the KEM key the wrap names (current, or retired
    /// within its grace period), and finally HPKE decryption. The wrap id is recorded in `seen`
    /// only when every check passed.
    ///
    /// # Errors
    /// The first failed check, as a [`WrapError`].
    pub fn open(
        &self,
        me: &DeviceKeys,
        expected: &ExpectedWrap<'_>,
        now: Timestamp,
        seen: &mut SeenWraps,
    ) -> Result<EpochSecret, WrapError> {
        let wrap_id = self.wrap_id;
        if self.suite != me.suite() {
            return Err(WrapError::SuiteMismatch {
                expected: me.suite(),
                found: self.suite,
            });
        }
        if self.recipient != me.device() {
            return Err(WrapError::WrongRecipient {
                wrap_id,
                expected: me.device(),
                found: self.recipient,
            });
        }
        if self.sender != expected.sender {
            return Err(WrapError::UnexpectedSender {
                wrap_id,
                expected: expected.sender,
                found: self.sender,
            });
        }
        let mismatch = |field| WrapError::ContextMismatch { wrap_id, field };
        if self.thread != expected.thread {
            return Err(mismatch("thread"));
        }
        if self.epoch != expected.epoch {
            return Err(mismatch("epoch"));
        }
        if self.roster_hash != expected.roster_hash {
            return Err(mismatch("roster"));
        }
        if now >= self.expires_at {
            return Err(WrapError::Expired {
                wrap_id,
                expires_at: self.expires_at,
                now,
            });
        }
        let info = self.info();
        if !expected
            .sender_key
            .verify(&self.signed_bytes(&info), &self.signature)
        {
            return Err(WrapError::BadSignature {
                wrap_id,
                sender: self.sender,
            });
        }
        if seen.contains(wrap_id) {
            return Err(WrapError::Replayed { wrap_id });
        }
        let Some(kem_secret) = me.kem_secret_for(&self.recipient_key) else {
            return Err(WrapError::UnknownKemKey {
                wrap_id,
                key: self.recipient_key,
            });
        };
        let plaintext = hpke_open(kem_secret, &self.enc, &info, &self.ciphertext, &[])
            .map_err(|_| WrapError::Decrypt { wrap_id })?;
        let bytes: [u8; 32] = plaintext
            .as_slice()
            .try_into()
            .map_err(|_| WrapError::Decrypt { wrap_id })?;
        seen.insert(wrap_id, self.expires_at);
        Ok(EpochSecret(bytes))
    }
}

/// The wrap ids a device has opened, kept until the wraps expire (an expired wrap is refused
/// anyway, so forgetting it then cannot enable a replay). Memory stays bounded by the number of
/// wraps received within one wrap lifetime.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeenWraps {
    seen: HashMap<WrapId, Timestamp>,
}

impl SeenWraps {
    /// An empty set.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether `wrap_id` was opened before.
    #[must_use]
    pub fn contains(&self, wrap_id: WrapId) -> bool {
        self.seen.contains_key(&wrap_id)
    }

    pub(crate) fn insert(&mut self, wrap_id: WrapId, expires_at: Timestamp) {
        self.seen.insert(wrap_id, expires_at);
    }

    /// Forgets wraps that have expired by `now`.
    pub fn prune(&mut self, now: Timestamp) {
        self.seen.retain(|_, expires_at| *expires_at > now);
    }

    /// How many wrap ids are remembered.
    #[must_use]
    pub fn len(&self) -> usize {
        self.seen.len()
    }

    /// Whether none are remembered.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }
}
