//! The runtime: fetches the bot's inbox, runs each thread's events in order (different threads
//! concurrently), commits each event's effects in one store transaction, posts the replies.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use switchboard_client::Device;
use switchboard_protocol::{SealedMessage, ThreadId, encode};
use tokio_util::sync::CancellationToken;

use crate::error::BotError;
use crate::layers::Metrics;
use crate::store::OutboxEntry;

pub(crate) mod blob;
mod builder;
pub(crate) mod cache;
mod events;
mod http;
pub(crate) mod sender;
pub(crate) mod shared;
mod tasks;
pub(crate) mod worker;

pub use builder::RuntimeBuilder;
use shared::Shared;

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
        RuntimeBuilder::new()
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
        background.spawn(tasks::key_upkeep(
            Arc::clone(&shared),
            Arc::clone(&self.device),
        ));
        background.spawn(tasks::acker(Arc::clone(&shared), self.cursor_key.clone()));
        // What an earlier process left in the outbox goes first in its threads' queues, before
        // any new event's replies.
        tasks::load_outbox(&shared).await;
        background.spawn(tasks::sweeper(Arc::clone(&shared)));
        let fetching = tokio::spawn(tasks::fetch_loop(Arc::clone(&shared), self.cursor));
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
        let _ = tokio::time::timeout(self.shutdown_timeout, tasks::sweep(&shared)).await;
        shared.flush_forgotten().await;
        // At shutdown, one try: a refused acknowledgement leaves the items to come again.
        let _ = tasks::flush_acks(&shared, &self.cursor_key).await;
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
