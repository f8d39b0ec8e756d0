//! What a device keeps in its keystore, and how it is encoded.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use switchboard_protocol::{
    CipherSuite, Commit, DeviceId, DeviceKeys, DeviceMemory, EntityId, KemKeySecrets, SeenWraps,
    ThreadId, ThreadSnapshot, ThreadState,
};
use zeroize::Zeroizing;

use super::rotation::RotationState;
use std::sync::Arc;

use super::{Device, DeviceRole, PinnedAdmin};
use crate::error::ClientError;

/// The keystore's contents, version 1.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Contents {
    pub(super) v: u32,
    pub(super) device: DeviceId,
    pub(super) suite: CipherSuite,
    pub(super) seed: SecretB64,
    /// The KEM private keys (current and retired within the grace period). Absent in keystores
    /// written before KEM rotation: their KEM key derives from the seed.
    #[serde(default)]
    pub(super) kem: Option<KemKeySecrets>,
    /// When the KEM key was published and rotated, and epochs applied since.
    #[serde(default)]
    pub(super) kem_rotation: RotationState,
    pub(super) relay: String,
    pub(super) cursor: u64,
    pub(super) role: DeviceRole,
    pub(super) pinned: BTreeMap<EntityId, PinnedAdmin>,
    pub(super) seen_opens: SeenWraps,
    pub(super) threads: Vec<ThreadSnapshot>,
    /// The application's own state (e.g. the admin's agent registry), kept with the keys.
    #[serde(default)]
    pub(super) app: serde_json::Value,
    /// What the device remembers of threads it left: refuses replayed joins.
    #[serde(default)]
    pub(super) memory: DeviceMemory,
    /// Admin: commits made (their epoch installed here) but not yet posted to the relay.
    #[serde(default)]
    pub(super) unposted: Vec<Commit>,
}

/// A 32-byte secret as base64url that is zeroized when dropped.
pub(super) struct SecretB64(pub(super) Zeroizing<[u8; 32]>);

impl Serialize for SecretB64 {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use base64::Engine as _;
        let text = Zeroizing::new(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(*self.0));
        s.serialize_str(&text)
    }
}

impl<'de> Deserialize<'de> for SecretB64 {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use base64::Engine as _;
        let text = Zeroizing::new(String::deserialize(d)?);
        let bytes = Zeroizing::new(
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(text.as_bytes())
                .map_err(serde::de::Error::custom)?,
        );
        let array: [u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| serde::de::Error::custom("the device seed must be 32 bytes"))?;
        Ok(Self(Zeroizing::new(array)))
    }
}

/// A keystore write panicked earlier: the file may be behind the state in memory.
fn poisoned() -> ClientError {
    ClientError::KeystoreContents("an earlier keystore write failed midway".to_owned())
}

/// The keystore contents of a device, as JSON (zeroized when dropped).
#[allow(clippy::too_many_arguments)]
pub(super) fn contents_of(
    keys: &DeviceKeys,
    rotation: &RotationState,
    relay: &str,
    cursor: u64,
    role: &DeviceRole,
    pinned: &BTreeMap<EntityId, PinnedAdmin>,
    seen_opens: &SeenWraps,
    threads: &BTreeMap<ThreadId, ThreadState>,
    app: &serde_json::Value,
    memory: &DeviceMemory,
    unposted: &[Commit],
) -> Result<Zeroizing<Vec<u8>>, ClientError> {
    let contents = Contents {
        v: 1,
        device: keys.device(),
        suite: keys.suite(),
        seed: SecretB64(Zeroizing::new(*keys.seed())),
        kem: Some(keys.kem_secrets()),
        kem_rotation: rotation.clone(),
        relay: relay.to_owned(),
        cursor,
        role: role.clone(),
        pinned: pinned.clone(),
        seen_opens: seen_opens.clone(),
        threads: threads.values().map(ThreadState::snapshot).collect(),
        app: app.clone(),
        memory: memory.clone(),
        unposted: unposted.to_vec(),
    };
    serde_json::to_vec(&contents)
        .map(Zeroizing::new)
        .map_err(|e| ClientError::KeystoreContents(e.to_string()))
}

impl Device {
    /// Writes the whole device state to the keystore, on this thread (for the sync setters).
    pub(super) fn save(&mut self) -> Result<(), ClientError> {
        let contents = self.contents()?;
        let mut keystore = self.keystore.lock().map_err(|_| poisoned())?;
        keystore.save(&contents)?;
        Ok(())
    }

    /// Writes the whole device state to the keystore from an async fn: the contents are built
    /// here (cheap), the encryption, write and fsyncs run on tokio's blocking pool. Returns once
    /// the file is on disk, so callers keep their ordering (a generation saved before the
    /// message is posted, a cursor saved before the acknowledgement).
    pub(super) async fn persist(&mut self) -> Result<(), ClientError> {
        let contents = self.contents()?;
        let keystore = Arc::clone(&self.keystore);
        tokio::task::spawn_blocking(move || {
            let mut keystore = keystore.lock().map_err(|_| poisoned())?;
            keystore.save(&contents).map_err(ClientError::from)
        })
        .await
        .map_err(|e| {
            ClientError::KeystoreContents(format!("the keystore write did not finish: {e}"))
        })?
    }

    /// The whole device state as keystore contents.
    fn contents(&self) -> Result<Zeroizing<Vec<u8>>, ClientError> {
        contents_of(
            &self.keys,
            &self.rotation,
            self.relay.url(),
            self.cursor,
            &self.role,
            &self.pinned,
            &self.seen_opens,
            &self.threads,
            &self.app,
            &self.memory,
            &self.unposted,
        )
    }
}
