//! History grants: the admin lets an agent that joined a thread later read earlier epochs.
//!
//! A grant carries, for each earlier epoch, its roster and its secret wrapped to the agent, plus
//! the sealed messages of those epochs as the admin received them; the admin signs the whole.
//! The agent checks the grant (addressed to it, signed by the pinned admin, only epochs before
//! the one it holds), opens each wrap, verifies every message against its epoch's roster and
//! decrypts it. The granted secrets are used for the grant's messages only and then dropped:
//! the agent keeps no old epoch beyond its retention policy.

use serde::{Deserialize, Serialize};

use crate::encoding::Tbs;
use crate::error::HistoryError;
use crate::ids::{DeviceId, Epoch, ThreadId, Timestamp};
use crate::keys::{DeviceKeys, IdentityPublicKey, KeyBundle, Signature};
use crate::message::{ReplayPolicy, SealedMessage};
use crate::rng::Csprng;
use crate::roster::{Role, Roster};
use crate::thread::{ReceivedMessage, ThreadState};
use crate::wire::{Version, WireType};
use crate::wrap::{DEFAULT_WRAP_LIFETIME_SECS, ExpectedWrap, KeyWrap, WrapContext};

/// The most messages one grant carries.
pub const MAX_GRANT_MESSAGES: usize = 1000;

/// One earlier epoch in a [`HistoryGrant`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantedEpoch {
    /// The epoch.
    pub epoch: Epoch,
    /// Its roster (the agent checks the wrap's roster hash against it).
    pub roster: Roster,
    /// Its secret, wrapped to the agent by the admin.
    pub wrap: KeyWrap,
}

/// Earlier epochs of a thread and their messages, granted by the admin to one member.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryGrant {
    /// Protocol version.
    pub v: Version,
    /// The thread.
    pub thread: ThreadId,
    /// The member it is for.
    pub to: DeviceId,
    /// The admin that grants it.
    pub admin: DeviceId,
    /// The granted epochs, oldest first.
    pub epochs: Vec<GrantedEpoch>,
    /// The messages of those epochs, in thread order.
    pub messages: Vec<SealedMessage>,
    /// The admin's signature over all of the above.
    pub signature: Signature,
}

impl WireType for HistoryGrant {
    const WHAT: &'static str = "history grant";
}

impl HistoryGrant {
    fn signed_bytes(&self) -> Vec<u8> {
        let mut tbs = Tbs::new("switchboard/1 history-grant");
        tbs.fixed(self.thread.as_bytes())
            .fixed(self.to.as_bytes())
            .fixed(self.admin.as_bytes())
            .u64(self.epochs.len() as u64);
        for e in &self.epochs {
            tbs.u64(e.epoch.0)
                .fixed(&e.roster.hash().0)
                .fixed(e.wrap.wrap_id.as_bytes());
        }
        tbs.u64(self.messages.len() as u64);
        for m in &self.messages {
            tbs.fixed(m.header.message_id().as_bytes())
                .fixed(&m.signature.to_bytes());
        }
        tbs.into_vec()
    }
}

impl ThreadState {
    /// Admin: grants `to` (a current member) the epochs of this thread before the current one
    /// that this device still holds, with `messages` of those epochs (as received). Returns the
    /// grant to deliver to that member.
    ///
    /// # Errors
    /// [`HistoryError::NotAdmin`] on another device; [`HistoryError::NotAMember`] if `to` is not
    /// in the current roster; [`HistoryError::TooLarge`] for too many messages;
    /// [`HistoryError::NotEarlier`] for a message not of an earlier held epoch;
    /// [`HistoryError::Wrap`] if wrapping fails.
    pub fn grant_history(
        &self,
        admin: &DeviceKeys,
        to: &KeyBundle,
        messages: Vec<SealedMessage>,
        now: Timestamp,
        rng: &mut Csprng,
    ) -> Result<HistoryGrant, HistoryError> {
        if admin.device() != self.admin_device() || admin.device() != self.me_device() {
            return Err(HistoryError::NotAdmin);
        }
        if !self.roster().contains(to.device) {
            return Err(HistoryError::NotAMember { device: to.device });
        }
        if messages.len() > MAX_GRANT_MESSAGES {
            return Err(HistoryError::TooLarge {
                messages: messages.len(),
            });
        }
        let mut epochs = Vec::new();
        for epoch in self.epochs_held().into_iter().filter(|e| *e < self.epoch()) {
            let (Some(secret), Some(roster)) = (self.epoch_secret(epoch), self.roster_of(epoch))
            else {
                continue;
            };
            let context = WrapContext {
                thread: self.thread(),
                epoch,
                roster_hash: roster.hash(),
                expires_at: now.plus(DEFAULT_WRAP_LIFETIME_SECS),
            };
            epochs.push(GrantedEpoch {
                epoch,
                roster: roster.clone(),
                wrap: KeyWrap::seal(admin, to, &context, secret, rng)?,
            });
        }
        for m in &messages {
            if m.header.thread != self.thread() || !epochs.iter().any(|e| e.epoch == m.header.epoch)
            {
                return Err(HistoryError::NotEarlier {
                    epoch: m.header.epoch,
                });
            }
        }
        let mut grant = HistoryGrant {
            v: Version,
            thread: self.thread(),
            to: to.device,
            admin: admin.device(),
            epochs,
            messages,
            signature: Signature::from_bytes([0; 64]),
        };
        grant.signature = admin.identity().sign(&grant.signed_bytes());
        Ok(grant)
    }

    /// Member: checks a history grant and returns its messages, verified and decrypted, in
    /// order. Checks: for this thread (H1), addressed to this device (H2), from and signed by
    /// the pinned admin (H3), only epochs before the current one, each once, with rosters of
    /// this entity holding the admin with its pinned key (H4), each wrap as from the admin for
    /// that epoch and roster (W1–W8, replayed wraps refused), and each message against its
    /// epoch's roster (M4–M11, except that a sender's credential may have expired since) (H5).
    /// Nothing is kept: a refused grant changes nothing but the record of opened wraps.
    ///
    /// # Errors
    /// The first failed check, as a [`HistoryError`].
    pub fn accept_history(
        &mut self,
        me: &DeviceKeys,
        grant: &HistoryGrant,
        now: Timestamp,
    ) -> Result<Vec<ReceivedMessage>, HistoryError> {
        if grant.thread != self.thread() {
            return Err(HistoryError::WrongThread {
                expected: self.thread(),
                found: grant.thread,
            });
        }
        if grant.to != me.device() || me.device() != self.me_device() {
            return Err(HistoryError::NotForMe { to: grant.to });
        }
        let admin = self.admin_device();
        let admin_key = *self.admin_identity();
        if grant.admin != admin || !admin_key.verify(&grant.signed_bytes(), &grant.signature) {
            return Err(HistoryError::BadSignature);
        }
        if grant.messages.len() > MAX_GRANT_MESSAGES {
            return Err(HistoryError::TooLarge {
                messages: grant.messages.len(),
            });
        }
        let mut opened = Vec::new();
        for e in &grant.epochs {
            if e.epoch >= self.epoch() || opened.iter().any(|(epoch, _)| *epoch == e.epoch) {
                return Err(HistoryError::NotEarlier { epoch: e.epoch });
            }
            check_roster(&e.roster, self, admin, &admin_key, e.epoch)?;
            let roster_hash = e.roster.hash();
            let secret = e.wrap.open(
                me,
                &ExpectedWrap {
                    sender: admin,
                    sender_key: &admin_key,
                    thread: grant.thread,
                    epoch: e.epoch,
                    roster_hash,
                },
                now,
                self.seen_wraps_mut(),
            )?;
            opened.push((
                e.epoch,
                crate::thread::EpochView::new(secret, e.roster.clone()),
            ));
        }
        let replay = ReplayPolicy::default();
        let mut out = Vec::with_capacity(grant.messages.len());
        for (index, m) in grant.messages.iter().enumerate() {
            let bad = |error| HistoryError::Message { index, error };
            if m.header.thread != grant.thread {
                return Err(bad(crate::error::MessageError::WrongThread {
                    expected: grant.thread,
                    found: m.header.thread,
                }));
            }
            let Some((_, view)) = opened.iter_mut().find(|(e, _)| *e == m.header.epoch) else {
                return Err(HistoryError::NotEarlier {
                    epoch: m.header.epoch,
                });
            };
            out.push(view.open(m, replay).map_err(bad)?);
        }
        Ok(out)
    }
}

/// A granted roster must be this entity's, with this admin and its pinned key as the admin.
fn check_roster(
    roster: &Roster,
    state: &ThreadState,
    admin: DeviceId,
    admin_key: &IdentityPublicKey,
    epoch: Epoch,
) -> Result<(), HistoryError> {
    let admin_ok = roster
        .get(admin)
        .is_some_and(|m| m.role == Role::Admin && m.identity_key() == admin_key);
    if roster.entity != *state.entity() || !admin_ok {
        return Err(HistoryError::RosterMismatch { epoch });
    }
    Ok(())
}
