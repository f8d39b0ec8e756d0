//! The runtime's background tasks: the inbox fetch, acknowledgements, the outbox sweep, the
//! hourly upkeep.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use switchboard_client::{ClientError, Device};
use switchboard_protocol::ThreadId;
use switchboard_protocol::api::InboxItem;
use tokio::sync::OwnedSemaphorePermit;

use super::sender::post_thread;
use super::shared::Shared;
use super::worker::{self, WorkItem, WorkKind, dispatch};
use crate::store::OutboxEntry;

/// Inbox items fetched per request at most.
pub(super) const FETCH_LIMIT: u32 = 100;
/// The long-poll wait.
const FETCH_WAIT: Duration = Duration::from_secs(25);
/// An inbox stream that ends sooner than this after it opened is taken as a failure (opened
/// again only after a pause), so that a relay ending streams at once cannot make a busy loop.
const SHORTEST_STREAM: Duration = Duration::from_secs(1);
/// How often the KEM keys are looked after.
const KEY_UPKEEP: Duration = Duration::from_secs(3600);
/// How long journal entries are kept.
const JOURNAL_KEEP: Duration = Duration::from_secs(7 * 24 * 3600);
/// How often the outbox is swept for messages whose delivery failed.
const SWEEP_EVERY: Duration = Duration::from_secs(2);
/// How often acknowledgements are sent (when there is something new to acknowledge).
const ACK_EVERY: Duration = Duration::from_millis(100);
/// Outbox entries read per sweep.
const SWEEP_PAGE: u32 = crate::store::MAX_OUTBOX_PAGE;

/// Fetches the inbox (leased to this instance) and hands the items to their threads: by
/// long-polling, or, with [`RuntimeBuilder::inbox_stream`](crate::RuntimeBuilder::inbox_stream),
/// over the relay's inbox stream (one long-lived response, opened again from the cursor when it
/// ends or breaks; long-polling after all if the relay has no streams).
pub(super) async fn fetch_loop(shared: Arc<Shared>, mut after: u64) {
    let mut backoff = Duration::from_millis(100);
    let mut streaming = shared.stream_inbox;
    loop {
        let outcome = if streaming {
            stream(&shared, &mut after).await
        } else {
            long_poll(&shared, &mut after).await
        };
        let e = match outcome {
            Fetched::Shutdown => return,
            Fetched::Again => {
                backoff = Duration::from_millis(100);
                continue;
            }
            Fetched::Failed(e) if streaming && is_unsupported(&e) => {
                tracing::info!("the relay has no inbox streams; long-polling instead");
                streaming = false;
                continue;
            }
            Fetched::Failed(e) => e,
        };
        let pause = pause_after(&e, backoff);
        shared.count_error("relay");
        if e.is_transient() {
            tracing::warn!(error = %e, pause_ms = pause.as_millis(), "inbox fetch failed; reconnecting");
        } else {
            tracing::error!(error = %e, pause_ms = pause.as_millis(), "the relay refused the inbox fetch");
        }
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            () = shared.shutdown.cancelled() => return,
        }
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

/// How a fetch ended.
enum Fetched {
    /// Shutting down.
    Shutdown,
    /// Items were handed out, or a stream ended as the relay ends them: go on at once.
    Again,
    /// The relay could not be reached or refused.
    Failed(ClientError),
}

/// Whether the relay answered that it does not serve inbox streams (an older relay).
fn is_unsupported(e: &ClientError) -> bool {
    matches!(
        e,
        ClientError::Refused {
            status: 404 | 405,
            ..
        }
    )
}

/// Waits for room for at least one more item in flight.
async fn room(shared: &Arc<Shared>) -> Option<OwnedSemaphorePermit> {
    tokio::select! {
        permit = Arc::clone(&shared.inflight).acquire_owned() => permit.ok(),
        () = shared.shutdown.cancelled() => None,
    }
}

/// One long-poll: waits for room, fetches up to the room there is, hands the items out.
async fn long_poll(shared: &Arc<Shared>, after: &mut u64) -> Fetched {
    // Backpressure: wait for room for at least one item.
    let Some(first) = room(shared).await else {
        return Fetched::Shutdown;
    };
    let room = u32::try_from(shared.inflight.available_permits())
        .unwrap_or(u32::MAX)
        .saturating_add(1)
        .min(FETCH_LIMIT);
    let page = tokio::select! {
        page = shared.relay.inbox_page(*after, room, FETCH_WAIT, Some(&shared.instance)) => page,
        () = shared.shutdown.cancelled() => return Fetched::Shutdown,
    };
    match page {
        Ok((items, highest)) => {
            shared.ready.store(true, Ordering::Relaxed);
            hand_out(shared, items, highest, first, after).await
        }
        Err(e) => Fetched::Failed(e),
    }
}

/// One inbox stream, from the cursor until it ends or breaks: each page of items is handed out
/// as it arrives, the next read only once there is room for one more item in flight (the
/// relay reads its next page only when this one was taken: bounded on both sides).
async fn stream(shared: &Arc<Shared>, after: &mut u64) -> Fetched {
    let opened = tokio::select! {
        opened = shared.relay.inbox_stream(*after, Some(&shared.instance)) => opened,
        () = shared.shutdown.cancelled() => return Fetched::Shutdown,
    };
    let mut stream = match opened {
        Ok(stream) => stream,
        Err(e) => return Fetched::Failed(e),
    };
    shared.ready.store(true, Ordering::Relaxed);
    let opened_at = tokio::time::Instant::now();
    loop {
        let Some(first) = room(shared).await else {
            return Fetched::Shutdown;
        };
        let next = tokio::select! {
            next = stream.next_items() => next,
            () = shared.shutdown.cancelled() => return Fetched::Shutdown,
        };
        match next {
            Ok(Some((items, highest))) => {
                if let Fetched::Shutdown = hand_out(shared, items, highest, first, after).await {
                    return Fetched::Shutdown;
                }
            }
            // Ended at once: a relay that does so again and again is not asked again at once.
            Ok(None) if opened_at.elapsed() < SHORTEST_STREAM => {
                return Fetched::Failed(ClientError::BadAnswer {
                    what: "inbox stream",
                    detail: format!("ended within {SHORTEST_STREAM:?} of opening"),
                });
            }
            // Ended by the relay (it does every few minutes): open it again from the cursor.
            Ok(None) => return Fetched::Again,
            Err(e) => return Fetched::Failed(e),
        }
    }
}

/// Hands fetched items to their threads' workers, each with an in-flight slot (`first` is the
/// first item's), moving the cursor past them and past positions the relay left out.
async fn hand_out(
    shared: &Arc<Shared>,
    items: Vec<InboxItem>,
    highest: Option<u64>,
    first: OwnedSemaphorePermit,
    after: &mut u64,
) -> Fetched {
    let mut first = Some(first);
    for item in items {
        let permit = match first.take() {
            Some(p) => p,
            None => match Arc::clone(&shared.inflight).acquire_owned().await {
                Ok(p) => p,
                Err(_) => return Fetched::Shutdown,
            },
        };
        *after = (*after).max(item.seq);
        shared.acks().fetched(item.seq);
        let thread = item.thread;
        dispatch(
            shared,
            thread,
            WorkItem {
                kind: WorkKind::Inbox(Box::new(item)),
                permit: Some(permit),
            },
        );
    }
    if let Some(highest) = highest {
        *after = (*after).max(highest);
        shared.acks().skipped_to(highest);
    }
    Fetched::Again
}

/// The relay's `Retry-After`, if it refused a request with one.
fn relay_retry_after(e: &ClientError) -> Option<Duration> {
    match e {
        ClientError::Refused {
            retry_after: Some(secs),
            ..
        } => Some(Duration::from_secs(*secs)),
        _ => None,
    }
}

/// The pause after a failed fetch: the relay's `Retry-After`, or the backoff with jitter.
fn pause_after(e: &ClientError, backoff: Duration) -> Duration {
    relay_retry_after(e).unwrap_or_else(|| worker::jittered(backoff))
}

/// The longest pause a relay's `Retry-After` imposes on the acknowledgements (a relay asking
/// for more is asked again then).
const MAX_ACK_PAUSE: Duration = Duration::from_secs(60);

/// Acknowledges handled items as they are committed; after an acknowledgement the relay
/// refused with `Retry-After`, not before that time.
pub(super) async fn acker(shared: Arc<Shared>, cursor_key: String) {
    let mut pause = ACK_EVERY;
    loop {
        tokio::time::sleep(pause).await;
        pause = flush_acks(&shared, &cursor_key)
            .await
            .map_or(ACK_EVERY, |asked| asked.clamp(ACK_EVERY, MAX_ACK_PAUSE));
    }
}

/// Acknowledges up to the highest position below which everything is committed, once those
/// commits are on disk ([`BotStore::sync`](crate::store::BotStore::sync): replies are posted
/// as soon as their commit returns, but the relay lets an item go only once a power failure
/// cannot take its commit back), and keeps that position as this instance's cursor. Returns
/// the relay's `Retry-After` if it refused the acknowledgement with one.
pub(super) async fn flush_acks(shared: &Shared, cursor_key: &str) -> Option<Duration> {
    let up_to = shared.acks().up_to();
    if up_to <= shared.acked.load(Ordering::Relaxed) {
        return None;
    }
    if let Err(e) = shared.store.sync().await {
        tracing::warn!(error = %e, up_to, "cannot sync the store; acknowledging later");
        return None;
    }
    if let Err(e) = shared.relay.ack(up_to, Some(&shared.instance)).await {
        tracing::warn!(error = %e, up_to, "ack failed; the next one covers it");
        return relay_retry_after(&e);
    }
    if let Err(e) = shared
        .store
        .put_meta(cursor_key, up_to.to_string().as_bytes())
        .await
    {
        tracing::warn!(error = %e, "cannot keep the inbox cursor");
        return None;
    }
    shared.acked.fetch_max(up_to, Ordering::Relaxed);
    None
}

/// Posts what the outbox holds, now and then (messages whose delivery failed, and after a
/// crash).
pub(super) async fn sweeper(shared: Arc<Shared>) {
    loop {
        sweep(&shared).await;
        tokio::time::sleep(SWEEP_EVERY).await;
    }
}

pub(super) async fn sweep(shared: &Shared) {
    load_outbox(shared).await;
    let threads = shared.sender.waiting();
    let posts = threads.into_iter().map(|thread| async move {
        if let Err(e) = post_thread(shared, thread).await {
            tracing::warn!(error = %e, %thread, "delivery failed; trying again later");
        }
    });
    futures_util::future::join_all(posts).await;
}

/// Puts what the store's outbox holds (oldest first) into the threads' queues.
pub(super) async fn load_outbox(shared: &Shared) {
    let entries = match shared.store.outbox(SWEEP_PAGE).await {
        Ok(entries) => entries,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the outbox");
            return;
        }
    };
    let mut by_thread: HashMap<ThreadId, Vec<OutboxEntry>> = HashMap::new();
    for entry in entries {
        by_thread.entry(entry.thread).or_default().push(entry);
    }
    for (thread, entries) in by_thread {
        shared.merge_stored(thread, entries);
    }
}

/// Hourly upkeep: KEM keys (under the device's lock; the workers get the new keys), and the
/// inbound journal (entries older than [`JOURNAL_KEEP`] are forgotten: the relay redelivers
/// only unacknowledged items, and messages that old are refused by the protocol's own replay
/// windows anyway).
pub(super) async fn key_upkeep(shared: Arc<Shared>, device: Arc<tokio::sync::Mutex<Device>>) {
    let mut interval = tokio::time::interval(KEY_UPKEEP);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let older_than = switchboard_client::now()
            .0
            .saturating_sub(JOURNAL_KEEP.as_secs());
        match shared.store.prune_journal(older_than).await {
            Ok(pruned) if pruned > 0 => tracing::debug!(pruned, "journal pruned"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "cannot prune the journal"),
        }
        let mut device = device.lock().await;
        match device.maintain_keys().await {
            Ok(published) => {
                if published.is_some() {
                    tracing::info!("published a new KEM key");
                }
                *shared
                    .keys
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = device.shared_keys();
            }
            Err(e) => {
                shared.count_error("keys");
                tracing::warn!(error = %e, "KEM key upkeep failed; trying again later");
            }
        }
    }
}
