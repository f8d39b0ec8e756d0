//! KEM key rotation of a device (docs/protocol.md §2.6): on a schedule, a new random KEM key
//! published in a newer bundle; retired keys deleted after a grace period; for the admin, the
//! members' current bundles fetched before every commit and threads rekeyed when a member rotated.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use switchboard_protocol::{
    CommitAction, DeviceId, Epoch, KeyBundle, ThreadId, ThreadState, Timestamp,
};

use super::{Device, DeviceRole};
use crate::error::ClientError;
use crate::relay::now;

/// When a device replaces its KEM key, and how long it keeps the old one.
///
/// ```
/// use std::time::Duration;
/// use switchboard_client::KemRotation;
/// let daily = KemRotation { interval: Duration::from_secs(86_400), ..KemRotation::default() };
/// assert_eq!(daily.after_epochs, 50);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KemRotation {
    /// Rotate when the current key is this old (default 7 days).
    pub interval: Duration,
    /// Rotate after this many epochs applied since the last rotation, over all threads (default
    /// 50; an admin counts the commits it makes; rekeys are not counted, so the rekeys that follow
    /// a rotation do not cause the next one).
    pub after_epochs: u64,
    /// Keep a replaced key this long, so wraps sealed to it before the senders learned the new
    /// key still open (default 7 days); then it is deleted.
    pub grace: Duration,
}

impl Default for KemRotation {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(7 * 24 * 3600),
            after_epochs: 50,
            grace: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// The rotation bookkeeping kept in the keystore.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RotationState {
    /// `created_at` of the newest bundle this device signed for its current KEM key (what it
    /// publishes; a rotation publishes strictly later).
    pub(super) signed_at: Timestamp,
    /// When the current KEM key was made.
    pub(super) rotated_at: Timestamp,
    /// Epochs applied (or, for an admin, committed) since then.
    pub(super) epochs: u64,
    /// The current bundle still has to be published (a publish failed or was interrupted).
    pub(super) unpublished: bool,
    /// When the current bundle was published: retired keys are kept for the grace period from
    /// here (senders keep wrapping to the old key until they can fetch the new one).
    #[serde(default)]
    pub(super) published_at: Timestamp,
}

impl RotationState {
    pub(super) fn new(at: Timestamp) -> Self {
        Self {
            signed_at: at,
            rotated_at: at,
            epochs: 0,
            unpublished: false,
            published_at: at,
        }
    }

    /// A bundle of the current key was signed at `at` (for a thread open).
    pub(super) fn signed(&mut self, at: Timestamp) {
        self.signed_at = self.signed_at.max(at);
    }

    /// A commit was applied (or, for an admin, made). Rekeys are not counted: a sweep that
    /// rekeys every thread of a rotated member must not make it rotate again.
    pub(super) fn epoch_applied(&mut self, action: &CommitAction) {
        if !matches!(action, CommitAction::Rekey) {
            self.epochs = self.epochs.saturating_add(1);
        }
    }

    fn due(&self, policy: &KemRotation, at: Timestamp) -> bool {
        at >= self.rotated_at.plus(policy.interval.as_secs()) || self.epochs >= policy.after_epochs
    }
}

impl Device {
    /// Sets when this device rotates its KEM key and how long it keeps old ones (not persisted:
    /// set it after every [`Device::open`]).
    pub fn set_kem_rotation(&mut self, policy: KemRotation) {
        self.rotation_policy = policy;
    }

    /// The rotation policy in force.
    #[must_use]
    pub fn kem_rotation(&self) -> KemRotation {
        self.rotation_policy
    }

    /// Replaces this device's KEM key now: a fresh random key, kept in the keystore with the old
    /// one (until the grace period ends), and published in a newer bundle. Returns that bundle.
    /// If publishing fails the rotation stands (it is on disk) and the bundle is published by
    /// the next [`Device::maintain_keys`].
    ///
    /// # Errors
    /// Keystore errors; relay errors from publishing.
    pub async fn rotate_kem(&mut self) -> Result<KeyBundle, ClientError> {
        let current = now();
        // The new bundle must be strictly newer than every bundle signed for the old key (which
        // may carry this very second); the retirement counts from now.
        let at = current.max(self.rotation.signed_at.plus(1));
        let mut keys = (*self.keys).clone();
        keys.rotate_kem(current, &mut self.rng);
        self.replace_keys(keys);
        self.rotation = RotationState {
            signed_at: at,
            rotated_at: current,
            epochs: 0,
            unpublished: true,
            published_at: self.rotation.published_at,
        };
        self.persist().await?;
        tracing::info!(device = %self.id(), key = %self.keys.kem_key_id(), "KEM key rotated");
        self.publish().await?;
        Ok(self.bundle())
    }

    /// Key upkeep: deletes retired KEM keys whose grace period ended, publishes a bundle whose
    /// publication failed before, and rotates when the policy says so. Returns the bundle
    /// published, if any. [`Device::receive`] runs the same upkeep, deleting keys only once its
    /// inbox has caught up (commits queued while it was offline may be wrapped to a retired key).
    ///
    /// # Errors
    /// Keystore errors; relay errors from publishing.
    pub async fn maintain_keys(&mut self) -> Result<Option<KeyBundle>, ClientError> {
        self.delete_expired_kem_keys().await?;
        self.publish_or_rotate().await
    }

    /// Deletes retired KEM keys whose grace period ended, counted from the publication of the
    /// key that replaced them; never while that key is unpublished (senders still wrap to the
    /// old key, which is all the relay serves). Returns how many were deleted.
    pub(super) async fn delete_expired_kem_keys(&mut self) -> Result<usize, ClientError> {
        if self.rotation.unpublished {
            return Ok(0);
        }
        let at = now();
        let waited_for_publication = self
            .rotation
            .published_at
            .0
            .saturating_sub(self.rotation.rotated_at.0);
        let grace = self
            .rotation_policy
            .grace
            .as_secs()
            .saturating_add(waited_for_publication);
        let mut keys = (*self.keys).clone();
        let deleted = keys.delete_retired_kem_keys(at, grace);
        if deleted > 0 {
            self.replace_keys(keys);
            self.persist().await?;
            tracing::info!(device = %self.id(), deleted, "retired KEM keys deleted");
        }
        Ok(deleted)
    }

    async fn publish_or_rotate(&mut self) -> Result<Option<KeyBundle>, ClientError> {
        let at = now();
        if self.rotation.due(&self.rotation_policy, at) {
            return self.rotate_kem().await.map(Some);
        }
        if self.rotation.unpublished {
            self.publish().await?;
            return Ok(Some(self.bundle()));
        }
        Ok(None)
    }

    /// [`Device::maintain_keys`] for [`Device::receive`]: a relay that refuses or cannot take
    /// the bundle now does not stop the inbox (the publication is retried next time).
    pub(super) async fn maintain_keys_in_background(&mut self) -> Result<(), ClientError> {
        match self.publish_or_rotate().await {
            Ok(_) => Ok(()),
            Err(e @ (ClientError::Keystore(_) | ClientError::KeystoreContents(_))) => Err(e),
            Err(e) => {
                tracing::warn!(error = %e, "publishing the rotated KEM key failed; retrying later");
                Ok(())
            }
        }
    }

    fn replace_keys(&mut self, keys: switchboard_protocol::DeviceKeys) {
        // The old `Arc` (with any deleted key) is dropped, and zeroized, once the relay client
        // and a background ack no longer hold it.
        self.keys = Arc::new(keys);
        self.relay = self.relay.with_keys(Arc::clone(&self.keys));
        self.file_changed();
    }

    async fn publish(&mut self) -> Result<(), ClientError> {
        self.relay.publish_bundle(&self.bundle()).await?;
        self.rotation.unpublished = false;
        self.rotation.published_at = now();
        self.persist().await
    }

    /// Admin: the current bundles of `thread`'s other members, fetched from the relay, that
    /// rotate a member's KEM key (newer, same device and identity key, verified): what the next
    /// commit carries. Best effort: an unknown member is skipped, and at the first failed fetch
    /// (relay busy or rate limiting) the remaining members keep the bundles of the roster, which
    /// they still hold within their grace period; the admin's next key sweep catches up.
    pub(super) async fn key_updates(
        &self,
        thread: ThreadId,
    ) -> Result<Vec<KeyBundle>, ClientError> {
        let state = self
            .threads
            .get(&thread)
            .ok_or(ClientError::UnknownThread(thread))?;
        let (fetched, failed) = self.member_bundles(state, &mut BTreeMap::new()).await;
        if let Some((device, e)) = failed {
            tracing::warn!(error = %e, %device, "cannot fetch a member's bundle; wrapping to the roster's");
        }
        Ok(state.key_updates(fetched))
    }

    /// The current bundles of `state`'s other members (see [`Device::current_bundle`]), looked
    /// up in `known` first and added to it. Stops at the first failed fetch and returns it with
    /// the bundles fetched until then.
    async fn member_bundles(
        &self,
        state: &ThreadState,
        known: &mut BTreeMap<DeviceId, Option<KeyBundle>>,
    ) -> (Vec<KeyBundle>, Option<(DeviceId, ClientError)>) {
        let me = self.id();
        let mut fetched = Vec::new();
        for device in state.roster().members.keys().filter(|d| **d != me) {
            let bundle = match known.get(device) {
                Some(bundle) => bundle.clone(),
                None => match self.current_bundle(*device).await {
                    Ok(bundle) => {
                        known.insert(*device, bundle.clone());
                        bundle
                    }
                    Err(e) => return (fetched, Some((*device, e))),
                },
            };
            fetched.extend(bundle);
        }
        (fetched, None)
    }

    /// A member's bundle as the relay serves it; `None` for an unknown device or a bundle dated
    /// in the future (beyond the allowed clock skew): such a bundle would make the member's
    /// genuine later rotations look older, so it is never taken as an update.
    async fn current_bundle(&self, device: DeviceId) -> Result<Option<KeyBundle>, ClientError> {
        match self.relay.device_bundle(device).await {
            Ok(bundle)
                if bundle.created_at.0
                    > now()
                        .0
                        .saturating_add(switchboard_protocol::request::MAX_CLOCK_SKEW_SECS) =>
            {
                tracing::warn!(%device, created_at = bundle.created_at.0, "ignoring a key bundle dated in the future");
                Ok(None)
            }
            Ok(bundle) => Ok(Some(bundle)),
            Err(ClientError::Refused { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Admin: the threads with a member whose current bundle (fetched from the relay) is a newer
    /// rotation than the one in the thread's roster: those to rekey with
    /// [`CommitAction::Rekey`], which carries the newer bundles.
    ///
    /// # Errors
    /// [`ClientError::WrongRole`] on a non-admin device; relay errors.
    pub async fn threads_with_rotated_members(&self) -> Result<Vec<ThreadId>, ClientError> {
        if !matches!(self.role, DeviceRole::Admin { .. }) {
            return Err(ClientError::WrongRole(
                "only the entity's admin device rekeys threads".to_owned(),
            ));
        }
        let mut current: BTreeMap<DeviceId, Option<KeyBundle>> = BTreeMap::new();
        let mut stale = Vec::new();
        for state in self.threads.values() {
            let (fetched, failed) = self.member_bundles(state, &mut current).await;
            if let Some((_, e)) = failed {
                return Err(e);
            }
            if !state.key_updates(fetched).is_empty() {
                stale.push(state.thread());
            }
        }
        Ok(stale)
    }

    /// Admin: rekeys every thread of [`Device::threads_with_rotated_members`] (a commit each,
    /// posted at once). Returns the threads and their new epochs. An admin that must record each
    /// rekey durably before it is posted uses [`Device::prepare_commit`] and
    /// [`Device::post_commit`] instead.
    ///
    /// # Errors
    /// [`ClientError::WrongRole`] on a non-admin device; relay, protocol and keystore errors.
    pub async fn rekey_rotated_members(&mut self) -> Result<Vec<(ThreadId, Epoch)>, ClientError> {
        let mut rekeyed = Vec::new();
        for thread in self.threads_with_rotated_members().await? {
            let commit = self.commit(thread, CommitAction::Rekey).await?;
            rekeyed.push((thread, commit.epoch));
        }
        Ok(rekeyed)
    }
}
