//! Where a device keeps its state when not everything fits one keystore file: a
//! [`DeviceStore`] holds the device's changing state as one record and each thread as a row of
//! its own, so that a change writes the threads it touched instead of rewriting every thread.
//! The keystore file then holds only what changes with the keys (written at creation, KEM
//! rotation and key deletion).
//!
//! A device whose inbox carries every message of thousands of threads (an entity's admin) is the
//! case this is for: with the whole state in its keystore, every [`Device::receive`] would
//! encrypt and write every thread again. Open such a device with [`Device::create_in`] and
//! [`Device::open_in`]; [`MemoryStore`] is a store for tests and for devices that live as long
//! as their process. The bot SDK's `switchboard::store::SqlDeviceStore` keeps the rows in its
//! SQLite or PostgreSQL database (group commit, durable when a write returns).
//!
//! The device seals every row before a store sees it (XChaCha20-Poly1305 under a key derived
//! from the device's seed, bound to the device and to the row's place: the state record or one
//! thread), so a store holds ciphertext only, needs no key, and a row it returns altered, from
//! another device or from another place is refused when the device opens. What a store cannot
//! be kept from is returning an older row in place of the newest (the same holds for a
//! keystore file restored from a backup): a thread rolled back to an older row would seal
//! again with generations it sealed before, so a store must be as trusted for freshness as the
//! disk the keystore is on.
//!
//! [`Device::receive`]: crate::Device::receive
//! [`Device::create_in`]: crate::Device::create_in
//! [`Device::open_in`]: crate::Device::open_in

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Mutex;

use switchboard_protocol::{DeviceId, ThreadId};

/// Why a [`DeviceStore`] operation failed.
#[derive(Debug, thiserror::Error)]
#[error("the device store failed: {0}")]
pub struct StoreFailure(pub String);

/// What a [`DeviceStore`] holds for one device: rows the device sealed (opaque to the store).
#[derive(Default)]
pub struct StoredDevice {
    /// The device's state record (`None`: nothing stored yet for this device).
    pub state: Option<Vec<u8>>,
    /// One row per thread, with the thread it was written for.
    pub threads: Vec<(ThreadId, Vec<u8>)>,
}

impl fmt::Debug for StoredDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoredDevice")
            .field("state_len", &self.state.as_ref().map(|s| s.len()))
            .field("threads", &self.threads.len())
            .finish()
    }
}

/// One change of a device, to be written as a whole or not at all (one transaction). Its rows
/// are sealed by the device.
pub struct StoreWrite {
    /// The device's new state record (replaces the old one).
    pub state: Vec<u8>,
    /// Thread rows to write (`Some`) or delete (`None`); other rows stay as they are.
    pub threads: Vec<(ThreadId, Option<Vec<u8>>)>,
}

impl fmt::Debug for StoreWrite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreWrite")
            .field("state_len", &self.state.len())
            .field("threads", &self.threads.len())
            .finish()
    }
}

/// A store of device state: a state record and thread rows per device.
///
/// Its calls block (a device calls them on tokio's blocking pool, or on its own thread from the
/// synchronous setters). [`DeviceStore::write`] returns once the change is durable: the device
/// acknowledges inbox items and posts sealed messages only after it returns.
pub trait DeviceStore: Send + Sync + fmt::Debug + 'static {
    /// Everything stored for `device`.
    ///
    /// # Errors
    /// The store cannot be read, or what it holds does not open (wrong key, altered rows).
    fn load(&self, device: DeviceId) -> Result<StoredDevice, StoreFailure>;

    /// Writes `change` for `device` atomically and durably.
    ///
    /// # Errors
    /// The store cannot be written; nothing of the change is then stored.
    fn write(&self, device: DeviceId, change: &StoreWrite) -> Result<(), StoreFailure>;
}

/// A [`DeviceStore`] in memory, for tests and devices that live as long as their process. It
/// counts what it was asked to write ([`MemoryStore::thread_writes`]).
#[derive(Default)]
pub struct MemoryStore {
    inner: Mutex<Memory>,
}

#[derive(Default)]
struct Memory {
    devices: BTreeMap<DeviceId, Rows>,
    writes: u64,
    thread_writes: u64,
    fail_writes: bool,
}

#[derive(Default)]
struct Rows {
    state: Option<Vec<u8>>,
    threads: BTreeMap<ThreadId, Vec<u8>>,
}

impl fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MemoryStore").finish_non_exhaustive()
    }
}

impl MemoryStore {
    /// An empty store.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    fn memory(&self) -> std::sync::MutexGuard<'_, Memory> {
        // A panic while holding the lock cannot leave a half-applied write (writes are applied
        // after every check), so the data is usable.
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Writes so far.
    #[must_use]
    pub fn writes(&self) -> u64 {
        self.memory().writes
    }

    /// Thread rows written or deleted so far, over all writes.
    #[must_use]
    pub fn thread_writes(&self) -> u64 {
        self.memory().thread_writes
    }

    /// The thread rows stored for `device`.
    #[must_use]
    pub fn thread_rows(&self, device: DeviceId) -> usize {
        self.memory()
            .devices
            .get(&device)
            .map_or(0, |rows| rows.threads.len())
    }

    /// Makes every write from now on fail (`true`) or succeed again (`false`).
    pub fn fail_writes(&self, fail: bool) {
        self.memory().fail_writes = fail;
    }

    /// The row stored for `thread` of `device`, as the device sealed it.
    #[must_use]
    pub fn thread_row(&self, device: DeviceId, thread: ThreadId) -> Option<Vec<u8>> {
        self.memory()
            .devices
            .get(&device)
            .and_then(|rows| rows.threads.get(&thread).cloned())
    }

    /// The state record stored for `device`, as the device sealed it.
    #[must_use]
    pub fn state_row(&self, device: DeviceId) -> Option<Vec<u8>> {
        self.memory()
            .devices
            .get(&device)
            .and_then(|rows| rows.state.clone())
    }

    /// Puts `row` in the place of `thread` of `device`, as a store that alters, moves or rolls
    /// back rows would (for tests of what the device then refuses).
    pub fn put_thread_row(&self, device: DeviceId, thread: ThreadId, row: Vec<u8>) {
        self.memory()
            .devices
            .entry(device)
            .or_default()
            .threads
            .insert(thread, row);
    }
}

impl DeviceStore for MemoryStore {
    fn load(&self, device: DeviceId) -> Result<StoredDevice, StoreFailure> {
        let memory = self.memory();
        Ok(match memory.devices.get(&device) {
            None => StoredDevice::default(),
            Some(rows) => StoredDevice {
                state: rows.state.clone(),
                threads: rows
                    .threads
                    .iter()
                    .map(|(thread, row)| (*thread, row.clone()))
                    .collect(),
            },
        })
    }

    fn write(&self, device: DeviceId, change: &StoreWrite) -> Result<(), StoreFailure> {
        let mut memory = self.memory();
        if memory.fail_writes {
            return Err(StoreFailure(
                "writes fail (MemoryStore::fail_writes)".to_owned(),
            ));
        }
        memory.writes += 1;
        memory.thread_writes += change.threads.len() as u64;
        let rows = memory.devices.entry(device).or_default();
        rows.state = Some(change.state.clone());
        for (thread, row) in &change.threads {
            match row {
                Some(row) => {
                    rows.threads.insert(*thread, row.clone());
                }
                None => {
                    rows.threads.remove(thread);
                }
            }
        }
        Ok(())
    }
}
