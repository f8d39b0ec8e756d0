//! [`MemoryStore`]: the store in process memory, for tests. Same semantics as the database
//! stores (compare-and-swap, journal and outbox conflicts, limits), nothing survives the process
//! and nothing is encrypted.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;
use switchboard_protocol::ThreadId;

use super::{
    BotStore, Counters, Effects, MAX_KEY_LEN, MAX_OUTBOX_PAGE, OutboxEntry, StoreError, StoreStats,
    ThreadRecord, at_most, next_version, now_secs, validate, validate_meta,
};

/// A [`BotStore`] in memory (for tests): one mutex, every commit its own "transaction".
#[derive(Debug, Default)]
pub struct MemoryStore {
    state: Mutex<State>,
    counters: Counters,
}

#[derive(Debug, Default)]
struct State {
    threads: HashMap<ThreadId, ThreadRecord>,
    /// Journal keys and when they were handled.
    journal: HashMap<(ThreadId, String), u64>,
    /// Outbox entries by id (the order of commits).
    outbox: BTreeMap<u64, OutboxEntry>,
    /// Outbox ids by message id.
    outbox_ids: HashMap<String, u64>,
    next_outbox_id: u64,
    meta: HashMap<String, Vec<u8>>,
}

impl MemoryStore {
    /// An empty store.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding the lock; if something did, the state is still whole
        // (every commit checks before it writes).
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl State {
    /// Checks every condition of `effects` first, then writes: a conflict writes nothing.
    fn commit(&mut self, effects: Effects) -> Result<u64, StoreError> {
        let version = next_version(&effects)?;
        let conflict = StoreError::Conflict {
            thread: effects.thread,
        };
        let current = self.threads.get(&effects.thread);
        if current.map(|r| r.version) != effects.expected_version {
            return Err(conflict);
        }
        let mut history = current.map(|r| r.history.clone()).unwrap_or_default();
        let mut positions: HashSet<u64> = history.iter().map(|e| e.index).collect();
        if effects.history.iter().any(|e| !positions.insert(e.index)) {
            return Err(conflict);
        }
        let handled: HashSet<&String> = effects.handled.iter().collect();
        if handled
            .iter()
            .any(|key| self.journal.contains_key(&(effects.thread, (*key).clone())))
        {
            return Err(conflict);
        }
        let mut ids = HashSet::new();
        if effects.outbox.iter().any(|e| {
            !ids.insert(e.message_id.as_str()) || self.outbox_ids.contains_key(&e.message_id)
        }) {
            return Err(conflict);
        }
        let now = now_secs();
        for key in handled {
            self.journal.insert((effects.thread, key.clone()), now);
        }
        for mut entry in effects.outbox {
            self.next_outbox_id += 1;
            entry.id = self.next_outbox_id;
            self.outbox_ids.insert(entry.message_id.clone(), entry.id);
            self.outbox.insert(entry.id, entry);
        }
        if let Some(data) = effects.data {
            history.extend(effects.history);
            history.retain(|e| e.index >= effects.history_from);
            history.sort_by_key(|e| e.index);
            self.threads.insert(
                effects.thread,
                ThreadRecord {
                    version,
                    data,
                    history,
                },
            );
        } else if effects.history_from > 0
            && let Some(record) = self.threads.get_mut(&effects.thread)
        {
            record.history.retain(|e| e.index >= effects.history_from);
        }
        Ok(version)
    }
}

#[async_trait]
impl BotStore for MemoryStore {
    async fn load(&self, thread: ThreadId) -> Result<Option<ThreadRecord>, StoreError> {
        Ok(self.state().threads.get(&thread).cloned())
    }

    async fn handled(&self, thread: ThreadId, key: &str) -> Result<bool, StoreError> {
        at_most("a journal key", key.len(), MAX_KEY_LEN)?;
        Ok(self.state().journal.contains_key(&(thread, key.to_owned())))
    }

    async fn commit(&self, effects: Effects) -> Result<u64, StoreError> {
        validate(&effects)?;
        let outcome = self.state().commit(effects);
        if outcome.is_ok() {
            self.counters.transactions.fetch_add(1, Ordering::Relaxed);
        }
        self.counters.outcome(&outcome);
        outcome
    }

    async fn outbox(&self, limit: u32) -> Result<Vec<OutboxEntry>, StoreError> {
        let limit = usize::try_from(limit.min(MAX_OUTBOX_PAGE)).unwrap_or(usize::MAX);
        Ok(self.state().outbox.values().take(limit).cloned().collect())
    }

    async fn outbox_for(
        &self,
        thread: ThreadId,
        limit: u32,
    ) -> Result<Vec<OutboxEntry>, StoreError> {
        let limit = usize::try_from(limit.min(MAX_OUTBOX_PAGE)).unwrap_or(usize::MAX);
        Ok(self
            .state()
            .outbox
            .values()
            .filter(|e| e.thread == thread)
            .take(limit)
            .cloned()
            .collect())
    }

    async fn sent(&self, message_id: &str) -> Result<(), StoreError> {
        let mut state = self.state();
        if let Some(id) = state.outbox_ids.remove(message_id) {
            state.outbox.remove(&id);
        }
        Ok(())
    }

    async fn get_meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        validate_meta(key, None)?;
        Ok(self.state().meta.get(key).cloned())
    }

    async fn put_meta(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        validate_meta(key, Some(value))?;
        self.state().meta.insert(key.to_owned(), value.to_vec());
        Ok(())
    }

    async fn prune_journal(&self, older_than: u64) -> Result<u64, StoreError> {
        let mut state = self.state();
        let before = state.journal.len();
        state
            .journal
            .retain(|_, handled_at| *handled_at >= older_than);
        Ok(u64::try_from(before - state.journal.len()).unwrap_or(u64::MAX))
    }

    fn stats(&self) -> StoreStats {
        self.counters.snapshot()
    }
}
