//! An in-memory [`BotStore`] for tests: nothing survives the process.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Mutex, PoisonError};

use async_trait::async_trait;
use switchboard_protocol::ThreadId;

use super::{BotStore, Effects, OutboxEntry, StoreError, ThreadRecord};

#[derive(Debug, Default)]
struct Inner {
    threads: HashMap<ThreadId, ThreadRecord>,
    journal: HashMap<ThreadId, HashSet<String>>,
    outbox: BTreeMap<u64, OutboxEntry>,
    next_id: u64,
    meta: HashMap<String, Vec<u8>>,
}

/// The in-memory store.
#[derive(Debug, Default)]
pub struct MemoryStore(Mutex<Inner>);

impl MemoryStore {
    /// An empty store.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[async_trait]
impl BotStore for MemoryStore {
    async fn load(&self, thread: ThreadId) -> Result<Option<ThreadRecord>, StoreError> {
        Ok(self.inner().threads.get(&thread).cloned())
    }

    async fn handled(&self, thread: ThreadId, key: &str) -> Result<bool, StoreError> {
        Ok(self
            .inner()
            .journal
            .get(&thread)
            .is_some_and(|keys| keys.contains(key)))
    }

    async fn commit(&self, effects: Effects) -> Result<u64, StoreError> {
        let mut inner = self.inner();
        let current = inner.threads.get(&effects.thread).map(|r| r.version);
        if current != effects.expected_version {
            return Err(StoreError::Conflict {
                thread: effects.thread,
            });
        }
        let version = current.map_or(1, |v| v + 1);
        let data = match (effects.data, inner.threads.remove(&effects.thread)) {
            (Some(data), _) => data,
            (None, Some(old)) => old.data,
            (None, None) => Vec::new(),
        };
        inner
            .threads
            .insert(effects.thread, ThreadRecord { version, data });
        inner
            .journal
            .entry(effects.thread)
            .or_default()
            .extend(effects.handled);
        for mut entry in effects.outbox {
            inner.next_id += 1;
            entry.id = inner.next_id;
            inner.outbox.insert(entry.id, entry);
        }
        Ok(version)
    }

    async fn outbox(&self, limit: u32) -> Result<Vec<OutboxEntry>, StoreError> {
        Ok(self
            .inner()
            .outbox
            .values()
            .take(limit as usize)
            .cloned()
            .collect())
    }

    async fn sent(&self, message_id: &str) -> Result<(), StoreError> {
        self.inner()
            .outbox
            .retain(|_, entry| entry.message_id != message_id);
        Ok(())
    }

    async fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.inner().meta.get(key).cloned())
    }

    async fn put_meta(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.inner().meta.insert(key.to_owned(), value.to_vec());
        Ok(())
    }

    async fn prune_journal(&self, _older_than: u64) -> Result<u64, StoreError> {
        Ok(0)
    }
}
