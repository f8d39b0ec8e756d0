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
use crate::roster::{Role, Roster, RosterHash};
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
    /// The `prev_roster_hash` of the commit that started this epoch (32 zero bytes for epoch
    /// 0): the agent checks that the granted epochs chain to the roster it joined on.
    pub prev_roster_hash: RosterHash,
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
                .fixed(&e.prev_roster_hash.0)
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
    /// Admin: grants `to` (a current member) the epochs of this thread before the one it joined
    /// in (the first of its current, unbroken membership) that this device still holds, as one
    /// unbroken run ending just before that epoch, with `messages` of those epochs (as
    /// received). Returns the grant to deliver to that member.
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
        // The epoch `to` joined in: the oldest of the unbroken run of held epochs, ending at the
        // current one, whose rosters all hold it.
        let mut joined = self.epoch();
        while let Some(before) = joined.0.checked_sub(1).map(Epoch)
            && self
                .roster_of(before)
                .is_some_and(|r| r.contains(to.device))
        {
            joined = before;
        }
        // The unbroken run of held epochs just before it.
        let mut first = joined;
        while let Some(before) = first.0.checked_sub(1).map(Epoch)
            && self.roster_of(before).is_some()
        {
            first = before;
        }
        let mut epochs = Vec::new();
        for epoch in (first.0..joined.0).map(Epoch) {
            let (Some(secret), Some(roster)) = (self.epoch_secret(epoch), self.roster_of(epoch))
            else {
                continue;
            };
            let prev_roster_hash = epoch
                .0
                .checked_sub(1)
                .and_then(|before| self.roster_of(Epoch(before)))
                .map_or(RosterHash([0; 32]), Roster::hash);
            let context = WrapContext {
                thread: self.thread(),
                epoch,
                roster_hash: roster.hash(),
                expires_at: now.plus(DEFAULT_WRAP_LIFETIME_SECS),
            };
            epochs.push(GrantedEpoch {
                epoch,
                prev_roster_hash,
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
    /// the pinned admin (H3), only epochs before the one this device joined in, each once, with
    /// rosters of this entity holding the admin with its pinned key (H4); every granted roster
    /// valid: this thread's customer, every bundle and credential verifying (credential expiry
    /// excepted) (H6); the epochs an unbroken chain of roster hashes ending in the join
    /// commit's `prev_roster_hash` (H7); each wrap as from the admin for that epoch and roster
    /// (W1–W8, replayed wraps refused), and each message against its epoch's roster (M4–M11,
    /// except that a sender's credential may have expired since) (H5).
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
        // Every structural check (H4, H6, H7) comes before any wrap is opened, so that a refused
        // grant does not use up the wrap ids of a later, valid one.
        let joined = self.joined();
        let mut previous: Option<(Epoch, RosterHash)> = None;
        for (i, e) in grant.epochs.iter().enumerate() {
            let twice = grant
                .epochs
                .iter()
                .take(i)
                .any(|earlier| earlier.epoch == e.epoch);
            if e.epoch >= self.epoch() || twice {
                return Err(HistoryError::NotEarlier { epoch: e.epoch });
            }
            let Some(joined) = joined else {
                return Err(HistoryError::BrokenChain { epoch: e.epoch });
            };
            if e.epoch >= joined.epoch {
                return Err(HistoryError::NotEarlier { epoch: e.epoch });
            }
            check_roster(&e.roster, self, admin, &admin_key, e.epoch)?;
            let roster_hash = e.roster.hash();
            // H7: each epoch follows the one before it and names its roster as its predecessor.
            if let Some((prev_epoch, prev_hash)) = previous
                && (prev_epoch.next() != Some(e.epoch) || e.prev_roster_hash != prev_hash)
            {
                return Err(HistoryError::BrokenChain { epoch: e.epoch });
            }
            previous = Some((e.epoch, roster_hash));
        }
        // ...and the last one is the roster the commit that added this device built on.
        if let (Some((last, last_hash)), Some(joined)) = (previous, joined)
            && (last.next() != Some(joined.epoch) || last_hash != joined.prev_roster_hash)
        {
            return Err(HistoryError::BrokenChain { epoch: last });
        }
        let mut opened = Vec::with_capacity(grant.epochs.len());
        for e in &grant.epochs {
            let secret = e.wrap.open(
                me,
                &ExpectedWrap {
                    sender: admin,
                    sender_key: &admin_key,
                    thread: grant.thread,
                    epoch: e.epoch,
                    roster_hash: e.roster.hash(),
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

/// A granted roster must be this entity's, with this admin and its pinned key as the admin
/// (H4), this thread's customer as its only customer, and every member's bundle and credential
/// valid, credential expiry excepted (H6).
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
    let invalid = |detail: String| HistoryError::InvalidRoster { epoch, detail };
    let customer_of = |r: &Roster| {
        let mut customers = r.members.values().filter(|m| m.role == Role::Customer);
        match (customers.next(), customers.next()) {
            (Some(only), None) => Some((only.device(), *only.identity_key())),
            _ => None,
        }
    };
    let customer = customer_of(roster);
    if customer.is_none() || customer != customer_of(state.roster()) {
        return Err(invalid(
            "its customer is not this thread's customer".to_owned(),
        ));
    }
    for (device, member) in &roster.members {
        if *device != member.device() {
            return Err(invalid(format!(
                "member {device} is listed under another id"
            )));
        }
        member.bundle.verify().map_err(|e| invalid(e.to_string()))?;
        if let Some(credential) = member.credential() {
            credential
                .verify_ignoring_expiry(&roster.entity, admin, admin_key)
                .and_then(|()| credential.matches_bundle(&member.bundle))
                .map_err(|e| invalid(e.to_string()))?;
        }
    }
    Ok(())
}
