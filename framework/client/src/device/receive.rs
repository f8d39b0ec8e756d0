//! The inbox: fetching, applying and acknowledging items.

use std::time::Duration;

use switchboard_protocol::Timestamp;
use switchboard_protocol::api::InboxItem;

use super::{Device, Event, FETCH_LIMIT};
use crate::engine::{ItemContext, apply_item};
use crate::error::ClientError;
use crate::relay::now;

impl Device {
    /// Fetches what is waiting (long-polling up to `wait`, in whole seconds), verifies and
    /// applies each item in order, persists the new state and cursor, acknowledges, and returns
    /// what happened.
    /// Items that fail verification become [`Event::Refused`]; they never stop the inbox.
    /// Returned events are durable: the keystore already holds their effect.
    ///
    /// First it runs the key upkeep ([`Device::maintain_keys`]: KEM key rotation on schedule,
    /// deletion of retired keys); a failed publication does not stop the inbox.
    ///
    /// Cancel-safe (for `tokio::select!`): the awaits are the key upkeep (each of its steps is on
    /// disk before the next; an interrupted publication is redone) and the fetch; if the future
    /// is dropped there, nothing was applied and the items come again.
    ///
    /// # Errors
    /// Relay errors (nothing was applied then); keystore errors (stop the device and reopen it
    /// from disk).
    pub async fn receive(&mut self, wait: Duration) -> Result<Vec<Event>, ClientError> {
        self.maintain_keys_in_background().await?;
        if !self.unposted.is_empty() {
            match self.post_unposted().await {
                Ok(()) | Err(ClientError::CommitPending { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        let (items, highest) = self
            .relay
            .inbox_page(self.cursor, FETCH_LIMIT, wait, None)
            .await?;
        let caught_up = items.len() < FETCH_LIMIT as usize;
        let Some(last) = items.last().map(|item| item.seq).max(highest) else {
            self.delete_expired_kem_keys().await?;
            return Ok(Vec::new());
        };
        let at = now();
        let mut events = Vec::new();
        for item in &items {
            if item.seq <= self.cursor {
                continue;
            }
            if let Some(event) = self.apply(item, at) {
                events.push(event);
            }
        }
        self.cursor = self.cursor.max(last);
        self.persist().await?;
        if caught_up {
            // Only now: commits queued while the device was away may be wrapped to a retired key.
            self.delete_expired_kem_keys().await?;
        }
        self.prune_memory_hourly(at).await?;
        // The cursor is on disk, so the ack runs in the background: a lost ack only means the
        // relay keeps the items a while longer (they are skipped by cursor and acknowledged
        // with the next ack), and no await stands between applying and returning the events.
        let (relay, cursor) = (self.relay.clone(), self.cursor);
        self.acking = Some(tokio::spawn(async move {
            if let Err(e) = relay.ack(cursor, None).await {
                tracing::warn!(error = %e, cursor, "ack failed; the next one covers it");
            }
        }));
        Ok(events)
    }

    /// Waits for the background acknowledgement of the last [`Device::receive`] (before a
    /// planned shutdown, so that the relay can delete what was processed).
    pub async fn flush_acks(&mut self) {
        if let Some(acking) = self.acking.take() {
            let _ = acking.await;
        }
    }

    /// Like [`Device::receive`], but retries transient failures (relay unreachable, busy or rate
    /// limiting) with exponential backoff from 100 ms up to 30 s (or the relay's
    /// `Retry-After`), for at most `patience`. Returns an empty list if nothing came.
    ///
    /// # Errors
    /// A non-transient error at once; the last transient one when `patience` is spent.
    pub async fn receive_retrying(
        &mut self,
        wait: Duration,
        patience: Duration,
    ) -> Result<Vec<Event>, ClientError> {
        let deadline = tokio::time::Instant::now() + patience;
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.receive(wait).await {
                Ok(events) => return Ok(events),
                Err(e) if e.is_transient() => {
                    let pause = match &e {
                        ClientError::Refused {
                            retry_after: Some(secs),
                            ..
                        } => Duration::from_secs(*secs),
                        _ => backoff,
                    };
                    if tokio::time::Instant::now() + pause > deadline {
                        return Err(e);
                    }
                    tracing::debug!(error = %e, pause_ms = pause.as_millis(), "relay unavailable, retrying");
                    tokio::time::sleep(pause).await;
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Applies one inbox item to the thread it names ([`crate::engine::apply_item`]); `None`
    /// for items with nothing to report (redeliveries).
    pub(super) fn apply(&mut self, item: &InboxItem, at: Timestamp) -> Option<Event> {
        let cx = ItemContext {
            keys: &self.keys,
            role: &self.role,
            replay: self.replay,
            at,
        };
        let mut slot = self.threads.remove(&item.thread);
        let applied = apply_item(&cx, &mut slot, &mut self.memory, &mut self.seen_opens, item);
        if let Some(state) = slot {
            self.threads.insert(item.thread, state);
        }
        // Also when refused: a removal empties the slot, and a refusal may still have moved it.
        self.touched(item.thread);
        if let Some(action) = &applied.commit_action {
            self.rotation.epoch_applied(action);
        }
        applied.event
    }

    /// Forgets, at most once an hour, marks and wrap ids that can no longer be replayed (a
    /// long-running device would otherwise keep them until it restarts).
    pub(super) async fn prune_memory_hourly(&mut self, at: Timestamp) -> Result<(), ClientError> {
        if at < self.memory_pruned_at.plus(3600) {
            return Ok(());
        }
        self.memory_pruned_at = at;
        let before = (self.memory.threads(), self.memory.wraps().len());
        self.memory.prune(at);
        if (self.memory.threads(), self.memory.wraps().len()) != before {
            self.persist().await?;
        }
        Ok(())
    }
}
