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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use tower::util::BoxCloneSyncService;
    use tower::{ServiceBuilder, ServiceExt};

    use super::*;
    use testing::{Mock, Req};

    fn assert_send_sync<T: Send + Sync>() {}

    #[test]
    fn layers_services_and_metrics_are_send_sync() {
        type Inner = Mock;
        assert_send_sync::<RateLimitLayer>();
        assert_send_sync::<RateLimit<Inner>>();
        assert_send_sync::<RetryLayer>();
        assert_send_sync::<Retry<Inner>>();
        assert_send_sync::<TimeoutLayer>();
        assert_send_sync::<Timeout<Inner>>();
        assert_send_sync::<TypingLayer>();
        assert_send_sync::<Typing<Inner>>();
        assert_send_sync::<ContentGuardLayer>();
        assert_send_sync::<ContentGuard<Inner>>();
        assert_send_sync::<LoopGuardLayer>();
        assert_send_sync::<LoopGuard<Inner>>();
        assert_send_sync::<TraceLayer>();
        assert_send_sync::<Trace<Inner>>();
        assert_send_sync::<MetricsLayer>();
        assert_send_sync::<MetricsService<Inner>>();
        assert_send_sync::<Metrics>();
        assert_send_sync::<Counter>();
        assert_send_sync::<Histogram>();
        assert_send_sync::<Outcome>();
        assert_send_sync::<Arc<dyn TypingSignal>>();
    }

    /// The layers stack and re-box the way the runtime's pipelines do.
    #[tokio::test(start_paused = true)]
    async fn layers_compose_into_boxed_pipelines() {
        let metrics = Metrics::new();
        let bot = Mock::echo();
        let inner = BoxCloneSyncService::new(bot.clone().map_response(|_| ()));
        let inbound = BoxCloneSyncService::new(
            ServiceBuilder::new()
                .layer(TraceLayer::new().pipeline("inbound"))
                .layer(MetricsLayer::new(metrics.clone()).pipeline("inbound"))
                .layer(LoopGuardLayer::default())
                .layer(RateLimitLayer::per_thread(10, Duration::from_secs(1)))
                .layer(TypingLayer::default())
                .layer(TimeoutLayer::new(Duration::from_secs(30)))
                .service(inner),
        );
        inbound.clone().oneshot(Req::customer(1)).await.unwrap();

        let outbound = BoxCloneSyncService::new(
            ServiceBuilder::new()
                .layer(TraceLayer::new().pipeline("outbound"))
                .layer(ContentGuardLayer::new().max_chars(100))
                .service(BoxCloneSyncService::new(Mock::echo())),
        );
        let sent = outbound
            .oneshot(Req::outgoing(1, Content::text("hi")))
            .await
            .unwrap();
        assert_eq!(sent.content, Content::text("hi"));

        let delivery = BoxCloneSyncService::new(
            ServiceBuilder::new()
                .layer(TimeoutLayer::new(Duration::from_secs(10)))
                .layer(RetryLayer::new(5))
                .service(BoxCloneSyncService::new(Mock::echo().map_response(|_| ()))),
        );
        delivery.oneshot(Req::event(1)).await.unwrap();

        assert_eq!(bot.calls(), 1);
        assert!(
            metrics
                .render()
                .contains("outcome=\"ok\",pipeline=\"inbound\"} 1\n")
        );
    }
}
