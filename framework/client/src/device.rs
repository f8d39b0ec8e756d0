//! A device of any role, with its state in an encrypted keystore: the one object an
//! application drives.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use switchboard_protocol::api::InboxItem;
use switchboard_protocol::{
    Commit, CommitAction, Content, Csprng, DeviceId, DeviceKeys, DeviceMemory, EntityId,
    Fingerprint, KeyBundle, MessageId, ReplayPolicy, SealedMessage, SeenWraps, ThreadId,
    ThreadState, Timestamp,
};
use zeroize::Zeroizing;

use crate::engine::{ItemContext, apply_item};
use crate::error::ClientError;
use crate::keystore::{Keystore, KeystoreSecret};
use crate::relay::{RelayClient, now};

mod persist;
mod rotation;
mod types;

use persist::{Contents, contents_of, poisoned};
pub use rotation::KemRotation;
use rotation::RotationState;
pub use types::{DeviceRole, Event, NewDevice, NewRole, PinnedAdmin};

/// Inbox items fetched per request.
const FETCH_LIMIT: u32 = 100;

/// A device: its keys, its relay connection and its threads, persisted in an encrypted
/// keystore after every change that matters (a sealed message, an applied commit, a moved
/// cursor), so a restart continues where it stopped.
pub struct Device {
    keys: Arc<DeviceKeys>,
    relay: RelayClient,
    /// Shared with the blocking thread that writes it (see [`Device::persist`]).
    keystore: Arc<std::sync::Mutex<Keystore>>,
    role: DeviceRole,
    cursor: u64,
    pinned: BTreeMap<EntityId, PinnedAdmin>,
    seen_opens: SeenWraps,
    threads: BTreeMap<ThreadId, ThreadState>,
    app: serde_json::Value,
    memory: DeviceMemory,
    /// Admin: commits made but not posted yet (kept in the keystore, posted again by `receive`).
    unposted: Vec<Commit>,
    /// When the device memory was last pruned (at open, then at most hourly by `receive`).
    memory_pruned_at: Timestamp,
    /// Replay limits for threads this device creates or joins from now on.
    replay: ReplayPolicy,
    rotation: RotationState,
    rotation_policy: KemRotation,
    rng: Csprng,
    /// The acknowledgement running in the background, if any.
    acking: Option<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Device")
            .field("device", &self.keys.device())
            .field("role", &self.role)
            .field("relay", &self.relay.url())
            .field("threads", &self.threads.len())
            .finish_non_exhaustive()
    }
}

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
        let contents = contents_of(
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
        )?;
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
        let mut threads = BTreeMap::new();
        for snapshot in contents.threads {
            let state = ThreadState::restore(&keys, snapshot)?;
            threads.insert(state.thread(), state);
        }
        let moved = relay.is_some_and(|url| url != contents.relay);
        let mut memory = contents.memory;
        memory.prune(now());
        let relay = RelayClient::new(relay.unwrap_or(&contents.relay), Arc::clone(&keys))?;
        let mut device = Self {
            keys,
            relay,
            keystore: Arc::new(std::sync::Mutex::new(keystore)),
            role: contents.role,
            cursor: contents.cursor,
            pinned: contents.pinned,
            seen_opens: contents.seen_opens,
            threads,
            app: contents.app,
            memory,
            unposted: contents.unposted,
            memory_pruned_at: now(),
            replay: ReplayPolicy::default(),
            rotation: contents.kem_rotation,
            rotation_policy: KemRotation::default(),
            rng: Csprng::from_os().map_err(|e| ClientError::Protocol(e.into()))?,
            acking: None,
        };
        if moved {
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

    /// Customer: opens a thread with `entity`. Fetches its directory record, pins the admin key
    /// at first contact (and refuses a changed one), wraps epoch 0 to the admin, and posts the
    /// open. Returns the thread.
    ///
    /// # Errors
    /// [`ClientError::AdminKeyChanged`] if the relay serves another admin key than the pinned
    /// one; [`ClientError::WrongRole`] on a non-customer device; relay and keystore errors.
    pub async fn open_thread(&mut self, entity: &EntityId) -> Result<ThreadId, ClientError> {
        if self.role != DeviceRole::Customer {
            return Err(ClientError::WrongRole(
                "only a customer device opens threads".to_owned(),
            ));
        }
        let record = self.relay.directory(entity).await?;
        let served = PinnedAdmin {
            device: record.admin.device,
            identity_key: record.admin.identity_key,
        };
        match self.pinned.get(entity) {
            Some(pinned) if *pinned != served => {
                return Err(ClientError::AdminKeyChanged {
                    entity: entity.clone(),
                    pinned: pinned.fingerprint(),
                    served: served.fingerprint(),
                });
            }
            Some(_) => {}
            None => {
                self.pinned.insert(entity.clone(), served);
            }
        }
        let at = now();
        let (state, open) =
            ThreadState::open(&self.keys, entity.clone(), &record.admin, at, &mut self.rng)?;
        let state = state.with_replay_policy(self.replay);
        // The thread's roster holds a bundle signed at `at`: the next rotation publishes later.
        self.rotation.signed(at);
        let thread = state.thread();
        self.threads.insert(thread, state);
        self.persist().await?;
        self.relay.open_thread(&open).await?;
        Ok(thread)
    }

    /// Seals `content` into `thread`, persists the new send counter, and posts it. Returns the
    /// sealed message (its id is `message.header.message_id()`).
    ///
    /// # Errors
    /// [`ClientError::UnknownThread`]; protocol errors (no floor, not a member, ...); relay and
    /// keystore errors.
    pub async fn send(
        &mut self,
        thread: ThreadId,
        content: &Content,
        quoted: Option<MessageId>,
    ) -> Result<SealedMessage, ClientError> {
        let state = self
            .threads
            .get_mut(&thread)
            .ok_or(ClientError::UnknownThread(thread))?;
        let sealed = state.seal(&self.keys, content, quoted)?;
        // The generation must be on disk before the message leaves: a restart must never seal
        // with it again.
        self.persist().await?;
        self.relay.post_message(thread, &sealed).await?;
        Ok(sealed)
    }

    /// Admin: applies `action` to `thread` (a new epoch wrapped to the remaining members),
    /// persists it, and posts the commit. Returns the commit. The members' current bundles are
    /// fetched first: the commit carries those that rotated (newer, same identity key), so the
    /// new epoch is wrapped to every member's current KEM key.
    ///
    /// # Errors
    /// [`ClientError::WrongRole`] on a non-admin device; protocol, relay and keystore errors.
    pub async fn commit(
        &mut self,
        thread: ThreadId,
        action: CommitAction,
    ) -> Result<Commit, ClientError> {
        let commit = self.prepare_commit(thread, action).await?;
        self.post_commit(&commit).await?;
        Ok(commit)
    }

    /// Admin: the first half of [`Device::commit`]: applies `action` to `thread` (the new epoch
    /// is installed) and persists it, without posting. Record what must be durable before the
    /// members can learn of the commit (an audit line), then [`Device::post_commit`] it.
    ///
    /// Like `commit`, it first fetches the members' current bundles (best effort) so the new
    /// epoch is wrapped to rotated KEM keys.
    ///
    /// # Errors
    /// [`ClientError::WrongRole`] on a non-admin device; protocol and keystore errors.
    pub async fn prepare_commit(
        &mut self,
        thread: ThreadId,
        action: CommitAction,
    ) -> Result<Commit, ClientError> {
        if !matches!(self.role, DeviceRole::Admin { .. }) {
            return Err(ClientError::WrongRole(
                "only the entity's admin device commits roster changes".to_owned(),
            ));
        }
        if self.unposted.iter().any(|c| c.thread == thread) {
            self.post_unposted().await?;
        }
        let updates = self.key_updates(thread).await?;
        let state = self
            .threads
            .get_mut(&thread)
            .ok_or(ClientError::UnknownThread(thread))?;
        let commit =
            state.commit_with_updates(&self.keys, action, updates, now(), &mut self.rng)?;
        self.rotation.epoch_applied(&commit.action);
        // Installed here and kept until posted: one save holds both.
        self.unposted.push(commit.clone());
        self.persist().await?;
        Ok(commit)
    }

    /// Admin: posts a commit made by [`Device::prepare_commit`] (or posts it again after a
    /// failed attempt).
    ///
    /// # Errors
    /// Relay errors.
    pub async fn post_commit(&mut self, commit: &Commit) -> Result<(), ClientError> {
        self.relay.post_commit(commit.thread, commit).await?;
        self.posted(commit).await
    }

    /// Admin: the commits made but not yet posted (see [`Device::post_unposted`]).
    #[must_use]
    pub fn unposted_commits(&self) -> &[Commit] {
        &self.unposted
    }

    /// Admin: posts again, in order, the commits this device made but could not post (the
    /// relay was unreachable, busy, or the answer was lost). [`Device::receive`] calls it first.
    /// A commit the relay answers as a conflict was stored by an earlier attempt whose answer
    /// was lost (only this device commits to its threads): it counts as posted.
    ///
    /// # Errors
    /// [`ClientError::CommitPending`] naming the first commit that still cannot be posted (the
    /// later ones wait behind it); keystore errors.
    pub async fn post_unposted(&mut self) -> Result<(), ClientError> {
        while let Some(commit) = self.unposted.first().cloned() {
            match self.relay.post_commit(commit.thread, &commit).await {
                Ok(_) => {}
                Err(ClientError::Refused {
                    code: switchboard_protocol::api::ErrorCode::Conflict,
                    ..
                }) => {
                    tracing::warn!(thread = %commit.thread, epoch = commit.epoch.0, "commit posted again was already stored (its answer was lost)");
                }
                Err(e) if e.is_transient() => {
                    return Err(ClientError::CommitPending {
                        thread: commit.thread,
                        epoch: commit.epoch,
                        reason: e.to_string(),
                    });
                }
                Err(e) => {
                    // Refused for good (e.g. a member no longer registered): keeping it would
                    // block the thread forever; the admin's state is ahead of the relay's.
                    tracing::error!(thread = %commit.thread, epoch = commit.epoch.0, error = %e, "commit refused by the relay; dropped");
                }
            }
            self.posted(&commit).await?;
        }
        Ok(())
    }

    /// Forgets, at most once an hour, marks and wrap ids that can no longer be replayed (a
    /// long-running device would otherwise keep them until it restarts).
    async fn prune_memory_hourly(&mut self, at: Timestamp) -> Result<(), ClientError> {
        if at < self.memory_pruned_at.plus(3600) {
            return Ok(());
        }
        self.memory_pruned_at = at;
        let before = (self.memory.threads(), self.memory.wraps().len());
        self.memory.prune(at);
        if (self.memory.threads(), self.memory.wraps().len()) != before {
            self.persist().await?;
        }
        Ok(())
    }

    async fn posted(&mut self, commit: &Commit) -> Result<(), ClientError> {
        let before = self.unposted.len();
        self.unposted
            .retain(|c| !(c.thread == commit.thread && c.epoch == commit.epoch));
        if self.unposted.len() != before {
            self.persist().await?;
        }
        Ok(())
    }

    /// Admin: grants `to` (a current member of `thread`) the earlier epochs this device holds,
    /// with `messages` of those epochs (as received: see [`Event::Message`]'s `sealed`), and
    /// posts the grant for that member alone.
    ///
    /// # Errors
    /// [`ClientError::WrongRole`] on a non-admin device; protocol errors (not a member, a
    /// message of the current epoch, ...); relay errors.
    pub async fn grant_history(
        &mut self,
        thread: ThreadId,
        to: DeviceId,
        messages: Vec<SealedMessage>,
    ) -> Result<(), ClientError> {
        if !matches!(self.role, DeviceRole::Admin { .. }) {
            return Err(ClientError::WrongRole(
                "only the entity's admin device grants history".to_owned(),
            ));
        }
        let state = self
            .threads
            .get(&thread)
            .ok_or(ClientError::UnknownThread(thread))?;
        let bundle = state
            .roster()
            .get(to)
            .map(|m| m.bundle.clone())
            .ok_or_else(|| {
                ClientError::Protocol(
                    switchboard_protocol::HistoryError::NotAMember { device: to }.into(),
                )
            })?;
        let grant = state
            .grant_history(&self.keys, &bundle, messages, now(), &mut self.rng)
            .map_err(|e| ClientError::Protocol(e.into()))?;
        self.relay.post_history(thread, &grant).await?;
        Ok(())
    }

    /// Fetches what is waiting (long-polling up to `wait`, in whole seconds), verifies and
    /// applies each item in order, persists the new state and cursor, acknowledges, and returns
    /// what happened.
    /// Items that fail verification become [`Event::Refused`]; they never stop the inbox.
    /// Returned events are durable: the keystore already holds their effect.
    ///
    /// First it runs the key upkeep ([`Device::maintain_keys`]: KEM key rotation on schedule,
    /// deletion of retired keys); a failed publication does not stop the inbox.
    ///
    /// Cancel-safe (for `tokio::select!`): the awaits are the key upkeep (each of its steps is on
    /// disk before the next; an interrupted publication is redone) and the fetch; if the future
    /// is dropped there, nothing was applied and the items come again.
    ///
    /// # Errors
    /// Relay errors (nothing was applied then); keystore errors (stop the device and reopen it
    /// from disk).
    pub async fn receive(&mut self, wait: Duration) -> Result<Vec<Event>, ClientError> {
        self.maintain_keys_in_background().await?;
        if !self.unposted.is_empty() {
            match self.post_unposted().await {
                Ok(()) | Err(ClientError::CommitPending { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        let (items, highest) = self
            .relay
            .inbox_page(self.cursor, FETCH_LIMIT, wait, None)
            .await?;
        let caught_up = items.len() < FETCH_LIMIT as usize;
        let Some(last) = items.last().map(|item| item.seq).max(highest) else {
            self.delete_expired_kem_keys().await?;
            return Ok(Vec::new());
        };
        let at = now();
        let mut events = Vec::new();
        for item in &items {
            if item.seq <= self.cursor {
                continue;
            }
            if let Some(event) = self.apply(item, at) {
                events.push(event);
            }
        }
        self.cursor = self.cursor.max(last);
        self.persist().await?;
        if caught_up {
            // Only now: commits queued while the device was away may be wrapped to a retired key.
            self.delete_expired_kem_keys().await?;
        }
        self.prune_memory_hourly(at).await?;
        // The cursor is on disk, so the ack runs in the background: a lost ack only means the
        // relay keeps the items a while longer (they are skipped by cursor and acknowledged
        // with the next ack), and no await stands between applying and returning the events.
        let (relay, cursor) = (self.relay.clone(), self.cursor);
        self.acking = Some(tokio::spawn(async move {
            if let Err(e) = relay.ack(cursor, None).await {
                tracing::warn!(error = %e, cursor, "ack failed; the next one covers it");
            }
        }));
        Ok(events)
    }

    /// Waits for the background acknowledgement of the last [`Device::receive`] (before a
    /// planned shutdown, so that the relay can delete what was processed).
    pub async fn flush_acks(&mut self) {
        if let Some(acking) = self.acking.take() {
            let _ = acking.await;
        }
    }

    /// Like [`Device::receive`], but retries transient failures (relay unreachable, busy or rate
    /// limiting) with exponential backoff from 100 ms up to 30 s (or the relay's
    /// `Retry-After`), for at most `patience`. Returns an empty list if nothing came.
    ///
    /// # Errors
    /// A non-transient error at once; the last transient one when `patience` is spent.
    pub async fn receive_retrying(
        &mut self,
        wait: Duration,
        patience: Duration,
    ) -> Result<Vec<Event>, ClientError> {
        let deadline = tokio::time::Instant::now() + patience;
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.receive(wait).await {
                Ok(events) => return Ok(events),
                Err(e) if e.is_transient() => {
                    let pause = match &e {
                        ClientError::Refused {
                            retry_after: Some(secs),
                            ..
                        } => Duration::from_secs(*secs),
                        _ => backoff,
                    };
                    if tokio::time::Instant::now() + pause > deadline {
                        return Err(e);
                    }
                    tracing::debug!(error = %e, pause_ms = pause.as_millis(), "relay unavailable, retrying");
                    tokio::time::sleep(pause).await;
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Applies one inbox item to the thread it names ([`crate::engine::apply_item`]); `None`
    /// for items with nothing to report (redeliveries).
    fn apply(&mut self, item: &InboxItem, at: Timestamp) -> Option<Event> {
        let cx = ItemContext {
            keys: &self.keys,
            role: &self.role,
            replay: self.replay,
            at,
        };
        let mut slot = self.threads.remove(&item.thread);
        let applied = apply_item(&cx, &mut slot, &mut self.memory, &mut self.seen_opens, item);
        if let Some(state) = slot {
            self.threads.insert(item.thread, state);
        }
        if let Some(action) = &applied.commit_action {
            self.rotation.epoch_applied(action);
        }
        applied.event
    }

    /// Writes the whole device state to the keystore, on this thread (for the sync setters).
    fn save(&mut self) -> Result<(), ClientError> {
        let contents = self.contents()?;
        let mut keystore = self.keystore.lock().map_err(|_| poisoned())?;
        keystore.save(&contents)?;
        Ok(())
    }

    /// Writes the whole device state to the keystore from an async fn: the contents are built
    /// here (cheap), the encryption, write and fsyncs run on tokio's blocking pool. Returns once
    /// the file is on disk, so callers keep their ordering (a generation saved before the
    /// message is posted, a cursor saved before the acknowledgement).
    async fn persist(&mut self) -> Result<(), ClientError> {
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
