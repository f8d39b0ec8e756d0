//! Group commit: one writer task per store takes every write queued while it was busy (up to
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
    /// History entries to append: position, nonce and ciphertext.
    pub(super) history: Vec<(i64, Vec<u8>, Vec<u8>)>,
    /// History entries below this position go (0: none).
    pub(super) history_from: i64,
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
        let history = effects
            .history
            .iter()
            .map(|entry| {
                let (nonce, ciphertext) =
                    key.seal_history(device, effects.thread, entry.index, &entry.data)?;
                Ok((to_i64(entry.index)?, nonce.to_vec(), ciphertext))
            })
            .collect::<Result<Vec<_>, StoreError>>()?;
        let history_from = to_i64(effects.history_from)?;
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
            history,
            history_from,
            now: to_i64(now_secs())?,
        })
    }

    pub(super) fn conflict(&self) -> StoreError {
        StoreError::Conflict {
            thread: self.thread,
        }
    }
}

/// The batch in the order to write it (see [`Write::lock_key`]; queue order within a thread).
/// Each item keeps its index in the batch.
pub(super) fn in_lock_order(batch: &[Write]) -> Vec<(usize, &Write)> {
    let mut order: Vec<(usize, &Write)> = batch.iter().enumerate().collect();
    order.sort_by(|a, b| a.1.lock_key().cmp(&b.1.lock_key()));
    order
}

/// A number for a signed 64-bit column.
pub(super) fn to_i64(n: u64) -> Result<i64, StoreError> {
    i64::try_from(n).map_err(|_| StoreError::Config(format!("{n} does not fit the database")))
}

/// One write queued for the writer task. Every write of the store goes through it, so no two
/// writers ever wait for the database's write lock (SQLite's busy handler sleeps whole
/// milliseconds).
#[derive(Debug)]
pub(super) enum Write {
    /// An event's effects; answered with the thread's new version.
    Event(Prepared),
    /// An outbox entry was posted (by message id): its row goes; answered with rows deleted.
    Sent(String),
    /// A metadata value to set (key, value); answered with 1.
    Meta(String, Vec<u8>),
    /// Journal entries handled before this time (Unix seconds) go; answered with rows deleted.
    PruneJournal(i64),
    /// Every write applied before it reaches the disk (see [`BotStore::sync`]); answered with
    /// the number of fsyncs it took (0 if nothing was waiting for the disk).
    ///
    /// [`BotStore::sync`]: crate::store::BotStore::sync
    Sync,
}

impl Write {
    /// The order writes take in a transaction: events by thread, then the others by key, so
    /// that two processes writing batches to one PostgreSQL database take row locks in the same
    /// order and do not deadlock.
    fn lock_key(&self) -> (u8, &str) {
        match self {
            Self::Event(p) => (0, p.thread_hex.as_str()),
            Self::Sent(id) => (1, id.as_str()),
            Self::Meta(key, _) => (2, key.as_str()),
            Self::PruneJournal(_) => (3, ""),
            Self::Sync => (4, ""),
        }
    }
}

/// A database that applies a batch of writes in one transaction.
#[async_trait]
pub(super) trait ApplyBatch: Send + Sync + 'static {
    /// One result per write, in order; `Err` if the transaction failed (nothing was written).
    async fn apply(&self, batch: &[Write]) -> Result<Vec<Result<u64, StoreError>>, StoreError>;
}

/// A database that applies a batch of writes in one transaction synchronously, on the writer's
/// own thread (every statement a plain function call: no hop to another thread per statement).
pub(super) trait ApplySync: Send + 'static {
    /// One result per write, in order; `Err` if the transaction failed (nothing was written).
    fn apply(&mut self, batch: &[Write]) -> Result<Vec<Result<u64, StoreError>>, StoreError>;
}

/// One queued write and where its answer goes.
type Pending = (Write, oneshot::Sender<Result<u64, StoreError>>);

/// The queue in front of a store's writer task.
#[derive(Debug, Clone)]
pub(super) struct GroupCommit {
    queue: mpsc::Sender<Pending>,
    counters: Arc<Counters>,
    /// Whether the database's commits return before they reach the disk (then
    /// [`GroupCommit::sync`] asks the writer for an fsync; otherwise it has nothing to do).
    lazy: bool,
}

impl GroupCommit {
    /// Starts the writer task over `db`.
    pub(super) fn start(db: impl ApplyBatch) -> Self {
        let (queue, rx) = mpsc::channel(4 * MAX_BATCH);
        let counters = Arc::new(Counters::default());
        tokio::spawn(writer(db, rx, Arc::clone(&counters)));
        Self {
            queue,
            counters,
            lazy: false,
        }
    }

    /// Starts the writer on an OS thread of its own over `db` (a synchronous database). The
    /// thread takes whatever is queued (up to [`MAX_BATCH`]) while it was busy, so commits
    /// arriving during a transaction share the next one; it ends when the store is dropped.
    /// `lazy`: the database's commits return before they reach the disk, and a
    /// [`Write::Sync`] puts them there.
    pub(super) fn start_thread(
        db: impl ApplySync,
        name: &str,
        lazy: bool,
    ) -> Result<Self, StoreError> {
        let (queue, rx) = mpsc::channel(4 * MAX_BATCH);
        let counters = Arc::new(Counters::default());
        let for_thread = Arc::clone(&counters);
        std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || blocking_writer(db, rx, &for_thread))
            .map_err(|e| StoreError::Database(format!("cannot start the store's writer: {e}")))?;
        Ok(Self {
            queue,
            counters,
            lazy,
        })
    }

    /// Waits until every write answered before this call is on disk.
    pub(super) async fn sync(&self) -> Result<(), StoreError> {
        if self.lazy {
            self.write(Write::Sync).await?;
        }
        Ok(())
    }

    /// Queues one commit and waits for its outcome.
    pub(super) async fn commit(&self, prepared: Prepared) -> Result<u64, StoreError> {
        self.write(Write::Event(prepared)).await
    }

    /// Queues one write and waits for its outcome.
    pub(super) async fn write(&self, write: Write) -> Result<u64, StoreError> {
        let (answer, outcome) = oneshot::channel();
        self.queue
            .send((write, answer))
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
        let (writes, answers): (Vec<Write>, Vec<_>) = batch.drain(..).unzip();
        let outcome = db.apply(&writes).await;
        answer(&counters, &writes, answers, outcome);
    }
}

/// The writer on its own thread: blocks for the first write, takes what else is queued, applies
/// the batch, answers; ends when every sender is gone.
fn blocking_writer(mut db: impl ApplySync, mut rx: mpsc::Receiver<Pending>, counters: &Counters) {
    let mut batch: Vec<Pending> = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(pending) => batch.push(pending),
                Err(_) => break,
            }
        }
        let (writes, answers): (Vec<Write>, Vec<_>) = batch.drain(..).unzip();
        let outcome = db.apply(&writes);
        answer(counters, &writes, answers, outcome);
    }
}

/// Answers each write of a batch with its outcome (or the transaction's failure).
fn answer(
    counters: &Counters,
    writes: &[Write],
    answers: Vec<oneshot::Sender<Result<u64, StoreError>>>,
    outcome: Result<Vec<Result<u64, StoreError>>, StoreError>,
) {
    match outcome {
        Ok(outcomes) => {
            counters.transactions.fetch_add(1, Ordering::Relaxed);
            let mut outcomes = outcomes.into_iter();
            for (write, answer) in writes.iter().zip(answers) {
                // A missing outcome would be a bug: answer it as failed rather than hang.
                let outcome = outcomes.next().unwrap_or_else(|| {
                    Err(StoreError::Database(
                        "the group commit lost track of this commit".to_owned(),
                    ))
                });
                // Counted here: a caller that gave up waiting still committed.
                match write {
                    Write::Event(_) => counters.outcome(&outcome),
                    Write::Sync => {
                        if let Ok(n) = &outcome {
                            counters.syncs.fetch_add(*n, Ordering::Relaxed);
                        }
                    }
                    _ => {}
                }
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
