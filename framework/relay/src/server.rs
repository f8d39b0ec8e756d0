//! Running the relay: open the store, bind, serve until a shutdown signal, finish requests in
//! flight (for at most [`ServerConfig::shutdown_grace_secs`]), close the store. Every post is
//! committed to the database before it is answered, so stopping (even abruptly) loses no
//! answered post.
//!
//! Connections are served by hyper directly, so that slow or idle clients cannot hold the relay:
//! a request head must arrive within [`ServerConfig::header_read_secs`] (the same bound applies
//! to a kept-alive connection waiting for its next request), a body within
//! [`Limits::body_read_secs`], at most [`ServerConfig::max_connections`] connections are open at
//! once (more are closed as soon as they are accepted), and shutdown ends waiting connections.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tower::ServiceExt as _;

use crate::http::{Limits, RelayState, app, system_clock};
use crate::store::{self, StoreError};

/// Why the relay could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The store could not be opened.
    #[error("cannot open the database: {0}")]
    Store(#[from] StoreError),
    /// The address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// Serving failed.
    #[error("server error: {0}")]
    Serve(std::io::Error),
}

/// How the relay serves connections, and its limits.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Seconds a client has to send a request head; also how long a kept-alive connection may
    /// stay idle between requests.
    pub header_read_secs: u64,
    /// Connections open at once; more are closed at once. Lowered to what the process's limit
    /// on open files allows (keeping 64 for the database and logs).
    pub max_connections: usize,
    /// Seconds requests in flight get to finish after a shutdown signal; then the relay stops
    /// anyway.
    pub shutdown_grace_secs: u64,
    /// Rate limits, body budget and body read time.
    pub limits: Limits,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            header_read_secs: 10,
            max_connections: 4096,
            shutdown_grace_secs: 10,
            limits: Limits::default(),
        }
    }
}

impl ServerConfig {
    /// The connection cap after the process's limit on open files.
    fn connection_cap(&self) -> usize {
        let cap = self.max_connections.max(1);
        match open_files_limit() {
            Some(limit) => cap.min(limit.saturating_sub(64).max(1)),
            None => cap,
        }
    }
}

/// The soft limit on open files of this process (Linux), if it can be read.
fn open_files_limit() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

/// Runs the relay on `db`, listening on `listen`, until `shutdown` resolves. Prints
/// `listening on ADDR` to stdout once ready (with the real port when `listen` used port 0).
///
/// # Errors
/// [`ServerError`] if the database cannot be opened, the address cannot be bound, or serving
/// fails.
pub async fn run(
    db: &str,
    listen: &str,
    config: ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let (listener, router) = prepare(db, listen, config.limits.clone()).await?;
    let addr = listener.local_addr().map_err(ServerError::Serve)?;
    #[allow(clippy::print_stdout)]
    {
        println!("listening on {addr}");
    }
    serve(listener, router, &config, shutdown).await;
    tracing::info!("relay stopped");
    Ok(())
}

async fn prepare(
    db: &str,
    listen: &str,
    limits: Limits,
) -> Result<(TcpListener, axum::Router), ServerError> {
    let store: Arc<dyn store::Store> = Arc::from(store::open(db).await?);
    let listener = TcpListener::bind(listen)
        .await
        .map_err(|source| ServerError::Bind {
            addr: listen.to_owned(),
            source,
        })?;
    let addr = listener.local_addr().map_err(ServerError::Serve)?;
    tracing::info!(%addr, db = %redact(db), "relay listening");
    let state = RelayState::new(store, system_clock()).with_limits(limits);
    Ok((listener, app(state)))
}

/// Serves `router` on `listener` until `shutdown` resolves, then lets connections finish for
/// at most the grace period.
pub async fn serve(
    listener: TcpListener,
    router: axum::Router,
    config: &ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let cap = config.connection_cap();
    let connections = Arc::new(Semaphore::new(cap));
    let header_read = Duration::from_secs(config.header_read_secs.max(1));
    let (closing, closed) = watch::channel(false);
    tokio::pin!(shutdown);
    let mut refused: u64 = 0;
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors or a connection reset before it was accepted: pause
                    // briefly rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = Arc::clone(&connections).try_acquire_owned() else {
            refused += 1;
            if refused.is_power_of_two() {
                tracing::warn!(
                    cap,
                    refused,
                    "connection cap reached; closing new connections"
                );
            }
            drop(stream);
            continue;
        };
        let router = router.clone();
        let mut closed = closed.clone();
        tokio::spawn(async move {
            let service =
                hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
                    request.extensions_mut().insert(ConnectInfo(peer));
                    let router = router.clone();
                    async move {
                        Ok::<_, Infallible>(
                            router.oneshot(request).await.unwrap_or_else(|e| match e {}),
                        )
                    }
                });
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(header_read)
                .max_buf_size(64 * 1024);
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(connection);
            let result = tokio::select! {
                result = connection.as_mut() => result,
                _ = closed.changed() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    let _ = closing.send(true);
    let grace = Duration::from_secs(config.shutdown_grace_secs);
    let everyone = u32::try_from(cap).unwrap_or(u32::MAX);
    match tokio::time::timeout(grace, connections.acquire_many(everyone)).await {
        Ok(_) => tracing::info!("every connection finished"),
        Err(_) => tracing::warn!(
            open = cap.saturating_sub(connections.available_permits()),
            "shutdown grace period over; closing the connections still open"
        ),
    }
}

/// A relay running in this process (for the demo, examples and tests): [`Running::url`] to
/// reach it, [`Running::stop`] (or dropping it) to shut it down gracefully.
#[derive(Debug)]
pub struct Running {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    /// `http://ADDR`.
    #[must_use]
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The bound address.
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, finishes requests in flight (within the grace period), and waits for
    /// that.
    ///
    /// # Errors
    /// [`ServerError::Serve`] if the serving task failed.
    pub async fn stop(mut self) -> Result<(), ServerError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        (&mut self.task)
            .await
            .map_err(|e| ServerError::Serve(std::io::Error::other(e)))
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Starts the relay on `db`, listening on `listen` (`127.0.0.1:0` for any free port), in a task
/// of the current runtime.
///
/// # Errors
/// [`ServerError`] if the database cannot be opened or the address bound.
pub async fn start(db: &str, listen: &str) -> Result<Running, ServerError> {
    start_with(db, listen, ServerConfig::default()).await
}

/// [`start`] with other limits (the HTTP bench lifts the rate limits).
///
/// # Errors
/// As [`start`].
pub async fn start_with_limits(
    db: &str,
    listen: &str,
    limits: Limits,
) -> Result<Running, ServerError> {
    start_with(
        db,
        listen,
        ServerConfig {
            limits,
            ..ServerConfig::default()
        },
    )
    .await
}

/// [`start`] with another configuration.
///
/// # Errors
/// As [`start`].
pub async fn start_with(
    db: &str,
    listen: &str,
    config: ServerConfig,
) -> Result<Running, ServerError> {
    let (listener, router) = prepare(db, listen, config.limits.clone()).await?;
    let addr = listener.local_addr().map_err(ServerError::Serve)?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        serve(listener, router, &config, async move {
            let _ = stopped.await;
        })
        .await;
    });
    Ok(Running {
        addr,
        stop: Some(stop),
        task,
    })
}

/// The database URL without a password, for logs.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme && url[scheme + 3..at].contains(':') => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or_default();
            format!("{}{user}:***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_are_redacted_from_logged_urls() {
        assert_eq!(
            super::redact("postgres://u:secret@h/db"),
            "postgres://u:***@h/db"
        );
        assert_eq!(super::redact("sqlite://relay.db"), "sqlite://relay.db");
        assert_eq!(super::redact("postgres://u@h/db"), "postgres://u@h/db");
    }

    #[test]
    fn the_open_files_limit_is_read() {
        assert!(super::open_files_limit().is_some_and(|n| n > 0));
    }
}
