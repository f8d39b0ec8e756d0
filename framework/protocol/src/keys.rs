//! Device keys: the Ed25519 identity key, the HPKE KEM key, signed key bundles and
//! human-comparable fingerprints.

use std::fmt;

use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use hkdf::Hkdf;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest as _, Sha256};
use zeroize::{Zeroize as _, Zeroizing};

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

/// All secret keys of one device, derived from a single 32-byte device seed, so that a keystore
/// needs to protect only that seed.
///
/// ```
/// use switchboard_protocol::{CipherSuite, Csprng, DeviceId, DeviceKeys, Timestamp};
/// let mut rng = Csprng::from_os()?;
/// let keys = DeviceKeys::generate(DeviceId::random(&mut rng), CipherSuite::default(), &mut rng);
/// let bundle = keys.bundle(Timestamp(1_700_000_000));
/// bundle.verify()?;
/// println!("compare this with the other person: {}", bundle.fingerprint());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct DeviceKeys {
    device: DeviceId,
    seed: Zeroizing<[u8; 32]>,
    identity: IdentityKeyPair,
    kem_secret: KemSecret,
    kem_public: KemPublicKey,
}

impl DeviceKeys {
    /// Fresh keys for `device` in `suite`.
    pub fn generate(device: DeviceId, suite: CipherSuite, rng: &mut Csprng) -> Self {
        let mut seed = rng.array::<32>();
        let keys = Self::from_seed(device, suite, &seed);
        seed.zeroize();
        keys
    }

    /// The keys derived from `seed`: HKDF-SHA256 with distinct labels gives the Ed25519 secret
    /// key and the KEM `DeriveKeyPair` input. The same seed always gives the same keys.
    ///
    /// # Panics
    /// Never: a derived X25519 or X-Wing public key is always valid.
    #[must_use]
    pub fn from_seed(device: DeviceId, suite: CipherSuite, seed: &[u8; 32]) -> Self {
        let hk = Hkdf::<Sha256>::new(Some(b"switchboard/1 device-keys"), seed);
        let mut identity_seed = Zeroizing::new([0u8; 32]);
        let mut kem_ikm = Zeroizing::new([0u8; 32]);
        // 32-byte outputs are far below HKDF-SHA256's 8160-byte limit, so expand cannot fail.
        let _ = hk.expand(b"identity", identity_seed.as_mut());
        let _ = hk.expand(suite.name().as_bytes(), kem_ikm.as_mut());
        let identity = IdentityKeyPair::from_seed(&identity_seed);
        let (kem_secret, pk_bytes) = derive_kem_keypair(suite, &kem_ikm);
        let parsed = KemPublic::parse(suite, &pk_bytes);
        #[allow(clippy::expect_used)]
        let parsed = parsed.expect("a derived KEM public key is valid");
        Self {
            device,
            seed: Zeroizing::new(*seed),
            identity,
            kem_secret,
            kem_public: KemPublicKey {
                suite,
                bytes: pk_bytes,
                parsed,
            },
        }
    }

    /// This device's id.
    #[must_use]
    pub fn device(&self) -> DeviceId {
        self.device
    }

    /// This device's suite.
    #[must_use]
    pub fn suite(&self) -> CipherSuite {
        self.kem_public.suite
    }

    /// The 32-byte seed all keys derive from: the only secret a keystore must keep.
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

    /// The public KEM key.
    #[must_use]
    pub fn kem_public(&self) -> &KemPublicKey {
        &self.kem_public
    }

    pub(crate) fn kem_secret(&self) -> &KemSecret {
        &self.kem_secret
    }

    /// This device's key bundle, signed by its identity key.
    #[must_use]
    pub fn bundle(&self, created_at: Timestamp) -> KeyBundle {
        let mut bundle = KeyBundle {
            v: Version,
            device: self.device,
            identity_key: self.identity_public(),
            kem_key: self.kem_public.clone(),
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
            .field("kem", &self.kem_public)
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
    fn same_seed_same_keys() {
        let a = keys(5, CipherSuite::XWingSha256ChaCha20Poly1305);
        let b = keys(5, CipherSuite::XWingSha256ChaCha20Poly1305);
        assert_eq!(a.identity_public(), b.identity_public());
        assert_eq!(a.kem_public(), b.kem_public());
    }
}
