//! One thread's worker: applies its inbox items in order, runs the bot, commits the effects.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use switchboard_client::engine::{ItemContext, apply_item};
use switchboard_client::now;
use switchboard_protocol::api::{InboxItem, ItemKind};
use switchboard_protocol::{DeviceKeys, ReplayPolicy, SeenWraps, ThreadId, ThreadState};
use tokio::sync::{OwnedSemaphorePermit, mpsc};
use tower::ServiceExt as _;
use tracing::Instrument as _;

use crate::ctx::{Ctx, EventShared, Scratch};
use crate::error::BotError;
use crate::pipeline::{BotEvent, Inbound};
use crate::runtime::blob::{
    HISTORY_LIMIT, ThreadBlob, decode_message, encode_message, honour_claim,
};
use crate::runtime::events::{identity, journal_key, map_event, thread_info};
use crate::runtime::outbox_entry;
use crate::runtime::sender::post_thread;
use crate::runtime::shared::Shared;
use crate::store::{Effects, HistoryEntry, StoreError};

/// How long a join waits for its history grant before the bot hears of the thread anyway.
pub(crate) const PENDING_JOIN_WAIT: Duration = Duration::from_secs(3);
/// Attempts of an event whose bot hook failed transiently.
const BOT_ATTEMPTS: u32 = 3;
/// The first pause before an event is redone after a store conflict (doubling, jittered).
const CONFLICT_PAUSE: Duration = Duration::from_millis(5);
/// The longest pause between redos after conflicts.
const MAX_CONFLICT_PAUSE: Duration = Duration::from_millis(500);
/// How long an event keeps trying after shutdown began, before it is left for redelivery.
const SHUTDOWN_PATIENCE: Duration = Duration::from_secs(5);

/// What a thread's worker is given.
#[derive(Debug)]
pub(crate) struct WorkItem {
    pub(crate) kind: WorkKind,
    /// The in-flight slot of a fetched item, released when it is handled.
    pub(crate) permit: Option<OwnedSemaphorePermit>,
}

/// An inbox item, or the end of a join's wait for its history.
#[derive(Debug)]
pub(crate) enum WorkKind {
    Inbox(Box<InboxItem>),
    FlushPending,
}

/// The thread as the worker holds it between items (and the runtime's cache between
/// workers).
pub(crate) struct Cached {
    version: Option<u64>,
    blob: ThreadBlob,
    state: Option<ThreadState>,
    /// The bytes stored at `version`.
    stored: Arc<Vec<u8>>,
    /// The highest inbox position this instance committed since it read the thread from the
    /// store. Items of the thread come in order, so an item past it cannot be in the journal
    /// yet, unless another instance handled it: then the thread's version moved and the commit
    /// conflicts (and the journal's own uniqueness refuses a second entry in any case).
    last_seq: Option<u64>,
    /// Whether the thread's stored outbox entries (committed by any instance, maybe not posted)
    /// were put in this instance's queue since the thread was read from the store: until then,
    /// a new reply must not be posted ahead of them.
    adopted: bool,
}

/// Hands `item` to its thread's worker, starting one if the thread is idle. An item of a
/// quarantined thread is let go unacknowledged (the relay keeps it for a restart).
pub(crate) fn dispatch(rt: &Arc<Shared>, thread: ThreadId, item: WorkItem) {
    if rt.is_quarantined(thread) {
        tracing::debug!(%thread, "left at the relay: the thread is quarantined");
        return;
    }
    let mut queues = rt
        .queues
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let item = match queues.get(&thread) {
        Some(tx) => match tx.send(item) {
            Ok(()) => return,
            Err(mpsc::error::SendError(item)) => item,
        },
        None => item,
    };
    let (tx, rx) = mpsc::unbounded_channel();
    // The receiver is alive: it was just created.
    let _ = tx.send(item);
    queues.insert(thread, tx);
    drop(queues);
    tokio::spawn(run_thread(Arc::clone(rt), thread, rx));
}

/// A thread's worker: its items one at a time, in order, until its queue is empty.
async fn run_thread(rt: Arc<Shared>, thread: ThreadId, mut rx: mpsc::UnboundedReceiver<WorkItem>) {
    let Ok(_slot) = Arc::clone(&rt.thread_slots).acquire_owned().await else {
        return;
    };
    let mut cache: Option<Cached> = rt.cache.take(thread);
    loop {
        let item = {
            let mut queues = rt
                .queues
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Ok(item) = rx.try_recv() {
                item
            } else {
                // Back in the cache before the thread's next worker can start (it would be
                // started under this lock).
                if let Some(cached) = cache.take() {
                    rt.cache.put(thread, cached);
                }
                queues.remove(&thread);
                return;
            }
        };
        handle(&rt, thread, &mut cache, item).await;
    }
}

/// Why an attempt at an item did not commit.
///
/// The rule: an inbox item is acknowledged only once its journal entry is committed. Whatever
/// fails, the item is either redone, committed without the bot's effects (and counted), or left
/// unacknowledged for the relay to deliver again: never dropped unseen.
enum Failure {
    /// Another writer changed the thread: reload and redo (after a short pause, unbounded).
    Conflict,
    /// The store failed (transiently): redo after a pause.
    Store(BotError),
    /// A bot hook failed transiently: redo after a pause (bounded).
    Bot(BotError),
    /// The event's effects cannot be stored (too large, not encodable): commit the item without
    /// them (the bot is not run again for it).
    Effects(BotError),
    /// The thread's stored state cannot be read or written (corrupt, another key, a bug): the
    /// thread is quarantined; its items stay unacknowledged at the relay.
    Thread(BotError),
}

async fn handle(rt: &Arc<Shared>, thread: ThreadId, cache: &mut Option<Cached>, item: WorkItem) {
    let (seq, kind) = match &item.kind {
        WorkKind::Inbox(i) => (Some(i.seq), item_kind(i.kind)),
        WorkKind::FlushPending => (None, "flush"),
    };
    let span = tracing::info_span!("event", %thread, seq, kind);
    let started = Instant::now();
    let outcome = async {
        let mut bot_attempts = 0;
        let mut pause = Duration::from_millis(100);
        let mut conflict_pause = CONFLICT_PAUSE;
        let mut skip_bot = false;
        loop {
            let give_up_bot = bot_attempts + 1 >= BOT_ATTEMPTS;
            match attempt(rt, thread, cache, &item.kind, give_up_bot, skip_bot).await {
                Ok(outcome) => return outcome,
                Err(failure) => {
                    *cache = None;
                    let waited_out =
                        rt.shutdown.is_cancelled() && started.elapsed() > SHUTDOWN_PATIENCE;
                    match failure {
                        Failure::Conflict => {
                            rt.count_error("conflict");
                            tracing::debug!("the thread changed meanwhile; redoing the event");
                            if waited_out {
                                return "abandoned";
                            }
                            sleep_or_cancel(rt, conflict_pause).await;
                            conflict_pause = (conflict_pause * 2).min(MAX_CONFLICT_PAUSE);
                            continue;
                        }
                        Failure::Bot(e) => {
                            bot_attempts += 1;
                            tracing::warn!(error = %e, attempt = bot_attempts, "the bot failed; retrying");
                            sleep_or_cancel(rt, e.retry_after().unwrap_or(pause)).await;
                        }
                        Failure::Store(e) => {
                            rt.count_error("store");
                            tracing::warn!(error = %e, "the store failed; retrying");
                            if waited_out {
                                return "abandoned";
                            }
                            sleep_or_cancel(rt, pause).await;
                        }
                        Failure::Effects(e) if !skip_bot => {
                            rt.count_error("effects_dropped");
                            tracing::error!(error = %e, "the event's effects cannot be stored; committing the item without them");
                            skip_bot = true;
                            continue;
                        }
                        Failure::Effects(e) | Failure::Thread(e) => {
                            rt.count_error(e.label());
                            rt.quarantine(thread, &e);
                            return "quarantined";
                        }
                    }
                    pause = (pause * 2).min(Duration::from_secs(30));
                }
            }
        }
    }
    .instrument(span)
    .await;
    rt.metrics
        .counter(
            "switchboard_events_total",
            &[("kind", kind), ("outcome", outcome)],
        )
        .inc();
    rt.metrics
        .histogram("switchboard_handle_seconds", &[("kind", kind)])
        .observe(started.elapsed().as_secs_f64());
    // Acknowledged only once committed: an abandoned or quarantined item stays at the relay.
    if let Some(seq) = seq
        && outcome != "abandoned"
        && outcome != "quarantined"
    {
        rt.acks().done(seq);
    }
    drop(item.permit);
}

async fn sleep_or_cancel(rt: &Shared, pause: Duration) {
    tokio::select! {
        () = tokio::time::sleep(jittered(pause)) => {}
        () = rt.shutdown.cancelled() => {
            // Still finish the work: a short pause only.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// `pause` plus up to half of it again, at random (not cryptographic).
pub(crate) fn jittered(pause: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_micros());
    let half = u64::try_from(pause.as_millis() / 2).unwrap_or(u64::MAX);
    pause + Duration::from_millis(u64::from(nanos) % (half + 1))
}

fn item_kind(kind: ItemKind) -> &'static str {
    match kind {
        ItemKind::ThreadOpen => "thread_open",
        ItemKind::Commit => "commit",
        ItemKind::History => "history",
        ItemKind::Message => "message",
    }
}

async fn load(rt: &Shared, thread: ThreadId, keys: &DeviceKeys) -> Result<Cached, Failure> {
    let record = rt
        .store
        .load(thread)
        .await
        .map_err(|e| store_failure(e, thread))?;
    let Some(record) = record else {
        return Ok(Cached {
            version: None,
            blob: ThreadBlob::default(),
            state: None,
            stored: Arc::new(Vec::new()),
            last_seq: None,
            adopted: false,
        });
    };
    let mut blob = ThreadBlob::decode(&record.data).map_err(Failure::Thread)?;
    let inline = std::mem::take(&mut blob.history);
    let rows = record
        .history
        .iter()
        .map(|entry| decode_message(&entry.data))
        .collect::<Result<Vec<_>, _>>()
        .map_err(Failure::Thread)?;
    if rows.is_empty() && !inline.is_empty() {
        // A blob of an earlier version, with its history inline: stored as entries at the
        // next commit.
        blob.unsaved = inline.len();
        blob.history = inline;
    } else {
        blob.history = Arc::new(rows);
    }
    let state = match blob.snapshot.take() {
        Some(snapshot) => Some(
            ThreadState::restore(keys, snapshot)
                .map_err(|e| Failure::Thread(BotError::Protocol(e.to_string())))?,
        ),
        None => None,
    };
    Ok(Cached {
        version: Some(record.version),
        blob,
        state,
        stored: Arc::new(record.data),
        last_seq: None,
        adopted: false,
    })
}

/// Puts the thread's stored outbox entries in front of this instance's queue for it (see
/// [`Cached::adopted`]); `false` if the store could not say (the sweep merges them later).
async fn adopt_outbox(rt: &Shared, thread: ThreadId) -> bool {
    match rt
        .store
        .outbox_for(thread, crate::store::MAX_OUTBOX_PAGE)
        .await
    {
        Ok(stored) => {
            rt.merge_stored(thread, stored);
            true
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the thread's outbox; the sweep will");
            false
        }
    }
}

/// The history entries a commit appends (the messages not stored yet, at the next positions)
/// and the position below which entries go (those no longer in the history); moves the blob's
/// next position on.
fn history_effects(blob: &mut ThreadBlob) -> Result<(Vec<HistoryEntry>, u64), BotError> {
    let unsaved = blob.unsaved.min(blob.history.len());
    let first = blob.history.len() - unsaved;
    let entries = blob
        .history
        .get(first..)
        .unwrap_or_default()
        .iter()
        .zip(blob.history_next..)
        .map(|(message, index)| {
            Ok(HistoryEntry {
                index,
                data: encode_message(message)?,
            })
        })
        .collect::<Result<Vec<_>, BotError>>()?;
    blob.history_next = blob
        .history_next
        .saturating_add(u64::try_from(unsaved).unwrap_or(u64::MAX));
    blob.unsaved = 0;
    let kept = u64::try_from(blob.history.len()).unwrap_or(u64::MAX);
    Ok((entries, blob.history_next.saturating_sub(kept)))
}

fn store_failure(e: StoreError, thread: ThreadId) -> Failure {
    match e {
        StoreError::Conflict { .. } => Failure::Conflict,
        e if e.is_transient() => Failure::Store(e.into()),
        // Shutting down: the item is left for redelivery.
        StoreError::Closed => Failure::Store(e.into()),
        e @ StoreError::TooLarge { .. } => Failure::Effects(e.into()),
        e => {
            tracing::error!(%thread, error = %e, "store error");
            Failure::Thread(e.into())
        }
    }
}

/// One attempt at an item: everything up to and including the commit, then delivery.
async fn attempt(
    rt: &Arc<Shared>,
    thread: ThreadId,
    cache: &mut Option<Cached>,
    kind: &WorkKind,
    last_bot_attempt: bool,
    skip_bot: bool,
) -> Result<&'static str, Failure> {
    let keys = rt.keys();
    let (journal_key, seq) = match kind {
        WorkKind::Inbox(item) => (Some(journal_key(item)), Some(item.seq)),
        WorkKind::FlushPending => (None, None),
    };
    let cached = match cache.take() {
        Some(cached) => cached,
        None => load(rt, thread, &keys).await?,
    };
    let surely_new = matches!((cached.last_seq, seq), (Some(last), Some(seq)) if seq > last);
    if let Some(key) = &journal_key
        && cached.version.is_some()
        && !surely_new
        && rt
            .store
            .handled(thread, key)
            .await
            .map_err(|e| store_failure(e, thread))?
    {
        *cache = Some(cached);
        return Ok("duplicate");
    }
    let Cached {
        version,
        mut blob,
        mut state,
        stored,
        last_seq,
        adopted,
    } = cached;
    let at = now();
    let mut events = Vec::new();
    let mut new_history = Vec::new();
    let mut joined = false;
    match kind {
        WorkKind::Inbox(item) => {
            let before = match (&state, item.kind) {
                (Some(s), ItemKind::Commit) => {
                    Some((s.roster().clone(), s.roster().may_post(rt.me)))
                }
                _ => None,
            };
            let cx = ItemContext {
                keys: &keys,
                role: &rt.role,
                replay: ReplayPolicy::default(),
                at,
            };
            let mut seen_opens = SeenWraps::new();
            let applied = apply_item(&cx, &mut state, &mut blob.memory, &mut seen_opens, item);
            if let Some(claim) = blob.claimed
                && let Some(s) = state.take()
            {
                state = Some(honour_claim(&keys, s, claim).map_err(Failure::Thread)?);
            }
            if let Some(event) = applied.event {
                joined = map_event(
                    rt,
                    event,
                    state.as_ref(),
                    before,
                    &mut blob,
                    &mut events,
                    &mut new_history,
                );
            }
        }
        WorkKind::FlushPending => {
            if let (Some(pending), Some(s)) = (blob.pending, state.as_ref())
                && at.0 >= pending.since + PENDING_JOIN_WAIT.as_secs()
            {
                blob.pending = None;
                events.push(BotEvent::Thread {
                    info: thread_info(rt.me, s, pending),
                    history: Vec::new(),
                });
            } else {
                *cache = Some(Cached {
                    version,
                    blob,
                    state,
                    stored,
                    last_seq,
                    adopted,
                });
                return Ok("nothing");
            }
        }
    }
    if version.is_none() && state.is_none() && events.is_empty() {
        // An item for a thread this device never held, that changed nothing (refused): no
        // row for it, so that junk cannot grow the store.
        *cache = Some(Cached {
            version,
            blob,
            state,
            stored,
            last_seq,
            adopted,
        });
        return Ok("nothing");
    }
    let removed = events.iter().any(|e| matches!(e, BotEvent::Removed));
    blob.memory.prune(at);
    if !new_history.is_empty() {
        let added = new_history.len();
        let history = Arc::make_mut(&mut blob.history);
        history.extend(new_history);
        let excess = history.len().saturating_sub(HISTORY_LIMIT);
        history.drain(..excess);
        blob.unsaved = blob.unsaved.saturating_add(added).min(history.len());
    }

    // Run the bot.
    let identity = Arc::new(identity(rt, state.as_ref()));
    let history = Arc::clone(&blob.history);
    let shared = Arc::new(EventShared {
        thread,
        scratch: Mutex::new(Scratch {
            state,
            sealed: Vec::new(),
            bot_state: std::mem::take(&mut blob.bot_state),
            base: Arc::clone(&stored),
            version,
        }),
        keys: Arc::clone(&keys),
        runtime: Arc::clone(rt),
        typing: tokio::sync::Mutex::new(()),
    });
    let original_bot_state = shared.scratch().bot_state.clone();
    let mut outcome = if events.is_empty() { "nothing" } else { "ok" };
    if skip_bot && !events.is_empty() {
        // An earlier attempt's effects could not be stored: the item is committed without any.
        events.clear();
        outcome = "effects_dropped";
    }
    for event in events {
        let ctx = Ctx {
            thread,
            me: Arc::clone(&identity),
            history: Arc::clone(&history),
            shared: Arc::clone(&shared),
        };
        let event_kind = event.kind();
        if let Err(e) = rt.inbound.clone().oneshot(Inbound { event, ctx }).await {
            if e.is_transient() && !last_bot_attempt {
                return Err(Failure::Bot(e));
            }
            rt.count_error(e.label());
            tracing::error!(error = %e, kind = event_kind, "the bot failed; its effects are dropped");
            let mut scratch = shared.scratch();
            scratch.sealed.clear();
            scratch.bot_state = original_bot_state.clone();
            outcome = "bot_error";
            break;
        }
    }
    // Commit.
    let (state, sealed, bot_state, version) = {
        let mut scratch = shared.scratch();
        (
            scratch.state.take(),
            std::mem::take(&mut scratch.sealed),
            std::mem::take(&mut scratch.bot_state),
            scratch.version,
        )
    };
    blob.bot_state = bot_state;
    blob.claimed = None;
    if removed {
        // A tombstone: what the device must remember (its memory of the thread), no more.
        blob.bot_state = serde_json::Value::Null;
        blob.history = Arc::default();
        blob.unsaved = 0;
        blob.pending = None;
    }
    let (history, history_from) = history_effects(&mut blob).map_err(Failure::Effects)?;
    blob.snapshot = state.as_ref().map(ThreadState::snapshot);
    let data = blob.encode().map_err(Failure::Effects)?;
    blob.snapshot = None;
    let outbox = sealed
        .iter()
        .map(|m| outbox_entry(thread, m))
        .collect::<Result<Vec<_>, _>>()
        .map_err(Failure::Effects)?;
    let effects = Effects {
        thread,
        expected_version: version,
        data: Some(data.clone()),
        handled: journal_key.into_iter().collect(),
        outbox: outbox.clone(),
        history,
        history_from,
    };
    let version = rt
        .store
        .commit(effects)
        .await
        .map_err(|e| store_failure(e, thread))?;
    // Taking the thread over (read from the store): replies committed before by any instance
    // and not posted yet go first.
    let adopted = adopted || adopt_outbox(rt, thread).await;
    let pending = blob.pending.is_some();
    *cache = Some(Cached {
        version: Some(version),
        blob,
        state,
        stored: Arc::new(data),
        last_seq: seq.max(last_seq),
        adopted,
    });
    if joined && pending {
        let rt2 = Arc::clone(rt);
        tokio::spawn(async move {
            tokio::time::sleep(PENDING_JOIN_WAIT + Duration::from_millis(100)).await;
            if !rt2.shutdown.is_cancelled() {
                dispatch(
                    &rt2,
                    thread,
                    WorkItem {
                        kind: WorkKind::FlushPending,
                        permit: None,
                    },
                );
            }
        });
    }
    if !outbox.is_empty() {
        // Behind the thread's earlier replies (a failed one blocks the later ones).
        rt.sender.push(thread, outbox);
        if let Err(e) = post_thread(rt, thread).await {
            tracing::warn!(error = %e, "delivery failed; the outbox keeps the message for later");
        }
    }
    Ok(outcome)
}
