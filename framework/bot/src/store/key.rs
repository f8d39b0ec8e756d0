//! Encryption at rest: the [`StoreKey`] and the sealing of thread blobs.

use std::fmt;

use chacha20poly1305::aead::{Aead as _, Payload};
use chacha20poly1305::{ChaCha20Poly1305, KeyInit as _, Nonce};
use hkdf::Hkdf;
use sha2::Sha256;
use switchboard_protocol::{DeviceId, ThreadId};
use zeroize::Zeroizing;

use super::StoreError;

/// The HKDF info string of the store key.
const INFO: &[u8] = b"switchboard/1 bot store";
/// Bytes of a ChaCha20-Poly1305 nonce.
pub(super) const NONCE_LEN: usize = 12;

/// The secret that encrypts thread state at rest, derived (HKDF-SHA256, no salt, info
/// `"switchboard/1 bot store"`) from the device's keystore seed. Zeroized on drop; its `Debug`
/// prints nothing secret.
pub struct StoreKey(Zeroizing<[u8; 32]>);

impl StoreKey {
    /// Derives the store key from the device's 32-byte keystore seed.
    #[must_use]
    pub fn derive(device_seed: &[u8; 32]) -> Self {
        let mut key = Zeroizing::new([0u8; 32]);
        // 32 bytes is far below HKDF-SHA256's limit of 255 * 32: expansion cannot fail.
        let _ = Hkdf::<Sha256>::new(None, device_seed).expand(INFO, key.as_mut_slice());
        Self(key)
    }

    /// Seals a thread blob: a fresh random nonce and the ciphertext (with its tag).
    pub(super) fn seal(
        &self,
        device: DeviceId,
        thread: ThreadId,
        version: u64,
        plaintext: &[u8],
    ) -> Result<([u8; NONCE_LEN], Vec<u8>), StoreError> {
        self.seal_with(&aad(device, thread, version), plaintext)
            .map_err(|()| StoreError::Config("the thread state cannot be sealed".to_owned()))
    }

    /// Opens a sealed thread blob read back at `version`.
    pub(super) fn open(
        &self,
        device: DeviceId,
        thread: ThreadId,
        version: u64,
        nonce: &[u8],
        ciphertext: &[u8],
    ) -> Result<Vec<u8>, StoreError> {
        self.open_with(&aad(device, thread, version), nonce, ciphertext)
            .map_err(|()| {
                StoreError::Corrupt(format!(
                    "thread {thread} (version {version}) does not open with this store key: \
                     another device's key or seed, or the row was altered"
                ))
            })
    }

    /// Seals one history entry of a thread (its position `index`): bound to the device, the
    /// thread and the position, and never interchangeable with a thread blob (other associated
    /// data: a label and another length).
    pub(super) fn seal_history(
        &self,
        device: DeviceId,
        thread: ThreadId,
        index: u64,
        plaintext: &[u8],
    ) -> Result<([u8; NONCE_LEN], Vec<u8>), StoreError> {
        self.seal_with(&history_aad(device, thread, index), plaintext)
            .map_err(|()| StoreError::Config("a history entry cannot be sealed".to_owned()))
    }

    /// Opens a history entry read back at position `index`.
    pub(super) fn open_history(
        &self,
        device: DeviceId,
        thread: ThreadId,
        index: u64,
        nonce: &[u8],
        ciphertext: &[u8],
    ) -> Result<Vec<u8>, StoreError> {
        self.open_with(&history_aad(device, thread, index), nonce, ciphertext)
            .map_err(|()| {
                StoreError::Corrupt(format!(
                    "thread {thread}: history entry {index} does not open with this store key: \
                     another device's key or seed, or the row was altered or moved"
                ))
            })
    }

    /// A fresh random nonce and `plaintext` sealed under it with `aad`; `Err(())` if sealing
    /// failed (the random source included).
    fn seal_with(&self, aad: &[u8], plaintext: &[u8]) -> Result<([u8; NONCE_LEN], Vec<u8>), ()> {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(|_| ())?;
        let ciphertext = self
            .cipher()
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            .map_err(|_| ())?;
        Ok((nonce, ciphertext))
    }

    /// Opens what [`seal_with`](Self::seal_with) sealed under `aad`; `Err(())` if it does not
    /// open (another key, another place, altered, or a nonce of the wrong length).
    fn open_with(&self, aad: &[u8], nonce: &[u8], ciphertext: &[u8]) -> Result<Vec<u8>, ()> {
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| ())?;
        self.cipher()
            .decrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: ciphertext,
                    aad,
                },
            )
            .map_err(|_| ())
    }

    /// A value that identifies this key without revealing it (SHA-256 of a label and the
    /// key), kept in the store so that a store written under another key is refused at
    /// start rather than found unreadable thread by thread.
    #[must_use]
    pub fn check_value(&self) -> [u8; 32] {
        use sha2::Digest as _;
        let mut hash = Sha256::new();
        hash.update(b"switchboard/1 bot store key check");
        hash.update(self.0.as_slice());
        hash.finalize().into()
    }

    fn cipher(&self) -> ChaCha20Poly1305 {
        ChaCha20Poly1305::new(&(*self.0).into())
    }
}

impl fmt::Debug for StoreKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StoreKey(..)")
    }
}

/// Label before the associated data of a history entry.
const HISTORY_LABEL: &[u8] = b"history";

/// Associated data of a history entry: "history" || device id || thread id || index
/// (big-endian): 47 bytes, never the 40 of a thread blob.
fn history_aad(device: DeviceId, thread: ThreadId, index: u64) -> Vec<u8> {
    let mut aad = Vec::with_capacity(HISTORY_LABEL.len() + 40);
    aad.extend_from_slice(HISTORY_LABEL);
    aad.extend_from_slice(device.as_bytes());
    aad.extend_from_slice(thread.as_bytes());
    aad.extend_from_slice(&index.to_be_bytes());
    aad
}

/// Associated data of a sealed row: device id || thread id || version (big-endian).
fn aad(device: DeviceId, thread: ThreadId, version: u64) -> [u8; 40] {
    let mut aad = [0u8; 40];
    let (d, rest) = aad.split_at_mut(16);
    let (t, v) = rest.split_at_mut(16);
    d.copy_from_slice(device.as_bytes());
    t.copy_from_slice(thread.as_bytes());
    v.copy_from_slice(&version.to_be_bytes());
    aad
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_history_entry_never_opens_as_a_thread_blob_or_elsewhere() {
        let key = StoreKey::derive(&[3; 32]);
        let device = DeviceId::from_bytes([1; 16]);
        let thread = ThreadId::from_bytes([2; 16]);
        let (nonce, sealed) = key.seal_history(device, thread, 5, b"hello").unwrap();
        assert_eq!(
            key.open_history(device, thread, 5, &nonce, &sealed)
                .unwrap(),
            b"hello"
        );
        assert!(key.open(device, thread, 5, &nonce, &sealed).is_err());
        assert!(
            key.open_history(device, thread, 6, &nonce, &sealed)
                .is_err()
        );
        let other = ThreadId::from_bytes([9; 16]);
        assert!(key.open_history(device, other, 5, &nonce, &sealed).is_err());
        let (nonce, blob) = key.seal(device, thread, 5, b"hello").unwrap();
        assert!(key.open_history(device, thread, 5, &nonce, &blob).is_err());
    }

    fn ids() -> (DeviceId, ThreadId) {
        (DeviceId::from_bytes([1; 16]), ThreadId::from_bytes([2; 16]))
    }

    #[test]
    fn sealed_blob_opens_only_with_its_device_thread_version_and_key() {
        let key = StoreKey::derive(&[7; 32]);
        let (device, thread) = ids();
        let (nonce, ct) = key.seal(device, thread, 3, b"secret state").unwrap();
        assert_eq!(
            key.open(device, thread, 3, &nonce, &ct).unwrap(),
            b"secret state"
        );
        assert!(!ct.windows(6).any(|w| w == b"secret"));
        let other_thread = ThreadId::from_bytes([3; 16]);
        let other_device = DeviceId::from_bytes([4; 16]);
        for result in [
            key.open(device, thread, 2, &nonce, &ct),
            key.open(device, other_thread, 3, &nonce, &ct),
            key.open(other_device, thread, 3, &nonce, &ct),
            StoreKey::derive(&[8; 32]).open(device, thread, 3, &nonce, &ct),
            key.open(device, thread, 3, &nonce[..8], &ct),
        ] {
            assert!(matches!(result, Err(StoreError::Corrupt(_))), "{result:?}");
        }
    }

    #[test]
    fn every_write_takes_a_fresh_nonce() {
        let key = StoreKey::derive(&[7; 32]);
        let (device, thread) = ids();
        let (n1, c1) = key.seal(device, thread, 1, b"x").unwrap();
        let (n2, c2) = key.seal(device, thread, 1, b"x").unwrap();
        assert_ne!(n1, n2);
        assert_ne!(c1, c2);
    }

    #[test]
    fn debug_prints_no_key_bytes() {
        assert_eq!(format!("{:?}", StoreKey::derive(&[7; 32])), "StoreKey(..)");
    }
}
