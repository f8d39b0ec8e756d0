//! The runtime: fetches the bot's inbox, runs each thread's events in order (different threads
//! concurrently), commits each event's effects in one store transaction, posts the replies.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use switchboard_client::{ClientError, Device, DeviceRole, KeystoreSecret};
use switchboard_protocol::{SealedMessage, ThreadId, encode};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tower::util::BoxCloneSyncService;
use tower::{Layer, Service};

use crate::bot::Bot;
use crate::error::BotError;
use crate::layers::Metrics;
use crate::pipeline::{
    BotService, Delivery, DeliveryService, Inbound, InboundService, OutboundService, Outgoing,
    delivery_end, outbound_end,
};
use crate::store::{BotStore, OutboxEntry, StoreKey};

pub(crate) mod blob;
mod http;
pub(crate) mod shared;
pub(crate) mod worker;

use shared::{AckTracker, Shared};
use worker::{WorkItem, WorkKind, dispatch};

/// Inbox items fetched per request at most.
const FETCH_LIMIT: u32 = 100;
/// The long-poll wait.
const FETCH_WAIT: Duration = Duration::from_secs(25);
/// How often the KEM keys are looked after.
const KEY_UPKEEP: Duration = Duration::from_secs(3600);
/// How long journal entries are kept.
const JOURNAL_KEEP: Duration = Duration::from_secs(7 * 24 * 3600);
/// How often the outbox is swept for messages whose delivery failed.
const SWEEP_EVERY: Duration = Duration::from_secs(2);
/// How often acknowledgements are sent (when there is something new to acknowledge).
const ACK_EVERY: Duration = Duration::from_millis(100);

type Wrap<S> = Box<dyn FnOnce(S) -> S + Send + Sync>;

/// The serialised outbox entry of a sealed message.
pub(crate) fn outbox_entry(
    thread: ThreadId,
    message: &SealedMessage,
) -> Result<OutboxEntry, BotError> {
    Ok(OutboxEntry {
        id: 0,
        thread,
        message_id: message.header.message_id().to_string(),
        body: encode(message).map_err(|e| BotError::Protocol(e.to_string()))?,
    })
}

/// Sets up a [`Runtime`]: see [`Runtime::builder`].
pub struct RuntimeBuilder {
    keystore: Option<PathBuf>,
    secret: Option<KeystoreSecret>,
    relay: Option<String>,
    store_url: Option<String>,
    store: Option<Arc<dyn BotStore>>,
    instance: Option<String>,
    concurrency: usize,
    metrics_addr: Option<SocketAddr>,
    http: Option<reqwest::Client>,
    inbound: Vec<Wrap<InboundService>>,
    outbound: Vec<Wrap<OutboundService>>,
    delivery: Vec<Wrap<DeliveryService>>,
    bot: Option<Arc<dyn Bot>>,
    shutdown_timeout: Duration,
}

impl std::fmt::Debug for RuntimeBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuntimeBuilder")
            .field("keystore", &self.keystore)
            .field("relay", &self.relay)
            .field("store", &self.store_url)
            .field("instance", &self.instance)
            .field("concurrency", &self.concurrency)
            .finish_non_exhaustive()
    }
}

impl RuntimeBuilder {
    /// The agent's keystore (made by `switchboard agent init`).
    #[must_use]
    pub fn keystore(mut self, path: impl Into<PathBuf>) -> Self {
        self.keystore = Some(path.into());
        self
    }

    /// The key file that unlocks the keystore.
    #[must_use]
    pub fn key_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.secret = Some(KeystoreSecret::KeyFile(path.into()));
        self
    }

    /// The secret that unlocks the keystore (a passphrase or a key file).
    #[must_use]
    pub fn secret(mut self, secret: KeystoreSecret) -> Self {
        self.secret = Some(secret);
        self
    }

    /// The relay, `http://HOST:PORT` (default: the one the keystore was made with).
    #[must_use]
    pub fn relay(mut self, url: impl Into<String>) -> Self {
        self.relay = Some(url.into());
        self
    }

    /// The state store's URL: `sqlite://PATH` (default: `sqlite://<keystore>.botstore.db`),
    /// `postgres://...` for instances on several machines, `memory` for tests.
    #[must_use]
    pub fn store(mut self, url: impl Into<String>) -> Self {
        self.store_url = Some(url.into());
        self
    }

    /// A state store the caller opened already (shared by runtimes built one after the other,
    /// e.g. in a test of a restart).
    #[must_use]
    pub fn store_backend(mut self, store: Arc<dyn BotStore>) -> Self {
        self.store = Some(store);
        self
    }

    /// This process's name among the bot's instances (default `<hostname>-<pid>`).
    #[must_use]
    pub fn instance(mut self, name: impl Into<String>) -> Self {
        self.instance = Some(name.into());
        self
    }

    /// How many threads are handled at once (default 64).
    #[must_use]
    pub fn concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    /// Serve GET /metrics, /healthz and /readyz at this address.
    #[must_use]
    pub fn metrics_addr(mut self, addr: SocketAddr) -> Self {
        self.metrics_addr = Some(addr);
        self
    }

    /// The HTTP client the bot's hooks get from [`Ctx::http`](crate::Ctx::http).
    #[must_use]
    pub fn http_client(mut self, client: reqwest::Client) -> Self {
        self.http = Some(client);
        self
    }

    /// How long a shutdown waits for work in flight (default 10 s).
    #[must_use]
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// Adds a layer around the inbound pipeline (events on their way to the bot). Layers
    /// added later wrap those added before.
    #[must_use]
    pub fn inbound<L>(mut self, layer: L) -> Self
    where
        L: Layer<InboundService> + Send + Sync + 'static,
        L::Service:
            Service<Inbound, Response = (), Error = BotError> + Clone + Send + Sync + 'static,
        <L::Service as Service<Inbound>>::Future: Send + 'static,
    {
        self.inbound.push(Box::new(move |inner| {
            BoxCloneSyncService::new(layer.layer(inner))
        }));
        self
    }

    /// Adds a layer around the outbound pipeline (messages the bot produced, before sealing).
    #[must_use]
    pub fn outbound<L>(mut self, layer: L) -> Self
    where
        L: Layer<OutboundService> + Send + Sync + 'static,
        L::Service: Service<Outgoing, Response = Outgoing, Error = BotError>
            + Clone
            + Send
            + Sync
            + 'static,
        <L::Service as Service<Outgoing>>::Future: Send + 'static,
    {
        self.outbound.push(Box::new(move |inner| {
            BoxCloneSyncService::new(layer.layer(inner))
        }));
        self
    }

    /// Adds a layer around the delivery pipeline (sealed messages on their way to the relay).
    #[must_use]
    pub fn delivery<L>(mut self, layer: L) -> Self
    where
        L: Layer<DeliveryService> + Send + Sync + 'static,
        L::Service:
            Service<Delivery, Response = (), Error = BotError> + Clone + Send + Sync + 'static,
        <L::Service as Service<Delivery>>::Future: Send + 'static,
    {
        self.delivery.push(Box::new(move |inner| {
            BoxCloneSyncService::new(layer.layer(inner))
        }));
        self
    }

    /// The bot.
    #[must_use]
    pub fn bot(mut self, bot: impl Bot) -> Self {
        self.bot = Some(Arc::new(bot));
        self
    }

    /// Opens the keystore and the store, and binds the metrics listener.
    ///
    /// # Errors
    /// [`BotError::Protocol`] for a missing setting or a keystore that is not an agent's;
    /// [`BotError::Relay`] for keystore errors; [`BotError::Store`]; [`BotError::Other`] if
    /// the metrics address cannot be bound.
    pub async fn build(self) -> Result<Runtime, BotError> {
        let missing = |what: &str| BotError::Protocol(format!("the runtime needs {what}"));
        let keystore = self.keystore.ok_or_else(|| missing("a keystore"))?;
        let secret = self.secret.ok_or_else(|| missing("a key file or secret"))?;
        let bot = self.bot.ok_or_else(|| missing("a bot"))?;
        let device = Device::open(&keystore, &secret, self.relay.as_deref()).await?;
        let DeviceRole::Agent { entity, .. } = device.role().clone() else {
            return Err(BotError::Protocol(format!(
                "{} is not an agent's keystore",
                keystore.display()
            )));
        };
        let store = match self.store {
            Some(store) => store,
            None => {
                let url = self
                    .store_url
                    .unwrap_or_else(|| format!("sqlite://{}.botstore.db", keystore.display()));
                crate::store::open(&url, device.id(), StoreKey::derive(device.keys().seed()))
                    .await?
            }
        };
        let http = match self.http {
            Some(http) => http,
            None => reqwest::Client::builder().build()?,
        };
        let instance = match self.instance {
            Some(instance) => instance,
            None => default_instance(&keystore),
        };
        let listener = match self.metrics_addr {
            Some(addr) => Some(
                tokio::net::TcpListener::bind(addr)
                    .await
                    .map_err(BotError::other)?,
            ),
            None => None,
        };
        let relay = device.relay().clone();
        let mut inbound: InboundService = BoxCloneSyncService::new(BotService(bot));
        for wrap in self.inbound {
            inbound = wrap(inbound);
        }
        let mut outbound = outbound_end();
        for wrap in self.outbound {
            outbound = wrap(outbound);
        }
        let mut delivery = delivery_end(relay.clone());
        for wrap in self.delivery {
            delivery = wrap(delivery);
        }
        let concurrency = self.concurrency;
        let max_inflight = u32::try_from(concurrency.saturating_mul(4))
            .unwrap_or(u32::MAX)
            .clamp(FETCH_LIMIT, 100_000);
        let cursor_key = format!("cursor/{instance}");
        let cursor = match store.get_meta(&cursor_key).await? {
            Some(bytes) => std::str::from_utf8(&bytes)
                .ok()
                .and_then(|s| s.parse::<u64>().ok())
                .unwrap_or(0),
            None => 0,
        };
        let shared = Arc::new(Shared {
            store,
            keys: RwLock::new(device.shared_keys()),
            role: device.role().clone(),
            relay,
            me: device.id(),
            entity,
            fingerprint: device.fingerprint(),
            inbound,
            outbound,
            delivery,
            http,
            shutdown: CancellationToken::new(),
            metrics: Metrics::new(),
            instance,
            inflight: Arc::new(Semaphore::new(max_inflight as usize)),
            max_inflight,
            thread_slots: Arc::new(Semaphore::new(concurrency)),
            queues: Mutex::new(HashMap::new()),
            acks: Mutex::new(AckTracker::starting_at(cursor)),
            ready: AtomicBool::new(false),
            acked: AtomicU64::new(cursor),
        });
        Ok(Runtime {
            shared,
            device: Arc::new(tokio::sync::Mutex::new(device)),
            listener,
            cursor,
            cursor_key,
            shutdown_timeout: self.shutdown_timeout,
            stop: CancellationToken::new(),
        })
    }
}

/// `<hostname>-<pid>`, or the keystore's file name if the host has no name to read.
fn default_instance(keystore: &Path) -> String {
    let host = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| {
            keystore
                .file_stem()
                .map_or_else(|| "bot".to_owned(), |s| s.to_string_lossy().into_owned())
        });
    format!("{host}-{}", std::process::id())
}

/// A bot's runtime: see the [crate docs](crate).
pub struct Runtime {
    shared: Arc<Shared>,
    device: Arc<tokio::sync::Mutex<Device>>,
    listener: Option<tokio::net::TcpListener>,
    cursor: u64,
    cursor_key: String,
    shutdown_timeout: Duration,
    stop: CancellationToken,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("device", &self.shared.me)
            .field("instance", &self.shared.instance)
            .finish_non_exhaustive()
    }
}

/// Stops a running [`Runtime`] from elsewhere (tests, a supervisor). Cheap to clone.
#[derive(Clone, Debug)]
pub struct RuntimeHandle {
    stop: CancellationToken,
}

impl RuntimeHandle {
    /// Asks the runtime to shut down gracefully.
    pub fn shutdown(&self) {
        self.stop.cancel();
    }
}

impl Runtime {
    /// A new builder (keystore, key file and bot are required).
    #[must_use]
    pub fn builder() -> RuntimeBuilder {
        RuntimeBuilder {
            keystore: None,
            secret: None,
            relay: None,
            store_url: None,
            store: None,
            instance: None,
            concurrency: 64,
            metrics_addr: None,
            http: None,
            inbound: Vec::new(),
            outbound: Vec::new(),
            delivery: Vec::new(),
            bot: None,
            shutdown_timeout: Duration::from_secs(10),
        }
    }

    /// A handle that shuts the runtime down.
    #[must_use]
    pub fn handle(&self) -> RuntimeHandle {
        RuntimeHandle {
            stop: self.stop.clone(),
        }
    }

    /// Where the metrics listener listens, if there is one.
    #[must_use]
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.listener.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The metrics registry (for layers that record into it, and for tests).
    #[must_use]
    pub fn metrics(&self) -> Metrics {
        self.shared.metrics.clone()
    }

    /// Runs until ctrl-c or SIGTERM, then shuts down gracefully.
    ///
    /// # Errors
    /// As [`Runtime::run_until`].
    pub async fn run_until_shutdown(self) -> Result<(), BotError> {
        self.run_until(shutdown_signal()).await
    }

    /// Runs until `stop` completes (or [`RuntimeHandle::shutdown`]), then shuts down
    /// gracefully: stops fetching, finishes the events in flight and posts their replies
    /// (bounded by the shutdown timeout), acknowledges what was handled.
    ///
    /// # Errors
    /// Store errors at shutdown.
    pub async fn run_until(
        mut self,
        stop: impl Future<Output = ()> + Send,
    ) -> Result<(), BotError> {
        let shared = Arc::clone(&self.shared);
        // Dropped without a shutdown (the task aborted): stop fetching all the same.
        let _stop_fetching = shared.shutdown.clone().drop_guard();
        let mut background = tokio::task::JoinSet::new();
        if let Some(listener) = self.listener.take() {
            let app = http::app(Arc::clone(&shared));
            background.spawn(async move {
                if let Err(e) = axum::serve(listener, app).await {
                    tracing::error!(error = %e, "the metrics listener stopped");
                }
            });
        }
        background.spawn(key_upkeep(Arc::clone(&shared), Arc::clone(&self.device)));
        background.spawn(acker(Arc::clone(&shared), self.cursor_key.clone()));
        background.spawn(sweeper(Arc::clone(&shared)));
        let fetching = tokio::spawn(fetch_loop(Arc::clone(&shared), self.cursor));
        tokio::select! {
            () = stop => {}
            () = self.stop.cancelled() => {}
        }
        tracing::info!("shutting down");
        shared.shutdown.cancel();
        let _ = fetching.await;
        // Finish the events in flight.
        let all = shared.max_inflight;
        let finished = tokio::time::timeout(
            self.shutdown_timeout,
            Arc::clone(&shared.inflight).acquire_many_owned(all),
        )
        .await;
        if finished.is_err() {
            tracing::warn!("shutdown timeout: some events were not finished (they come again)");
        }
        // Post what the outbox still holds, then acknowledge what was handled.
        let _ = tokio::time::timeout(self.shutdown_timeout, sweep(&shared)).await;
        flush_acks(&shared, &self.cursor_key).await;
        background.shutdown().await;
        self.device.lock().await.flush_acks().await;
        Ok(())
    }
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let term = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut s) => {
                    s.recv().await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen for SIGTERM");
                    std::future::pending::<()>().await;
                }
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            () = term => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Fetches the inbox (leased to this instance) and hands the items to their threads.
async fn fetch_loop(shared: Arc<Shared>, mut after: u64) {
    let mut backoff = Duration::from_millis(100);
    loop {
        // Backpressure: wait for room for at least one item.
        let first = tokio::select! {
            permit = Arc::clone(&shared.inflight).acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => return,
            },
            () = shared.shutdown.cancelled() => return,
        };
        let room = u32::try_from(shared.inflight.available_permits())
            .unwrap_or(u32::MAX)
            .saturating_add(1)
            .min(FETCH_LIMIT);
        let page = tokio::select! {
            page = shared.relay.inbox_page(after, room, FETCH_WAIT, Some(&shared.instance)) => page,
            () = shared.shutdown.cancelled() => return,
        };
        let (items, highest) = match page {
            Ok(page) => {
                backoff = Duration::from_millis(100);
                shared.ready.store(true, Ordering::Relaxed);
                page
            }
            Err(e) => {
                drop(first);
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
                continue;
            }
        };
        let mut first = Some(first);
        for item in items {
            let permit = match first.take() {
                Some(p) => p,
                None => match Arc::clone(&shared.inflight).acquire_owned().await {
                    Ok(p) => p,
                    Err(_) => return,
                },
            };
            after = after.max(item.seq);
            shared.acks().fetched(item.seq);
            let thread = item.thread;
            dispatch(
                &shared,
                thread,
                WorkItem {
                    kind: WorkKind::Inbox(Box::new(item)),
                    permit: Some(permit),
                },
            );
        }
        if let Some(highest) = highest {
            after = after.max(highest);
            shared.acks().skipped_to(highest);
        }
    }
}

/// The pause after a failed fetch: the relay's `Retry-After`, or the backoff with jitter.
fn pause_after(e: &ClientError, backoff: Duration) -> Duration {
    if let ClientError::Refused {
        retry_after: Some(secs),
        ..
    } = e
    {
        return Duration::from_secs(*secs);
    }
    worker::jittered(backoff)
}

/// Acknowledges handled items as they are committed.
async fn acker(shared: Arc<Shared>, cursor_key: String) {
    loop {
        tokio::time::sleep(ACK_EVERY).await;
        flush_acks(&shared, &cursor_key).await;
    }
}

/// Acknowledges up to the highest position below which everything is committed, and keeps
/// that position as this instance's cursor.
async fn flush_acks(shared: &Shared, cursor_key: &str) {
    let up_to = shared.acks().up_to();
    if up_to <= shared.acked.load(Ordering::Relaxed) {
        return;
    }
    if let Err(e) = shared.relay.ack(up_to, Some(&shared.instance)).await {
        tracing::warn!(error = %e, up_to, "ack failed; the next one covers it");
        return;
    }
    if let Err(e) = shared
        .store
        .put_meta(cursor_key, up_to.to_string().as_bytes())
        .await
    {
        tracing::warn!(error = %e, "cannot keep the inbox cursor");
        return;
    }
    shared.acked.fetch_max(up_to, Ordering::Relaxed);
}

/// Posts what the outbox holds, now and then (messages whose delivery failed, and after a
/// crash).
async fn sweeper(shared: Arc<Shared>) {
    loop {
        sweep(&shared).await;
        tokio::time::sleep(SWEEP_EVERY).await;
    }
}

async fn sweep(shared: &Shared) {
    let entries = match shared.store.outbox(256).await {
        Ok(entries) => entries,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the outbox");
            return;
        }
    };
    for entry in entries {
        let id = entry.message_id.clone();
        match shared.deliver(entry).await {
            Ok(()) => {}
            Err(BotError::Store(crate::store::StoreError::Corrupt(reason))) => {
                tracing::error!(%reason, "dropping an outbox entry that does not decode");
                let _ = shared.store.sent(&id).await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "delivery failed; trying again later");
            }
        }
    }
}

/// Hourly upkeep: KEM keys (under the device's lock; the workers get the new keys), and the
/// inbound journal (entries older than [`JOURNAL_KEEP`] are forgotten: the relay redelivers
/// only unacknowledged items, and messages that old are refused by the protocol's own replay
/// windows anyway).
async fn key_upkeep(shared: Arc<Shared>, device: Arc<tokio::sync::Mutex<Device>>) {
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
