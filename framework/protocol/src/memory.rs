//! What a device remembers about threads beyond their states: for each thread the highest epoch
//! it has seen and whether it was removed, and every commit wrap it opened. A device drops a
//! thread's state when it is removed; without this record a relay that re-sends the commit that
//! once added the device would make [`ThreadState::join`](crate::ThreadState::join) start over in
//! an epoch the device already sent in: generation 0 again, so the same message key and nonce for
//! a new plaintext, and a fresh replay window for the thread's old messages.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::commit::Commit;
use crate::error::CommitError;
use crate::ids::{DeviceId, Epoch, ThreadId, Timestamp};
use crate::wrap::{DEFAULT_WRAP_LIFETIME_SECS, SeenWraps};

/// How many threads (and, separately, opened wraps) a [`DeviceMemory`] holds by default before
/// it refuses to join more threads: a million, far beyond one wrap lifetime of a busy bot.
pub const DEFAULT_MEMORY_LIMIT: usize = 1_000_000;

/// What a device remembers of one thread.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThreadMark {
    /// The highest epoch of the thread this device has seen (joined, applied, or been removed
    /// in).
    pub highest_epoch: Epoch,
    /// Whether the device was removed from the thread at `highest_epoch`.
    pub removed: bool,
    /// Until when the mark is kept: one wrap lifetime after the last time it was updated, and
    /// at least until every wrap the device opened in the thread has expired. After that, every
    /// commit that could add the device at or below `highest_epoch` carries an expired wrap.
    pub keep_until: Timestamp,
}

/// A device's memory of its threads, kept across restarts next to its keys (switchboard-client
/// stores it in the keystore). Pass it to every [`ThreadState::join`](crate::ThreadState::join),
/// and tell it about every applied commit ([`DeviceMemory::applied`]) and every removal
/// ([`DeviceMemory::removed`]). A join is refused for a thread whose mark is at or above the
/// commit's epoch, and for a wrap id opened before anywhere on this device.
///
/// Bounded: marks and wrap ids are forgotten when they can no longer matter
/// ([`DeviceMemory::prune`]); past [`DeviceMemory::limit`] entries of either kind, joins of new
/// threads are refused ([`CommitError::MemoryFull`]) rather than forgetting what protects old ones.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceMemory {
    threads: BTreeMap<ThreadId, ThreadMark>,
    wraps: SeenWraps,
    #[serde(skip, default = "default_limit")]
    limit: usize,
}

const fn default_limit() -> usize {
    DEFAULT_MEMORY_LIMIT
}

impl Default for DeviceMemory {
    fn default() -> Self {
        Self {
            threads: BTreeMap::new(),
            wraps: SeenWraps::new(),
            limit: DEFAULT_MEMORY_LIMIT,
        }
    }
}

impl DeviceMemory {
    /// An empty memory (a new device).
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// The same memory with another entry limit (see [`DEFAULT_MEMORY_LIMIT`]).
    #[must_use]
    pub fn with_limit(mut self, limit: usize) -> Self {
        self.limit = limit;
        self
    }

    /// The entry limit.
    #[must_use]
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// The mark of `thread`, if the device remembers it.
    #[must_use]
    pub fn mark(&self, thread: ThreadId) -> Option<ThreadMark> {
        self.threads.get(&thread).copied()
    }

    /// How many threads are remembered.
    #[must_use]
    pub fn threads(&self) -> usize {
        self.threads.len()
    }

    /// The opened wrap ids remembered (device-wide).
    #[must_use]
    pub fn wraps(&self) -> &SeenWraps {
        &self.wraps
    }

    pub(crate) fn wraps_mut(&mut self) -> &mut SeenWraps {
        &mut self.wraps
    }

    /// R11: whether a commit of `epoch` may add this device to `thread` at `now`. Prunes first
    /// if the memory is full.
    pub(crate) fn check_join(
        &mut self,
        thread: ThreadId,
        epoch: Epoch,
        now: Timestamp,
    ) -> Result<(), CommitError> {
        if let Some(mark) = self.mark(thread)
            && epoch <= mark.highest_epoch
        {
            return Err(CommitError::StaleJoin {
                thread,
                epoch,
                highest: mark.highest_epoch,
                removed: mark.removed,
            });
        }
        if self.threads.len() >= self.limit || self.wraps.len() >= self.limit {
            self.prune(now);
        }
        if (self.threads.len() >= self.limit && !self.threads.contains_key(&thread))
            || self.wraps.len() >= self.limit
        {
            return Err(CommitError::MemoryFull { limit: self.limit });
        }
        Ok(())
    }

    /// Records that this device holds `epoch` of `thread` (a join or an applied commit),
    /// clearing a removal below it (the admin added the device again).
    fn saw(&mut self, thread: ThreadId, epoch: Epoch, removed: bool, keep_until: Timestamp) {
        let mark = self.threads.entry(thread).or_insert(ThreadMark {
            highest_epoch: epoch,
            removed,
            keep_until,
        });
        if epoch >= mark.highest_epoch {
            mark.removed = removed || (epoch == mark.highest_epoch && mark.removed);
            mark.highest_epoch = epoch;
        }
        mark.keep_until = mark.keep_until.max(keep_until);
    }

    /// Records a commit this device applied (or joined from) as `me`: its epoch, and the wrap id
    /// it opened (device-wide). Call it after every successful
    /// [`ThreadState::apply_commit`](crate::ThreadState::apply_commit); `join` records itself.
    pub fn applied(&mut self, me: DeviceId, commit: &Commit, now: Timestamp) {
        let mut keep_until = now.plus(DEFAULT_WRAP_LIFETIME_SECS);
        if let Some(wrap) = commit.wrap_for(me) {
            keep_until = keep_until.max(wrap.expires_at);
            self.wraps.insert(wrap.wrap_id, wrap.expires_at);
        }
        self.saw(commit.thread, commit.epoch, false, keep_until);
    }

    /// Records that this device was removed from `thread` by the commit of `epoch` (it drops
    /// the thread's state): from now on it refuses to join the thread at or below `epoch`.
    pub fn removed(&mut self, thread: ThreadId, epoch: Epoch, now: Timestamp) {
        self.saw(thread, epoch, true, now.plus(DEFAULT_WRAP_LIFETIME_SECS));
    }

    /// Forgets wrap ids that expired by `now`, and marks kept until before `now`. Neither can
    /// enable a replay then: a commit that could use them carries an expired wrap, refused (W5).
    pub fn prune(&mut self, now: Timestamp) {
        self.wraps.prune(now);
        self.threads.retain(|_, mark| mark.keep_until > now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::WrapId;

    const NOW: Timestamp = Timestamp(1_000);

    fn thread(n: u8) -> ThreadId {
        ThreadId::from_bytes([n; 16])
    }

    #[test]
    fn joins_at_or_below_a_seen_epoch_are_refused() {
        let mut memory = DeviceMemory::new();
        memory.saw(thread(1), Epoch(5), false, NOW.plus(10));
        for epoch in [0, 4, 5] {
            let err = memory.check_join(thread(1), Epoch(epoch), NOW).unwrap_err();
            assert!(
                matches!(
                    err,
                    CommitError::StaleJoin {
                        removed: false,
                        highest: Epoch(5),
                        ..
                    }
                ),
                "{err}"
            );
        }
        memory.check_join(thread(1), Epoch(6), NOW).unwrap();
        memory.check_join(thread(2), Epoch(0), NOW).unwrap();
        // A removal is remembered with its epoch; a later re-add clears it.
        memory.removed(thread(1), Epoch(7), NOW);
        assert!(memory.mark(thread(1)).unwrap().removed);
        assert!(matches!(
            memory.check_join(thread(1), Epoch(7), NOW),
            Err(CommitError::StaleJoin { removed: true, .. })
        ));
        memory.saw(thread(1), Epoch(8), false, NOW);
        assert!(!memory.mark(thread(1)).unwrap().removed);
        // An older epoch never lowers the mark.
        memory.removed(thread(1), Epoch(3), NOW);
        assert_eq!(memory.mark(thread(1)).unwrap().highest_epoch, Epoch(8));
        assert!(!memory.mark(thread(1)).unwrap().removed);
    }

    #[test]
    fn memory_is_bounded_prunes_what_expired_and_then_refuses_new_threads() {
        let mut memory = DeviceMemory::new().with_limit(3);
        for n in 0..3 {
            memory.removed(thread(n), Epoch(1), Timestamp(NOW.0 + u64::from(n)));
        }
        // Full: a fourth thread is refused while every mark may still matter...
        let err = memory.check_join(thread(9), Epoch(1), NOW).unwrap_err();
        assert!(matches!(err, CommitError::MemoryFull { limit: 3 }), "{err}");
        // ... and known threads are still judged by their marks.
        assert!(matches!(
            memory.check_join(thread(0), Epoch(1), NOW),
            Err(CommitError::StaleJoin { .. })
        ));
        // Once the oldest mark's wraps can only be expired, it is forgotten and room is made.
        let later = NOW.plus(DEFAULT_WRAP_LIFETIME_SECS);
        memory.check_join(thread(9), Epoch(1), later).unwrap();
        assert_eq!(memory.threads(), 2);
        assert!(memory.mark(thread(0)).is_none());
        // Wrap ids count against the limit too.
        let mut memory = DeviceMemory::new().with_limit(2);
        memory
            .wraps_mut()
            .insert(WrapId::from_bytes([1; 16]), NOW.plus(5));
        memory
            .wraps_mut()
            .insert(WrapId::from_bytes([2; 16]), NOW.plus(5));
        assert!(matches!(
            memory.check_join(thread(1), Epoch(1), NOW),
            Err(CommitError::MemoryFull { .. })
        ));
        memory.check_join(thread(1), Epoch(1), NOW.plus(5)).unwrap();
        assert!(memory.wraps().is_empty());
    }

    #[test]
    fn memory_round_trips_through_json_and_refuses_unknown_fields() {
        let mut memory = DeviceMemory::new();
        memory.removed(thread(1), Epoch(2), NOW);
        memory
            .wraps_mut()
            .insert(WrapId::from_bytes([1; 16]), NOW.plus(5));
        let json = serde_json::to_value(&memory).unwrap();
        let back: DeviceMemory = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(back, memory);
        let mut extra = json;
        extra
            .as_object_mut()
            .unwrap()
            .insert("limit".into(), serde_json::json!(1));
        assert!(serde_json::from_value::<DeviceMemory>(extra).is_err());
    }
}
