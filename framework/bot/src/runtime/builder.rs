//! [`RuntimeBuilder`]: what a runtime is made of.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use switchboard_client::{Device, DeviceRole, KeystoreSecret};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tower::util::BoxCloneSyncService;
use tower::{Layer, Service};

use super::Runtime;
use super::shared::{AckTracker, Shared};
use super::tasks::FETCH_LIMIT;
use crate::bot::Bot;
use crate::error::BotError;
use crate::layers::{Metrics, MetricsLayer, RetryLayer, TraceLayer};
use crate::pipeline::{
    BotService, Delivery, DeliveryService, Inbound, InboundService, OutboundService, Outgoing,
    delivery_end, outbound_end,
};
use crate::store::{BotStore, StoreKey};

/// Attempts of one post to the relay before the sender leaves the message to its outbox sweep.
const DELIVERY_ATTEMPTS: u32 = 3;

type Wrap<S> = Box<dyn FnOnce(S) -> S + Send + Sync>;

/// Sets up a [`Runtime`]: see [`Runtime::builder`].
pub struct RuntimeBuilder {
    keystore: Option<PathBuf>,
    secret: Option<KeystoreSecret>,
    relay: Option<String>,
    store_url: Option<String>,
    store: Option<Arc<dyn BotStore>>,
    instance: Option<String>,
    concurrency: usize,
    thread_cache: usize,
    inbox_stream: bool,
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
            .field("thread_cache", &self.thread_cache)
            .finish_non_exhaustive()
    }
}

impl RuntimeBuilder {
    pub(super) fn new() -> Self {
        Self {
            keystore: None,
            secret: None,
            relay: None,
            store_url: None,
            store: None,
            instance: None,
            concurrency: 64,
            thread_cache: crate::runtime::cache::DEFAULT_CAPACITY,
            inbox_stream: false,
            metrics_addr: None,
            http: None,
            inbound: Vec::new(),
            outbound: Vec::new(),
            delivery: Vec::new(),
            bot: None,
            shutdown_timeout: Duration::from_secs(10),
        }
    }

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

    /// How many threads' decoded state is kept in memory between their events (default
    /// 1024; 0 keeps none). A cached thread's next event needs no read or decode from the
    /// store; each commit still checks the thread's version, so several instances sharing a
    /// store stay correct. Memory: about the thread's state plus its recent history (up to
    /// 100 messages) per thread.
    #[must_use]
    pub fn thread_cache(mut self, threads: usize) -> Self {
        self.thread_cache = threads;
        self
    }

    /// Receive the inbox over the relay's inbox stream (`GET /v1/inbox/stream`: one long-lived
    /// response; opened again from the cursor when it ends or breaks) instead of long-polling
    /// (the default). A relay without streams is long-polled all the same. Measured with
    /// `switchboard bench echo --stream`: a stream lowers the latency of a lightly loaded bot
    /// (no request per delivered item), but under heavy load long-polling batches better (one
    /// fetch takes every item that arrived while the bot worked; a stream sends each as it
    /// arrives): see the crate README.
    #[must_use]
    pub fn inbox_stream(mut self, on: bool) -> Self {
        self.inbox_stream = on;
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
    /// added later wrap those added before; the built-in tracing and metrics layers wrap them
    /// all (every event has a span and is counted in `/metrics`, whatever a layer decides).
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
        let key = StoreKey::derive(device.keys().seed());
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
        crate::store::check_key(store.as_ref(), &key).await?;
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
        // The built-in layers: every event traced and counted around the bot's own layers;
        // every outgoing message traced; every post retried on transient relay errors.
        let metrics = Metrics::new();
        let mut inbound: InboundService = BoxCloneSyncService::new(BotService(bot));
        for wrap in self.inbound {
            inbound = wrap(inbound);
        }
        let inbound = BoxCloneSyncService::new(
            tower::ServiceBuilder::new()
                .layer(TraceLayer::new().pipeline("inbound"))
                .layer(MetricsLayer::new(metrics.clone()).pipeline("inbound"))
                .service(inbound),
        );
        let mut outbound = outbound_end();
        for wrap in self.outbound {
            outbound = wrap(outbound);
        }
        let outbound = BoxCloneSyncService::new(
            tower::ServiceBuilder::new()
                .layer(TraceLayer::new().pipeline("outbound"))
                .service(outbound),
        );
        let mut delivery = BoxCloneSyncService::new(
            tower::ServiceBuilder::new()
                .layer(RetryLayer::new(DELIVERY_ATTEMPTS))
                .service(delivery_end(relay.clone())),
        );
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
            metrics,
            instance,
            inflight: Arc::new(Semaphore::new(max_inflight as usize)),
            max_inflight,
            thread_slots: Arc::new(Semaphore::new(concurrency)),
            cache: crate::runtime::cache::ThreadCache::new(self.thread_cache),
            queues: Mutex::new(HashMap::new()),
            acks: Mutex::new(AckTracker::starting_at(cursor)),
            sender: crate::runtime::sender::Sender::default(),
            ready: AtomicBool::new(false),
            quarantined: Mutex::new(HashSet::new()),
            acked: AtomicU64::new(cursor),
            forgetting: Arc::default(),
            stream_inbox: self.inbox_stream,
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
