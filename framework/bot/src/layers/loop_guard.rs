//! [`LoopGuardLayer`]: a bot never answers another bot forever.
//!
//! In a group thread two bots could answer each other without end. The guard counts, per
//! thread, the consecutive messages from bot agents (`Sender::Agent { kind: AgentKind::Bot }`)
//! since the last message from the customer or a human agent. Past `max_bot_turns` (default 3)
//! such messages, the event is not passed to the bot: the guard answers it with the default
//! response (`Ok(())` for the inbound pipeline) and logs it. A message from the customer or a
//! human starts the count again; events that are not messages (joins, receipts, ...) and
//! messages from the admin device change nothing. The bot's own device, if named with
//! [`LoopGuardLayer::own_device`], is never counted. Each call counts, so the guard belongs
//! after the runtime's inbound dedupe (a redelivered event that is passed again counts again).
//!
//! The per-thread table is bounded (`max_threads`, default 100,000; threads whose count is zero
//! are not stored at all). All services made by one layer (and its clones) share the counts.

use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use switchboard_protocol::{AgentKind, DeviceId, Sender};
use tower::{Layer, Service};

use super::table::ThreadTable;
use super::{BoxResponseFuture, InboundInfo};

/// The future of [`LoopGuard`].
pub type ResponseFuture<T, E> = BoxResponseFuture<T, E>;

/// How many consecutive bot messages pass by default.
pub const DEFAULT_MAX_BOT_TURNS: u32 = 3;
/// How many threads' counts are kept by default.
pub const DEFAULT_MAX_THREADS: usize = 100_000;

#[derive(Debug)]
struct Counts {
    max_bot_turns: u32,
    own_device: Option<DeviceId>,
    max_threads: usize,
    threads: Mutex<ThreadTable<u32>>,
}

impl Counts {
    fn new(max_bot_turns: u32, own_device: Option<DeviceId>, max_threads: usize) -> Self {
        Self {
            max_bot_turns,
            own_device,
            max_threads,
            threads: Mutex::new(ThreadTable::new(max_threads)),
        }
    }

    /// Counts the event; whether it may pass.
    fn admit<R: InboundInfo>(&self, req: &R) -> bool {
        let thread = req.thread();
        let mut threads = self.threads.lock().unwrap_or_else(PoisonError::into_inner);
        match req.sender() {
            Some(Sender::Agent {
                kind: AgentKind::Bot,
                ..
            }) if self.own_device.is_none() || req.sender_device() != self.own_device => {
                let count = threads.entry(thread, || 0, |_| false);
                *count = count.saturating_add(1);
                *count <= self.max_bot_turns
            }
            Some(
                Sender::Customer
                | Sender::Agent {
                    kind: AgentKind::Human,
                    ..
                },
            ) => {
                threads.remove(thread);
                true
            }
            _ => true,
        }
    }
}

/// Applies a [`LoopGuard`] to an inbound service (see the [module docs](self)).
#[derive(Clone, Debug)]
pub struct LoopGuardLayer {
    counts: Arc<Counts>,
}

impl Default for LoopGuardLayer {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_BOT_TURNS)
    }
}

impl LoopGuardLayer {
    /// Passes at most `max_bot_turns` consecutive bot messages per thread.
    #[must_use]
    pub fn new(max_bot_turns: u32) -> Self {
        Self {
            counts: Arc::new(Counts::new(max_bot_turns, None, DEFAULT_MAX_THREADS)),
        }
    }

    /// The bot's own device: its messages, if the runtime passes them, are not counted.
    #[must_use]
    pub fn own_device(self, device: DeviceId) -> Self {
        Self {
            counts: Arc::new(Counts::new(
                self.counts.max_bot_turns,
                Some(device),
                self.counts.max_threads,
            )),
        }
    }

    /// How many threads' counts are kept at most (default 100,000); the least recently used go
    /// first.
    #[must_use]
    pub fn max_threads(self, max_threads: usize) -> Self {
        Self {
            counts: Arc::new(Counts::new(
                self.counts.max_bot_turns,
                self.counts.own_device,
                max_threads,
            )),
        }
    }
}

impl<S> Layer<S> for LoopGuardLayer {
    type Service = LoopGuard<S>;

    fn layer(&self, inner: S) -> LoopGuard<S> {
        LoopGuard {
            inner,
            counts: Arc::clone(&self.counts),
        }
    }
}

/// Drops bot messages past the limit of consecutive bot turns (see [`LoopGuardLayer`]).
#[derive(Clone, Debug)]
pub struct LoopGuard<S> {
    inner: S,
    counts: Arc<Counts>,
}

impl<S> LoopGuard<S> {
    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, R> Service<R> for LoopGuard<S>
where
    R: InboundInfo,
    S: Service<R>,
    S::Response: Default + Send + 'static,
    S::Error: Send + 'static,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ResponseFuture<S::Response, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: R) -> Self::Future {
        if self.counts.admit(&req) {
            return Box::pin(self.inner.call(req));
        }
        tracing::info!(
            thread = %req.thread(),
            max_bot_turns = self.counts.max_bot_turns,
            "loop guard: too many consecutive bot messages, event not passed to the bot"
        );
        Box::pin(std::future::ready(Ok(S::Response::default())))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]

    use tower::ServiceExt;

    use super::*;
    use crate::BotError;
    use crate::layers::testing::{Mock, Req, device};

    async fn send<S>(svc: &mut S, req: Req)
    where
        S: Service<Req, Response = (), Error = BotError>,
    {
        svc.ready().await.unwrap().call(req).await.unwrap();
    }

    fn guarded(
        layer: &LoopGuardLayer,
    ) -> (
        Mock,
        impl Service<Req, Response = (), Error = BotError> + use<>,
    ) {
        let mock = Mock::echo();
        let svc = layer.layer(mock.clone().map_response(|_| ()));
        (mock, svc)
    }

    #[tokio::test]
    async fn loop_guard_drops_the_fourth_consecutive_bot_message() {
        let (mock, mut svc) = guarded(&LoopGuardLayer::default());
        send(&mut svc, Req::customer(1)).await;
        for _ in 0..3 {
            send(&mut svc, Req::bot(1, 7)).await;
        }
        assert_eq!(mock.calls(), 4);
        send(&mut svc, Req::bot(1, 7)).await;
        send(&mut svc, Req::bot(1, 8)).await;
        assert_eq!(mock.calls(), 4, "the 4th and 5th bot messages are dropped");
    }

    #[tokio::test]
    async fn loop_guard_resets_on_a_customer_or_human_message() {
        let (mock, mut svc) = guarded(&LoopGuardLayer::new(2));
        for _ in 0..2 {
            send(&mut svc, Req::bot(1, 7)).await;
        }
        send(&mut svc, Req::customer(1)).await;
        for _ in 0..2 {
            send(&mut svc, Req::bot(1, 7)).await;
        }
        send(&mut svc, Req::human(1)).await;
        for _ in 0..2 {
            send(&mut svc, Req::bot(1, 7)).await;
        }
        assert_eq!(mock.calls(), 8, "nothing dropped");
        send(&mut svc, Req::bot(1, 7)).await;
        assert_eq!(mock.calls(), 8);
    }

    #[tokio::test]
    async fn loop_guard_never_drops_customer_messages_or_other_events() {
        let (mock, mut svc) = guarded(&LoopGuardLayer::new(0));
        send(&mut svc, Req::bot(1, 7)).await;
        assert_eq!(mock.calls(), 0, "with a limit of 0 no bot message passes");
        send(&mut svc, Req::event(1)).await;
        send(&mut svc, Req::customer(1)).await;
        send(&mut svc, Req::human(1)).await;
        assert_eq!(mock.calls(), 3);
        let admin = Req::message(1, Sender::Admin, 3);
        send(&mut svc, admin).await;
        assert_eq!(mock.calls(), 4);
    }

    #[tokio::test]
    async fn loop_guard_neutral_events_do_not_reset_the_count() {
        let (mock, mut svc) = guarded(&LoopGuardLayer::new(1));
        send(&mut svc, Req::bot(1, 7)).await;
        send(&mut svc, Req::event(1)).await;
        send(&mut svc, Req::message(1, Sender::Admin, 3)).await;
        send(&mut svc, Req::bot(1, 7)).await;
        assert_eq!(mock.calls(), 3, "the second bot message is dropped");
    }

    #[tokio::test]
    async fn loop_guard_counts_per_thread() {
        let (mock, mut svc) = guarded(&LoopGuardLayer::new(1));
        send(&mut svc, Req::bot(1, 7)).await;
        send(&mut svc, Req::bot(2, 7)).await;
        send(&mut svc, Req::bot(1, 7)).await;
        assert_eq!(mock.calls(), 2);
        let passed: Vec<_> = mock.seen().iter().map(|r| r.thread).collect();
        assert_eq!(
            passed,
            vec![
                crate::layers::testing::thread(1),
                crate::layers::testing::thread(2)
            ]
        );
    }

    #[tokio::test]
    async fn loop_guard_ignores_the_bots_own_messages() {
        let (mock, mut svc) = guarded(&LoopGuardLayer::new(1).own_device(device(9)));
        send(&mut svc, Req::bot(1, 9)).await;
        send(&mut svc, Req::bot(1, 9)).await;
        send(&mut svc, Req::bot(1, 7)).await;
        assert_eq!(mock.calls(), 3);
        send(&mut svc, Req::bot(1, 7)).await;
        assert_eq!(mock.calls(), 3);
    }

    #[tokio::test]
    async fn loop_guard_table_is_bounded() {
        let layer = LoopGuardLayer::new(3).max_threads(4);
        let (_, mut svc) = guarded(&layer);
        for t in 0..50 {
            send(&mut svc, Req::bot(t, 7)).await;
            assert!(layer.counts.threads.lock().unwrap().len() <= 4);
        }
    }

    #[tokio::test]
    async fn loop_guard_passes_inner_errors() {
        let failing = Mock::new(|_, _| Box::pin(async { Err(BotError::NoFloor) }));
        let svc = LoopGuardLayer::default().layer(failing.map_response(|_| ()));
        let err = svc.oneshot(Req::customer(1)).await.unwrap_err();
        assert!(matches!(err, BotError::NoFloor), "{err:?}");
    }
}
