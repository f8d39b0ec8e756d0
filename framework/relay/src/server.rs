//! Running the relay: open the store, bind, serve until a shutdown signal, finish requests in
//! flight, close the store. Every post is committed to the database before it is answered, so
//! stopping (even abruptly) loses no answered post.

use std::future::Future;
use std::sync::Arc;

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

/// Runs the relay on `db`, listening on `listen`, until `shutdown` resolves. Prints
/// `listening on ADDR` to stdout once ready (with the real port when `listen` used port 0).
///
/// # Errors
/// [`ServerError`] if the database cannot be opened, the address cannot be bound, or serving
/// fails.
pub async fn run(
    db: &str,
    listen: &str,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let (listener, router) = prepare(db, listen, Limits::default()).await?;
    let addr = listener.local_addr().map_err(ServerError::Serve)?;
    #[allow(clippy::print_stdout)]
    {
        println!("listening on {addr}");
    }
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(ServerError::Serve)?;
    tracing::info!("relay stopped");
    Ok(())
}

async fn prepare(
    db: &str,
    listen: &str,
    limits: Limits,
) -> Result<(tokio::net::TcpListener, axum::Router), ServerError> {
    let store: Arc<dyn store::Store> = Arc::from(store::open(db).await?);
    let listener = tokio::net::TcpListener::bind(listen)
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

/// A relay running in this process (for the demo, examples and tests): [`Running::url`] to
/// reach it, [`Running::stop`] (or dropping it) to shut it down gracefully.
#[derive(Debug)]
pub struct Running {
    addr: std::net::SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<Result<(), std::io::Error>>,
}

impl Running {
    /// `http://ADDR`.
    #[must_use]
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The bound address.
    #[must_use]
    pub fn addr(&self) -> std::net::SocketAddr {
        self.addr
    }

    /// Stops accepting, finishes requests in flight, and waits for that.
    ///
    /// # Errors
    /// [`ServerError::Serve`] if serving had failed.
    pub async fn stop(mut self) -> Result<(), ServerError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match (&mut self.task).await {
            Ok(result) => result.map_err(ServerError::Serve),
            Err(e) => Err(ServerError::Serve(std::io::Error::other(e))),
        }
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
    start_with_limits(db, listen, Limits::default()).await
}

/// [`start`] with other per-device rate limits (the HTTP bench lifts them).
///
/// # Errors
/// As [`start`].
pub async fn start_with_limits(
    db: &str,
    listen: &str,
    limits: Limits,
) -> Result<Running, ServerError> {
    let (listener, router) = prepare(db, listen, limits).await?;
    let addr = listener.local_addr().map_err(ServerError::Serve)?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(async move {
                let _ = stopped.await;
            })
            .await
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
}
