//! Rows of a [`DeviceStore`](crate::store::DeviceStore), sealed by the device: a store holds
//! ciphertext only and needs no key of its own.
//!
//! A row is `0x01 || nonce (24 bytes) || XChaCha20-Poly1305 ciphertext and tag`, under a key
//! derived with HKDF-SHA256 (no salt, info `"switchboard/1 device store"`) from the device's
//! seed. Its associated data names the device and the row's place (the state record, or one
//! thread), so a row moved to another place or device, or altered, does not open. Nonces are
//! random: 192 bits leave no practical limit on the number of writes under one key.

use std::fmt;

use chacha20poly1305::aead::{Aead as _, Payload};
use chacha20poly1305::{KeyInit as _, XChaCha20Poly1305, XNonce};
use hkdf::Hkdf;
use sha2::Sha256;
use switchboard_protocol::{Csprng, DeviceId, ThreadId};
use zeroize::Zeroizing;

use crate::error::ClientError;

/// The HKDF info string of the row key.
const INFO: &[u8] = b"switchboard/1 device store";
/// The first byte of every row: the format.
const FORMAT: u8 = 1;
/// Bytes of an XChaCha20-Poly1305 nonce.
const NONCE_LEN: usize = 24;
/// Label before the associated data of a row.
const AAD_LABEL: &[u8] = b"switchboard/1 device row";

/// Where a row belongs: its associated data.
#[derive(Clone, Copy, Debug)]
pub(super) enum RowPlace {
    /// The device's state record.
    State(DeviceId),
    /// One thread of the device.
    Thread(DeviceId, ThreadId),
}

impl RowPlace {
    /// label || kind (0 state, 1 thread) || device id || thread id (zeros for the state).
    fn aad(self) -> Vec<u8> {
        let (kind, device, thread) = match self {
            Self::State(device) => (0u8, device, [0u8; 16]),
            Self::Thread(device, thread) => (1u8, device, *thread.as_bytes()),
        };
        let mut aad = Vec::with_capacity(AAD_LABEL.len() + 33);
        aad.extend_from_slice(AAD_LABEL);
        aad.push(kind);
        aad.extend_from_slice(device.as_bytes());
        aad.extend_from_slice(&thread);
        aad
    }
}

impl fmt::Display for RowPlace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::State(device) => write!(f, "the state record of device {device}"),
            Self::Thread(device, thread) => write!(f, "thread {thread} of device {device}"),
        }
    }
}

/// The key that seals a device's store rows. Zeroized on drop; `Debug` prints nothing secret.
pub(super) struct RowKey(Zeroizing<[u8; 32]>);

impl fmt::Debug for RowKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RowKey(..)")
    }
}

impl RowKey {
    /// Derives the row key from the device's 32-byte seed.
    pub(super) fn derive(seed: &[u8; 32]) -> Self {
        let mut key = Zeroizing::new([0u8; 32]);
        // 32 bytes is far below HKDF-SHA256's limit of 255 * 32: expansion cannot fail.
        let _ = Hkdf::<Sha256>::new(None, seed).expand(INFO, key.as_mut_slice());
        Self(key)
    }

    /// Seals `plaintext` for `place`.
    pub(super) fn seal(
        &self,
        rng: &mut Csprng,
        place: RowPlace,
        plaintext: &[u8],
    ) -> Result<Vec<u8>, ClientError> {
        let nonce: [u8; NONCE_LEN] = rng.array();
        let ciphertext = self
            .cipher()
            .encrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: plaintext,
                    aad: &place.aad(),
                },
            )
            .map_err(|_| ClientError::Store(format!("{place} cannot be sealed")))?;
        let mut row = Vec::with_capacity(1 + NONCE_LEN + ciphertext.len());
        row.push(FORMAT);
        row.extend_from_slice(&nonce);
        row.extend_from_slice(&ciphertext);
        Ok(row)
    }

    /// Opens a row read back for `place`.
    ///
    /// # Errors
    /// [`ClientError::Store`]: another format, another device's key, another place, or altered.
    pub(super) fn open(
        &self,
        place: RowPlace,
        row: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, ClientError> {
        let refused = |why: &str| ClientError::Store(format!("{place}: {why}"));
        let (format, rest) = row
            .split_first()
            .ok_or_else(|| refused("the row is empty"))?;
        if *format != FORMAT {
            return Err(refused(&format!(
                "row format {format} (this build reads {FORMAT})"
            )));
        }
        if rest.len() < NONCE_LEN {
            return Err(refused("the row is too short"));
        }
        let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce
            .try_into()
            .map_err(|_| refused("the row is too short"))?;
        self.cipher()
            .decrypt(
                &XNonce::from(nonce),
                Payload {
                    msg: ciphertext,
                    aad: &place.aad(),
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| {
                refused(
                    "the row does not open with this device's key: another device's row, a row \
                     moved from another place, or altered",
                )
            })
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(&(*self.0).into())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn ids() -> (DeviceId, ThreadId, ThreadId) {
        let mut rng = Csprng::from_seed([9; 32]);
        (
            DeviceId::random(&mut rng),
            ThreadId::random(&mut rng),
            ThreadId::random(&mut rng),
        )
    }

    #[test]
    fn a_row_opens_only_in_its_place_with_its_key() {
        let (device, thread, other) = ids();
        let key = RowKey::derive(&[1; 32]);
        let mut rng = Csprng::from_seed([2; 32]);
        let row = key
            .seal(&mut rng, RowPlace::Thread(device, thread), b"secret")
            .unwrap();
        assert!(!row.windows(6).any(|w| w == b"secret"));
        assert_eq!(
            &*key.open(RowPlace::Thread(device, thread), &row).unwrap(),
            b"secret"
        );
        for place in [RowPlace::Thread(device, other), RowPlace::State(device)] {
            let err = key.open(place, &row).unwrap_err().to_string();
            assert!(err.contains("does not open"), "{err}");
        }
        let err = RowKey::derive(&[3; 32])
            .open(RowPlace::Thread(device, thread), &row)
            .unwrap_err();
        assert!(err.to_string().contains("does not open"), "{err}");
        let mut altered = row.clone();
        *altered.last_mut().unwrap() ^= 1;
        assert!(
            key.open(RowPlace::Thread(device, thread), &altered)
                .is_err()
        );
    }

    #[test]
    fn short_empty_or_unknown_rows_are_refused_without_a_panic() {
        let (device, _, _) = ids();
        let key = RowKey::derive(&[1; 32]);
        for (row, why) in [
            (&[][..], "empty"),
            (&[1, 2, 3][..], "too short"),
            (&[2; 60][..], "row format 2"),
            (&[1; 30][..], "does not open"),
        ] {
            let err = key.open(RowPlace::State(device), row).unwrap_err();
            assert!(err.to_string().contains(why), "{why}: {err}");
        }
    }

    #[test]
    fn the_key_depends_on_the_seed_and_is_not_printed() {
        assert_ne!(*RowKey::derive(&[1; 32]).0, *RowKey::derive(&[2; 32]).0);
        assert_eq!(format!("{:?}", RowKey::derive(&[1; 32])), "RowKey(..)");
    }
}
