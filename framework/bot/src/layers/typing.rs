//! [`TypingLayer`]: shows the customer that the bot is working when a handler is slow.
//!
//! If the inner service has not finished `delay` after the call (default 500 ms), a background
//! task sets typing on through the request's [`TypingSignal`]; when the inner service finishes
//! (or its future is dropped, e.g. by an outer timeout), the task sets typing off, if it was
//! set on. Fast handlers never show typing. Typing never changes the handler's result: a
//! signal that fails is logged, one that hangs is abandoned after `signal_timeout` (default
//! 5 s), and the handler's result is returned as soon as it is ready, without waiting for the
//! typing messages. Requests without a signal (the bot cannot post there) pass unchanged.

use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use switchboard_protocol::ThreadId;
use tokio::sync::oneshot;
use tower::{Layer, Service};

use super::{BoxResponseFuture, InboundInfo, TypingSignal};

/// The future of [`Typing`].
pub type ResponseFuture<T, E> = BoxResponseFuture<T, E>;

/// How long a handler works before typing is shown, by default.
pub const DEFAULT_DELAY: Duration = Duration::from_millis(500);
/// How long one typing signal may take before it is abandoned, by default.
pub const DEFAULT_SIGNAL_TIMEOUT: Duration = Duration::from_secs(5);

/// Applies [`Typing`] to an inbound service (see the [module docs](self)).
#[derive(Clone, Copy, Debug)]
pub struct TypingLayer {
    delay: Duration,
    signal_timeout: Duration,
}

impl Default for TypingLayer {
    fn default() -> Self {
        Self::after(DEFAULT_DELAY)
    }
}

impl TypingLayer {
    /// Shows typing once a handler has worked for `delay`.
    #[must_use]
    pub fn after(delay: Duration) -> Self {
        Self {
            delay,
            signal_timeout: DEFAULT_SIGNAL_TIMEOUT,
        }
    }

    /// How long one typing signal may take before it is abandoned (default 5 s).
    #[must_use]
    pub fn signal_timeout(mut self, limit: Duration) -> Self {
        self.signal_timeout = limit;
        self
    }
}

impl<S> Layer<S> for TypingLayer {
    type Service = Typing<S>;

    fn layer(&self, inner: S) -> Typing<S> {
        Typing {
            inner,
            config: *self,
        }
    }
}

/// Sets typing on while a slow handler works (see [`TypingLayer`]).
#[derive(Clone, Debug)]
pub struct Typing<S> {
    inner: S,
    config: TypingLayer,
}

impl<S> Typing<S> {
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

impl<S, R> Service<R> for Typing<S>
where
    R: InboundInfo,
    S: Service<R>,
    S::Future: Send + 'static,
    S::Response: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ResponseFuture<S::Response, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: R) -> Self::Future {
        let signal = req.typing();
        let thread = req.thread();
        let fut = self.inner.call(req);
        let Some(signal) = signal else {
            return Box::pin(fut);
        };
        let TypingLayer {
            delay,
            signal_timeout,
        } = self.config;
        Box::pin(async move {
            let mut fut = pin!(fut);
            if let Ok(result) = tokio::time::timeout(delay, &mut fut).await {
                return result;
            }
            // Dropping `_done` (handler finished, or this future dropped) ends the typing.
            let (_done, done) = oneshot::channel::<()>();
            tokio::spawn(show_typing(signal, done, signal_timeout, thread));
            fut.await
        })
    }
}

/// Typing on now, off when `done` closes; off only if on succeeded.
async fn show_typing(
    signal: Arc<dyn TypingSignal>,
    done: oneshot::Receiver<()>,
    limit: Duration,
    thread: ThreadId,
) {
    if set(&*signal, true, limit, thread).await {
        // Never sent on: resolves (with an error) when the sender is dropped.
        let _closed = done.await;
        set(&*signal, false, limit, thread).await;
    }
}

/// Sets typing; whether it worked (failures are logged, never returned).
async fn set(signal: &dyn TypingSignal, active: bool, limit: Duration, thread: ThreadId) -> bool {
    match tokio::time::timeout(limit, signal.set(active)).await {
        Ok(Ok(())) => true,
        Ok(Err(error)) => {
            tracing::warn!(%thread, active, %error, "typing indicator failed");
            false
        }
        Err(_) => {
            tracing::warn!(%thread, active, ?limit, "typing indicator timed out");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]

    use tokio::time::Instant;
    use tower::ServiceExt;

    use super::*;
    use crate::BotError;
    use crate::layers::TimeoutLayer;
    use crate::layers::testing::{Mock, MockTyping, Req};

    /// A handler that works for `work`, then answers with `result`.
    fn handler(work: Duration, fail: bool) -> Mock {
        Mock::new(move |_, req| {
            Box::pin(async move {
                tokio::time::sleep(work).await;
                if fail {
                    Err(BotError::NoFloor)
                } else {
                    Ok(req)
                }
            })
        })
    }

    /// Lets the background typing task run to its end (bounded).
    async fn settle(typing: &MockTyping, entries: usize) {
        for _ in 0..100 {
            if typing.log().len() >= entries {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn typing_is_set_on_after_the_delay_and_off_at_the_end() {
        let typing = Arc::new(MockTyping::default());
        let start = Instant::now();
        let svc = TypingLayer::after(Duration::from_millis(500))
            .layer(handler(Duration::from_secs(2), false));
        let req = Req::customer(1).with_typing(typing.clone());
        svc.oneshot(req).await.unwrap();
        assert_eq!(start.elapsed(), Duration::from_secs(2));
        settle(&typing, 2).await;
        let log = typing.log();
        assert_eq!(log.len(), 2, "{log:?}");
        assert_eq!(log[0], (true, start + Duration::from_millis(500)));
        assert_eq!(log[1], (false, start + Duration::from_secs(2)));
    }

    #[tokio::test(start_paused = true)]
    async fn typing_is_not_shown_for_fast_handlers() {
        let typing = Arc::new(MockTyping::default());
        let svc = TypingLayer::default().layer(handler(Duration::from_millis(100), false));
        svc.oneshot(Req::customer(1).with_typing(typing.clone()))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert!(typing.log().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn typing_failure_does_not_change_the_handlers_result() {
        let typing = Arc::new(MockTyping {
            fail: true,
            ..MockTyping::default()
        });
        let svc = TypingLayer::default().layer(handler(Duration::from_secs(1), false));
        let req = svc
            .oneshot(Req::customer(3).with_typing(typing.clone()))
            .await
            .unwrap();
        assert_eq!(req.thread, crate::layers::testing::thread(3));
        settle(&typing, 1).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(typing.log().len(), 1, "typing on failed: no typing off");

        let svc = TypingLayer::default().layer(handler(Duration::from_secs(1), true));
        let err = svc
            .oneshot(Req::customer(3).with_typing(typing.clone()))
            .await
            .unwrap_err();
        assert!(matches!(err, BotError::NoFloor), "{err:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn typing_that_hangs_does_not_delay_the_handler() {
        let typing = Arc::new(MockTyping {
            hang: true,
            ..MockTyping::default()
        });
        let start = Instant::now();
        let svc = TypingLayer::default()
            .signal_timeout(Duration::from_secs(5))
            .layer(handler(Duration::from_secs(1), false));
        svc.oneshot(Req::customer(1).with_typing(typing.clone()))
            .await
            .unwrap();
        assert_eq!(start.elapsed(), Duration::from_secs(1));
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(typing.log().len(), 1, "on was abandoned, so no off");
    }

    #[tokio::test(start_paused = true)]
    async fn typing_is_set_off_when_an_outer_timeout_drops_the_handler() {
        let typing = Arc::new(MockTyping::default());
        let start = Instant::now();
        let svc = TimeoutLayer::new(Duration::from_secs(2))
            .layer(TypingLayer::default().layer(handler(Duration::from_secs(60), false)));
        let err = svc
            .oneshot(Req::customer(1).with_typing(typing.clone()))
            .await
            .unwrap_err();
        assert!(matches!(err, BotError::Timeout(_)), "{err:?}");
        settle(&typing, 2).await;
        let log = typing.log();
        assert_eq!(
            log,
            vec![
                (true, start + Duration::from_millis(500)),
                (false, start + Duration::from_secs(2))
            ]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn typing_without_a_signal_passes_the_request() {
        let mock = handler(Duration::from_secs(2), false);
        let svc = TypingLayer::default().layer(mock.clone());
        svc.oneshot(Req::customer(1)).await.unwrap();
        assert_eq!(mock.calls(), 1);
    }
}
