//! What the runtime's tasks share.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};

use switchboard_client::{DeviceRole, RelayClient};
use switchboard_protocol::{
    DeviceId, DeviceKeys, EntityId, Fingerprint, SealedMessage, ThreadId, decode,
};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

use crate::error::BotError;
use crate::layers::Metrics;
use crate::pipeline::{Delivery, DeliveryService, InboundService, OutboundService};
use crate::runtime::worker::WorkItem;
use crate::store::{BotStore, OutboxEntry};

/// Which inbox items are fetched and not yet committed: what may be acknowledged.
#[derive(Debug, Default)]
pub(crate) struct AckTracker {
    pending: BTreeSet<u64>,
    highest: u64,
}

impl AckTracker {
    pub(crate) fn starting_at(cursor: u64) -> Self {
        Self {
            pending: BTreeSet::new(),
            highest: cursor,
        }
    }

    pub(crate) fn fetched(&mut self, seq: u64) {
        self.pending.insert(seq);
        self.highest = self.highest.max(seq);
    }

    /// Positions the relay left out of a page (unreadable items): nothing to wait for.
    pub(crate) fn skipped_to(&mut self, seq: u64) {
        self.highest = self.highest.max(seq);
    }

    pub(crate) fn done(&mut self, seq: u64) {
        self.pending.remove(&seq);
    }

    /// The highest position below which every fetched item is committed.
    pub(crate) fn up_to(&self) -> u64 {
        self.pending
            .first()
            .map_or(self.highest, |first| first.saturating_sub(1))
    }
}

/// Everything the runtime's tasks share.
pub(crate) struct Shared {
    pub(crate) store: Arc<dyn BotStore>,
    pub(crate) keys: RwLock<Arc<DeviceKeys>>,
    pub(crate) role: DeviceRole,
    pub(crate) relay: RelayClient,
    pub(crate) me: DeviceId,
    pub(crate) entity: EntityId,
    pub(crate) fingerprint: Fingerprint,
    pub(crate) inbound: InboundService,
    pub(crate) outbound: OutboundService,
    pub(crate) delivery: DeliveryService,
    pub(crate) http: reqwest::Client,
    pub(crate) shutdown: CancellationToken,
    pub(crate) metrics: Metrics,
    pub(crate) instance: String,
    /// Fetched items not yet handled (backpressure: at most `max_inflight`).
    pub(crate) inflight: Arc<Semaphore>,
    pub(crate) max_inflight: u32,
    /// Threads being worked on at once.
    pub(crate) thread_slots: Arc<Semaphore>,
    /// Threads' decoded state between their workers.
    pub(crate) cache: crate::runtime::cache::ThreadCache<crate::runtime::worker::Cached>,
    /// The queue of each busy thread.
    pub(crate) queues: Mutex<HashMap<ThreadId, mpsc::UnboundedSender<WorkItem>>>,
    pub(crate) acks: Mutex<AckTracker>,
    /// Each thread's entries waiting to be posted, in order.
    pub(crate) sender: crate::runtime::sender::Sender,
    pub(crate) ready: AtomicBool,
    /// Threads whose stored state cannot be read or written: their items are left
    /// unacknowledged at the relay (delivered again after a restart) and the instance is not
    /// ready until it restarts.
    pub(crate) quarantined: Mutex<HashSet<ThreadId>>,
    /// The position acknowledged (and kept as this instance's cursor).
    pub(crate) acked: AtomicU64,
    /// Outbox entries posted and not yet deleted from the store: deleted together a moment
    /// later (see [`Shared::forget`]).
    pub(crate) forgetting: Arc<Mutex<Vec<String>>>,
    /// Whether the inbox is read over the relay's inbox stream (else long-polled).
    pub(crate) stream_inbox: bool,
}

/// How long a posted outbox entry waits to be deleted with the others posted meanwhile (one
/// store transaction for all of them instead of one each).
const FORGET_AFTER: std::time::Duration = std::time::Duration::from_millis(50);

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("device", &self.me)
            .field("instance", &self.instance)
            .finish_non_exhaustive()
    }
}

impl Shared {
    pub(crate) fn keys(&self) -> Arc<DeviceKeys> {
        Arc::clone(&self.keys.read().unwrap_or_else(PoisonError::into_inner))
    }

    pub(crate) fn acks(&self) -> MutexGuard<'_, AckTracker> {
        self.acks.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
            && !self.shutdown.is_cancelled()
            && self.quarantine_count() == 0
    }

    /// How many threads are quarantined.
    pub(crate) fn quarantine_count(&self) -> usize {
        self.quarantined
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }

    /// Whether the thread is quarantined.
    pub(crate) fn is_quarantined(&self, thread: ThreadId) -> bool {
        self.quarantined
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(&thread)
    }

    /// Stops handling a thread whose stored state cannot be used: its items (this one and any
    /// later) are not acknowledged, so the relay keeps them for a restart after the store is
    /// mended; the instance reports not ready meanwhile.
    pub(crate) fn quarantine(&self, thread: ThreadId, why: &BotError) {
        let mut quarantined = self
            .quarantined
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if quarantined.insert(thread) {
            self.metrics
                .counter("switchboard_threads_quarantined_total", &[])
                .inc();
            tracing::error!(
                %thread,
                error = %why,
                "thread quarantined: its stored state cannot be used; its messages stay at the \
                 relay (unacknowledged) until the bot restarts with a mended store"
            );
        }
    }

    /// Counts an error by kind.
    pub(crate) fn count_error(&self, kind: &'static str) {
        self.metrics
            .counter("switchboard_errors_total", &[("kind", kind)])
            .inc();
    }

    /// Posts one outbox entry through the delivery pipeline and marks it sent.
    pub(crate) async fn deliver(&self, entry: OutboxEntry) -> Result<(), BotError> {
        let message: SealedMessage = decode(&entry.body).map_err(|e| {
            BotError::Store(crate::store::StoreError::Corrupt(format!(
                "outbox entry {}: {e}",
                entry.message_id
            )))
        })?;
        let delivery = Delivery {
            thread: entry.thread,
            message,
        };
        match self.delivery.clone().oneshot(delivery).await {
            Ok(()) => {}
            Err(e) => {
                self.count_error(e.label());
                return Err(e);
            }
        }
        self.metrics
            .counter("switchboard_replies_sent_total", &[])
            .inc();
        self.forget(entry.message_id);
        Ok(())
    }

    /// Forgets an outbox entry that was posted (or is not to be): it is deleted from the store
    /// with the other entries posted within [`FORGET_AFTER`], in one transaction. If that does
    /// not commit (or the process stops first), the sweep or the next process posts the message
    /// again and the relay answers it as stored before (idempotent by message id); it is
    /// forgotten then.
    pub(crate) fn forget(&self, message_id: String) {
        let first = {
            let mut ids = self
                .forgetting
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            ids.push(message_id);
            ids.len() == 1
        };
        if first {
            let store = Arc::clone(&self.store);
            let ids = Arc::clone(&self.forgetting);
            tokio::spawn(async move {
                tokio::time::sleep(FORGET_AFTER).await;
                delete_posted(store.as_ref(), &ids).await;
            });
        }
    }

    /// Deletes the posted entries waiting to be forgotten now (at shutdown).
    pub(crate) async fn flush_forgotten(&self) {
        delete_posted(self.store.as_ref(), &self.forgetting).await;
    }

    /// Puts a thread's entries read from the store's outbox (oldest first) in front of its
    /// queue (see [`Sender::merge`](crate::runtime::sender::Sender::merge)), leaving out those
    /// posted already and waiting to be deleted.
    pub(crate) fn merge_stored(&self, thread: ThreadId, mut stored: Vec<OutboxEntry>) {
        {
            let forgetting = self
                .forgetting
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            stored.retain(|e| !forgetting.contains(&e.message_id));
        }
        if !stored.is_empty() {
            self.sender.merge(thread, stored);
        }
    }
}

/// Deletes the posted entries of `ids` from the store; the group writer puts the deletions,
/// queued at once, in one transaction.
async fn delete_posted(store: &dyn BotStore, ids: &Mutex<Vec<String>>) {
    let batch = std::mem::take(&mut *ids.lock().unwrap_or_else(PoisonError::into_inner));
    let deleted = futures_util::future::join_all(batch.iter().map(|id| store.sent(id))).await;
    for (id, outcome) in batch.iter().zip(deleted) {
        if let Err(e) = outcome {
            tracing::warn!(error = %e, message = %id, "cannot forget an outbox entry; it will be posted again");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acks_stop_below_the_oldest_item_not_committed() {
        let mut acks = AckTracker::starting_at(10);
        assert_eq!(acks.up_to(), 10);
        for seq in [11, 12, 13] {
            acks.fetched(seq);
        }
        assert_eq!(acks.up_to(), 10);
        acks.done(12);
        assert_eq!(acks.up_to(), 10);
        acks.done(11);
        assert_eq!(acks.up_to(), 12);
        acks.done(13);
        assert_eq!(acks.up_to(), 13);
        acks.skipped_to(20);
        assert_eq!(acks.up_to(), 20);
    }
}
