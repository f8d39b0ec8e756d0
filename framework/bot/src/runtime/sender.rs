//! The sender: posts each thread's outbox entries strictly in commit order. A post that fails
//! transiently blocks the thread's later entries until it succeeds (the sweep retries it);
//! other threads are not held up.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use switchboard_protocol::ThreadId;

use crate::error::BotError;
use crate::runtime::shared::Shared;
use crate::store::{OutboxEntry, StoreError};

/// How long a typing message may wait for its turn before it is stale (not posted).
pub(crate) const TYPING_STALE: Duration = Duration::from_secs(5);

/// The entries of one thread waiting to be posted, oldest first.
#[derive(Debug, Default)]
struct ThreadQueue {
    entries: VecDeque<OutboxEntry>,
    /// A task is posting this thread's entries (the others only queue theirs).
    busy: bool,
    /// The typing messages among `entries` (by message id), with when they were queued.
    typing: HashMap<String, Instant>,
}

impl ThreadQueue {
    /// Drops typing messages at the front that are stale: queued too long ago, or followed by
    /// another message (the reply they announced, or a newer typing message). Returns their
    /// message ids. (A dropped typing message leaves its generation unused: peers accept gaps
    /// in a sender's generations, within the protocol's `max_jump`.)
    fn drop_stale_typing(&mut self, now: Instant) -> Vec<String> {
        let mut dropped = Vec::new();
        while let Some(front) = self.entries.front() {
            let Some(queued) = self.typing.get(&front.message_id) else {
                break;
            };
            let stale = self.entries.len() > 1 || now.duration_since(*queued) > TYPING_STALE;
            if !stale {
                break;
            }
            let id = front.message_id.clone();
            self.typing.remove(&id);
            self.entries.pop_front();
            dropped.push(id);
        }
        dropped
    }
}

/// The threads with entries waiting to be posted.
#[derive(Debug, Default)]
pub(crate) struct Sender {
    threads: Mutex<HashMap<ThreadId, ThreadQueue>>,
}

impl Sender {
    fn threads(&self) -> MutexGuard<'_, HashMap<ThreadId, ThreadQueue>> {
        self.threads.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues entries a worker just committed (in order) behind the thread's earlier ones.
    pub(crate) fn push(&self, thread: ThreadId, entries: Vec<OutboxEntry>) {
        let mut threads = self.threads();
        let queue = threads.entry(thread).or_default();
        for entry in entries {
            if !queue
                .entries
                .iter()
                .any(|e| e.message_id == entry.message_id)
            {
                queue.entries.push_back(entry);
            }
        }
    }

    /// Queues a typing message a worker just committed behind the thread's earlier entries; it
    /// is not posted if it is stale by its turn (see [`TYPING_STALE`]).
    pub(crate) fn push_typing(&self, thread: ThreadId, entry: OutboxEntry) {
        let mut threads = self.threads();
        let queue = threads.entry(thread).or_default();
        queue
            .typing
            .insert(entry.message_id.clone(), Instant::now());
        queue.entries.push_back(entry);
    }

    /// Merges what the store's outbox holds of a thread (oldest first): entries the queue
    /// lacks (left by an earlier process, or posted meanwhile: the relay is idempotent by
    /// message id) go before the queue's own, which were committed after them or are posted.
    pub(crate) fn merge(&self, thread: ThreadId, stored: Vec<OutboxEntry>) {
        let mut threads = self.threads();
        let queue = threads.entry(thread).or_default();
        let ids: HashSet<&str> = stored.iter().map(|e| e.message_id.as_str()).collect();
        let newer = queue
            .entries
            .drain(..)
            .filter(|e| !ids.contains(e.message_id.as_str()))
            .collect::<Vec<_>>();
        queue.entries = stored.into_iter().chain(newer).collect();
    }

    /// The threads with entries waiting.
    pub(crate) fn waiting(&self) -> Vec<ThreadId> {
        self.threads().keys().copied().collect()
    }

    /// Takes the thread's posting turn; `None` if another task has it or nothing waits.
    fn claim<'a>(&'a self, thread: ThreadId) -> Option<Turn<'a>> {
        let mut threads = self.threads();
        let queue = threads.get_mut(&thread)?;
        if queue.busy {
            return None;
        }
        queue.busy = true;
        Some(Turn {
            sender: self,
            thread,
        })
    }
}

/// A thread's posting turn: given back when dropped (also if the posting task is cancelled).
struct Turn<'a> {
    sender: &'a Sender,
    thread: ThreadId,
}

impl Turn<'_> {
    /// The oldest entry waiting, or `None` (and the thread forgotten) if there is none; stale
    /// typing messages in front of it are dropped and their ids added to `stale`.
    fn next(&self, stale: &mut Vec<String>) -> Option<OutboxEntry> {
        let mut threads = self.sender.threads();
        let queue = threads.get_mut(&self.thread)?;
        stale.extend(queue.drop_stale_typing(Instant::now()));
        let next = queue.entries.front().cloned();
        if next.is_none() {
            threads.remove(&self.thread);
        }
        next
    }

    /// The entry is done with (posted, or dropped).
    fn done(&self, message_id: &str) {
        if let Some(queue) = self.sender.threads().get_mut(&self.thread) {
            queue.entries.retain(|e| e.message_id != message_id);
            queue.typing.remove(message_id);
        }
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        if let Some(queue) = self.sender.threads().get_mut(&self.thread) {
            queue.busy = false;
        }
    }
}

/// Posts the thread's waiting entries in order, unless another task is posting them. Stops
/// at the first entry whose post fails transiently (it stays first; the sweep retries it).
/// An entry that cannot be decoded, or that the relay refuses for good, is dropped (logged
/// and counted): it could never be posted, and would block the thread for ever.
pub(crate) async fn post_thread(shared: &Shared, thread: ThreadId) -> Result<(), BotError> {
    let Some(turn) = shared.sender.claim(thread) else {
        return Ok(());
    };
    let mut stale = Vec::new();
    while let Some(entry) = turn.next(&mut stale) {
        for id in stale.drain(..) {
            tracing::debug!(message = %id, "a stale typing message is not posted");
            shared.forget(id);
        }
        let id = entry.message_id.clone();
        match shared.deliver(entry).await {
            Ok(()) => turn.done(&id),
            Err(BotError::Store(StoreError::Corrupt(reason))) => {
                tracing::error!(%reason, "dropping an outbox entry that does not decode");
                drop_entry(shared, &turn, &id).await?;
            }
            Err(e) if !e.is_transient() => {
                tracing::error!(error = %e, message = %id, "the relay refused a reply for good; dropping it");
                shared.count_error("delivery_dropped");
                drop_entry(shared, &turn, &id).await?;
            }
            Err(e) => return Err(e),
        }
    }
    for id in stale {
        shared.forget(id);
    }
    Ok(())
}

async fn drop_entry(shared: &Shared, turn: &Turn<'_>, id: &str) -> Result<(), BotError> {
    shared.store.sent(id).await?;
    turn.done(id);
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use super::*;

    fn entry(thread: ThreadId, id: &str) -> OutboxEntry {
        OutboxEntry {
            id: 0,
            thread,
            message_id: id.to_owned(),
            body: Vec::new(),
        }
    }

    fn ids(sender: &Sender, thread: ThreadId) -> Vec<String> {
        sender.threads()[&thread]
            .entries
            .iter()
            .map(|e| e.message_id.clone())
            .collect()
    }

    #[test]
    fn a_typing_message_is_not_posted_once_stale() {
        let thread = ThreadId::from_bytes([2; 16]);
        let sender = Sender::default();
        sender.push(thread, vec![entry(thread, "reply-1")]);
        sender.push_typing(thread, entry(thread, "typing-1"));
        let now = Instant::now();
        // Behind a reply, the typing message waits its turn.
        {
            let mut threads = sender.threads();
            let queue = threads.get_mut(&thread).unwrap();
            assert!(queue.drop_stale_typing(now).is_empty());
            queue.entries.pop_front();
            // Alone and fresh: posted.
            assert!(queue.drop_stale_typing(now).is_empty());
            // Too old by its turn: dropped.
            assert_eq!(
                queue.drop_stale_typing(now + TYPING_STALE + Duration::from_secs(1)),
                ["typing-1"]
            );
            assert!(queue.entries.is_empty() && queue.typing.is_empty());
        }
        // Followed by the reply it announced (or another typing message): dropped at once.
        sender.push_typing(thread, entry(thread, "typing-2"));
        sender.push_typing(thread, entry(thread, "typing-3"));
        sender.push(thread, vec![entry(thread, "reply-2")]);
        let mut threads = sender.threads();
        let queue = threads.get_mut(&thread).unwrap();
        assert_eq!(queue.drop_stale_typing(now), ["typing-2", "typing-3"]);
        assert_eq!(ids_of(queue), ["reply-2"]);
    }

    fn ids_of(queue: &ThreadQueue) -> Vec<&str> {
        queue
            .entries
            .iter()
            .map(|e| e.message_id.as_str())
            .collect()
    }

    #[test]
    fn stored_entries_go_before_the_newer_ones_queued() {
        let thread = ThreadId::from_bytes([1; 16]);
        let sender = Sender::default();
        sender.push(thread, vec![entry(thread, "c"), entry(thread, "b")]);
        sender.push(thread, vec![entry(thread, "c")]);
        assert_eq!(ids(&sender, thread), ["c", "b"]);
        sender.merge(thread, vec![entry(thread, "a"), entry(thread, "b")]);
        assert_eq!(ids(&sender, thread), ["a", "b", "c"]);
    }

    #[test]
    fn one_turn_per_thread_given_back_on_drop() {
        let thread = ThreadId::from_bytes([1; 16]);
        let sender = Sender::default();
        assert!(sender.claim(thread).is_none(), "nothing waits");
        sender.push(thread, vec![entry(thread, "a")]);
        let turn = sender.claim(thread).unwrap();
        assert!(sender.claim(thread).is_none());
        assert!(sender.claim(ThreadId::from_bytes([2; 16])).is_none());
        assert_eq!(turn.next(&mut Vec::new()).unwrap().message_id, "a");
        drop(turn);
        let turn = sender.claim(thread).unwrap();
        turn.done("a");
        assert!(turn.next(&mut Vec::new()).is_none());
        drop(turn);
        assert!(sender.waiting().is_empty());
    }
}
