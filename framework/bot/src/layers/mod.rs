//! The built-in tower layers of the bot pipelines, and the request traits they see requests
//! through.
//!
//! Every layer is generic over a small trait instead of the runtime's concrete request types,
//! so that it can be tested against a mock service and a mock request, and reused by a plugin
//! of your own:
//!
//! | layer | pipeline | request trait | what it does |
//! |---|---|---|---|
//! | [`RateLimitLayer`] | any | [`ThreadScoped`] | token buckets per thread and per bot; waits, then refuses |
//! | [`RetryLayer`] | delivery | `Clone` | retries [`Transient`] errors with jittered exponential backoff |
//! | [`TimeoutLayer`] | any | any | [`BotError::Timeout`] when the inner service is too slow |
//! | [`TypingLayer`] | inbound | [`InboundInfo`] | typing on while a slow handler works, off when it ends |
//! | [`ContentGuardLayer`] | outbound | [`OutgoingContent`] | refuses long text and forbidden patterns |
//! | [`LoopGuardLayer`] | inbound | [`InboundInfo`] | stops a bot answering another bot forever |
//! | [`TraceLayer`] | any | [`ThreadScoped`] | a tracing span per request with outcome and latency |
//! | [`MetricsLayer`] | any | [`ThreadScoped`] | counts and latency histograms into [`Metrics`] |
//!
//! Layers that keep per-thread state (rate limit, loop guard) bound their tables: an untrusted
//! party who opens many threads cannot grow them without limit.

use std::fmt::Debug;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use switchboard_protocol::{Content, DeviceId, Sender, ThreadId};

use crate::BotError;

pub mod content_guard;
pub mod loop_guard;
pub mod metrics;
pub mod rate_limit;
pub mod retry;
mod table;
pub mod timeout;
pub mod trace;
pub mod typing;

#[cfg(test)]
mod testing;

#[doc = include_str!("../../../../docs/middleware.md")]
pub mod guide {}

pub use content_guard::{ContentGuard, ContentGuardLayer};
pub use loop_guard::{LoopGuard, LoopGuardLayer};
pub use metrics::{Counter, Histogram, Metrics, MetricsLayer, MetricsService};
pub use rate_limit::{RateLimit, RateLimitLayer};
pub use retry::{Retry, RetryLayer};
pub use timeout::{Timeout, TimeoutLayer};
pub use trace::{Outcome, Trace, TraceLayer};
pub use typing::{Typing, TypingLayer};

/// The future of a layer's service: boxed, `Send`, owning everything it needs.
pub type BoxResponseFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send + 'static>>;

/// A request that belongs to one thread.
pub trait ThreadScoped {
    /// The thread the request belongs to.
    fn thread(&self) -> ThreadId;

    /// A short, fixed name of the request's kind (e.g. `"message"`, `"receipt"`), used as a
    /// tracing field and a metrics label. Must come from a fixed set (never from message data),
    /// so that metrics series stay bounded. Defaults to `"request"`.
    fn kind(&self) -> &'static str {
        "request"
    }
}

/// An inbound event as the guards see it.
pub trait InboundInfo: ThreadScoped {
    /// Who sent the message, if the event is a message (None for joins, removals, ...).
    fn sender(&self) -> Option<&Sender>;
    /// The sending device, if a message.
    fn sender_device(&self) -> Option<DeviceId>;
    /// Typing signal for the thread (None if the bot cannot post there, e.g. removed).
    fn typing(&self) -> Option<Arc<dyn TypingSignal>>;
}

/// An outgoing message before sealing.
pub trait OutgoingContent: ThreadScoped {
    /// The content to be sent.
    fn content(&self) -> &Content;
    /// The content to be sent, for layers that rewrite it.
    fn content_mut(&mut self) -> &mut Content;
}

/// An error that says whether trying again may help (implemented for [`BotError`]).
pub trait Transient {
    /// Whether trying again later may succeed.
    fn is_transient(&self) -> bool;
    /// How long to wait before trying again, when the error says so.
    fn retry_after(&self) -> Option<Duration>;
}

impl Transient for BotError {
    fn is_transient(&self) -> bool {
        BotError::is_transient(self)
    }

    fn retry_after(&self) -> Option<Duration> {
        BotError::retry_after(self)
    }
}

/// Sets the typing indicator of one thread (the runtime implements it for its `TypingHandle`).
#[async_trait::async_trait]
pub trait TypingSignal: Send + Sync + Debug {
    /// Posts a typing message now: `true` when the bot starts working, `false` when it stops.
    async fn set(&self, active: bool) -> Result<(), BotError>;
}
