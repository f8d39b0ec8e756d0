//! A device of any role, with its state in an encrypted keystore: the one object an
//! application drives.

use std::collections::BTreeMap;
use std::sync::Arc;

use switchboard_protocol::{
    Commit, Csprng, DeviceKeys, DeviceMemory, EntityId, ReplayPolicy, SeenWraps, ThreadId,
    ThreadState, Timestamp,
};

use crate::keystore::Keystore;
use crate::relay::RelayClient;

mod lifecycle;
mod persist;
mod receive;
mod rotation;
mod sealed;
mod threads;
mod types;

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
    /// The store holding the state besides the keys, for a device created or opened in one
    /// ([`Device::create_in`], [`Device::open_in`]); `None`: all of it is in the keystore.
    rows: Option<persist::Rows>,
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
