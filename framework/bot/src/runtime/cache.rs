//! The threads' decoded state kept between events, so that a thread's next event needs neither a
//! read nor a decode from the store. Bounded: past its capacity the least recently used
//! thread is forgotten (its next event reads the store again).
//!
//! The cache is only a shortcut: each commit still compares the thread's version in the store
//! (another instance may have moved it), and a conflict drops the cached thread and reads the
//! store again.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use switchboard_protocol::ThreadId;

/// Threads cached by default (see `Runtime::thread_cache`).
pub(crate) const DEFAULT_CAPACITY: usize = 1024;

/// A bounded map of threads to their cached state, least recently used out first.
#[derive(Debug)]
pub(crate) struct ThreadCache<T> {
    capacity: usize,
    inner: Mutex<Inner<T>>,
}

#[derive(Debug)]
struct Inner<T> {
    /// Each entry with the tick it was last put back at.
    entries: HashMap<ThreadId, (u64, T)>,
    tick: u64,
}

impl<T> ThreadCache<T> {
    /// A cache of at most `capacity` threads (0: nothing is cached).
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            capacity,
            inner: Mutex::new(Inner {
                entries: HashMap::new(),
                tick: 0,
            }),
        }
    }

    /// Takes the thread's entry out (its worker owns it while it runs).
    pub(crate) fn take(&self, thread: ThreadId) -> Option<T> {
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner.entries.remove(&thread).map(|(_, value)| value)
    }

    /// Puts the thread's entry back, forgetting the least recently used threads beyond the
    /// capacity.
    pub(crate) fn put(&self, thread: ThreadId, value: T) {
        if self.capacity == 0 {
            return;
        }
        let mut inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner.tick += 1;
        let tick = inner.tick;
        inner.entries.insert(thread, (tick, value));
        if inner.entries.len() > self.capacity {
            // Forget an eighth at once, so that the scan runs once per many puts.
            let excess = inner.entries.len() - self.capacity + self.capacity / 8;
            let mut ticks: Vec<u64> = inner.entries.values().map(|(t, _)| *t).collect();
            ticks.sort_unstable();
            let cutoff = ticks.get(excess.saturating_sub(1)).copied().unwrap_or(0);
            inner.entries.retain(|_, (t, _)| *t > cutoff);
        }
    }

    /// Threads cached now.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        let inner = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        inner.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn thread(n: u8) -> ThreadId {
        ThreadId::from_bytes([n; 16])
    }

    #[test]
    fn a_taken_entry_is_gone_until_put_back() {
        let cache = ThreadCache::new(4);
        cache.put(thread(1), "a");
        assert_eq!(cache.take(thread(1)), Some("a"));
        assert_eq!(cache.take(thread(1)), None);
        cache.put(thread(1), "b");
        assert_eq!(cache.take(thread(1)), Some("b"));
    }

    #[test]
    fn the_least_recently_used_threads_go_beyond_the_capacity() {
        let cache = ThreadCache::new(16);
        for n in 0..16 {
            cache.put(thread(n), n);
        }
        // Thread 0 is used again: it is now the most recent.
        let zero = cache.take(thread(0)).unwrap_or_default();
        cache.put(thread(0), zero);
        cache.put(thread(100), 100);
        assert!(cache.len() <= 16);
        assert_eq!(cache.take(thread(0)), Some(0));
        assert_eq!(cache.take(thread(100)), Some(100));
        assert_eq!(cache.take(thread(1)), None, "the oldest went first");
        for n in 0..=255 {
            cache.put(thread(n), n);
            assert!(cache.len() <= 16);
        }
    }

    #[test]
    fn a_cache_of_zero_keeps_nothing() {
        let cache = ThreadCache::new(0);
        cache.put(thread(1), 1);
        assert_eq!(cache.take(thread(1)), None);
    }
}
