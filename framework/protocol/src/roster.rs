//! Rosters: who is a member of a thread in an epoch, with which keys and credential, and who
//! holds the floor.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::credential::{AgentCredential, AgentKind};
use crate::encoding::{Tbs, b64_array, b64_encode};
use crate::error::CommitError;
use crate::ids::{DeviceId, EntityId, Timestamp};
use crate::keys::{IdentityPublicKey, KeyBundle};

/// SHA-256 over the canonical encoding of a roster. Bound into every wrap and message header, so
/// that members who disagree about the roster cannot exchange messages.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RosterHash(#[serde(with = "b64_array")] pub [u8; 32]);

impl fmt::Debug for RosterHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RosterHash({})", b64_encode(&self.0))
    }
}

/// A member's role in a thread. On the wire: `{"kind": "customer" | "admin"}` or
/// `{"kind": "agent", "credential": {...}}`; any other field is refused.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RoleRepr", into = "RoleRepr")]
pub enum Role {
    /// The customer who opened the thread.
    Customer,
    /// The entity's admin device.
    Admin,
    /// An agent (bot or human) with its credential.
    Agent {
        /// The credential the admin issued.
        credential: Box<AgentCredential>,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum RoleKind {
    Customer,
    Admin,
    Agent,
}

/// The wire shape of [`Role`]: a flat struct, so that unknown fields are refused for every kind
/// (serde ignores them on unit variants of internally tagged enums).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RoleRepr {
    kind: RoleKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    credential: Option<Box<AgentCredential>>,
}

impl TryFrom<RoleRepr> for Role {
    type Error = String;

    fn try_from(repr: RoleRepr) -> Result<Self, Self::Error> {
        match (repr.kind, repr.credential) {
            (RoleKind::Customer, None) => Ok(Self::Customer),
            (RoleKind::Admin, None) => Ok(Self::Admin),
            (RoleKind::Agent, Some(credential)) => Ok(Self::Agent { credential }),
            (RoleKind::Agent, None) => Err("an agent member needs its credential".to_owned()),
            (_, Some(_)) => Err("only agent members carry a credential".to_owned()),
        }
    }
}

impl From<Role> for RoleRepr {
    fn from(role: Role) -> Self {
        match role {
            Role::Customer => Self {
                kind: RoleKind::Customer,
                credential: None,
            },
            Role::Admin => Self {
                kind: RoleKind::Admin,
                credential: None,
            },
            Role::Agent { credential } => Self {
                kind: RoleKind::Agent,
                credential: Some(credential),
            },
        }
    }
}

/// A member of a thread: a device's signed key bundle and its role.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Member {
    /// The device's key bundle.
    pub bundle: KeyBundle,
    /// Its role.
    pub role: Role,
}

impl Member {
    /// An agent member.
    #[must_use]
    pub fn agent(bundle: KeyBundle, credential: AgentCredential) -> Self {
        Self {
            bundle,
            role: Role::Agent {
                credential: Box::new(credential),
            },
        }
    }

    /// The member's device.
    #[must_use]
    pub fn device(&self) -> DeviceId {
        self.bundle.device
    }

    /// The member's identity key.
    #[must_use]
    pub fn identity_key(&self) -> &IdentityPublicKey {
        &self.bundle.identity_key
    }

    /// The agent credential, if the member is an agent.
    #[must_use]
    pub fn credential(&self) -> Option<&AgentCredential> {
        match &self.role {
            Role::Agent { credential } => Some(credential),
            Role::Customer | Role::Admin => None,
        }
    }

    /// A short description for people: "OrderBot (bot)", "customer", "admin".
    #[must_use]
    pub fn describe(&self) -> String {
        match &self.role {
            Role::Customer => "customer".to_owned(),
            Role::Admin => "admin".to_owned(),
            Role::Agent { credential } => {
                let kind = match credential.kind {
                    AgentKind::Bot => "bot",
                    AgentKind::Human => "human",
                };
                format!("{} ({kind})", credential.display_name)
            }
        }
    }

    /// Checks the bundle's self-signature and, for agents, the credential against the admin.
    /// With `already_verified`, the signatures were checked when the member joined and only the
    /// credential's expiry is checked again.
    pub(crate) fn validate(
        &self,
        entity: &EntityId,
        admin: DeviceId,
        admin_key: &IdentityPublicKey,
        now: Timestamp,
        already_verified: bool,
    ) -> Result<(), CommitError> {
        if !already_verified {
            self.bundle.verify()?;
        }
        if let Role::Agent { credential } = &self.role {
            if already_verified {
                credential.check_expiry(now)?;
            } else {
                credential.verify(entity, admin, admin_key, now)?;
                credential.matches_bundle(&self.bundle)?;
            }
        }
        Ok(())
    }

    fn encode(&self, tbs: &mut Tbs) {
        tbs.fixed(self.bundle.device.as_bytes())
            .fixed(&self.bundle.digest());
        match &self.role {
            Role::Customer => tbs.u8(1),
            Role::Admin => tbs.u8(2),
            Role::Agent { credential } => tbs.u8(3).fixed(&credential.signature.to_bytes()),
        };
    }
}

/// Who may post text in the thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(
    tag = "holder",
    content = "device",
    rename_all = "snake_case",
    deny_unknown_fields
)]
pub enum Floor {
    /// No agent holds the floor; the admin answers.
    Admin,
    /// This agent alone may post.
    Agent(DeviceId),
    /// Every agent member may post.
    Group,
}

/// The members of a thread in one epoch. The customer and the admin are always members.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Roster {
    /// The entity.
    pub entity: EntityId,
    /// Members, by device.
    pub members: BTreeMap<DeviceId, Member>,
    /// Who holds the floor.
    pub floor: Floor,
}

impl Roster {
    /// The roster of a new thread: the customer and the admin, the admin holding the floor.
    #[must_use]
    pub fn initial(entity: EntityId, customer: KeyBundle, admin: KeyBundle) -> Self {
        let mut members = BTreeMap::new();
        members.insert(
            customer.device,
            Member {
                bundle: customer,
                role: Role::Customer,
            },
        );
        members.insert(
            admin.device,
            Member {
                bundle: admin,
                role: Role::Admin,
            },
        );
        Self {
            entity,
            members,
            floor: Floor::Admin,
        }
    }

    /// The canonical hash of the roster.
    #[must_use]
    pub fn hash(&self) -> RosterHash {
        let mut tbs = Tbs::new("switchboard/1 roster");
        tbs.bytes(self.entity.as_str().as_bytes());
        match self.floor {
            Floor::Admin => tbs.u8(1),
            Floor::Agent(device) => tbs.u8(2).fixed(device.as_bytes()),
            Floor::Group => tbs.u8(3),
        };
        tbs.u64(u64::try_from(self.members.len()).unwrap_or(u64::MAX));
        for member in self.members.values() {
            member.encode(&mut tbs);
        }
        RosterHash(Sha256::digest(tbs.as_slice()).into())
    }

    /// A member by device.
    #[must_use]
    pub fn get(&self, device: DeviceId) -> Option<&Member> {
        self.members.get(&device)
    }

    /// Whether `device` is a member.
    #[must_use]
    pub fn contains(&self, device: DeviceId) -> bool {
        self.members.contains_key(&device)
    }

    /// The agent members.
    pub fn agents(&self) -> impl Iterator<Item = &Member> {
        self.members
            .values()
            .filter(|m| matches!(m.role, Role::Agent { .. }))
    }

    /// The customer member.
    #[must_use]
    pub fn customer(&self) -> Option<&Member> {
        self.members.values().find(|m| m.role == Role::Customer)
    }

    /// The admin member.
    #[must_use]
    pub fn admin(&self) -> Option<&Member> {
        self.members.values().find(|m| m.role == Role::Admin)
    }

    /// Whether `device` may post content other than receipts and typing indicators.
    #[must_use]
    pub fn may_post(&self, device: DeviceId) -> bool {
        match self.members.get(&device).map(|m| &m.role) {
            Some(Role::Customer | Role::Admin) => true,
            Some(Role::Agent { .. }) => match self.floor {
                Floor::Agent(holder) => holder == device,
                Floor::Group => true,
                Floor::Admin => false,
            },
            None => false,
        }
    }

    /// Checks the structure a roster must have: exactly one customer and one admin (the given
    /// admin, with the given key), every member's key bundle verifies and every agent holds a
    /// valid credential from that admin, and the floor names an agent member.
    ///
    /// Members identical to a member of `verified` (a roster this device validated before) keep
    /// their verified signatures; only their credentials' expiry is checked again. So a commit
    /// costs signature checks for the members it adds, not for the whole roster.
    pub(crate) fn validate(
        &self,
        admin: DeviceId,
        admin_key: &IdentityPublicKey,
        now: Timestamp,
        verified: Option<&Self>,
    ) -> Result<(), CommitError> {
        let customers = self
            .members
            .values()
            .filter(|m| m.role == Role::Customer)
            .count();
        let admins: Vec<&Member> = self
            .members
            .values()
            .filter(|m| m.role == Role::Admin)
            .collect();
        if customers != 1 {
            return Err(CommitError::InvalidAction(format!(
                "a roster must have exactly one customer, found {customers}"
            )));
        }
        match admins.as_slice() {
            [only] if only.device() == admin && only.identity_key() == admin_key => {}
            _ => {
                return Err(CommitError::InvalidAction(
                    "the roster's admin is not the thread's pinned admin".to_owned(),
                ));
            }
        }
        for (device, member) in &self.members {
            if *device != member.device() {
                return Err(CommitError::InvalidAction(format!(
                    "roster entry {device} holds the bundle of {}",
                    member.device()
                )));
            }
            let known = verified.and_then(|r| r.members.get(device)) == Some(member)
                && verified.is_some_and(|r| r.entity == self.entity);
            member.validate(&self.entity, admin, admin_key, now, known)?;
        }
        if let Floor::Agent(holder) = self.floor
            && !self.agents().any(|m| m.device() == holder)
        {
            return Err(CommitError::InvalidAction(format!(
                "floor holder {holder} is not an agent of the thread"
            )));
        }
        Ok(())
    }
}
