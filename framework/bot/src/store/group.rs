//! Group commit: one writer task per store takes every commit queued while it was busy (up to
//! [`MAX_BATCH`], lingering up to [`LINGER`] for more when there is company) and applies them in
//! one database transaction, then answers each caller through its own oneshot.
//!
//! The callers seal their blobs before queueing, so the writer only talks to the database; sqlx
//! does the I/O (SQLite on its own worker thread), so no fsync blocks a tokio worker.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_trait::async_trait;
use switchboard_protocol::{DeviceId, ThreadId};
use tokio::sync::{mpsc, oneshot};

use super::{Counters, Effects, MAX_BATCH, StoreError, StoreKey, next_version, now_secs, validate};

/// How long the writer waits for more commits once it holds more than one.
pub(super) const LINGER: Duration = Duration::from_millis(1);

/// One event's effects ready for the database: validated, blob sealed, numbers converted.
#[derive(Debug)]
pub(super) struct Prepared {
    pub(super) thread: ThreadId,
    /// The thread id as stored (lowercase hex).
    pub(super) thread_hex: String,
    pub(super) expected: Option<i64>,
    pub(super) new_version: u64,
    /// Nonce and ciphertext of the new blob.
    pub(super) sealed: Option<(Vec<u8>, Vec<u8>)>,
    /// Journal keys, without duplicates.
    pub(super) handled: Vec<String>,
    /// Outbox entries: message id and body.
    pub(super) outbox: Vec<(String, Vec<u8>)>,
    pub(super) now: i64,
}

impl Prepared {
    /// Validates `effects` and seals its blob under `key` for its next version.
    pub(super) fn new(
        effects: Effects,
        device: DeviceId,
        key: &StoreKey,
    ) -> Result<Self, StoreError> {
        validate(&effects)?;
        let new_version = next_version(&effects)?;
        let expected = effects.expected_version.map(to_i64).transpose()?;
        let sealed = match &effects.data {
            Some(data) => {
                let (nonce, ciphertext) = key.seal(device, effects.thread, new_version, data)?;
                Some((nonce.to_vec(), ciphertext))
            }
            None => None,
        };
        let mut handled = effects.handled;
        handled.sort_unstable();
        handled.dedup();
        Ok(Self {
            thread: effects.thread,
            thread_hex: effects.thread.to_string(),
            expected,
            new_version,
            sealed,
            handled,
            outbox: effects
                .outbox
                .into_iter()
                .map(|e| (e.message_id, e.body))
                .collect(),
            now: to_i64(now_secs())?,
        })
    }

    pub(super) fn conflict(&self) -> StoreError {
        StoreError::Conflict {
            thread: self.thread,
        }
    }
}

/// The batch in the order to write it: by thread (queue order within a thread), so that two
/// processes writing batches to one PostgreSQL database take row locks in the same order and do
/// not deadlock. Each item keeps its index in the batch.
pub(super) fn in_lock_order(batch: &[Prepared]) -> Vec<(usize, &Prepared)> {
    let mut order: Vec<(usize, &Prepared)> = batch.iter().enumerate().collect();
    order.sort_by(|a, b| a.1.thread_hex.cmp(&b.1.thread_hex));
    order
}

/// A number for a signed 64-bit column.
pub(super) fn to_i64(n: u64) -> Result<i64, StoreError> {
    i64::try_from(n).map_err(|_| StoreError::Config(format!("{n} does not fit the database")))
}

/// A database that applies a batch of prepared commits in one transaction.
#[async_trait]
pub(super) trait ApplyBatch: Send + Sync + 'static {
    /// One result per commit, in order; `Err` if the transaction failed (nothing was written).
    async fn apply(&self, batch: &[Prepared]) -> Result<Vec<Result<u64, StoreError>>, StoreError>;
}

/// One queued commit and where its answer goes.
type Pending = (Prepared, oneshot::Sender<Result<u64, StoreError>>);

/// The queue in front of a store's writer task.
#[derive(Debug, Clone)]
pub(super) struct GroupCommit {
    queue: mpsc::Sender<Pending>,
    counters: Arc<Counters>,
}

impl GroupCommit {
    /// Starts the writer task over `db`.
    pub(super) fn start(db: impl ApplyBatch) -> Self {
        let (queue, rx) = mpsc::channel(4 * MAX_BATCH);
        let counters = Arc::new(Counters::default());
        tokio::spawn(writer(db, rx, Arc::clone(&counters)));
        Self { queue, counters }
    }

    /// Queues one commit and waits for its outcome.
    pub(super) async fn commit(&self, prepared: Prepared) -> Result<u64, StoreError> {
        let (answer, outcome) = oneshot::channel();
        self.queue
            .send((prepared, answer))
            .await
            .map_err(|_| StoreError::Closed)?;
        outcome.await.map_err(|_| StoreError::Closed)?
    }

    pub(super) fn counters(&self) -> &Counters {
        &self.counters
    }
}

/// The writer task: ends when every sender is gone (the store was dropped).
async fn writer(db: impl ApplyBatch, mut rx: mpsc::Receiver<Pending>, counters: Arc<Counters>) {
    let mut batch: Vec<Pending> = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        if batch.len() > 1 {
            // Others are committing at the same time: wait a moment for more to share the fsync.
            let deadline = tokio::time::Instant::now() + LINGER;
            while batch.len() < MAX_BATCH {
                let room = MAX_BATCH - batch.len();
                match tokio::time::timeout_at(deadline, rx.recv_many(&mut batch, room)).await {
                    Ok(n) if n > 0 => {}
                    _ => break,
                }
            }
        }
        let (prepared, answers): (Vec<Prepared>, Vec<_>) = batch.drain(..).unzip();
        match db.apply(&prepared).await {
            Ok(outcomes) => {
                counters.transactions.fetch_add(1, Ordering::Relaxed);
                let mut outcomes = outcomes.into_iter();
                for answer in answers {
                    // A missing outcome would be a bug: answer it as failed rather than hang.
                    let outcome = outcomes.next().unwrap_or_else(|| {
                        Err(StoreError::Database(
                            "the group commit lost track of this commit".to_owned(),
                        ))
                    });
                    // Counted here: a caller that gave up waiting still committed.
                    counters.outcome(&outcome);
                    let _ = answer.send(outcome);
                }
            }
            Err(e) => {
                counters.failed_transactions.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, commits = answers.len(), "group commit failed");
                for answer in answers {
                    let _ = answer.send(Err(StoreError::Database(format!(
                        "the transaction holding this commit failed: {e}"
                    ))));
                }
            }
        }
    }
}
