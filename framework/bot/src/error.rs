//! The error every hook, layer and pipeline of the SDK returns.

use std::time::Duration;

/// What went wrong while handling an event or posting a message.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BotError {
    /// The relay refused or could not be reached; transient per
    /// [`ClientError::is_transient`](switchboard_client::ClientError::is_transient).
    #[error("relay: {0}")]
    Relay(#[from] switchboard_client::ClientError),
    /// The bot's state store failed; transient if the store says so.
    #[error("store: {0}")]
    Store(#[from] crate::store::StoreError),
    /// A protocol rule was broken (a message could not be sealed or opened).
    #[error("protocol: {0}")]
    Protocol(String),
    /// A layer refused the event or message.
    #[error("refused by {layer}: {reason}")]
    Refused {
        /// The layer that refused, e.g. `"content_guard"`.
        layer: &'static str,
        /// Why, for the log.
        reason: String,
    },
    /// Too many requests; try again after `retry_after` (transient).
    #[error("rate limited: retry after {retry_after:?}")]
    RateLimited {
        /// How long to wait before a new attempt may pass.
        retry_after: Duration,
    },
    /// The handler or call did not finish in time (transient).
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// The bot does not hold the floor of the thread, so it may not post text.
    #[error("the bot does not hold the floor of this thread")]
    NoFloor,
    /// The bot's typed state could not be serialised or deserialised.
    #[error("bot state: {0}")]
    State(String),
    /// A business API call failed; transient if it timed out or could not connect.
    #[error("http: {0}")]
    Http(#[from] reqwest::Error),
    /// Any other error of the bot's own code.
    #[error(transparent)]
    Other(#[from] Box<dyn std::error::Error + Send + Sync>),
}

impl BotError {
    /// Whether trying again later may succeed.
    #[must_use]
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Relay(e) => e.is_transient(),
            Self::Store(e) => e.is_transient(),
            Self::RateLimited { .. } | Self::Timeout(_) => true,
            Self::Http(e) => e.is_timeout() || e.is_connect(),
            Self::Protocol(_)
            | Self::Refused { .. }
            | Self::NoFloor
            | Self::State(_)
            | Self::Other(_) => false,
        }
    }

    /// How long to wait before trying again, when the error says so.
    #[must_use]
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::RateLimited { retry_after } => Some(*retry_after),
            _ => None,
        }
    }

    /// Wraps any error of the bot's own code.
    pub fn other(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Other(Box::new(e))
    }
}
