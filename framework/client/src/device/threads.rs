//! Threads: opening one, sending, an admin's commits (prepared, posted, kept until posted) and
//! history grants.

use switchboard_protocol::{
    Commit, CommitAction, Content, DeviceId, EntityId, MessageId, SealedMessage, ThreadId,
    ThreadState,
};

use super::{Device, DeviceRole, PinnedAdmin};
use crate::error::ClientError;
use crate::relay::now;

impl Device {
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
        self.touched(thread);
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
        self.touched(thread);
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
        self.touched(thread);
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

    pub(super) async fn posted(&mut self, commit: &Commit) -> Result<(), ClientError> {
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
}
