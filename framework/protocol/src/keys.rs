//! Device keys: the Ed25519 identity key, the HPKE KEM key, signed key bundles and
//! human-comparable fingerprints.

use std::fmt;

use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use hkdf::Hkdf;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest as _, Sha256};
use zeroize::Zeroizing;

use crate::encoding::{Tbs, b64_array, b64_decode, b64_encode};
use crate::error::{KeyError, WireError};
use crate::ids::{DeviceId, Timestamp};
use crate::rng::Csprng;
use crate::suite::{CipherSuite, KemPublic, KemSecret, derive_kem_keypair};
use crate::wire::{Version, WireType};

/// An Ed25519 signature.
#[derive(Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Signature(#[serde(with = "b64_array")] [u8; 64]);

impl Signature {
    /// The 64 raw bytes.
    #[must_use]
    pub const fn to_bytes(&self) -> [u8; 64] {
        self.0
    }

    /// A signature from raw bytes (it is checked only when verified).
    #[must_use]
    pub const fn from_bytes(bytes: [u8; 64]) -> Self {
        Self(bytes)
    }
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({})", b64_encode(&self.0))
    }
}

/// An Ed25519 identity public key, validated: not malformed and not of small order.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct IdentityPublicKey(VerifyingKey);

impl IdentityPublicKey {
    /// Parses and validates 32 bytes.
    ///
    /// # Errors
    /// [`KeyError::InvalidIdentityKey`] for bytes that are not a curve point;
    /// [`KeyError::WeakIdentityKey`] for small-order points such as all zero.
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<Self, KeyError> {
        let key = VerifyingKey::from_bytes(bytes).map_err(|e| KeyError::InvalidIdentityKey {
            detail: e.to_string(),
        })?;
        if key.is_weak() {
            return Err(KeyError::WeakIdentityKey);
        }
        Ok(Self(key))
    }

    /// The 32 raw bytes.
    #[must_use]
    pub fn as_bytes(&self) -> &[u8; 32] {
        self.0.as_bytes()
    }

    /// Verifies a signature made with [`IdentityKeyPair::sign`] over the same bytes. Uses strict
    /// verification (no malleable or small-order signatures).
    #[must_use]
    pub fn verify(&self, message: &[u8], signature: &Signature) -> bool {
        let sig = ed25519_dalek::Signature::from_bytes(&signature.0);
        self.0.verify_strict(message, &sig).is_ok()
    }

    /// The fingerprint of this key, for people to compare.
    #[must_use]
    pub fn fingerprint(&self) -> Fingerprint {
        Fingerprint::of(self)
    }
}

impl fmt::Debug for IdentityPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IdentityPublicKey({})", b64_encode(self.as_bytes()))
    }
}

impl Serialize for IdentityPublicKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        b64_array::serialize(self.as_bytes(), s)
    }
}

impl<'de> Deserialize<'de> for IdentityPublicKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let bytes: [u8; 32] = b64_array::deserialize(d)?;
        Self::from_bytes(&bytes).map_err(serde::de::Error::custom)
    }
}

/// An Ed25519 identity key pair. The secret half is zeroized on drop.
#[derive(Clone)]
pub struct IdentityKeyPair(SigningKey);

impl IdentityKeyPair {
    /// The key pair whose secret key is `seed`.
    #[must_use]
    pub fn from_seed(seed: &[u8; 32]) -> Self {
        Self(SigningKey::from_bytes(seed))
    }

    /// The public half.
    #[must_use]
    pub fn public(&self) -> IdentityPublicKey {
        IdentityPublicKey(self.0.verifying_key())
    }

    /// Signs `message` (Ed25519, deterministic).
    #[must_use]
    pub fn sign(&self, message: &[u8]) -> Signature {
        Signature(self.0.sign(message).to_bytes())
    }
}

impl fmt::Debug for IdentityKeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "IdentityKeyPair(public: {:?})", self.public())
    }
}

/// An HPKE KEM public key with its suite, validated on construction (length, curve point, and
/// for X25519 not of small order).
#[derive(Clone)]
pub struct KemPublicKey {
    suite: CipherSuite,
    bytes: Vec<u8>,
    parsed: KemPublic,
}

impl KemPublicKey {
    /// Parses and validates a public key.
    ///
    /// # Errors
    /// [`KeyError::InvalidKemKey`] for the wrong length or an invalid key;
    /// [`KeyError::WeakKemKey`] for an all-zero or small-order X25519 key.
    pub fn from_bytes(suite: CipherSuite, bytes: &[u8]) -> Result<Self, KeyError> {
        let parsed = KemPublic::parse(suite, bytes)?;
        Ok(Self {
            suite,
            bytes: bytes.to_vec(),
            parsed,
        })
    }

    /// The suite of this key, which is the suite every wrap to this device uses.
    #[must_use]
    pub fn suite(&self) -> CipherSuite {
        self.suite
    }

    /// The raw key bytes.
    #[must_use]
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    pub(crate) fn parsed(&self) -> &KemPublic {
        &self.parsed
    }
}

impl PartialEq for KemPublicKey {
    fn eq(&self, other: &Self) -> bool {
        self.suite == other.suite && self.bytes == other.bytes
    }
}
impl Eq for KemPublicKey {}

impl fmt::Debug for KemPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let head = self.bytes.get(..8).unwrap_or(&self.bytes);
        write!(f, "KemPublicKey({}, {}..)", self.suite, b64_encode(head))
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct KemPublicKeyRepr {
    suite: CipherSuite,
    key: String,
}

impl Serialize for KemPublicKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        KemPublicKeyRepr {
            suite: self.suite,
            key: b64_encode(&self.bytes),
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for KemPublicKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let repr = KemPublicKeyRepr::deserialize(d)?;
        let bytes = b64_decode(&repr.key).map_err(serde::de::Error::custom)?;
        Self::from_bytes(repr.suite, &bytes).map_err(serde::de::Error::custom)
    }
}

/// Identifies one KEM public key: `SHA-256("switchboard/1 kem-key-id" || kem_id || kdf_id ||
/// aead_id || lp(public key))`. A wrap names the key it is sealed to, so that a device holding
/// several KEM keys (during a rotation's grace period) knows which private key opens it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct KemKeyId(#[serde(with = "b64_array")] pub [u8; 32]);

impl KemKeyId {
    /// The id of `key`.
    #[must_use]
    pub fn of(key: &KemPublicKey) -> Self {
        let mut tbs = Tbs::new("switchboard/1 kem-key-id");
        tbs.u16(key.suite.kem_id())
            .u16(key.suite.kdf_id())
            .u16(key.suite.aead_id())
            .bytes(&key.bytes);
        Self(Sha256::digest(tbs.as_slice()).into())
    }
}

impl fmt::Debug for KemKeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let head = self.0.get(..8).unwrap_or(&self.0);
        write!(f, "KemKeyId({}..)", b64_encode(head))
    }
}

impl fmt::Display for KemKeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let head = self.0.get(..8).unwrap_or(&self.0);
        write!(f, "{}", b64_encode(head))
    }
}

/// One KEM key pair of a device: the 32 random bytes it derives from (`DeriveKeyPair` input,
/// what a keystore keeps), the private key and the public key.
#[derive(Clone)]
struct KemKeyPair {
    ikm: Zeroizing<[u8; 32]>,
    secret: KemSecret,
    public: KemPublicKey,
    id: KemKeyId,
}

impl KemKeyPair {
    /// # Panics
    /// Never: a derived X25519 or X-Wing public key is always valid.
    fn derive(suite: CipherSuite, ikm: &[u8; 32]) -> Self {
        let (secret, pk_bytes) = derive_kem_keypair(suite, ikm);
        let parsed = KemPublic::parse(suite, &pk_bytes);
        #[allow(clippy::expect_used)]
        let parsed = parsed.expect("a derived KEM public key is valid");
        let public = KemPublicKey {
            suite,
            bytes: pk_bytes,
            parsed,
        };
        Self {
            ikm: Zeroizing::new(*ikm),
            secret,
            id: KemKeyId::of(&public),
            public,
        }
    }

    fn random(suite: CipherSuite, rng: &mut Csprng) -> Self {
        let ikm = Zeroizing::new(rng.array::<32>());
        Self::derive(suite, &ikm)
    }
}

/// A KEM key replaced by a newer one, kept until its grace period ends so that wraps sealed to
/// it before the senders learned the new key still open.
#[derive(Clone)]
struct RetiredKemKey {
    pair: KemKeyPair,
    retired_at: Timestamp,
}

/// The KEM private keys of a device, for its keystore: the current key and the retired keys
/// still in their grace period, each as the 32 bytes it derives from. Holds secrets: store it
/// only encrypted. Zeroized on drop, never printed.
///
/// JSON: `{"current": "<b64url 32>", "retired": [{"key": "<b64url 32>", "retired_at": N}]}`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KemKeySecrets {
    #[serde(with = "b64_zeroizing")]
    current: Zeroizing<[u8; 32]>,
    retired: Vec<RetiredKemSecret>,
}

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RetiredKemSecret {
    #[serde(with = "b64_zeroizing")]
    key: Zeroizing<[u8; 32]>,
    retired_at: Timestamp,
}

impl fmt::Debug for KemKeySecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KemKeySecrets")
            .field("retired", &self.retired.len())
            .finish_non_exhaustive()
    }
}

mod b64_zeroizing {
    use serde::{Deserializer, Serializer};
    use zeroize::Zeroizing;

    pub(super) fn serialize<S: Serializer>(
        key: &Zeroizing<[u8; 32]>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        crate::encoding::b64_array::serialize(key, s)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Zeroizing<[u8; 32]>, D::Error> {
        Ok(Zeroizing::new(crate::encoding::b64_array::deserialize(d)?))
    }
}

/// All secret keys of one device: the Ed25519 identity key, derived from a 32-byte device seed,
/// and the HPKE KEM keys: a current one and the retired ones still in their grace period.
///
/// KEM keys are random and independent of the seed ([`DeviceKeys::generate`],
/// [`DeviceKeys::rotate_kem`]), so a device can replace them: a keystore captured after a
/// rotation, once the grace period has deleted the old key, cannot open what was wrapped to it.
/// [`DeviceKeys::from_seed`] derives the first KEM key from the seed, for reproducible test
/// vectors.
///
/// ```
/// use switchboard_protocol::{CipherSuite, Csprng, DeviceId, DeviceKeys, Timestamp};
/// let mut rng = Csprng::from_os()?;
/// let mut keys = DeviceKeys::generate(DeviceId::random(&mut rng), CipherSuite::default(), &mut rng);
/// let bundle = keys.bundle(Timestamp(1_700_000_000));
/// bundle.verify()?;
/// println!("compare this with the other person: {}", bundle.fingerprint());
/// // A week later: a new KEM key, published in a newer bundle; the old key stays a grace period.
/// keys.rotate_kem(Timestamp(1_700_604_800), &mut rng);
/// let newer = keys.bundle(Timestamp(1_700_604_800));
/// assert_ne!(newer.kem_key, bundle.kem_key);
/// assert_eq!(keys.delete_retired_kem_keys(Timestamp(1_701_209_600), 604_800), 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct DeviceKeys {
    device: DeviceId,
    seed: Zeroizing<[u8; 32]>,
    identity: IdentityKeyPair,
    kem: KemKeyPair,
    retired: Vec<RetiredKemKey>,
}

impl DeviceKeys {
    /// Fresh keys for `device` in `suite`: a random seed for the identity key and a random KEM
    /// key drawn separately (not derived from the seed).
    pub fn generate(device: DeviceId, suite: CipherSuite, rng: &mut Csprng) -> Self {
        let seed = Zeroizing::new(rng.array::<32>());
        let identity = Self::identity_from_seed(&seed);
        Self {
            device,
            seed,
            identity,
            kem: KemKeyPair::random(suite, rng),
            retired: Vec::new(),
        }
    }

    fn identity_from_seed(seed: &[u8; 32]) -> IdentityKeyPair {
        let hk = Hkdf::<Sha256>::new(Some(b"switchboard/1 device-keys"), seed);
        let mut identity_seed = Zeroizing::new([0u8; 32]);
        // 32-byte outputs are far below HKDF-SHA256's 8160-byte limit, so expand cannot fail.
        let _ = hk.expand(b"identity", identity_seed.as_mut());
        IdentityKeyPair::from_seed(&identity_seed)
    }

    /// The keys derived from `seed` alone: HKDF-SHA256 with distinct labels gives the Ed25519
    /// secret key and the first KEM key's `DeriveKeyPair` input. The same seed always gives the
    /// same keys: for test vectors and tests. Real devices use [`DeviceKeys::generate`], whose
    /// KEM key is random.
    #[must_use]
    pub fn from_seed(device: DeviceId, suite: CipherSuite, seed: &[u8; 32]) -> Self {
        let hk = Hkdf::<Sha256>::new(Some(b"switchboard/1 device-keys"), seed);
        let mut kem_ikm = Zeroizing::new([0u8; 32]);
        // 32-byte outputs are far below HKDF-SHA256's 8160-byte limit, so expand cannot fail.
        let _ = hk.expand(suite.name().as_bytes(), kem_ikm.as_mut());
        Self {
            device,
            seed: Zeroizing::new(*seed),
            identity: Self::identity_from_seed(seed),
            kem: KemKeyPair::derive(suite, &kem_ikm),
            retired: Vec::new(),
        }
    }

    /// The keys a keystore kept: the identity from `seed`, the KEM keys from `kem`
    /// ([`DeviceKeys::kem_secrets`]).
    #[must_use]
    pub fn from_parts(
        device: DeviceId,
        suite: CipherSuite,
        seed: &[u8; 32],
        kem: &KemKeySecrets,
    ) -> Self {
        Self {
            device,
            seed: Zeroizing::new(*seed),
            identity: Self::identity_from_seed(seed),
            kem: KemKeyPair::derive(suite, &kem.current),
            retired: kem
                .retired
                .iter()
                .map(|r| RetiredKemKey {
                    pair: KemKeyPair::derive(suite, &r.key),
                    retired_at: r.retired_at,
                })
                .collect(),
        }
    }

    /// The KEM private keys, for the keystore (see [`KemKeySecrets`]).
    #[must_use]
    pub fn kem_secrets(&self) -> KemKeySecrets {
        KemKeySecrets {
            current: self.kem.ikm.clone(),
            retired: self
                .retired
                .iter()
                .map(|r| RetiredKemSecret {
                    key: r.pair.ikm.clone(),
                    retired_at: r.retired_at,
                })
                .collect(),
        }
    }

    /// Replaces the KEM key by a fresh random one (same suite). The old key is retired at `now`
    /// and kept until [`DeviceKeys::delete_retired_kem_keys`] drops it, so wraps sealed to it
    /// before the senders learned the new key still open. Publish the new key in a newer bundle
    /// ([`DeviceKeys::bundle`] with a later `created_at` than any bundle published before).
    pub fn rotate_kem(&mut self, now: Timestamp, rng: &mut Csprng) {
        let fresh = KemKeyPair::random(self.suite(), rng);
        let old = std::mem::replace(&mut self.kem, fresh);
        self.retired.push(RetiredKemKey {
            pair: old,
            retired_at: now,
        });
    }

    /// Deletes (zeroizes) the retired KEM keys whose grace period of `grace_secs` after their
    /// retirement has ended by `now`. Returns how many were deleted. Wraps sealed to a deleted
    /// key can no longer be opened by anyone.
    pub fn delete_retired_kem_keys(&mut self, now: Timestamp, grace_secs: u64) -> usize {
        let before = self.retired.len();
        // Dropping a key pair zeroizes its input bytes and private key.
        self.retired.retain(|r| r.retired_at.plus(grace_secs) > now);
        before - self.retired.len()
    }

    /// The retired KEM keys still held, with when each was retired, oldest first.
    pub fn retired_kem_keys(&self) -> impl Iterator<Item = (&KemPublicKey, Timestamp)> {
        self.retired.iter().map(|r| (&r.pair.public, r.retired_at))
    }

    /// Whether this device holds the private key of `key` (current or retired, not yet deleted).
    #[must_use]
    pub fn holds_kem_key(&self, key: &KemPublicKey) -> bool {
        self.kem_secret_for(&KemKeyId::of(key)).is_some()
    }

    /// This device's id.
    #[must_use]
    pub fn device(&self) -> DeviceId {
        self.device
    }

    /// This device's suite.
    #[must_use]
    pub fn suite(&self) -> CipherSuite {
        self.kem.public.suite
    }

    /// The 32-byte seed the identity key derives from (the KEM keys are kept apart:
    /// [`DeviceKeys::kem_secrets`]).
    #[must_use]
    pub fn seed(&self) -> &[u8; 32] {
        &self.seed
    }

    /// The identity key pair.
    #[must_use]
    pub fn identity(&self) -> &IdentityKeyPair {
        &self.identity
    }

    /// The public identity key.
    #[must_use]
    pub fn identity_public(&self) -> IdentityPublicKey {
        self.identity.public()
    }

    /// The current public KEM key.
    #[must_use]
    pub fn kem_public(&self) -> &KemPublicKey {
        &self.kem.public
    }

    /// The id of the current KEM key.
    #[must_use]
    pub fn kem_key_id(&self) -> KemKeyId {
        self.kem.id
    }

    /// The private key of the KEM key `id`, current or retired.
    pub(crate) fn kem_secret_for(&self, id: &KemKeyId) -> Option<&KemSecret> {
        if self.kem.id == *id {
            return Some(&self.kem.secret);
        }
        self.retired
            .iter()
            .find(|r| r.pair.id == *id)
            .map(|r| &r.pair.secret)
    }

    /// This device's key bundle with its current KEM key, signed by its identity key.
    #[must_use]
    pub fn bundle(&self, created_at: Timestamp) -> KeyBundle {
        let mut bundle = KeyBundle {
            v: Version,
            device: self.device,
            identity_key: self.identity_public(),
            kem_key: self.kem.public.clone(),
            created_at,
            signature: Signature([0; 64]),
        };
        bundle.signature = self.identity.sign(bundle.tbs().as_slice());
        bundle
    }
}

impl fmt::Debug for DeviceKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeviceKeys")
            .field("device", &self.device)
            .field("identity", &self.identity_public())
            .field("kem", &self.kem.public)
            .field("retired_kem_keys", &self.retired.len())
            .finish_non_exhaustive()
    }
}

/// A device's public keys, signed by its identity key: what the directory serves and what a
/// sender needs to wrap keys to the device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyBundle {
    /// Protocol version.
    pub v: Version,
    /// The device.
    pub device: DeviceId,
    /// Its Ed25519 identity key.
    pub identity_key: IdentityPublicKey,
    /// Its HPKE KEM key; its suite is the suite used for wraps to this device.
    pub kem_key: KemPublicKey,
    /// When the bundle was made.
    pub created_at: Timestamp,
    /// Signature by `identity_key` over the fields above.
    pub signature: Signature,
}

impl WireType for KeyBundle {
    const WHAT: &'static str = "key bundle";
}

impl KeyBundle {
    fn tbs(&self) -> Tbs {
        let mut tbs = Tbs::new("switchboard/1 key-bundle");
        tbs.fixed(self.device.as_bytes())
            .fixed(self.identity_key.as_bytes())
            .u16(self.kem_key.suite.kem_id())
            .u16(self.kem_key.suite.kdf_id())
            .u16(self.kem_key.suite.aead_id())
            .bytes(&self.kem_key.bytes)
            .u64(self.created_at.0);
        tbs
    }

    /// Checks the self-signature.
    ///
    /// # Errors
    /// [`KeyError::BadBundleSignature`] if it does not verify.
    pub fn verify(&self) -> Result<(), KeyError> {
        if self
            .identity_key
            .verify(self.tbs().as_slice(), &self.signature)
        {
            Ok(())
        } else {
            Err(KeyError::BadBundleSignature {
                device: self.device,
            })
        }
    }

    /// Checks that this bundle may replace `current` (a KEM key rotation): its signature
    /// verifies, and it is for the same device, with the same identity key, created strictly
    /// later (so an old bundle cannot be replayed over a newer one).
    ///
    /// # Errors
    /// [`KeyError::WrongDevice`], [`KeyError::IdentityChanged`], [`KeyError::NotNewer`] or
    /// [`KeyError::BadBundleSignature`].
    pub fn check_update_of(&self, current: &Self) -> Result<(), KeyError> {
        if self.device != current.device {
            return Err(KeyError::WrongDevice {
                expected: current.device,
                found: self.device,
            });
        }
        if self.identity_key != current.identity_key {
            return Err(KeyError::IdentityChanged {
                device: self.device,
            });
        }
        if self.created_at <= current.created_at {
            return Err(KeyError::NotNewer {
                device: self.device,
                current: current.created_at,
                found: self.created_at,
            });
        }
        self.verify()
    }

    /// The id of this bundle's KEM key (what wraps to it name).
    #[must_use]
    pub fn kem_key_id(&self) -> KemKeyId {
        KemKeyId::of(&self.kem_key)
    }

    /// The fingerprint of the device's identity key.
    #[must_use]
    pub fn fingerprint(&self) -> Fingerprint {
        self.identity_key.fingerprint()
    }

    /// A short hash binding the whole bundle (used in roster hashes).
    pub(crate) fn digest(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        h.update(self.tbs().as_slice());
        h.update(self.signature.0);
        h.finalize().into()
    }
}

/// A human-comparable fingerprint of an identity key: 30 decimal digits in six groups of five
/// (about 100 bits), in the style of Signal's safety numbers.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint([u32; 6]);

impl Fingerprint {
    /// The fingerprint of `key`.
    #[must_use]
    pub fn of(key: &IdentityPublicKey) -> Self {
        let mut h = Sha256::new();
        h.update(b"switchboard/1 fingerprint");
        h.update(key.as_bytes());
        let digest: [u8; 32] = h.finalize().into();
        let mut groups = [0u32; 6];
        for (group, chunk) in groups.iter_mut().zip(digest.chunks_exact(5)) {
            let mut wide = [0u8; 8];
            wide[3..].copy_from_slice(chunk);
            let value = u64::from_be_bytes(wide) % 100_000;
            *group = u32::try_from(value).unwrap_or_default();
        }
        Self(groups)
    }

    /// Parses the form [`Fingerprint`]'s `Display` prints (spaces optional).
    ///
    /// # Errors
    /// [`WireError::Malformed`] unless the text is exactly 30 digits (ignoring spaces).
    pub fn parse(text: &str) -> Result<Self, WireError> {
        let digits: Vec<u32> = text
            .chars()
            .filter(|c| !c.is_whitespace())
            .map(|c| c.to_digit(10))
            .collect::<Option<_>>()
            .unwrap_or_default();
        if digits.len() != 30 {
            return Err(WireError::Malformed {
                what: "fingerprint",
                detail: "expected 30 digits in six groups of five".to_owned(),
            });
        }
        let mut groups = [0u32; 6];
        for (group, chunk) in groups.iter_mut().zip(digits.chunks_exact(5)) {
            *group = chunk.iter().fold(0, |acc, d| acc * 10 + d);
        }
        Ok(Self(groups))
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let [a, b, c, d, e, g] = self.0;
        write!(f, "{a:05} {b:05} {c:05} {d:05} {e:05} {g:05}")
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(seed: u8, suite: CipherSuite) -> DeviceKeys {
        DeviceKeys::from_seed(DeviceId::from_bytes([seed; 16]), suite, &[seed; 32])
    }

    #[test]
    fn bundles_verify_and_round_trip_in_both_suites() {
        for suite in CipherSuite::ALL {
            let bundle = keys(1, suite).bundle(Timestamp(10));
            bundle.verify().unwrap();
            let json = crate::wire::encode(&bundle).unwrap();
            let back: KeyBundle = crate::wire::decode(&json).unwrap();
            assert_eq!(back, bundle);
            back.verify().unwrap();
        }
    }

    #[test]
    fn bundle_with_changed_kem_key_fails_verification() {
        let mut bundle = keys(1, CipherSuite::default()).bundle(Timestamp(10));
        bundle.kem_key = keys(2, CipherSuite::default()).kem_public().clone();
        assert_eq!(
            bundle.verify(),
            Err(KeyError::BadBundleSignature {
                device: bundle.device
            })
        );
    }

    #[test]
    fn all_zero_identity_key_is_refused() {
        assert!(IdentityPublicKey::from_bytes(&[0; 32]).is_err());
    }

    #[test]
    fn fingerprint_parses_its_display_and_differs_per_key() {
        let a = keys(1, CipherSuite::default())
            .identity_public()
            .fingerprint();
        let b = keys(2, CipherSuite::default())
            .identity_public()
            .fingerprint();
        assert_ne!(a, b);
        let text = a.to_string();
        assert_eq!(text.len(), 35);
        assert_eq!(Fingerprint::parse(&text).unwrap(), a);
        assert!(Fingerprint::parse("12345").is_err());
    }

    #[test]
    fn rotation_keeps_the_identity_and_the_keystore_form_keeps_retired_keys() {
        for suite in CipherSuite::ALL {
            let mut rng = Csprng::from_seed([9; 32]);
            let mut k = DeviceKeys::generate(DeviceId::from_bytes([9; 16]), suite, &mut rng);
            let first = k.kem_public().clone();
            k.rotate_kem(Timestamp(100), &mut rng);
            let second = k.kem_public().clone();
            k.rotate_kem(Timestamp(200), &mut rng);
            assert_ne!(first, second);
            assert_ne!(&second, k.kem_public());
            assert!(k.holds_kem_key(&first) && k.holds_kem_key(&second));
            let json = serde_json::to_string(&k.kem_secrets()).unwrap();
            let secrets: KemKeySecrets = serde_json::from_str(&json).unwrap();
            let back = DeviceKeys::from_parts(k.device(), suite, k.seed(), &secrets);
            assert_eq!(back.kem_public(), k.kem_public());
            assert_eq!(back.identity_public(), k.identity_public());
            assert!(back.holds_kem_key(&first) && back.holds_kem_key(&second));
            assert!(!format!("{secrets:?}").contains(&json[12..30]));
            // The grace period is counted from each key's retirement.
            assert_eq!(k.delete_retired_kem_keys(Timestamp(150), 50), 1);
            assert!(!k.holds_kem_key(&first) && k.holds_kem_key(&second));
            assert_eq!(k.delete_retired_kem_keys(Timestamp(249), 50), 0);
            assert_eq!(k.delete_retired_kem_keys(Timestamp(250), 50), 1);
            assert_eq!(k.retired_kem_keys().count(), 0);
        }
    }

    #[test]
    fn a_newer_bundle_may_replace_only_one_of_the_same_device_and_identity() {
        let old = keys(1, CipherSuite::default());
        let mut rotated = old.clone();
        rotated.rotate_kem(Timestamp(5), &mut Csprng::from_seed([1; 32]));
        let current = old.bundle(Timestamp(10));
        rotated
            .bundle(Timestamp(11))
            .check_update_of(&current)
            .unwrap();
        assert!(matches!(
            rotated.bundle(Timestamp(10)).check_update_of(&current),
            Err(KeyError::NotNewer { .. })
        ));
        let other = DeviceKeys::from_seed(old.device(), CipherSuite::default(), &[7; 32]);
        assert!(matches!(
            other.bundle(Timestamp(11)).check_update_of(&current),
            Err(KeyError::IdentityChanged { .. })
        ));
        assert!(matches!(
            keys(2, CipherSuite::default())
                .bundle(Timestamp(11))
                .check_update_of(&current),
            Err(KeyError::WrongDevice { .. })
        ));
    }

    #[test]
    fn same_seed_same_keys() {
        let a = keys(5, CipherSuite::XWingSha256ChaCha20Poly1305);
        let b = keys(5, CipherSuite::XWingSha256ChaCha20Poly1305);
        assert_eq!(a.identity_public(), b.identity_public());
        assert_eq!(a.kem_public(), b.kem_public());
    }
}
