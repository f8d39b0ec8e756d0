//! Creating, opening and registering a device, and its accessors and settings.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use switchboard_protocol::{
    Csprng, DeviceId, DeviceKeys, DeviceMemory, EntityId, Fingerprint, KeyBundle, ReplayPolicy,
    SeenWraps, ThreadId, ThreadState,
};

use super::persist::{
    Contents, Rows, StateRecord, contents_of, file_contents_of, first_write, load_stored,
};
use super::rotation::RotationState;
use super::{Device, DeviceRole, KemRotation, NewDevice, NewRole, PinnedAdmin};
use crate::error::ClientError;
use crate::keystore::{Keystore, KeystoreSecret};
use crate::relay::{RelayClient, now};
use crate::store::DeviceStore;

impl Device {
    /// Creates a device: new keys, a new keystore at `path` (refusing to overwrite one),
    /// registration at the relay; for an admin, the entity; for an agent, the entity's admin key
    /// from the directory, pinned.
    ///
    /// # Errors
    /// Keystore errors; [`ClientError::Unreachable`] / [`ClientError::Refused`] from the relay.
    pub async fn create(
        path: &Path,
        secret: &KeystoreSecret,
        new: NewDevice,
    ) -> Result<Self, ClientError> {
        Self::create_with(path, secret, new, None).await
    }

    /// [`Device::create`] for a device whose state besides its keys lives in `store` (a row per
    /// thread: see [`crate::store`]); the keystore at `path` holds the keys, the role and the
    /// relay. Open it again with [`Device::open_in`] and the same store.
    ///
    /// # Errors
    /// As [`Device::create`]; [`ClientError::Store`] if the store cannot be written.
    pub async fn create_in(
        path: &Path,
        secret: &KeystoreSecret,
        new: NewDevice,
        store: Arc<dyn DeviceStore>,
    ) -> Result<Self, ClientError> {
        Self::create_with(path, secret, new, Some(store)).await
    }

    async fn create_with(
        path: &Path,
        secret: &KeystoreSecret,
        new: NewDevice,
        store: Option<Arc<dyn DeviceStore>>,
    ) -> Result<Self, ClientError> {
        if path.exists() {
            // Checked before registering, so that no orphan device is left at the relay.
            return Err(crate::keystore::KeystoreError::Exists {
                path: path.to_owned(),
                what: "a keystore exists there already",
            }
            .into());
        }
        let mut rng = Csprng::from_os().map_err(|e| ClientError::Protocol(e.into()))?;
        // The identity key from a random seed, the KEM key random on its own (it rotates).
        let keys = Arc::new(DeviceKeys::generate(
            DeviceId::random(&mut rng),
            new.suite,
            &mut rng,
        ));
        let rotation = RotationState::new(now());
        let relay = RelayClient::new(&new.relay, Arc::clone(&keys))?;
        relay
            .publish_bundle(&keys.bundle(rotation.signed_at))
            .await?;
        let role = match new.role {
            NewRole::Customer => DeviceRole::Customer,
            NewRole::Admin {
                entity,
                display_name,
            } => {
                relay.create_entity(&entity, &display_name).await?;
                DeviceRole::Admin { entity }
            }
            NewRole::Agent { entity, admin } => {
                let record = relay.directory(&entity).await?;
                admin.check(
                    &format!("the admin of {entity}"),
                    &record.admin.identity_key,
                )?;
                DeviceRole::Agent {
                    entity,
                    admin: record.admin.device,
                    admin_key: record.admin.identity_key,
                }
            }
        };
        let contents = match &store {
            None => contents_of(
                &keys,
                &rotation,
                &new.relay,
                0,
                &role,
                &BTreeMap::new(),
                &SeenWraps::new(),
                &BTreeMap::new(),
                &serde_json::Value::Null,
                &DeviceMemory::new(),
                &[],
            )?,
            Some(_) => file_contents_of(&keys, &new.relay, &role)?,
        };
        let rows = store.map(|store| Rows::new(store, &keys));
        if let Some(rows) = &rows {
            first_write(rows, &mut rng, keys.device(), &rotation).await?;
        }
        let keystore = Keystore::create(path, secret, new.kdf, &contents).await?;
        Ok(Self {
            keys,
            relay,
            keystore: Arc::new(std::sync::Mutex::new(keystore)),
            role,
            cursor: 0,
            pinned: BTreeMap::new(),
            seen_opens: SeenWraps::new(),
            threads: BTreeMap::new(),
            app: serde_json::Value::Null,
            memory: DeviceMemory::new(),
            unposted: Vec::new(),
            memory_pruned_at: now(),
            replay: ReplayPolicy::default(),
            rotation,
            rotation_policy: KemRotation::default(),
            rng,
            acking: None,
            rows,
        })
    }

    /// Opens the device whose keystore is at `path`, connecting to the relay it was created
    /// with (or `relay`, if given: it is remembered; call [`Device::register`] on a relay that
    /// does not know the device yet).
    ///
    /// # Errors
    /// Keystore errors (wrong secret, in use, altered, too open permissions);
    /// [`ClientError::KeystoreContents`] for contents this version cannot read.
    pub async fn open(
        path: &Path,
        secret: &KeystoreSecret,
        relay: Option<&str>,
    ) -> Result<Self, ClientError> {
        Self::open_with(path, secret, relay, None).await
    }

    /// [`Device::open`] for a device created with [`Device::create_in`]: the keys from the
    /// keystore at `path`, the rest from `store`. A device whose keystore holds its whole state
    /// moves into the store here (every thread written once; the keystore then holds only the
    /// keys, and opens with this function only).
    ///
    /// # Errors
    /// As [`Device::open`]; [`ClientError::Store`] if the store cannot be read or written or
    /// holds nothing for this device.
    pub async fn open_in(
        path: &Path,
        secret: &KeystoreSecret,
        relay: Option<&str>,
        store: Arc<dyn DeviceStore>,
    ) -> Result<Self, ClientError> {
        Self::open_with(path, secret, relay, Some(store)).await
    }

    async fn open_with(
        path: &Path,
        secret: &KeystoreSecret,
        relay: Option<&str>,
        store: Option<Arc<dyn DeviceStore>>,
    ) -> Result<Self, ClientError> {
        let (keystore, plaintext) = Keystore::open(path, secret).await?;
        let contents: Contents = serde_json::from_slice(&plaintext)
            .map_err(|e| ClientError::KeystoreContents(e.to_string()))?;
        if contents.v != 1 {
            return Err(ClientError::KeystoreContents(format!(
                "contents version {} (this build reads 1)",
                contents.v
            )));
        }
        let keys = Arc::new(match &contents.kem {
            Some(kem) => {
                DeviceKeys::from_parts(contents.device, contents.suite, &contents.seed.0, kem)
            }
            None => DeviceKeys::from_seed(contents.device, contents.suite, &contents.seed.0),
        });
        let moving_in = store.is_some() && !contents.in_store;
        let rows = store.map(|store| Rows::new(store, &keys));
        let (record, snapshots) = match (&rows, contents.in_store) {
            (None, true) => {
                return Err(ClientError::KeystoreContents(
                    "this device keeps its state in a device store: open it with Device::open_in"
                        .to_owned(),
                ));
            }
            (Some(rows), true) => load_stored(rows, contents.device)?,
            (_, false) => (
                StateRecord {
                    v: 1,
                    cursor: contents.cursor,
                    kem_rotation: contents.kem_rotation,
                    pinned: contents.pinned,
                    seen_opens: contents.seen_opens,
                    app: contents.app,
                    memory: contents.memory,
                    unposted: contents.unposted,
                },
                contents.threads,
            ),
        };
        let mut threads = BTreeMap::new();
        for snapshot in snapshots {
            let state = ThreadState::restore(&keys, snapshot)?;
            threads.insert(state.thread(), state);
        }
        let moved = relay.is_some_and(|url| url != contents.relay);
        let rows = rows.map(|rows| Rows {
            // Moving in: every thread and the keystore file are written at once below.
            dirty: if moving_in {
                threads.keys().copied().collect()
            } else {
                BTreeSet::new()
            },
            file_dirty: moving_in || moved,
            #[cfg(debug_assertions)]
            written: if moving_in {
                BTreeMap::new()
            } else {
                threads.iter().map(|(t, s)| (*t, s.snapshot())).collect()
            },
            ..rows
        });
        let mut memory = record.memory;
        memory.prune(now());
        let relay = RelayClient::new(relay.unwrap_or(&contents.relay), Arc::clone(&keys))?;
        let mut device = Self {
            keys,
            relay,
            keystore: Arc::new(std::sync::Mutex::new(keystore)),
            role: contents.role,
            cursor: record.cursor,
            pinned: record.pinned,
            seen_opens: record.seen_opens,
            threads,
            app: record.app,
            memory,
            unposted: record.unposted,
            memory_pruned_at: now(),
            replay: ReplayPolicy::default(),
            rotation: record.kem_rotation,
            rotation_policy: KemRotation::default(),
            rng: Csprng::from_os().map_err(|e| ClientError::Protocol(e.into()))?,
            acking: None,
            rows,
        };
        if moved || moving_in {
            device.persist().await?;
        }
        Ok(device)
    }

    /// Registers this device's key bundle at its relay again (after moving to another relay,
    /// or to refresh the bundle). [`Device::create`] registers already.
    ///
    /// # Errors
    /// Relay errors.
    pub async fn register(&self) -> Result<(), ClientError> {
        self.relay.publish_bundle(&self.bundle()).await?;
        Ok(())
    }

    /// Sets the replay limits ([`ReplayPolicy`]: how far generations may jump, how long
    /// old-epoch messages are accepted after a new epoch) of every thread this device holds and
    /// of those it opens, accepts or joins from now on, and saves the keystore (each thread keeps
    /// its limits in it). Threads start with [`ReplayPolicy::default`]; the setting itself is
    /// not kept, so set it again after [`Device::open`] (the admin does, from `entity.toml`).
    ///
    /// # Errors
    /// Keystore errors.
    pub fn set_replay_policy(&mut self, policy: ReplayPolicy) -> Result<(), ClientError> {
        self.replay = policy;
        for state in self.threads.values_mut() {
            state.set_replay_policy(policy);
        }
        let threads: Vec<ThreadId> = self.threads.keys().copied().collect();
        for thread in threads {
            self.touched(thread);
        }
        self.save()
    }

    /// This device's id.
    #[must_use]
    pub fn id(&self) -> DeviceId {
        self.keys.device()
    }

    /// This device's keys (for an admin issuing credentials, or a test).
    #[must_use]
    pub fn keys(&self) -> &DeviceKeys {
        &self.keys
    }

    /// This device's keys, shared (for tasks that seal and open on its behalf, such as the bot
    /// runtime's workers). After a KEM rotation ([`Device::maintain_keys`]) fetch them again.
    #[must_use]
    pub fn shared_keys(&self) -> Arc<DeviceKeys> {
        Arc::clone(&self.keys)
    }

    /// This device's key bundle: its current KEM key, as published.
    #[must_use]
    pub fn bundle(&self) -> KeyBundle {
        self.keys.bundle(self.rotation.signed_at)
    }

    /// The fingerprint of this device's identity key.
    #[must_use]
    pub fn fingerprint(&self) -> Fingerprint {
        self.keys.identity_public().fingerprint()
    }

    /// This device's role.
    #[must_use]
    pub fn role(&self) -> &DeviceRole {
        &self.role
    }

    /// The relay connection.
    #[must_use]
    pub fn relay(&self) -> &RelayClient {
        &self.relay
    }

    /// The application state kept in the keystore with the keys (`null` until set).
    #[must_use]
    pub fn app_state(&self) -> &serde_json::Value {
        &self.app
    }

    /// Replaces the application state and persists it with the rest of the device.
    ///
    /// # Errors
    /// Keystore errors.
    pub fn set_app_state(&mut self, state: serde_json::Value) -> Result<(), ClientError> {
        self.app = state;
        self.save()
    }

    /// The inbox position processed so far.
    #[must_use]
    pub fn cursor(&self) -> u64 {
        self.cursor
    }

    /// This device's state of `thread`.
    #[must_use]
    pub fn thread(&self, thread: ThreadId) -> Option<&ThreadState> {
        self.threads.get(&thread)
    }

    /// The threads this device is in.
    pub fn threads(&self) -> impl Iterator<Item = &ThreadState> {
        self.threads.values()
    }

    /// The admin key pinned for `entity` (customers).
    #[must_use]
    pub fn pinned_admin(&self, entity: &EntityId) -> Option<&PinnedAdmin> {
        self.pinned.get(entity)
    }

    /// Forgets the admin key pinned for `entity`, so the next [`Device::open_thread`] pins the
    /// one the relay serves then. Only after comparing fingerprints with the entity.
    ///
    /// # Errors
    /// Keystore errors.
    pub fn trust_admin_key(&mut self, entity: &EntityId) -> Result<(), ClientError> {
        self.pinned.remove(entity);
        self.save()
    }
}
