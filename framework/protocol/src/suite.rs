//! Cipher suites and the HPKE (RFC 9180) operations behind them.
//!
//! A device's suite is the suite of the KEM key in its key bundle; a sender always wraps to a
//! recipient with the recipient's suite, so suites are negotiated per device without a round
//! trip. Both suites use HKDF-SHA256 and ChaCha20Poly1305; they differ in the KEM.

use std::fmt;

use hpke::aead::ChaCha20Poly1305;
use hpke::kdf::HkdfSha256;
use hpke::kem::{X25519HkdfSha256, XWing};
use hpke::{Deserializable as _, Kem as _, OpModeR, OpModeS, Serializable as _};
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::error::KeyError;
use crate::rng::Csprng;

/// An HPKE cipher suite: KEM, KDF and AEAD.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Serialize, Deserialize, Default)]
pub enum CipherSuite {
    /// DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, ChaCha20Poly1305. The default.
    #[default]
    #[serde(rename = "x25519-sha256-chacha20poly1305")]
    X25519Sha256ChaCha20Poly1305,
    /// X-Wing (ML-KEM-768 + X25519 hybrid, post-quantum), HKDF-SHA256, ChaCha20Poly1305.
    #[serde(rename = "xwing-sha256-chacha20poly1305")]
    XWingSha256ChaCha20Poly1305,
}

impl CipherSuite {
    /// Every suite this build supports.
    pub const ALL: [Self; 2] = [
        Self::X25519Sha256ChaCha20Poly1305,
        Self::XWingSha256ChaCha20Poly1305,
    ];

    /// The HPKE KEM identifier (RFC 9180 §7.1; 0x647a for X-Wing).
    #[must_use]
    pub const fn kem_id(self) -> u16 {
        match self {
            Self::X25519Sha256ChaCha20Poly1305 => X25519HkdfSha256::KEM_ID,
            Self::XWingSha256ChaCha20Poly1305 => XWing::KEM_ID,
        }
    }

    /// The HPKE KDF identifier (HKDF-SHA256 = 1).
    #[must_use]
    pub const fn kdf_id(self) -> u16 {
        1
    }

    /// The HPKE AEAD identifier (ChaCha20Poly1305 = 3).
    #[must_use]
    pub const fn aead_id(self) -> u16 {
        3
    }

    /// The length of a KEM public key of this suite.
    #[must_use]
    pub const fn public_key_len(self) -> usize {
        match self {
            Self::X25519Sha256ChaCha20Poly1305 => 32,
            Self::XWingSha256ChaCha20Poly1305 => 1216,
        }
    }

    /// The wire name, e.g. `x25519-sha256-chacha20poly1305`.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::X25519Sha256ChaCha20Poly1305 => "x25519-sha256-chacha20poly1305",
            Self::XWingSha256ChaCha20Poly1305 => "xwing-sha256-chacha20poly1305",
        }
    }
}

impl fmt::Display for CipherSuite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// X25519 u-coordinates of small order (with the ignored top bit cleared), including the
/// non-canonical encodings of p-1, p and p+1. A key equal to one of these yields an all-zero or
/// predictable shared secret.
const X25519_SMALL_ORDER: [[u8; 32]; 7] = [
    [0; 32],
    [
        1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
        0, 0,
    ],
    [
        0xe0, 0xeb, 0x7a, 0x7c, 0x3b, 0x41, 0xb8, 0xae, 0x16, 0x56, 0xe3, 0xfa, 0xf1, 0x9f, 0xc4,
        0x6a, 0xda, 0x09, 0x8d, 0xeb, 0x9c, 0x32, 0xb1, 0xfd, 0x86, 0x62, 0x05, 0x16, 0x5f, 0x49,
        0xb8, 0x00,
    ],
    [
        0x5f, 0x9c, 0x95, 0xbc, 0xa3, 0x50, 0x8c, 0x24, 0xb1, 0xd0, 0xb1, 0x55, 0x9c, 0x83, 0xef,
        0x5b, 0x04, 0x44, 0x5c, 0xc4, 0x58, 0x1c, 0x8e, 0x86, 0xd8, 0x22, 0x4e, 0xdd, 0xd0, 0x9f,
        0x11, 0x57,
    ],
    [
        0xec, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0x7f,
    ],
    [
        0xed, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0x7f,
    ],
    [
        0xee, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        0xff, 0x7f,
    ],
];

/// Refuses X25519 public keys of small order.
fn check_x25519_point(bytes: &[u8]) -> Result<(), KeyError> {
    let mut masked = [0u8; 32];
    if bytes.len() != 32 {
        return Err(KeyError::InvalidKemKey {
            suite: CipherSuite::X25519Sha256ChaCha20Poly1305,
            detail: format!("expected 32 bytes, found {}", bytes.len()),
        });
    }
    masked.copy_from_slice(bytes);
    masked[31] &= 0x7f;
    if X25519_SMALL_ORDER.contains(&masked) {
        return Err(KeyError::WeakKemKey);
    }
    Ok(())
}

/// A parsed, validated KEM public key.
#[derive(Clone)]
pub(crate) enum KemPublic {
    X25519(<X25519HkdfSha256 as hpke::Kem>::PublicKey),
    XWing(Box<<XWing as hpke::Kem>::PublicKey>),
}

impl KemPublic {
    /// Parses and validates a public key of `suite`.
    pub(crate) fn parse(suite: CipherSuite, bytes: &[u8]) -> Result<Self, KeyError> {
        if bytes.len() != suite.public_key_len() {
            return Err(KeyError::InvalidKemKey {
                suite,
                detail: format!(
                    "expected {} bytes, found {}",
                    suite.public_key_len(),
                    bytes.len()
                ),
            });
        }
        let invalid = |e: hpke::HpkeError| KeyError::InvalidKemKey {
            suite,
            detail: e.to_string(),
        };
        match suite {
            CipherSuite::X25519Sha256ChaCha20Poly1305 => {
                check_x25519_point(bytes)?;
                <X25519HkdfSha256 as hpke::Kem>::PublicKey::from_bytes(bytes)
                    .map(Self::X25519)
                    .map_err(invalid)
            }
            CipherSuite::XWingSha256ChaCha20Poly1305 => {
                // X-Wing public key = ML-KEM-768 encapsulation key (1184) || X25519 key (32).
                check_x25519_point(bytes.get(1184..).unwrap_or_default())?;
                <XWing as hpke::Kem>::PublicKey::from_bytes(bytes)
                    .map(|pk| Self::XWing(Box::new(pk)))
                    .map_err(invalid)
            }
        }
    }
}

/// A KEM private key.
#[derive(Clone)]
pub(crate) enum KemSecret {
    X25519(<X25519HkdfSha256 as hpke::Kem>::PrivateKey),
    XWing(Box<<XWing as hpke::Kem>::PrivateKey>),
}

/// Derives a KEM key pair deterministically from input keying material (RFC 9180 DeriveKeyPair).
/// Returns the private key and the public key bytes.
pub(crate) fn derive_kem_keypair(suite: CipherSuite, ikm: &[u8; 32]) -> (KemSecret, Vec<u8>) {
    match suite {
        CipherSuite::X25519Sha256ChaCha20Poly1305 => {
            let (sk, pk) = X25519HkdfSha256::derive_keypair(ikm);
            (KemSecret::X25519(sk), pk.to_bytes().to_vec())
        }
        CipherSuite::XWingSha256ChaCha20Poly1305 => {
            let (sk, pk) = XWing::derive_keypair(ikm);
            (KemSecret::XWing(Box::new(sk)), pk.to_bytes().to_vec())
        }
    }
}

/// Single-shot HPKE Base-mode seal. Returns `(enc, ciphertext)`.
pub(crate) fn hpke_seal(
    recipient: &KemPublic,
    info: &[u8],
    plaintext: &[u8],
    aad: &[u8],
    rng: &mut Csprng,
) -> Result<(Vec<u8>, Vec<u8>), hpke::HpkeError> {
    match recipient {
        KemPublic::X25519(pk) => {
            let (enc, ct) = hpke::single_shot_seal_with_rng::<
                ChaCha20Poly1305,
                HkdfSha256,
                X25519HkdfSha256,
            >(&OpModeS::Base, pk, info, plaintext, aad, rng)?;
            Ok((enc.to_bytes().to_vec(), ct))
        }
        KemPublic::XWing(pk) => {
            let (enc, ct) = hpke::single_shot_seal_with_rng::<ChaCha20Poly1305, HkdfSha256, XWing>(
                &OpModeS::Base,
                pk,
                info,
                plaintext,
                aad,
                rng,
            )?;
            Ok((enc.to_bytes().to_vec(), ct))
        }
    }
}

/// Single-shot HPKE Base-mode open.
pub(crate) fn hpke_open(
    secret: &KemSecret,
    enc: &[u8],
    info: &[u8],
    ciphertext: &[u8],
    aad: &[u8],
) -> Result<Zeroizing<Vec<u8>>, hpke::HpkeError> {
    let plaintext = match secret {
        KemSecret::X25519(sk) => {
            let enc = <X25519HkdfSha256 as hpke::Kem>::EncappedKey::from_bytes(enc)?;
            hpke::single_shot_open::<ChaCha20Poly1305, HkdfSha256, X25519HkdfSha256>(
                &OpModeR::Base,
                sk,
                &enc,
                info,
                ciphertext,
                aad,
            )?
        }
        KemSecret::XWing(sk) => {
            let enc = <XWing as hpke::Kem>::EncappedKey::from_bytes(enc)?;
            hpke::single_shot_open::<ChaCha20Poly1305, HkdfSha256, XWing>(
                &OpModeR::Base,
                sk,
                &enc,
                info,
                ciphertext,
                aad,
            )?
        }
    };
    Ok(Zeroizing::new(plaintext))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_zero_and_small_order_x25519_keys_are_refused() {
        for point in X25519_SMALL_ORDER {
            assert_eq!(
                KemPublic::parse(CipherSuite::X25519Sha256ChaCha20Poly1305, &point).err(),
                Some(KeyError::WeakKemKey)
            );
            let mut high = point;
            high[31] |= 0x80;
            assert_eq!(
                KemPublic::parse(CipherSuite::X25519Sha256ChaCha20Poly1305, &high).err(),
                Some(KeyError::WeakKemKey)
            );
        }
    }

    #[test]
    fn wrong_length_keys_are_refused() {
        for suite in CipherSuite::ALL {
            assert!(matches!(
                KemPublic::parse(suite, &[7u8; 31]),
                Err(KeyError::InvalidKemKey { .. })
            ));
        }
    }

    #[test]
    fn seal_open_round_trip_in_both_suites() {
        let mut rng = Csprng::from_seed([3; 32]);
        for suite in CipherSuite::ALL {
            let (sk, pk) = derive_kem_keypair(suite, &[9; 32]);
            let pk = KemPublic::parse(suite, &pk).unwrap();
            let (enc, ct) = hpke_seal(&pk, b"info", b"secret", b"aad", &mut rng).unwrap();
            let pt = hpke_open(&sk, &enc, b"info", &ct, b"aad").unwrap();
            assert_eq!(pt.as_slice(), b"secret");
            assert!(hpke_open(&sk, &enc, b"other info", &ct, b"aad").is_err());
        }
    }
}
