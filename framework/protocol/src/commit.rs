//! Roster commits: the admin's signed changes to a thread's membership (assign, add to group,
//! remove, transfer, rekey). Each starts a new epoch with a fresh secret, wrapped to every member
//! of the new roster except the admin itself, and carries the previous roster hash.

use serde::{Deserialize, Serialize};

use crate::encoding::Tbs;
use crate::error::CommitError;
use crate::ids::{DeviceId, Epoch, ThreadId, Timestamp};
use crate::keys::{IdentityPublicKey, KeyBundle, Signature};
use crate::roster::{Floor, Member, Role, Roster, RosterHash};
use crate::wire::{Version, WireType};
use crate::wrap::{EpochSecret, KeyWrap};
use hkdf::Hkdf;
use sha2::Sha256;

/// A change to a thread's roster. Every change starts a new epoch.
///
/// On the wire: `{"action": "assign", "agent": {...}}`, `{"action": "add_to_group", "agent"}`,
/// `{"action": "remove", "device"}`, `{"action": "transfer", "from", "to"}`,
/// `{"action": "set_floor", "floor"}`, `{"action": "rekey"}`; other fields are refused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "ActionRepr", into = "ActionRepr")]
pub enum CommitAction {
    /// Forward the thread to an agent, who gets the floor. Allowed only while no agent is a
    /// member (otherwise use `Transfer` or `AddToGroup`).
    Assign {
        /// The agent.
        agent: Box<Member>,
    },
    /// Add an agent; the thread becomes a group in which every agent may post.
    AddToGroup {
        /// The agent.
        agent: Box<Member>,
    },
    /// Remove an agent. If it held the floor, the floor returns to the admin.
    Remove {
        /// The agent's device.
        device: DeviceId,
    },
    /// Replace one agent by another, who gets the floor (in a group, the floor stays shared).
    Transfer {
        /// The agent leaving.
        from: DeviceId,
        /// The agent joining.
        to: Box<Member>,
    },
    /// Move the floor without changing membership: hand it to one agent (the others stay and
    /// may only send receipts and typing), share it (`Group`), or return it to the admin.
    SetFloor {
        /// The new floor.
        floor: Floor,
    },
    /// Same roster, fresh secret (periodic rotation, or after a device compromise).
    Rekey,
}

impl CommitAction {
    fn encode(&self, tbs: &mut Tbs) {
        match self {
            Self::Assign { agent } => tbs.u8(1).fixed(agent.device().as_bytes()),
            Self::AddToGroup { agent } => tbs.u8(2).fixed(agent.device().as_bytes()),
            Self::Remove { device } => tbs.u8(3).fixed(device.as_bytes()),
            Self::Transfer { from, to } => tbs
                .u8(4)
                .fixed(from.as_bytes())
                .fixed(to.device().as_bytes()),
            Self::SetFloor { floor } => match floor {
                Floor::Admin => tbs.u8(6).u8(1),
                Floor::Agent(device) => tbs.u8(6).u8(2).fixed(device.as_bytes()),
                Floor::Group => tbs.u8(6).u8(3),
            },
            Self::Rekey => tbs.u8(5),
        };
    }

    /// The roster that results from applying this action to `prev`.
    ///
    /// # Errors
    /// [`CommitError::InvalidAction`] when the action does not fit `prev` (adding a device that is
    /// already a member, adding a non-agent, removing the customer or admin, ...).
    pub fn apply(&self, prev: &Roster) -> Result<Roster, CommitError> {
        let mut next = prev.clone();
        let invalid = |msg: String| Err(CommitError::InvalidAction(msg));
        let check_new_agent = |agent: &Member| -> Result<(), CommitError> {
            if !matches!(agent.role, Role::Agent { .. }) {
                return Err(CommitError::InvalidAction(format!(
                    "{} is not an agent; only agents can be added",
                    agent.device()
                )));
            }
            if prev.contains(agent.device()) {
                return Err(CommitError::InvalidAction(format!(
                    "{} is already a member",
                    agent.device()
                )));
            }
            Ok(())
        };
        let check_agent_member = |device: DeviceId| -> Result<(), CommitError> {
            match prev.get(device).map(|m| &m.role) {
                Some(Role::Agent { .. }) => Ok(()),
                Some(Role::Customer | Role::Admin) => Err(CommitError::InvalidAction(format!(
                    "{device} is the customer or the admin and cannot be removed"
                ))),
                None => Err(CommitError::InvalidAction(format!(
                    "{device} is not a member"
                ))),
            }
        };
        match self {
            Self::Assign { agent } => {
                check_new_agent(agent)?;
                if prev.agents().next().is_some() {
                    return invalid(
                        "the thread already has an agent: use transfer or add_to_group".to_owned(),
                    );
                }
                next.floor = Floor::Agent(agent.device());
                next.members.insert(agent.device(), (**agent).clone());
            }
            Self::AddToGroup { agent } => {
                check_new_agent(agent)?;
                next.floor = Floor::Group;
                next.members.insert(agent.device(), (**agent).clone());
            }
            Self::Remove { device } => {
                check_agent_member(*device)?;
                next.members.remove(device);
                let holder_left = next.floor == Floor::Agent(*device);
                let group_empty = next.floor == Floor::Group && next.agents().next().is_none();
                if holder_left || group_empty {
                    next.floor = Floor::Admin;
                }
            }
            Self::Transfer { from, to } => {
                check_agent_member(*from)?;
                check_new_agent(to)?;
                next.members.remove(from);
                next.members.insert(to.device(), (**to).clone());
                if next.floor != Floor::Group {
                    next.floor = Floor::Agent(to.device());
                }
            }
            Self::SetFloor { floor } => {
                if let Floor::Agent(holder) = floor {
                    check_agent_member(*holder)?;
                }
                next.floor = *floor;
            }
            Self::Rekey => {}
        }
        Ok(next)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum ActionKind {
    Assign,
    AddToGroup,
    Remove,
    Transfer,
    SetFloor,
    Rekey,
}

/// The wire shape of [`CommitAction`]: flat, so unknown fields are refused for every action.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ActionRepr {
    action: ActionKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    agent: Option<Box<Member>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    device: Option<DeviceId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    from: Option<DeviceId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    to: Option<Box<Member>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    floor: Option<Floor>,
}

impl TryFrom<ActionRepr> for CommitAction {
    type Error = String;

    fn try_from(r: ActionRepr) -> Result<Self, Self::Error> {
        let action = r.action;
        let bad = || format!("wrong fields for commit action {action:?}");
        match (action, r.agent, r.device, r.from, r.to, r.floor) {
            (ActionKind::Assign, Some(agent), None, None, None, None) => Ok(Self::Assign { agent }),
            (ActionKind::AddToGroup, Some(agent), None, None, None, None) => {
                Ok(Self::AddToGroup { agent })
            }
            (ActionKind::Remove, None, Some(device), None, None, None) => {
                Ok(Self::Remove { device })
            }
            (ActionKind::Transfer, None, None, Some(from), Some(to), None) => {
                Ok(Self::Transfer { from, to })
            }
            (ActionKind::SetFloor, None, None, None, None, Some(floor)) => {
                Ok(Self::SetFloor { floor })
            }
            (ActionKind::Rekey, None, None, None, None, None) => Ok(Self::Rekey),
            _ => Err(bad()),
        }
    }
}

impl From<CommitAction> for ActionRepr {
    fn from(action: CommitAction) -> Self {
        let empty = |action| Self {
            action,
            agent: None,
            device: None,
            from: None,
            to: None,
            floor: None,
        };
        match action {
            CommitAction::Assign { agent } => Self {
                agent: Some(agent),
                ..empty(ActionKind::Assign)
            },
            CommitAction::AddToGroup { agent } => Self {
                agent: Some(agent),
                ..empty(ActionKind::AddToGroup)
            },
            CommitAction::Remove { device } => Self {
                device: Some(device),
                ..empty(ActionKind::Remove)
            },
            CommitAction::Transfer { from, to } => Self {
                from: Some(from),
                to: Some(to),
                ..empty(ActionKind::Transfer)
            },
            CommitAction::SetFloor { floor } => Self {
                floor: Some(floor),
                ..empty(ActionKind::SetFloor)
            },
            CommitAction::Rekey => empty(ActionKind::Rekey),
        }
    }
}

/// A signed roster change with the new epoch's secret wrapped to each member.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Commit {
    /// Protocol version.
    pub v: Version,
    /// The thread.
    pub thread: ThreadId,
    /// The epoch this commit starts.
    pub epoch: Epoch,
    /// The roster hash of the previous epoch.
    pub prev_roster_hash: RosterHash,
    /// The change.
    pub action: CommitAction,
    /// Newer key bundles of existing members (KEM key rotations), applied to the previous roster
    /// before `action`: each for a member of the previous roster, at most one per device, same
    /// identity key, created later than the bundle it replaces, signature valid. The new epoch's
    /// secret is wrapped to these keys.
    pub updates: Vec<KeyBundle>,
    /// The whole new roster (so that new members learn it); must equal `action` applied to the
    /// previous roster, which existing members check.
    pub roster: Roster,
    /// The admin device that made the commit.
    pub committer: DeviceId,
    /// When it was made.
    pub created_at: Timestamp,
    /// The new epoch secret, wrapped to each member except the committer.
    pub wraps: Vec<KeyWrap>,
    /// Commits the admin to one secret for all members: HKDF of the new epoch secret over
    /// (thread, epoch, roster hash). Each member checks it after opening its wrap, so an admin
    /// cannot give members different secrets under one roster.
    #[serde(with = "crate::encoding::b64_array")]
    pub confirmation: [u8; 32],
    /// The admin's signature.
    pub signature: Signature,
}

impl WireType for Commit {
    const WHAT: &'static str = "commit";
}

impl Commit {
    pub(crate) fn tbs(&self, roster_hash: &RosterHash) -> Tbs {
        let mut tbs = Tbs::new("switchboard/1 commit");
        tbs.fixed(self.thread.as_bytes())
            .u64(self.epoch.0)
            .fixed(&self.prev_roster_hash.0)
            .fixed(&roster_hash.0)
            .fixed(self.committer.as_bytes())
            .u64(self.created_at.0)
            .fixed(&self.confirmation);
        self.action.encode(&mut tbs);
        tbs.u64(u64::try_from(self.updates.len()).unwrap_or(u64::MAX));
        for bundle in &self.updates {
            tbs.fixed(bundle.device.as_bytes()).fixed(&bundle.digest());
        }
        tbs.u64(u64::try_from(self.wraps.len()).unwrap_or(u64::MAX));
        for wrap in &self.wraps {
            tbs.fixed(wrap.recipient.as_bytes())
                .fixed(wrap.wrap_id.as_bytes());
        }
        tbs
    }

    /// Signs the commit again, as it now is (over its roster's hash), with `admin`'s identity
    /// key: for negative test vectors (a value whose signature is valid but which a receiver
    /// must still refuse). Test vectors only (the `test-util` feature).
    #[cfg(any(test, feature = "test-util"))]
    pub fn sign_as(&mut self, admin: &crate::IdentityKeyPair) {
        self.signature = admin.sign(self.tbs(&self.roster.hash()).as_slice());
    }

    /// Verifies the admin's signature (given the hash of `self.roster`).
    pub(crate) fn verify_signature(
        &self,
        roster_hash: &RosterHash,
        admin: DeviceId,
        admin_key: &IdentityPublicKey,
    ) -> Result<(), CommitError> {
        if self.committer == admin
            && admin_key.verify(self.tbs(roster_hash).as_slice(), &self.signature)
        {
            Ok(())
        } else {
            Err(CommitError::BadSignature {
                epoch: self.epoch,
                admin,
            })
        }
    }

    /// The confirmation of `secret` for this commit's thread, epoch and roster.
    pub(crate) fn confirmation_of(
        secret: &EpochSecret,
        thread: ThreadId,
        epoch: Epoch,
        roster_hash: &RosterHash,
    ) -> [u8; 32] {
        let hk = Hkdf::<Sha256>::new(Some(b"switchboard/1 confirm"), secret.as_bytes());
        let mut info = [0u8; 16 + 8 + 32];
        let (t, rest) = info.split_at_mut(16);
        t.copy_from_slice(thread.as_bytes());
        let (e, r) = rest.split_at_mut(8);
        e.copy_from_slice(&epoch.0.to_be_bytes());
        r.copy_from_slice(&roster_hash.0);
        let mut out = [0u8; 32];
        // 32 bytes is far below HKDF-SHA256's output limit: expand cannot fail.
        let _ = hk.expand(&info, &mut out);
        out
    }

    /// Whether `secret` is the secret this commit confirms.
    pub(crate) fn confirms(&self, secret: &EpochSecret, roster_hash: &RosterHash) -> bool {
        use subtle::ConstantTimeEq as _;
        let expected = Self::confirmation_of(secret, self.thread, self.epoch, roster_hash);
        expected.ct_eq(&self.confirmation).into()
    }

    /// The roster `prev` with the members' bundles replaced by `updates` (see
    /// [`Commit::updates`]).
    ///
    /// # Errors
    /// [`CommitError::KeyUpdate`] for an update of a non-member, a second update of one device,
    /// or a bundle that may not replace the member's ([`KeyBundle::check_update_of`]).
    pub fn apply_updates(prev: &Roster, updates: &[KeyBundle]) -> Result<Roster, CommitError> {
        let mut next = prev.clone();
        for bundle in updates {
            let device = bundle.device;
            let refuse = |reason: String| CommitError::KeyUpdate { device, reason };
            let Some(old) = prev.get(device) else {
                return Err(refuse("it is not a member of the thread".to_owned()));
            };
            let Some(member) = next.members.get_mut(&device) else {
                return Err(refuse("it is not a member of the thread".to_owned()));
            };
            if member.bundle != old.bundle {
                return Err(refuse("the commit updates it twice".to_owned()));
            }
            bundle
                .check_update_of(&old.bundle)
                .map_err(|e| refuse(e.to_string()))?;
            member.bundle = bundle.clone();
        }
        Ok(next)
    }

    /// The wrap addressed to `device`, if any.
    #[must_use]
    pub fn wrap_for(&self, device: DeviceId) -> Option<&KeyWrap> {
        self.wraps.iter().find(|w| w.recipient == device)
    }
}

#[cfg(test)]
mod tests {
    use crate::error::CommitError;
    use crate::ids::{DeviceId, EntityId, Timestamp};
    use crate::keys::DeviceKeys;
    use crate::rng::Csprng;
    use crate::suite::CipherSuite;
    use crate::thread::ThreadState;
    use crate::wrap::SeenWraps;

    use super::CommitAction;

    const NOW: Timestamp = Timestamp(1_000);

    fn keys(n: u8) -> DeviceKeys {
        DeviceKeys::from_seed(
            DeviceId::from_bytes([n; 16]),
            CipherSuite::default(),
            &[n; 32],
        )
    }

    #[test]
    fn members_refuse_a_signed_commit_whose_key_update_rolls_back() {
        let (customer, admin) = (keys(1), keys(2));
        let entity = EntityId::new("acme").unwrap();
        let mut rng = Csprng::from_seed([4; 32]);
        let (mut customer_view, open) =
            ThreadState::open(&customer, entity.clone(), &admin.bundle(NOW), NOW, &mut rng)
                .unwrap();
        let mut admin_view =
            ThreadState::accept(&admin, &entity, &open, NOW, &mut SeenWraps::new()).unwrap();
        let mut rotated = customer.clone();
        rotated.rotate_kem(NOW, &mut rng);
        let mut commit = admin_view
            .commit_with_updates(
                &admin,
                CommitAction::Rekey,
                vec![rotated.bundle(NOW.plus(1))],
                NOW.plus(1),
                &mut rng,
            )
            .unwrap();
        // A bundle older than the member's, put in by a hostile or buggy admin and signed:
        // members check every update themselves.
        let stale = rotated.bundle(Timestamp(NOW.0 - 1));
        commit.updates = vec![stale.clone()];
        if let Some(member) = commit.roster.members.get_mut(&customer.device()) {
            member.bundle = stale;
        }
        let hash = commit.roster.hash();
        commit.signature = admin.identity().sign(commit.tbs(&hash).as_slice());
        let err = customer_view
            .apply_commit(&rotated, &commit, NOW.plus(1))
            .unwrap_err();
        assert!(matches!(err, CommitError::KeyUpdate { .. }), "{err}");
    }
}
