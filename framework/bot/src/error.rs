//! The one error type of the bot SDK.

use std::time::Duration;

use switchboard_client::ClientError;
use switchboard_protocol::api::ErrorCode;

use crate::store::StoreError;

/// What went wrong while handling an event, sending a message or running the runtime.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BotError {
    /// The relay refused a request or could not be reached.
    #[error("relay: {0}")]
    Relay(#[from] ClientError),
    /// The state store failed.
    #[error("store: {0}")]
    Store(#[from] StoreError),
    /// A protocol rule was broken (e.g. a message could not be sealed).
    #[error("protocol: {0}")]
    Protocol(String),
    /// A layer refused the event or the message.
    #[error("refused by {layer}: {reason}")]
    Refused {
        /// The layer.
        layer: &'static str,
        /// Why.
        reason: String,
    },
    /// Too many messages: try again after `retry_after`.
    #[error("rate limited: retry after {retry_after:?}")]
    RateLimited {
        /// How long to wait.
        retry_after: Duration,
    },
    /// The operation took longer than allowed.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// The bot does not hold the floor of the thread: it may not post text there (a human or
    /// another agent took over, or the admin holds the thread).
    #[error("the bot does not hold the floor of this thread")]
    NoFloor,
    /// The bot's typed state could not be read or written.
    #[error("bot state: {0}")]
    State(String),
    /// A business API call failed.
    #[error("http: {0}")]
    Http(#[from] reqwest::Error),
    /// Any other error of the bot.
    #[error(transparent)]
    Other(#[from] Box<dyn std::error::Error + Send + Sync>),
}

impl BotError {
    /// Whether trying again later may succeed (relay or database unreachable, rate limits,
    /// timeouts, a business API that did not answer).
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
            Self::Relay(ClientError::Refused {
                retry_after: Some(secs),
                ..
            }) => Some(Duration::from_secs(*secs)),
            _ => None,
        }
    }

    /// Wraps any error as [`BotError::Other`].
    pub fn other(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self::Other(Box::new(e))
    }

    /// A short, bounded label for metrics.
    pub(crate) fn label(&self) -> &'static str {
        match self {
            Self::Relay(_) => "relay",
            Self::Store(_) => "store",
            Self::Protocol(_) => "protocol",
            Self::Refused { .. } => "refused",
            Self::RateLimited { .. } => "rate_limited",
            Self::Timeout(_) => "timeout",
            Self::NoFloor => "no_floor",
            Self::State(_) => "state",
            Self::Http(_) => "http",
            Self::Other(_) => "other",
        }
    }

    /// Whether the relay answered that the resource exists already (a re-posted message).
    pub(crate) fn is_conflict(&self) -> bool {
        matches!(
            self,
            Self::Relay(ClientError::Refused {
                code: ErrorCode::Conflict,
                ..
            })
        )
    }
}

impl From<switchboard_protocol::MessageError> for BotError {
    fn from(e: switchboard_protocol::MessageError) -> Self {
        match e {
            switchboard_protocol::MessageError::NoFloor { .. } => Self::NoFloor,
            e => Self::Protocol(e.to_string()),
        }
    }
}
