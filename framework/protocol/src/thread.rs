//! One device's view of a thread: the epochs it holds, their rosters, its send counter and the
//! replay state of what it received. Customers, admins and agents all use [`ThreadState`].

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};

use crate::commit::{Commit, CommitAction};
use crate::credential::AgentKind;
use crate::error::{CommitError, Error, KeyError, MessageError, WrapError};
use crate::ids::{DeviceId, EntityId, Epoch, MessageId, ThreadId, Timestamp};
use crate::keys::{DeviceKeys, IdentityPublicKey, KeyBundle, Signature};
use crate::memory::DeviceMemory;
use crate::message::{
    self, Content, ContentType, MessageHeader, MessageKeySchedule, REUSE_GUARD_BYTES,
    ReceiveWindow, ReplayPolicy, SealedMessage,
};
use crate::rng::Csprng;
use crate::roster::{Role, Roster, RosterHash};
use crate::wire::{Version, WireType};
use crate::wrap::{
    DEFAULT_WRAP_LIFETIME_SECS, EpochSecret, ExpectedWrap, KeyWrap, SeenWraps, WrapContext,
};

/// How many epochs before the current one a device keeps secrets for. Older secrets are
/// zeroized and deleted as soon as a new epoch is installed, so a later capture of the device's
/// *thread state* does not hold them.
///
/// This alone is not forward secrecy: every epoch secret was also delivered in a wrap sealed to
/// the device's KEM key, and whoever kept those wraps (the relay stores them) and later obtains
/// that KEM private key recomputes every deleted secret. Forward secrecy against the relay holds
/// only for wraps sealed to a KEM key whose private key the device has since deleted (KEM key
/// rotation); within an epoch there is no ratchet. See docs/protocol.md §6.1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetentionPolicy {
    /// Number of previous epochs kept (default 1: late messages of the epoch just closed can
    /// still be read).
    pub previous_epochs: u64,
}

impl Default for RetentionPolicy {
    fn default() -> Self {
        Self { previous_epochs: 1 }
    }
}

impl RetentionPolicy {
    /// Keep every epoch: for the admin device's security-information repository.
    #[must_use]
    pub const fn keep_all() -> Self {
        Self {
            previous_epochs: u64::MAX,
        }
    }

    /// Keep only the current epoch.
    #[must_use]
    pub const fn current_only() -> Self {
        Self { previous_epochs: 0 }
    }
}

/// The first message of a thread, from the customer's device to the entity's admin: the
/// customer's bundle, the admin bundle the customer pinned, and epoch 0's secret wrapped to the
/// admin and signed by the customer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThreadOpen {
    /// Protocol version.
    pub v: Version,
    /// The new thread.
    pub thread: ThreadId,
    /// The entity.
    pub entity: EntityId,
    /// The customer's device bundle.
    pub customer: KeyBundle,
    /// The admin bundle the customer wrapped to.
    pub admin: KeyBundle,
    /// Epoch 0's secret, wrapped to the admin, signed by the customer.
    pub wrap: KeyWrap,
}

impl WireType for ThreadOpen {
    const WHAT: &'static str = "thread open";
}

/// Who sent a received message, as verified against the roster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Sender {
    /// The customer.
    Customer,
    /// The entity's admin device.
    Admin,
    /// An agent, with the name and kind from its admin-signed credential.
    Agent {
        /// Display name, e.g. "OrderBot".
        display_name: String,
        /// Bot or human.
        kind: AgentKind,
    },
}

/// A verified, decrypted message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReceivedMessage {
    /// The message id (derived from thread, epoch, sender, generation).
    pub id: MessageId,
    /// The epoch it was sent in.
    pub epoch: Epoch,
    /// The sending device.
    pub sender: DeviceId,
    /// Who that device is.
    pub sender_info: Sender,
    /// The sender's generation counter.
    pub generation: u64,
    /// The quoted message, for replies.
    pub quoted: Option<MessageId>,
    /// The content.
    pub content: Content,
}

struct EpochState {
    schedule: MessageKeySchedule,
    roster: Roster,
    roster_hash: RosterHash,
    windows: HashMap<DeviceId, ReceiveWindow>,
    /// Kept for the keystore and history grants; zeroized on drop.
    secret: EpochSecret,
    /// When this device installed the epoch (the grace period for late messages of the epoch
    /// before it counts from here).
    installed_at: Timestamp,
}

impl EpochState {
    fn new(secret: EpochSecret, roster: Roster, installed_at: Timestamp) -> Self {
        Self {
            schedule: MessageKeySchedule::new(&secret),
            roster_hash: roster.hash(),
            roster,
            windows: HashMap::new(),
            secret,
            installed_at,
        }
    }
}

/// Where a device joined a thread through a commit: the epoch the commit started and the
/// roster hash it built on (history grants must chain to it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct JoinPoint {
    pub(crate) epoch: Epoch,
    pub(crate) prev_roster_hash: RosterHash,
}

/// One device's state of one thread.
///
/// See the crate documentation for a whole flow: open, accept, assign, reply, transfer.
pub struct ThreadState {
    thread: ThreadId,
    entity: EntityId,
    me: DeviceId,
    admin: DeviceId,
    admin_key: IdentityPublicKey,
    current: Epoch,
    epochs: BTreeMap<Epoch, EpochState>,
    next_generation: u64,
    retention: RetentionPolicy,
    replay: ReplayPolicy,
    seen_wraps: SeenWraps,
    /// Set for a device that joined through a commit (agents).
    joined: Option<JoinPoint>,
}

impl std::fmt::Debug for ThreadState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ThreadState")
            .field("thread", &self.thread)
            .field("entity", &self.entity)
            .field("me", &self.me)
            .field("current", &self.current)
            .field("epochs_held", &self.epochs.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl ThreadState {
    #[allow(clippy::too_many_arguments)]
    fn new(
        thread: ThreadId,
        me: DeviceId,
        admin: DeviceId,
        admin_key: IdentityPublicKey,
        epoch: Epoch,
        secret: EpochSecret,
        roster: Roster,
        now: Timestamp,
    ) -> Self {
        let entity = roster.entity.clone();
        let mut epochs = BTreeMap::new();
        epochs.insert(epoch, EpochState::new(secret, roster, now));
        Self {
            thread,
            entity,
            me,
            admin,
            admin_key,
            current: epoch,
            epochs,
            next_generation: 0,
            retention: RetentionPolicy::default(),
            replay: ReplayPolicy::default(),
            seen_wraps: SeenWraps::new(),
            joined: None,
        }
    }

    /// The customer opens a thread with `entity`, whose admin bundle it has fetched and pinned.
    /// Returns the customer's state and the [`ThreadOpen`] to send to the admin.
    ///
    /// # Errors
    /// [`Error::Key`] if the admin bundle does not verify; [`Error::Wrap`] if wrapping fails.
    pub fn open(
        customer: &DeviceKeys,
        entity: EntityId,
        admin_bundle: &KeyBundle,
        now: Timestamp,
        rng: &mut Csprng,
    ) -> Result<(Self, ThreadOpen), Error> {
        admin_bundle.verify()?;
        let thread = ThreadId::random(rng);
        let customer_bundle = customer.bundle(now);
        let roster = Roster::initial(
            entity.clone(),
            customer_bundle.clone(),
            admin_bundle.clone(),
        );
        let secret = EpochSecret::generate(rng);
        let context = WrapContext {
            thread,
            epoch: Epoch(0),
            roster_hash: roster.hash(),
            expires_at: now.plus(DEFAULT_WRAP_LIFETIME_SECS),
        };
        let wrap = KeyWrap::seal(customer, admin_bundle, &context, &secret, rng)?;
        let state = Self::new(
            thread,
            customer.device(),
            admin_bundle.device,
            admin_bundle.identity_key,
            Epoch(0),
            secret,
            roster,
            now,
        );
        let open = ThreadOpen {
            v: Version,
            thread,
            entity,
            customer: customer_bundle,
            admin: admin_bundle.clone(),
            wrap,
        };
        Ok((state, open))
    }

    /// The admin accepts a thread a customer opened. It checks the customer's bundle, that the
    /// customer wrapped to this admin's identity and a KEM key it holds (the current one, or one
    /// retired within its grace period: the customer may have fetched the directory before a
    /// rotation), and opens epoch 0's secret. `seen` is the
    /// admin device's record of opened thread-open wraps (keep one per admin device, and prune
    /// it with [`SeenWraps::prune`]): a replayed thread open is refused. Callers must also refuse
    /// a thread id they already hold.
    ///
    /// # Errors
    /// [`Error::Key`] for a bad bundle or keys that are not this admin's; [`Error::Wrap`] if the
    /// wrap is refused.
    pub fn accept(
        admin: &DeviceKeys,
        entity: &EntityId,
        open: &ThreadOpen,
        now: Timestamp,
        seen: &mut SeenWraps,
    ) -> Result<Self, Error> {
        if &open.entity != entity {
            return Err(Error::WrongEntity {
                expected: entity.clone(),
                found: open.entity.clone(),
            });
        }
        open.customer.verify()?;
        open.admin.verify()?;
        if open.admin.device != admin.device() {
            return Err(KeyError::WrongDevice {
                expected: admin.device(),
                found: open.admin.device,
            }
            .into());
        }
        if open.admin.identity_key != admin.identity_public()
            || !admin.holds_kem_key(&open.admin.kem_key)
        {
            return Err(KeyError::StaleKeys.into());
        }
        if open.customer.device == admin.device() {
            return Err(Error::SelfThread);
        }
        let roster = Roster::initial(entity.clone(), open.customer.clone(), open.admin.clone());
        let roster_hash = roster.hash();
        let secret = open.wrap.open(
            admin,
            &ExpectedWrap {
                sender: open.customer.device,
                sender_key: &open.customer.identity_key,
                thread: open.thread,
                epoch: Epoch(0),
                roster_hash,
            },
            now,
            seen,
        )?;
        let mut state = Self::new(
            open.thread,
            admin.device(),
            admin.device(),
            admin.identity_public(),
            Epoch(0),
            secret,
            roster,
            now,
        );
        state.retention = RetentionPolicy::keep_all();
        Ok(state)
    }

    /// An agent joins a thread from the commit that added it. The agent knows its entity and the
    /// admin's identity from its own registration; the commit must be for that entity and signed
    /// by that admin. `memory` is the device's [`DeviceMemory`] (one per device, persisted): the
    /// join is refused for a thread this device has seen at the commit's epoch or later (R11: a
    /// replayed commit after a removal) and for a wrap it opened before (R12); on success the
    /// join is recorded in it.
    ///
    /// # Errors
    /// [`CommitError`] if the commit, its roster or this device's wrap is refused.
    pub fn join(
        me: &DeviceKeys,
        entity: &EntityId,
        admin: DeviceId,
        admin_key: IdentityPublicKey,
        commit: &Commit,
        now: Timestamp,
        memory: &mut DeviceMemory,
    ) -> Result<Self, CommitError> {
        if &commit.roster.entity != entity {
            return Err(CommitError::WrongEntity {
                expected: entity.clone(),
                found: commit.roster.entity.clone(),
            });
        }
        memory.check_join(commit.thread, commit.epoch, now)?;
        let roster_hash = commit.roster.hash();
        commit.verify_signature(&roster_hash, admin, &admin_key)?;
        commit.roster.validate(admin, &admin_key, now, None)?;
        let secret = open_commit_wrap(
            me,
            admin,
            &admin_key,
            commit,
            &roster_hash,
            now,
            memory.wraps_mut(),
        )?;
        memory.applied(me.device(), commit, now);
        let mut state = Self::new(
            commit.thread,
            me.device(),
            admin,
            admin_key,
            commit.epoch,
            secret,
            commit.roster.clone(),
            now,
        );
        if let Some(wrap) = commit.wrap_for(me.device()) {
            state.seen_wraps.insert(wrap.wrap_id, wrap.expires_at);
        }
        state.joined = Some(JoinPoint {
            epoch: commit.epoch,
            prev_roster_hash: commit.prev_roster_hash,
        });
        Ok(state)
    }

    /// Of `bundles` (fetched from the directory), those that rotate the KEM key of a current
    /// member: same device and identity key, created after the member's bundle, a different KEM
    /// key, signature valid. Others are skipped. Pass the result to
    /// [`ThreadState::commit_with_updates`]; an empty result means every member's key is current.
    #[must_use]
    pub fn key_updates(&self, bundles: impl IntoIterator<Item = KeyBundle>) -> Vec<KeyBundle> {
        let roster = self.roster();
        let mut updates: BTreeMap<DeviceId, KeyBundle> = BTreeMap::new();
        for bundle in bundles {
            let Some(member) = roster.get(bundle.device) else {
                continue;
            };
            if bundle.kem_key == member.bundle.kem_key
                || bundle.check_update_of(&member.bundle).is_err()
            {
                continue;
            }
            match updates.get(&bundle.device) {
                Some(kept) if kept.created_at >= bundle.created_at => {}
                _ => {
                    updates.insert(bundle.device, bundle);
                }
            }
        }
        updates.into_values().collect()
    }

    /// Sets how many old epochs this device keeps (see [`RetentionPolicy`]) and applies it now.
    #[must_use]
    pub fn with_retention(mut self, retention: RetentionPolicy) -> Self {
        self.retention = retention;
        self.prune_epochs();
        self
    }

    /// Sets the replay limits (see [`ReplayPolicy`]).
    #[must_use]
    pub fn with_replay_policy(mut self, replay: ReplayPolicy) -> Self {
        self.replay = replay;
        self
    }

    /// Changes the replay limits of this thread from now on (see [`ReplayPolicy`]); kept in the
    /// snapshot.
    pub fn set_replay_policy(&mut self, replay: ReplayPolicy) {
        self.replay = replay;
    }

    /// The replay limits in force.
    #[must_use]
    pub fn replay_policy(&self) -> ReplayPolicy {
        self.replay
    }

    /// The thread id.
    #[must_use]
    pub fn thread(&self) -> ThreadId {
        self.thread
    }

    /// The entity.
    #[must_use]
    pub fn entity(&self) -> &EntityId {
        &self.entity
    }

    /// The current epoch.
    #[must_use]
    pub fn epoch(&self) -> Epoch {
        self.current
    }

    /// The epochs whose secrets this device still holds, oldest first.
    #[must_use]
    pub fn epochs_held(&self) -> Vec<Epoch> {
        self.epochs.keys().copied().collect()
    }

    /// The current roster.
    ///
    /// # Panics
    /// Never: the current epoch is always held.
    #[must_use]
    pub fn roster(&self) -> &Roster {
        &self.current_state().roster
    }

    /// The current roster hash.
    #[must_use]
    pub fn roster_hash(&self) -> RosterHash {
        self.current_state().roster_hash
    }

    /// The secret of `epoch`, if still held (for keystores and history grants).
    #[must_use]
    pub fn epoch_secret(&self, epoch: Epoch) -> Option<&EpochSecret> {
        self.epochs.get(&epoch).map(|e| &e.secret)
    }

    pub(crate) fn admin_device(&self) -> DeviceId {
        self.admin
    }

    pub(crate) fn me_device(&self) -> DeviceId {
        self.me
    }

    pub(crate) fn admin_identity(&self) -> &IdentityPublicKey {
        &self.admin_key
    }

    /// The roster of a held epoch.
    pub(crate) fn roster_of(&self, epoch: Epoch) -> Option<&Roster> {
        self.epochs.get(&epoch).map(|e| &e.roster)
    }

    pub(crate) fn seen_wraps_mut(&mut self) -> &mut SeenWraps {
        &mut self.seen_wraps
    }

    pub(crate) fn joined(&self) -> Option<JoinPoint> {
        self.joined
    }

    #[allow(clippy::expect_used)]
    fn current_state(&self) -> &EpochState {
        // Invariant: `epochs` always holds `current` (installed before `current` moves, and
        // pruning keeps it).
        self.epochs
            .get(&self.current)
            .expect("the current epoch is always held")
    }

    fn install(&mut self, epoch: Epoch, secret: EpochSecret, roster: Roster, now: Timestamp) {
        self.epochs
            .insert(epoch, EpochState::new(secret, roster, now));
        self.current = epoch;
        self.next_generation = 0;
        self.prune_epochs();
        self.forget_stale_digests(now);
    }

    /// When the epoch after `epoch` was installed, if this device holds one.
    fn next_installed(&self, epoch: Epoch) -> Option<(Epoch, Timestamp)> {
        use std::ops::Bound::{Excluded, Unbounded};
        self.epochs
            .range((Excluded(epoch), Unbounded))
            .next()
            .map(|(e, s)| (*e, s.installed_at))
    }

    /// Old epochs whose grace period is over accept no message any more: their message
    /// digests (kept to detect equivocation) are dropped.
    fn forget_stale_digests(&mut self, now: Timestamp) {
        let grace = self.replay.old_epoch_grace_secs;
        let mut next_installed: Option<Timestamp> = None;
        for state in self.epochs.values_mut().rev() {
            if next_installed.is_some_and(|t| now.0 >= t.0.saturating_add(grace)) {
                state
                    .windows
                    .values_mut()
                    .for_each(ReceiveWindow::forget_digests);
            }
            next_installed = Some(state.installed_at);
        }
    }

    fn prune_epochs(&mut self) {
        let oldest_kept = self
            .current
            .0
            .saturating_sub(self.retention.previous_epochs);
        // Dropping an EpochState zeroizes its secret.
        self.epochs.retain(|epoch, _| epoch.0 >= oldest_kept);
    }

    /// The admin changes the roster: computes the new roster, checks every member's bundle and
    /// credential, creates a fresh epoch secret, wraps it to every member except itself, signs
    /// the commit, and installs the new epoch. Send the returned commit to the members.
    ///
    /// # Errors
    /// [`CommitError::NotAdmin`] on a device that is not the thread's admin;
    /// [`CommitError::InvalidAction`] or a credential/key error for an unacceptable roster.
    pub fn commit(
        &mut self,
        admin: &DeviceKeys,
        action: CommitAction,
        now: Timestamp,
        rng: &mut Csprng,
    ) -> Result<Commit, CommitError> {
        self.commit_with_updates(admin, action, Vec::new(), now, rng)
    }

    /// Like [`ThreadState::commit`], carrying `updates`: newer bundles of existing members (KEM
    /// key rotations, see [`Commit::updates`]; [`ThreadState::key_updates`] picks them from
    /// bundles fetched from the directory). The new epoch is wrapped to the updated keys.
    ///
    /// # Errors
    /// As [`ThreadState::commit`]; [`CommitError::KeyUpdate`] for an update that may not replace
    /// the member's bundle.
    pub fn commit_with_updates(
        &mut self,
        admin: &DeviceKeys,
        action: CommitAction,
        updates: Vec<KeyBundle>,
        now: Timestamp,
        rng: &mut Csprng,
    ) -> Result<Commit, CommitError> {
        if admin.device() != self.admin
            || self.me != self.admin
            || admin.identity_public() != self.admin_key
        {
            return Err(CommitError::NotAdmin);
        }
        let epoch = self.current.next().ok_or_else(|| {
            CommitError::InvalidAction("the epoch counter is exhausted".to_owned())
        })?;
        let updated = Commit::apply_updates(self.roster(), &updates)?;
        let roster = action.apply(&updated)?;
        roster.validate(self.admin, &self.admin_key, now, Some(self.roster()))?;
        let roster_hash = roster.hash();
        let secret = EpochSecret::generate(rng);
        let context = WrapContext {
            thread: self.thread,
            epoch,
            roster_hash,
            expires_at: now.plus(DEFAULT_WRAP_LIFETIME_SECS),
        };
        let wraps = roster
            .members
            .values()
            .filter(|m| m.device() != self.me)
            .map(|m| KeyWrap::seal(admin, &m.bundle, &context, &secret, rng))
            .collect::<Result<Vec<_>, WrapError>>()?;
        let mut commit = Commit {
            v: Version,
            thread: self.thread,
            epoch,
            prev_roster_hash: self.roster_hash(),
            action,
            updates,
            roster,
            committer: self.me,
            created_at: now,
            wraps,
            confirmation: Commit::confirmation_of(&secret, self.thread, epoch, &roster_hash),
            signature: Signature::from_bytes([0; 64]),
        };
        commit.signature = admin.identity().sign(commit.tbs(&roster_hash).as_slice());
        self.install(epoch, secret, commit.roster.clone(), now);
        Ok(commit)
    }

    /// A member applies the admin's commit: it must be for this thread, start the next epoch,
    /// build on this device's roster, carry only valid key updates of members (newer bundles of
    /// the same identity keys), match its updates and action, be signed by the pinned admin, and carry
    /// a valid wrap for this device. On success the new epoch becomes current and old epochs are
    /// pruned by the retention policy. A device the commit removes gets
    /// [`CommitError::Removed`] and keeps its state (it can still read what it already had).
    ///
    /// # Errors
    /// The first failed check, as a [`CommitError`].
    pub fn apply_commit(
        &mut self,
        me: &DeviceKeys,
        commit: &Commit,
        now: Timestamp,
    ) -> Result<(), CommitError> {
        if commit.thread != self.thread {
            return Err(CommitError::WrongThread {
                expected: self.thread,
                found: commit.thread,
            });
        }
        if Some(commit.epoch) != self.current.next() {
            return Err(CommitError::EpochMismatch {
                current: self.current,
                found: commit.epoch,
            });
        }
        let roster_hash = commit.roster.hash();
        commit.verify_signature(&roster_hash, self.admin, &self.admin_key)?;
        if commit.prev_roster_hash != self.roster_hash() {
            return Err(CommitError::RosterMismatch {
                epoch: commit.epoch,
            });
        }
        let updated = Commit::apply_updates(self.roster(), &commit.updates)?;
        let expected = commit.action.apply(&updated)?;
        if expected.hash() != roster_hash {
            return Err(CommitError::InvalidAction(
                "the commit's roster is not its key updates and action applied to the current roster"
                    .to_owned(),
            ));
        }
        commit
            .roster
            .validate(self.admin, &self.admin_key, now, Some(self.roster()))?;
        let admin_key = self.admin_key;
        let secret = open_commit_wrap(
            me,
            self.admin,
            &admin_key,
            commit,
            &roster_hash,
            now,
            &mut self.seen_wraps,
        )?;
        self.install(commit.epoch, secret, commit.roster.clone(), now);
        self.seen_wraps.prune(now);
        Ok(())
    }

    /// Encrypts and signs `content` as this device's next message in the current epoch. The
    /// message's reuse guard is drawn from the operating system (see [`ThreadState::seal_with`]).
    ///
    /// # Errors
    /// [`MessageError::CannotSend`] if this device is not a member of the current epoch or the
    /// operating system's random source fails;
    /// [`MessageError::NoFloor`] for an agent without the floor sending more than a receipt or
    /// typing indicator; [`MessageError::InvalidContent`] for oversized content or a reply
    /// without `quoted`.
    pub fn seal(
        &mut self,
        me: &DeviceKeys,
        content: &Content,
        quoted: Option<MessageId>,
    ) -> Result<SealedMessage, MessageError> {
        let mut rng = Csprng::from_os()
            .map_err(|_| MessageError::CannotSend("the operating system's random source failed"))?;
        self.seal_with(me, content, quoted, &mut rng)
    }

    /// [`ThreadState::seal`] with the reuse guard drawn from `rng`: 16 random bytes in the header,
    /// mixed into the message key and nonce, so that even a device whose state was rolled back
    /// (an old snapshot restored, two processes of one bot) and repeats a generation never
    /// encrypts two plaintexts under one key and nonce.
    ///
    /// # Errors
    /// As [`ThreadState::seal`].
    pub fn seal_with(
        &mut self,
        me: &DeviceKeys,
        content: &Content,
        quoted: Option<MessageId>,
        rng: &mut Csprng,
    ) -> Result<SealedMessage, MessageError> {
        if me.device() != self.me {
            return Err(MessageError::CannotSend(
                "these keys belong to another device",
            ));
        }
        let generation = self.next_generation;
        let epoch = self.current;
        let state = self.current_state();
        let member = state.roster.get(self.me).ok_or(MessageError::CannotSend(
            "this device is not a member of the current epoch",
        ))?;
        if member.identity_key() != &me.identity_public() {
            return Err(MessageError::CannotSend(
                "these keys are not the member's keys",
            ));
        }
        if content.content_type() == ContentType::SystemNotice && member.role != Role::Admin {
            return Err(MessageError::AdminOnly {
                sender: self.me,
                content_type: ContentType::SystemNotice,
            });
        }
        if !content.content_type().allowed_without_floor() && !state.roster.may_post(self.me) {
            return Err(MessageError::NoFloor {
                sender: self.me,
                epoch,
            });
        }
        let header = MessageHeader {
            thread: self.thread,
            epoch,
            sender: self.me,
            generation,
            reuse_guard: rng.array::<REUSE_GUARD_BYTES>(),
            content_type: content.content_type(),
            quoted,
            roster_hash: state.roster_hash,
        };
        let sealed = message::seal(&state.schedule, header, content, me.identity())?;
        self.next_generation = generation.checked_add(1).ok_or(MessageError::CannotSend(
            "the generation counter is exhausted",
        ))?;
        Ok(sealed)
    }

    /// Verifies and decrypts a message at time `now`. Checks, in order: thread, sender not
    /// removed (for messages of older epochs), epoch held, roster hash,
    /// sender membership, sender signature, generation window (duplicates, equivocation and
    /// jumps), for older epochs the grace period after the next epoch was installed, floor (in
    /// the message's epoch and, for older epochs, now), system notices from the admin only, the
    /// sender's credential not expired, AEAD decryption, and content against header. The
    /// generation (and the message's digest) is recorded only when every check passed.
    ///
    /// # Errors
    /// The first failed check, as a [`MessageError`].
    pub fn open_message(
        &mut self,
        message: &SealedMessage,
        now: Timestamp,
    ) -> Result<ReceivedMessage, MessageError> {
        let header = message.header;
        if header.thread != self.thread {
            return Err(MessageError::WrongThread {
                expected: self.thread,
                found: header.thread,
            });
        }
        let current = self.current;
        let replay = self.replay;
        // A message of an older epoch is judged by the current roster too: a removed sender keeps
        // old secrets, and an agent that lost the floor must not keep posting into old epochs.
        let (old_epoch_may_post, late) = if header.epoch < current {
            if !self.roster().contains(header.sender) {
                return Err(MessageError::SenderRemoved {
                    sender: header.sender,
                    epoch: header.epoch,
                });
            }
            // ...and only for a grace period after this device installed the next epoch: a
            // member the relay withholds a commit from would otherwise keep the old epoch alive.
            let late = self.next_installed(header.epoch).and_then(|(next, at)| {
                let grace_secs = replay.old_epoch_grace_secs;
                (now.0 >= at.0.saturating_add(grace_secs)).then_some(MessageError::StaleEpoch {
                    sender: header.sender,
                    epoch: header.epoch,
                    next,
                    next_installed_at: at,
                    grace_secs,
                    now,
                })
            });
            (self.roster().may_post(header.sender), late)
        } else {
            (true, None)
        };
        let state = self
            .epochs
            .get_mut(&header.epoch)
            .ok_or(MessageError::UnknownEpoch {
                epoch: header.epoch,
                current,
            })?;
        if header.roster_hash != state.roster_hash {
            return Err(MessageError::RosterMismatch {
                epoch: header.epoch,
            });
        }
        open_in_epoch(
            state,
            message,
            replay,
            OpenChecks {
                floor_now: old_epoch_may_post,
                now: Some(now),
                late,
            },
        )
    }
}

/// What [`open_in_epoch`] checks beyond the epoch itself.
struct OpenChecks {
    /// Whether the current roster still lets the sender post (for messages of older epochs).
    floor_now: bool,
    /// When the sender's credential must still be valid (`None` for history the admin vouches
    /// for: its messages were checked when they arrived).
    now: Option<Timestamp>,
    /// The refusal of a message of an old epoch past its grace period, returned once the
    /// message is known to be authentic and not a duplicate.
    late: Option<MessageError>,
}

/// One epoch on its own, for opening the messages of a history grant.
pub(crate) struct EpochView(EpochState);

impl EpochView {
    pub(crate) fn new(secret: EpochSecret, roster: Roster) -> Self {
        Self(EpochState::new(secret, roster, Timestamp(0)))
    }

    /// Opens a message of this epoch (its own roster and floor; the credential expiry is not
    /// checked: the admin vouches that the message was valid when it arrived).
    pub(crate) fn open(
        &mut self,
        message: &SealedMessage,
        replay: ReplayPolicy,
    ) -> Result<ReceivedMessage, MessageError> {
        open_in_epoch(
            &mut self.0,
            message,
            replay,
            OpenChecks {
                floor_now: true,
                now: None,
                late: None,
            },
        )
    }
}

/// The checks of one epoch and the decryption (M5–M11), recording the generation only when
/// every check passed.
fn open_in_epoch(
    state: &mut EpochState,
    message: &SealedMessage,
    replay: ReplayPolicy,
    checks: OpenChecks,
) -> Result<ReceivedMessage, MessageError> {
    let OpenChecks {
        floor_now,
        now,
        late,
    } = checks;
    let header = message.header;
    if header.roster_hash != state.roster_hash {
        return Err(MessageError::RosterMismatch {
            epoch: header.epoch,
        });
    }
    let member = state
        .roster
        .get(header.sender)
        .ok_or(MessageError::UnknownSender {
            sender: header.sender,
            epoch: header.epoch,
        })?;
    message::verify_signature(message, member.identity_key())?;
    let digest = message.digest();
    if let Some(window) = state.windows.get(&header.sender) {
        window.check(
            header.sender,
            header.epoch,
            header.generation,
            &digest,
            replay,
        )?;
    } else {
        ReceiveWindow::default().check(
            header.sender,
            header.epoch,
            header.generation,
            &digest,
            replay,
        )?;
    }
    if let Some(late) = late {
        return Err(late);
    }
    let may_post = state.roster.may_post(header.sender) && floor_now;
    if !header.content_type.allowed_without_floor() && !may_post {
        return Err(MessageError::NoFloor {
            sender: header.sender,
            epoch: header.epoch,
        });
    }
    if header.content_type == ContentType::SystemNotice && member.role != Role::Admin {
        return Err(MessageError::AdminOnly {
            sender: header.sender,
            content_type: ContentType::SystemNotice,
        });
    }
    if let (Some(now), Some(credential)) = (now, member.credential())
        && now >= credential.expires_at
    {
        return Err(MessageError::SenderExpired {
            sender: header.sender,
            expires_at: credential.expires_at,
            now,
        });
    }
    let content = message::decrypt(&state.schedule, message)?;
    let sender_info = match &member.role {
        Role::Customer => Sender::Customer,
        Role::Admin => Sender::Admin,
        Role::Agent { credential } => Sender::Agent {
            display_name: credential.display_name.clone(),
            kind: credential.kind,
        },
    };
    state
        .windows
        .entry(header.sender)
        .or_default()
        .record(header.generation, digest);
    Ok(ReceivedMessage {
        id: header.message_id(),
        epoch: header.epoch,
        sender: header.sender,
        sender_info,
        generation: header.generation,
        quoted: header.quoted,
        content,
    })
}

/// Finds and opens `me`'s wrap in `commit`.
fn open_commit_wrap(
    me: &DeviceKeys,
    admin: DeviceId,
    admin_key: &IdentityPublicKey,
    commit: &Commit,
    roster_hash: &RosterHash,
    now: Timestamp,
    seen: &mut SeenWraps,
) -> Result<EpochSecret, CommitError> {
    if !commit.roster.contains(me.device()) {
        return Err(CommitError::Removed {
            device: me.device(),
            epoch: commit.epoch,
        });
    }
    let wrap = commit
        .wrap_for(me.device())
        .ok_or(CommitError::MissingWrap {
            device: me.device(),
            epoch: commit.epoch,
        })?;
    let secret = wrap.open(
        me,
        &ExpectedWrap {
            sender: admin,
            sender_key: admin_key,
            thread: commit.thread,
            epoch: commit.epoch,
            roster_hash: *roster_hash,
        },
        now,
        seen,
    )?;
    if !commit.confirms(&secret, roster_hash) {
        return Err(CommitError::ConfirmationMismatch {
            epoch: commit.epoch,
        });
    }
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::credential::{AgentCredential, CredentialRequest};
    use crate::roster::Member;
    use crate::suite::CipherSuite;

    const NOW: Timestamp = Timestamp(1_000);

    fn keys(n: u8) -> DeviceKeys {
        DeviceKeys::from_seed(
            DeviceId::from_bytes([n; 16]),
            CipherSuite::default(),
            &[n; 32],
        )
    }

    #[test]
    fn commit_whose_roster_is_not_its_action_is_rejected() {
        let (customer, admin, bot) = (keys(1), keys(2), keys(3));
        let entity = EntityId::new("acme").unwrap();
        let mut rng = Csprng::from_seed([1; 32]);
        let (mut customer_view, open) =
            ThreadState::open(&customer, entity.clone(), &admin.bundle(NOW), NOW, &mut rng)
                .unwrap();
        let mut admin_view =
            ThreadState::accept(&admin, &entity, &open, NOW, &mut SeenWraps::new()).unwrap();
        let bundle = bot.bundle(NOW);
        let credential = AgentCredential::issue(
            &admin,
            &CredentialRequest {
                entity: &entity,
                agent: &bundle,
                display_name: "Bot",
                kind: AgentKind::Bot,
                issued_at: NOW,
                expires_at: NOW.plus(60),
            },
        )
        .unwrap();
        let mut commit = admin_view
            .commit(&admin, CommitAction::Rekey, NOW, &mut rng)
            .unwrap();
        // The admin (or a bug) slips the bot into the roster while the action says "rekey", and
        // signs it: members refuse, because the roster must be the action applied.
        commit
            .roster
            .members
            .insert(bot.device(), Member::agent(bundle, credential));
        let hash = commit.roster.hash();
        commit.signature = admin.identity().sign(commit.tbs(&hash).as_slice());
        let err = customer_view
            .apply_commit(&customer, &commit, NOW)
            .unwrap_err();
        assert!(matches!(err, CommitError::InvalidAction(_)), "{err}");
    }

    #[test]
    fn members_given_different_secrets_detect_it() {
        let (customer, admin) = (keys(1), keys(2));
        let entity = EntityId::new("acme").unwrap();
        let mut rng = Csprng::from_seed([2; 32]);
        let (mut customer_view, open) =
            ThreadState::open(&customer, entity.clone(), &admin.bundle(NOW), NOW, &mut rng)
                .unwrap();
        let mut admin_view =
            ThreadState::accept(&admin, &entity, &open, NOW, &mut SeenWraps::new()).unwrap();
        let mut commit = admin_view
            .commit(&admin, CommitAction::Rekey, NOW, &mut rng)
            .unwrap();
        // An equivocating admin wraps another secret to the customer, validly signed, but the
        // confirmation still commits to the secret the others got.
        let hash = commit.roster.hash();
        let context = WrapContext {
            thread: commit.thread,
            epoch: commit.epoch,
            roster_hash: hash,
            expires_at: NOW.plus(60),
        };
        let other = EpochSecret::from_bytes([0x66; 32]);
        let wrap =
            KeyWrap::seal(&admin, &customer.bundle(NOW), &context, &other, &mut rng).unwrap();
        commit.wraps = vec![wrap];
        commit.signature = admin.identity().sign(commit.tbs(&hash).as_slice());
        let err = customer_view
            .apply_commit(&customer, &commit, NOW)
            .unwrap_err();
        assert!(
            matches!(err, CommitError::ConfirmationMismatch { .. }),
            "{err}"
        );
    }
}

/// One epoch of a [`ThreadSnapshot`].
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct EpochSnapshot {
    epoch: Epoch,
    #[serde(with = "secret_b64")]
    secret: EpochSecret,
    roster: Roster,
    /// Receive windows by sender, sorted so that the JSON is deterministic.
    windows: BTreeMap<DeviceId, ReceiveWindow>,
    /// When the device installed this epoch.
    installed_at: Timestamp,
}

/// Serde for an epoch secret inside a snapshot (and nowhere else: secrets are not wire values).
mod secret_b64 {
    use serde::{Deserializer, Serializer};
    use zeroize::Zeroizing;

    use crate::wrap::EpochSecret;

    pub(super) fn serialize<S: Serializer>(secret: &EpochSecret, s: S) -> Result<S::Ok, S::Error> {
        crate::encoding::b64_array::serialize(secret.as_bytes(), s)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<EpochSecret, D::Error> {
        let bytes: Zeroizing<[u8; 32]> =
            Zeroizing::new(crate::encoding::b64_array::deserialize(d)?);
        Ok(EpochSecret::from_bytes(*bytes))
    }
}

/// Everything one device keeps of one thread, secrets included, as a value to persist across
/// restarts: [`ThreadState::snapshot`] and [`ThreadState::restore`]. Encode it with
/// [`encode`](crate::encode) and store it **only encrypted** (switchboard-client's keystore does);
/// its epoch secrets are zeroized when it is dropped and it never prints them.
///
/// Persist the snapshot taken after [`ThreadState::seal`] before sending the sealed message:
/// restoring an older snapshot and sealing again repeats a generation. The message's random reuse
/// guard keeps that from repeating a key and nonce, but receivers that already got the first
/// message under that generation refuse the second as [`MessageError::Equivocation`].
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThreadSnapshot {
    v: Version,
    thread: ThreadId,
    entity: EntityId,
    me: DeviceId,
    admin: DeviceId,
    admin_key: IdentityPublicKey,
    current: Epoch,
    epochs: Vec<EpochSnapshot>,
    next_generation: u64,
    retention: RetentionPolicy,
    replay: ReplayPolicy,
    seen_wraps: SeenWraps,
    /// Where the device joined through a commit (`null` for the customer and the admin).
    #[serde(deserialize_with = "Option::deserialize")]
    joined: Option<JoinPoint>,
}

impl WireType for ThreadSnapshot {
    const WHAT: &'static str = "thread snapshot";
}

impl std::fmt::Debug for ThreadSnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ThreadSnapshot")
            .field("thread", &self.thread)
            .field("me", &self.me)
            .field("current", &self.current)
            .finish_non_exhaustive()
    }
}

impl ThreadSnapshot {
    /// The thread.
    #[must_use]
    pub fn thread(&self) -> ThreadId {
        self.thread
    }

    /// The device whose state this is.
    #[must_use]
    pub fn device(&self) -> DeviceId {
        self.me
    }
}

impl ThreadState {
    /// This state as a [`ThreadSnapshot`] to persist (secrets included: store it encrypted).
    #[must_use]
    pub fn snapshot(&self) -> ThreadSnapshot {
        ThreadSnapshot {
            v: Version,
            thread: self.thread,
            entity: self.entity.clone(),
            me: self.me,
            admin: self.admin,
            admin_key: self.admin_key,
            current: self.current,
            epochs: self
                .epochs
                .iter()
                .map(|(epoch, state)| EpochSnapshot {
                    epoch: *epoch,
                    secret: state.secret.clone(),
                    roster: state.roster.clone(),
                    windows: state.windows.iter().map(|(d, w)| (*d, w.clone())).collect(),
                    installed_at: state.installed_at,
                })
                .collect(),
            next_generation: self.next_generation,
            retention: self.retention,
            replay: self.replay,
            seen_wraps: self.seen_wraps.clone(),
            joined: self.joined,
        }
    }

    /// The state a snapshot holds, for device `me`.
    ///
    /// # Errors
    /// [`Error::Snapshot`] if the snapshot belongs to another device, does not hold its current
    /// epoch, holds an epoch twice, an epoch newer than the current one, or a roster of another
    /// entity or without this device in the current epoch.
    pub fn restore(me: &DeviceKeys, snapshot: ThreadSnapshot) -> Result<Self, Error> {
        let thread = snapshot.thread;
        let bad = |what: &str| Error::Snapshot(format!("thread {thread}: {what}"));
        if snapshot.me != me.device() {
            return Err(bad("it belongs to another device"));
        }
        let mut epochs = BTreeMap::new();
        for e in snapshot.epochs {
            if e.epoch > snapshot.current {
                return Err(bad("it holds an epoch after its current one"));
            }
            if e.roster.entity != snapshot.entity {
                return Err(bad("a roster is for another entity"));
            }
            if !e.windows.values().all(ReceiveWindow::is_consistent) {
                return Err(bad("a receive window is inconsistent"));
            }
            let mut state = EpochState::new(e.secret, e.roster, e.installed_at);
            state.windows = e.windows.into_iter().collect();
            if epochs.insert(e.epoch, state).is_some() {
                return Err(bad("it holds an epoch twice"));
            }
        }
        let Some(current) = epochs.get(&snapshot.current) else {
            return Err(bad("it does not hold its current epoch"));
        };
        match current.roster.get(me.device()) {
            Some(member) if member.identity_key() == &me.identity_public() => {}
            Some(_) => return Err(bad("this device is a member with other keys")),
            None => return Err(bad("this device is not a member of its current epoch")),
        }
        Ok(Self {
            thread,
            entity: snapshot.entity,
            me: snapshot.me,
            admin: snapshot.admin,
            admin_key: snapshot.admin_key,
            current: snapshot.current,
            epochs,
            next_generation: snapshot.next_generation,
            retention: snapshot.retention,
            replay: snapshot.replay,
            seen_wraps: snapshot.seen_wraps,
            joined: snapshot.joined,
        })
    }
}
