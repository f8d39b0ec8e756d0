//! A per-thread table with a hard size cap, for the layers that keep state per thread.

use std::collections::HashMap;

use switchboard_protocol::ThreadId;

/// Entries of threads, at most `cap` of them. When a new thread arrives at a full table, the
/// entries the caller calls idle (equivalent to no entry) go first; if that frees nothing, the
/// least recently used eighth of the table goes, so eviction costs O(log n) per insert,
/// amortised.
#[derive(Debug)]
pub(crate) struct ThreadTable<V> {
    entries: HashMap<ThreadId, Slot<V>>,
    cap: usize,
    tick: u64,
}

#[derive(Debug)]
struct Slot<V> {
    value: V,
    used: u64,
}

impl<V> ThreadTable<V> {
    /// An empty table holding at most `cap` threads (at least one).
    pub(crate) fn new(cap: usize) -> Self {
        Self {
            entries: HashMap::new(),
            cap: cap.max(1),
            tick: 0,
        }
    }

    /// How many threads the table holds.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    /// The entry of `thread`, made by `make` if absent (evicting first if the table is full).
    pub(crate) fn entry(
        &mut self,
        thread: ThreadId,
        make: impl FnOnce() -> V,
        idle: impl Fn(&V) -> bool,
    ) -> &mut V {
        self.tick = self.tick.wrapping_add(1);
        let tick = self.tick;
        if !self.entries.contains_key(&thread) && self.entries.len() >= self.cap {
            self.evict(&idle);
        }
        let slot = self.entries.entry(thread).or_insert_with(|| Slot {
            value: make(),
            used: tick,
        });
        slot.used = tick;
        &mut slot.value
    }

    /// Forgets `thread`.
    pub(crate) fn remove(&mut self, thread: ThreadId) {
        self.entries.remove(&thread);
    }

    fn evict(&mut self, idle: &impl Fn(&V) -> bool) {
        self.entries.retain(|_, slot| !idle(&slot.value));
        if self.entries.len() < self.cap {
            return;
        }
        let mut ages: Vec<u64> = self.entries.values().map(|slot| slot.used).collect();
        let drop = (self.cap / 8).max(1);
        if drop >= ages.len() {
            self.entries.clear();
            return;
        }
        let (_, threshold, _) = ages.select_nth_unstable(drop);
        let threshold = *threshold;
        // Ticks are unique per touch, so exactly `drop` entries are strictly older.
        self.entries.retain(|_, slot| slot.used >= threshold);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use super::*;

    fn thread(n: u32) -> ThreadId {
        let mut bytes = [0u8; 16];
        bytes[..4].copy_from_slice(&n.to_be_bytes());
        ThreadId::from_bytes(bytes)
    }

    #[test]
    fn table_never_grows_past_its_cap_and_keeps_recent_threads() {
        let mut table = ThreadTable::new(16);
        for n in 0..1000 {
            *table.entry(thread(n), || 0u32, |_| false) += 1;
            // Thread 0 is touched all along: it must survive every eviction.
            *table.entry(thread(0), || 0u32, |_| false) += 1;
            assert!(table.len() <= 16);
        }
        assert_eq!(*table.entry(thread(0), || 0, |_| false), 1000 + 1);
    }

    #[test]
    fn idle_entries_are_evicted_before_busy_ones() {
        let mut table = ThreadTable::new(4);
        for n in 0..4 {
            *table.entry(thread(n), || n, |_| false) += 0;
        }
        // Thread 0 is the oldest, but only thread 2 is idle.
        table.entry(thread(9), || 9, |v| *v == 2);
        assert_eq!(table.len(), 4);
        assert_eq!(*table.entry(thread(0), || 100, |_| false), 0);
        table.remove(thread(0));
        assert_eq!(table.len(), 3);
    }

    #[test]
    fn a_table_of_one_holds_the_latest_thread() {
        let mut table = ThreadTable::new(0);
        table.entry(thread(1), || 1, |_| false);
        table.entry(thread(2), || 2, |_| false);
        assert_eq!(table.len(), 1);
        assert_eq!(*table.entry(thread(2), || 0, |_| false), 2);
    }
}
