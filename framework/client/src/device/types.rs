//! The public types of a device: its role, pinned admin keys, events, and how to create one.

use serde::{Deserialize, Serialize};
use switchboard_protocol::api::ItemKind;
use switchboard_protocol::{
    CipherSuite, DeviceId, EntityId, Epoch, Fingerprint, IdentityPublicKey, MessageDigest,
    ReceivedMessage, SealedMessage, ThreadId, Timestamp,
};

use crate::enrol::ExpectedKey;
use crate::keystore::KdfCost;

/// What a device is in the system.
// One per device: the size of the agent variant (an expanded public key) does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "role", rename_all = "snake_case", deny_unknown_fields)]
pub enum DeviceRole {
    /// A customer: opens threads with entities.
    Customer,
    /// The admin device of an entity: accepts threads, forwards them, changes rosters.
    Admin {
        /// The entity.
        entity: EntityId,
    },
    /// An agent (bot or human) of an entity: joins the threads the admin forwards to it.
    Agent {
        /// The entity.
        entity: EntityId,
        /// The entity's admin device.
        admin: DeviceId,
        /// Its identity key, pinned when this agent was set up.
        admin_key: IdentityPublicKey,
    },
}

/// The admin key a customer pinned for an entity at first contact.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PinnedAdmin {
    /// The admin device.
    pub device: DeviceId,
    /// Its identity key.
    pub identity_key: IdentityPublicKey,
}

impl PinnedAdmin {
    /// The fingerprint people compare.
    #[must_use]
    pub fn fingerprint(&self) -> Fingerprint {
        self.identity_key.fingerprint()
    }
}

/// What [`Device::receive`] found.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// A customer opened a thread (admin devices).
    ThreadOpened {
        /// The thread.
        thread: ThreadId,
        /// The customer's device.
        customer: DeviceId,
    },
    /// The admin added this device to a thread (agent devices).
    Joined {
        /// The thread.
        thread: ThreadId,
        /// The epoch this device starts in.
        epoch: Epoch,
    },
    /// The roster of a thread changed: a new epoch.
    RosterChanged {
        /// The thread.
        thread: ThreadId,
        /// The new epoch.
        epoch: Epoch,
    },
    /// This device was removed from a thread; its state of the thread is deleted.
    Removed {
        /// The thread.
        thread: ThreadId,
    },
    /// A message, verified and decrypted.
    Message {
        /// The thread.
        thread: ThreadId,
        /// The message: who sent it (verified against the roster and credentials), and what.
        message: ReceivedMessage,
        /// The message as it was sealed (for an admin that keeps history to grant later).
        sealed: Box<SealedMessage>,
    },
    /// Earlier messages of a thread this device joined later, granted by the admin, verified
    /// and decrypted, in thread order.
    History {
        /// The thread.
        thread: ThreadId,
        /// The messages.
        messages: Vec<ReceivedMessage>,
    },
    /// A member signed a different message under a generation this device already accepted a
    /// message for (it equivocates, or its state was rolled back): the first message stands and
    /// this one was dropped. Receivers may disagree about what it said: report it (the admin
    /// audits it).
    Equivocation {
        /// The thread.
        thread: ThreadId,
        /// The member.
        sender: DeviceId,
        /// The epoch.
        epoch: Epoch,
        /// The generation used twice.
        generation: u64,
        /// Digest of the message accepted first.
        first: MessageDigest,
        /// Digest of the dropped one.
        second: MessageDigest,
    },
    /// A message of an old epoch arrived after the grace period that followed this device's
    /// install of the next epoch and was dropped: its sender may have missed a commit (a relay
    /// withholding it). The admin audits these.
    LateMessage {
        /// The thread.
        thread: ThreadId,
        /// The sender.
        sender: DeviceId,
        /// The message's (old) epoch.
        epoch: Epoch,
        /// The epoch this device had installed after it.
        next: Epoch,
        /// When it was installed.
        next_installed_at: Timestamp,
    },
    /// An inbox item failed verification and was dropped (it is never shown).
    Refused {
        /// The thread it claimed.
        thread: ThreadId,
        /// Its inbox position.
        seq: u64,
        /// What it claimed to be.
        kind: ItemKind,
        /// Why it was refused.
        reason: String,
    },
}

/// How to set up a new device.
#[derive(Clone, Debug)]
pub struct NewDevice {
    /// The relay, `http://HOST:PORT`.
    pub relay: String,
    /// The HPKE suite of the device's KEM key.
    pub suite: CipherSuite,
    /// The role, and for an admin the entity's display name.
    pub role: NewRole,
    /// Argon2id cost for a passphrase-protected keystore.
    pub kdf: KdfCost,
}

/// The role of a new device.
#[derive(Clone, Debug)]
pub enum NewRole {
    /// A customer.
    Customer,
    /// The admin of a new entity, created at the relay with this display name.
    Admin {
        /// The entity.
        entity: EntityId,
        /// What customers see.
        display_name: String,
    },
    /// An agent of an existing entity; its admin key is fetched from the directory, checked
    /// against `admin`, and pinned.
    Agent {
        /// The entity.
        entity: EntityId,
        /// What the admin's identity key must be: its fingerprint, as `switchboard admin init`
        /// printed it on the admin's machine.
        admin: ExpectedKey,
    },
}

impl NewDevice {
    /// A new device of `role` at `relay`, with the default suite and keystore cost.
    #[must_use]
    pub fn new(relay: impl Into<String>, role: NewRole) -> Self {
        Self {
            relay: relay.into(),
            suite: CipherSuite::default(),
            role,
            kdf: KdfCost::default(),
        }
    }
}
