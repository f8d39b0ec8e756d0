//! A lightweight simulated customer for load tests and benchmarks: the protocol of a real
//! customer [`Device`](switchboard_client::Device) (directory lookup, admin key pinned at first
//! contact, thread open, sealed messages, the same item engine on receive), with its state in
//! memory only: no keystore, no Argon2, no fsync. Thousands fit in one process.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use switchboard_client::engine::{ItemContext, apply_item};
use switchboard_client::{
    ClientError, DeviceRole, Event, InboxStream, PinnedAdmin, RelayClient, now,
};
use switchboard_protocol::api::InboxItem;
use switchboard_protocol::{
    CipherSuite, Content, Csprng, DeviceId, DeviceKeys, DeviceMemory, EntityId, MessageId,
    ReplayPolicy, SeenWraps, ThreadId, ThreadState,
};

/// Inbox items fetched per request (as a real device does).
const FETCH_LIMIT: u32 = 100;

/// A customer whose keys and thread states live in memory (see the module docs). Not
/// persistent: dropped, it is gone (its threads with it).
pub struct SimCustomer {
    keys: Arc<DeviceKeys>,
    relay: RelayClient,
    role: DeviceRole,
    rng: Csprng,
    cursor: u64,
    pinned: HashMap<EntityId, PinnedAdmin>,
    threads: HashMap<ThreadId, ThreadState>,
    memory: DeviceMemory,
    seen_opens: SeenWraps,
    /// The highest position the relay confirmed acknowledged (or was asked to, in the
    /// background, by [`SimCustomer::receive_streaming`]).
    acked: u64,
    /// The inbox stream [`SimCustomer::receive_streaming`] reads, once opened.
    stream: Option<InboxStream>,
}

/// Items a streaming customer receives between two acknowledgements (sent in the background).
const STREAM_ACK_EVERY: u64 = 32;

impl std::fmt::Debug for SimCustomer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimCustomer")
            .field("device", &self.keys.device())
            .field("cursor", &self.cursor)
            .field("threads", &self.threads.len())
            .finish_non_exhaustive()
    }
}

impl SimCustomer {
    /// A new customer with fresh keys, registered at the relay at `relay_url`
    /// (`http://HOST:PORT`).
    ///
    /// # Errors
    /// [`ClientError::BadUrl`], or the relay's errors registering.
    pub async fn register(relay_url: &str) -> Result<Self, ClientError> {
        let mut rng = Csprng::from_os().map_err(|e| ClientError::Protocol(e.into()))?;
        let keys = Arc::new(DeviceKeys::generate(
            DeviceId::random(&mut rng),
            CipherSuite::default(),
            &mut rng,
        ));
        let relay = RelayClient::new(relay_url, Arc::clone(&keys))?;
        relay.register().await?;
        Ok(Self {
            keys,
            relay,
            role: DeviceRole::Customer,
            rng,
            cursor: 0,
            pinned: HashMap::new(),
            threads: HashMap::new(),
            memory: DeviceMemory::new(),
            seen_opens: SeenWraps::new(),
            acked: 0,
            stream: None,
        })
    }

    /// Acknowledges everything received so far that is not acknowledged yet (in a request of
    /// its own; [`SimCustomer::receive`] acknowledges with its next fetch).
    ///
    /// # Errors
    /// The relay's.
    pub async fn flush_acks(&mut self) -> Result<(), ClientError> {
        if self.cursor > self.acked {
            self.relay.ack(self.cursor, None).await?;
            self.acked = self.cursor;
        }
        Ok(())
    }

    /// The customer's device id.
    #[must_use]
    pub fn id(&self) -> DeviceId {
        self.keys.device()
    }

    /// Its position in its inbox.
    #[must_use]
    pub fn cursor(&self) -> u64 {
        self.cursor
    }

    /// The state of `thread`, if the customer holds it.
    #[must_use]
    pub fn thread(&self, thread: ThreadId) -> Option<&ThreadState> {
        self.threads.get(&thread)
    }

    /// Opens a thread with `entity`: fetches its directory record, pins the admin key at first
    /// contact (and refuses a changed one), wraps epoch 0 to the admin, and posts the open.
    ///
    /// # Errors
    /// [`ClientError::AdminKeyChanged`]; protocol and relay errors.
    pub async fn open_thread(&mut self, entity: &EntityId) -> Result<ThreadId, ClientError> {
        let record = self.relay.directory(entity).await?;
        let served = PinnedAdmin {
            device: record.admin.device,
            identity_key: record.admin.identity_key,
        };
        match self.pinned.get(entity) {
            Some(pinned) if *pinned != served => {
                return Err(ClientError::AdminKeyChanged {
                    entity: entity.clone(),
                    pinned: pinned.fingerprint(),
                    served: served.fingerprint(),
                });
            }
            Some(_) => {}
            None => {
                self.pinned.insert(entity.clone(), served);
            }
        }
        let (state, open) = ThreadState::open(
            &self.keys,
            entity.clone(),
            &record.admin,
            now(),
            &mut self.rng,
        )?;
        let thread = state.thread();
        self.threads.insert(thread, state);
        self.relay.open_thread(&open).await?;
        Ok(thread)
    }

    /// Seals `text` into `thread` and posts it. Returns the message's id.
    ///
    /// # Errors
    /// [`ClientError::UnknownThread`]; protocol and relay errors.
    pub async fn send(&mut self, thread: ThreadId, text: &str) -> Result<MessageId, ClientError> {
        self.send_content(thread, &Content::text(text), None).await
    }

    /// Seals `content` (quoting `quoted`, for a reply) into `thread` and posts it. Returns the
    /// message's id.
    ///
    /// # Errors
    /// As [`SimCustomer::send`]; [`ClientError::Protocol`] for content that cannot be sealed.
    pub async fn send_content(
        &mut self,
        thread: ThreadId,
        content: &Content,
        quoted: Option<MessageId>,
    ) -> Result<MessageId, ClientError> {
        let state = self
            .threads
            .get_mut(&thread)
            .ok_or(ClientError::UnknownThread(thread))?;
        let sealed = state.seal_with(&self.keys, content, quoted, &mut self.rng)?;
        self.relay.post_message(thread, &sealed).await?;
        Ok(sealed.header.message_id())
    }

    /// Fetches inbox items (long-polling up to `wait`), applies them to the threads as a
    /// customer [`Device`](switchboard_client::Device) does and moves the cursor past them.
    /// What the previous calls received is acknowledged with the fetch (in the same request,
    /// as an app acknowledges what it has shown); [`SimCustomer::flush_acks`] acknowledges the
    /// rest. Items at or before the cursor (redeliveries) are skipped.
    ///
    /// # Errors
    /// Relay errors fetching (nothing was applied then, nor acknowledged).
    pub async fn receive(&mut self, wait: Duration) -> Result<Vec<Event>, ClientError> {
        let ack = (self.cursor > self.acked).then_some(self.cursor);
        let (items, highest) = self
            .relay
            .inbox_page_acking(self.cursor, ack, FETCH_LIMIT, wait, None)
            .await?;
        if let Some(ack) = ack {
            self.acked = ack;
        }
        Ok(self.apply(&items, highest))
    }

    /// Like [`SimCustomer::receive`], over the relay's inbox stream (`GET /v1/inbox/stream`,
    /// opened at the first call and again, from the cursor, after it ended or broke): waits up
    /// to `wait` for the next items. Acknowledgements go in requests of their own, in the
    /// background, every few dozen items; [`SimCustomer::flush_acks`] sends the rest.
    ///
    /// # Errors
    /// Relay errors opening or reading the stream (it is opened again at the next call).
    pub async fn receive_streaming(&mut self, wait: Duration) -> Result<Vec<Event>, ClientError> {
        let stream = match self.stream.as_mut() {
            Some(stream) => stream,
            None => self
                .stream
                .insert(self.relay.inbox_stream(self.cursor, None).await?),
        };
        let next = match tokio::time::timeout(wait, stream.next_items()).await {
            Err(_) => return Ok(Vec::new()),
            Ok(next) => next,
        };
        let (items, highest) = match next {
            Ok(Some(page)) => page,
            Ok(None) => {
                self.stream = None;
                return Ok(Vec::new());
            }
            Err(e) => {
                self.stream = None;
                return Err(e);
            }
        };
        let events = self.apply(&items, highest);
        if self.cursor >= self.acked + STREAM_ACK_EVERY {
            let (relay, up_to) = (self.relay.clone(), self.cursor);
            self.acked = up_to;
            // Best effort: a lost acknowledgement is covered by the next one.
            tokio::spawn(async move {
                let _ = relay.ack(up_to, None).await;
            });
        }
        Ok(events)
    }

    /// Applies fetched items (those past the cursor) to the threads and moves the cursor past
    /// them and past `highest`; the events they made.
    fn apply(&mut self, items: &[InboxItem], highest: Option<u64>) -> Vec<Event> {
        let Some(last) = items.last().map(|item| item.seq).max(highest) else {
            return Vec::new();
        };
        let cx = ItemContext {
            keys: &self.keys,
            role: &self.role,
            replay: ReplayPolicy::default(),
            at: now(),
        };
        let mut events = Vec::new();
        for item in items {
            if item.seq <= self.cursor {
                continue;
            }
            let mut slot = self.threads.remove(&item.thread);
            let applied = apply_item(&cx, &mut slot, &mut self.memory, &mut self.seen_opens, item);
            if let Some(state) = slot {
                self.threads.insert(item.thread, state);
            }
            events.extend(applied.event);
        }
        if last > self.cursor {
            self.cursor = last;
        }
        events
    }
}
