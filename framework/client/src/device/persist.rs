//! What a device keeps in its keystore, and how it is encoded.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use switchboard_protocol::{
    CipherSuite, Commit, Csprng, DeviceId, DeviceKeys, DeviceMemory, EntityId, KemKeySecrets,
    SeenWraps, ThreadId, ThreadSnapshot, ThreadState,
};
use zeroize::Zeroizing;

use super::rotation::RotationState;
use std::collections::BTreeSet;
use std::sync::Arc;

use super::{Device, DeviceRole, PinnedAdmin};
use crate::error::ClientError;
use crate::keystore::Keystore;
use crate::store::{DeviceStore, StoreWrite};

use super::sealed::{RowKey, RowPlace};

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
    /// The state changing with the inbox (cursor, threads, ...) lives in a [`DeviceStore`]
    /// (`true`), not in this file: the fields above from `kem_rotation` on are then empty.
    #[serde(default)]
    pub(super) in_store: bool,
}

/// What a device keeps in its [`DeviceStore`] besides its thread rows, version 1.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct StateRecord {
    pub(super) v: u32,
    pub(super) cursor: u64,
    pub(super) kem_rotation: RotationState,
    pub(super) pinned: BTreeMap<EntityId, PinnedAdmin>,
    pub(super) seen_opens: SeenWraps,
    pub(super) app: serde_json::Value,
    pub(super) memory: DeviceMemory,
    pub(super) unposted: Vec<Commit>,
}

impl StateRecord {
    /// The record of a new device.
    fn new(rotation: &RotationState) -> Self {
        Self {
            v: 1,
            cursor: 0,
            kem_rotation: rotation.clone(),
            pinned: BTreeMap::new(),
            seen_opens: SeenWraps::new(),
            app: serde_json::Value::Null,
            memory: DeviceMemory::new(),
            unposted: Vec::new(),
        }
    }
}

/// Writes the first state record of a new device in `rows` (before its keystore is created, so
/// that a keystore naming a store always has its state there).
pub(super) async fn first_write(
    rows: &Rows,
    rng: &mut Csprng,
    device: DeviceId,
    rotation: &RotationState,
) -> Result<(), ClientError> {
    let record = to_json(&StateRecord::new(rotation))?;
    let change = StoreWrite {
        state: rows.key.seal(rng, RowPlace::State(device), &record)?,
        threads: Vec::new(),
    };
    let store = Arc::clone(&rows.store);
    blocking(move || {
        store
            .write(device, &change)
            .map_err(|e| ClientError::Store(e.0))
    })
    .await
}

/// The state record and thread snapshots `rows`' store holds for `device`, opened.
pub(super) fn load_stored(
    rows: &Rows,
    device: DeviceId,
) -> Result<(StateRecord, Vec<ThreadSnapshot>), ClientError> {
    let stored = rows
        .store
        .load(device)
        .map_err(|e| ClientError::Store(e.0))?;
    let Some(state) = stored.state else {
        return Err(ClientError::Store(format!(
            "it holds nothing for device {device}: is it the store this device was created in?"
        )));
    };
    let state = rows.key.open(RowPlace::State(device), &state)?;
    let record: StateRecord = serde_json::from_slice(&state)
        .map_err(|e| ClientError::Store(format!("the device's state record: {e}")))?;
    if record.v != 1 {
        return Err(ClientError::Store(format!(
            "state record version {} (this build reads 1)",
            record.v
        )));
    }
    let snapshots = stored
        .threads
        .iter()
        .map(|(thread, row)| {
            let row = rows.key.open(RowPlace::Thread(device, *thread), row)?;
            serde_json::from_slice(&row)
                .map_err(|e| ClientError::Store(format!("thread {thread}'s row: {e}")))
        })
        .collect::<Result<_, _>>()?;
    Ok((record, snapshots))
}

/// A device's link to its [`DeviceStore`], and what changed since its last write.
pub(super) struct Rows {
    pub(super) store: Arc<dyn DeviceStore>,
    /// Seals the rows before the store sees them.
    pub(super) key: RowKey,
    /// Threads changed (or removed) since the last write.
    pub(super) dirty: BTreeSet<ThreadId>,
    /// The keystore file must be written too (keys or relay changed).
    pub(super) file_dirty: bool,
    /// What the store holds of each thread: checks in debug builds that every change was
    /// marked (an unmarked change would be lost at the next restart).
    #[cfg(debug_assertions)]
    pub(super) written: BTreeMap<ThreadId, ThreadSnapshot>,
}

impl Rows {
    /// The link of the device with `keys` to `store`, nothing changed yet.
    pub(super) fn new(store: Arc<dyn DeviceStore>, keys: &DeviceKeys) -> Self {
        Self {
            store,
            key: RowKey::derive(keys.seed()),
            dirty: BTreeSet::new(),
            file_dirty: false,
            #[cfg(debug_assertions)]
            written: BTreeMap::new(),
        }
    }
}

/// One write of a device in a store: the keystore file if it changed, then the store's rows.
struct RowsWrite {
    keystore: Arc<std::sync::Mutex<Keystore>>,
    store: Arc<dyn DeviceStore>,
    device: DeviceId,
    file: Option<Zeroizing<Vec<u8>>>,
    change: StoreWrite,
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
    to_json(&Contents {
        kem_rotation: rotation.clone(),
        cursor,
        pinned: pinned.clone(),
        seen_opens: seen_opens.clone(),
        threads: threads.values().map(ThreadState::snapshot).collect(),
        app: app.clone(),
        memory: memory.clone(),
        unposted: unposted.to_vec(),
        ..keys_only(keys, relay, role)
    })
}

/// What the keystore file holds of a device whose state is in a store: keys, role and relay.
pub(super) fn file_contents_of(
    keys: &DeviceKeys,
    relay: &str,
    role: &DeviceRole,
) -> Result<Zeroizing<Vec<u8>>, ClientError> {
    to_json(&Contents {
        in_store: true,
        ..keys_only(keys, relay, role)
    })
}

/// Keystore contents with the keys, role and relay, and every other field empty.
fn keys_only(keys: &DeviceKeys, relay: &str, role: &DeviceRole) -> Contents {
    Contents {
        v: 1,
        device: keys.device(),
        suite: keys.suite(),
        seed: SecretB64(Zeroizing::new(*keys.seed())),
        kem: Some(keys.kem_secrets()),
        kem_rotation: RotationState::default(),
        relay: relay.to_owned(),
        cursor: 0,
        role: role.clone(),
        pinned: BTreeMap::new(),
        seen_opens: SeenWraps::new(),
        threads: Vec::new(),
        app: serde_json::Value::Null,
        memory: DeviceMemory::new(),
        unposted: Vec::new(),
        in_store: false,
    }
}

/// `value` as JSON (zeroized when dropped).
pub(super) fn to_json<T: Serialize>(value: &T) -> Result<Zeroizing<Vec<u8>>, ClientError> {
    serde_json::to_vec(value)
        .map(Zeroizing::new)
        .map_err(|e| ClientError::KeystoreContents(e.to_string()))
}

impl Device {
    /// Writes the device state on this thread (for the sync setters): the whole keystore, or
    /// the changes to the store.
    pub(super) fn save(&mut self) -> Result<(), ClientError> {
        if self.rows.is_some() {
            self.rows_write()?.write()?;
            self.written();
            return Ok(());
        }
        let contents = self.contents()?;
        let mut keystore = self.keystore.lock().map_err(|_| poisoned())?;
        keystore.save(&contents)?;
        Ok(())
    }

    /// Writes the device state from an async fn: the contents are built here (cheap), the
    /// encryption, writes and fsyncs run on tokio's blocking pool. Returns once the state is
    /// on disk, so callers keep their ordering (a generation saved before the message is
    /// posted, a cursor saved before the acknowledgement). A device in a store writes the
    /// threads changed since its last write, not every thread.
    pub(super) async fn persist(&mut self) -> Result<(), ClientError> {
        if self.rows.is_some() {
            let write = self.rows_write()?;
            blocking(move || write.write()).await?;
            self.written();
            return Ok(());
        }
        let contents = self.contents()?;
        let keystore = Arc::clone(&self.keystore);
        blocking(move || {
            let mut keystore = keystore.lock().map_err(|_| poisoned())?;
            keystore.save(&contents).map_err(ClientError::from)
        })
        .await
    }

    /// Marks `thread` changed (a device in a store writes it with its next save).
    pub(super) fn touched(&mut self, thread: ThreadId) {
        if let Some(rows) = &mut self.rows {
            rows.dirty.insert(thread);
        }
    }

    /// Marks the keystore file changed (keys or relay).
    pub(super) fn file_changed(&mut self) {
        if let Some(rows) = &mut self.rows {
            rows.file_dirty = true;
        }
    }

    /// The state record of a device in a store, as JSON.
    fn state_record(&self) -> Result<Zeroizing<Vec<u8>>, ClientError> {
        to_json(&StateRecord {
            v: 1,
            cursor: self.cursor,
            kem_rotation: self.rotation.clone(),
            pinned: self.pinned.clone(),
            seen_opens: self.seen_opens.clone(),
            app: self.app.clone(),
            memory: self.memory.clone(),
            unposted: self.unposted.clone(),
        })
    }

    /// What the next write of a device in a store holds, sealed.
    fn rows_write(&mut self) -> Result<RowsWrite, ClientError> {
        let state = self.state_record()?;
        let device = self.keys.device();
        let Some(rows) = &self.rows else {
            return Err(ClientError::KeystoreContents(
                "this device keeps its state in its keystore file".to_owned(),
            ));
        };
        #[cfg(debug_assertions)]
        for (thread, state) in &self.threads {
            if !rows.dirty.contains(thread) {
                debug_assert!(
                    rows.written.get(thread) == Some(&state.snapshot()),
                    "thread {thread} changed without being marked: it would not be stored"
                );
            }
        }
        let file = if rows.file_dirty {
            Some(file_contents_of(&self.keys, self.relay.url(), &self.role)?)
        } else {
            None
        };
        let rng = &mut self.rng;
        let threads = rows
            .dirty
            .iter()
            .map(|thread| {
                let row = match self.threads.get(thread) {
                    Some(state) => Some(rows.key.seal(
                        rng,
                        RowPlace::Thread(device, *thread),
                        &to_json(&state.snapshot())?,
                    )?),
                    None => None,
                };
                Ok((*thread, row))
            })
            .collect::<Result<_, ClientError>>()?;
        Ok(RowsWrite {
            keystore: Arc::clone(&self.keystore),
            store: Arc::clone(&rows.store),
            device,
            file,
            change: StoreWrite {
                state: rows.key.seal(rng, RowPlace::State(device), &state)?,
                threads,
            },
        })
    }

    /// After a successful write: nothing is changed any more.
    fn written(&mut self) {
        let Some(rows) = &mut self.rows else { return };
        #[cfg(debug_assertions)]
        for thread in &rows.dirty {
            match self.threads.get(thread) {
                Some(state) => {
                    rows.written.insert(*thread, state.snapshot());
                }
                None => {
                    rows.written.remove(thread);
                }
            }
        }
        rows.dirty.clear();
        rows.file_dirty = false;
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

impl RowsWrite {
    /// Writes the store's change, then the keystore file (if it changed). In this order a
    /// keystore moved into a store ([`Device::open_in`]) names the store only once the store
    /// holds its state; a crash between the two leaves a rotated key unwritten, which is as if
    /// it had not been made (the rotation record is published with the old key).
    fn write(&self) -> Result<(), ClientError> {
        self.store
            .write(self.device, &self.change)
            .map_err(|e| ClientError::Store(e.0))?;
        if let Some(file) = &self.file {
            self.keystore.lock().map_err(|_| poisoned())?.save(file)?;
        }
        Ok(())
    }
}

/// Runs `write` on tokio's blocking pool.
pub(super) async fn blocking(
    write: impl FnOnce() -> Result<(), ClientError> + Send + 'static,
) -> Result<(), ClientError> {
    tokio::task::spawn_blocking(write).await.map_err(|e| {
        ClientError::KeystoreContents(format!("the state write did not finish: {e}"))
    })?
}
