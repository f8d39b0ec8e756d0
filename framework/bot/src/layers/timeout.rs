//! [`TimeoutLayer`]: fails a request with [`BotError::Timeout`] when the inner service takes
//! longer than a fixed time.
//!
//! The clock starts when the request is called, and the inner future is dropped when it runs
//! out (cancelling whatever it was doing).

use std::task::{Context, Poll};
use std::time::Duration;

use tower::{Layer, Service};

use super::BoxResponseFuture;
use crate::BotError;

/// The future of [`Timeout`].
pub type ResponseFuture<T> = BoxResponseFuture<T, BotError>;

/// Applies a [`Timeout`] to a service.
#[derive(Clone, Copy, Debug)]
pub struct TimeoutLayer {
    limit: Duration,
}

impl TimeoutLayer {
    /// Requests that take longer than `limit` fail with [`BotError::Timeout`].
    #[must_use]
    pub fn new(limit: Duration) -> Self {
        Self { limit }
    }
}

impl<S> Layer<S> for TimeoutLayer {
    type Service = Timeout<S>;

    fn layer(&self, inner: S) -> Timeout<S> {
        Timeout::new(inner, self.limit)
    }
}

/// Fails requests that take longer than a limit (see [`TimeoutLayer`]).
#[derive(Clone, Debug)]
pub struct Timeout<S> {
    inner: S,
    limit: Duration,
}

impl<S> Timeout<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, limit: Duration) -> Self {
        Self { inner, limit }
    }

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

impl<S, R> Service<R> for Timeout<S>
where
    S: Service<R>,
    S::Error: Into<BotError>,
    S::Future: Send + 'static,
    S::Response: Send + 'static,
{
    type Response = S::Response;
    type Error = BotError;
    type Future = ResponseFuture<S::Response>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BotError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: R) -> Self::Future {
        let limit = self.limit;
        let fut = self.inner.call(req);
        Box::pin(async move {
            match tokio::time::timeout(limit, fut).await {
                Ok(result) => result.map_err(Into::into),
                Err(_) => Err(BotError::Timeout(limit)),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]

    use tower::ServiceExt;

    use super::*;
    use crate::layers::testing::{Mock, Req};

    fn slow(after: Duration) -> Mock {
        Mock::new(move |_, req| {
            Box::pin(async move {
                tokio::time::sleep(after).await;
                Ok(req)
            })
        })
    }

    #[tokio::test(start_paused = true)]
    async fn timeout_fires_when_the_inner_service_is_too_slow() {
        let mock = slow(Duration::from_secs(11));
        let svc = TimeoutLayer::new(Duration::from_secs(10)).layer(mock.clone());
        let err = svc.oneshot(Req::customer(1)).await.unwrap_err();
        assert!(
            matches!(err, BotError::Timeout(d) if d == Duration::from_secs(10)),
            "{err:?}"
        );
        assert!(err.is_transient());
        assert_eq!(mock.calls(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn timeout_passes_responses_and_errors_in_time() {
        let svc = TimeoutLayer::new(Duration::from_secs(10)).layer(slow(Duration::from_secs(9)));
        let req = svc.oneshot(Req::customer(4)).await.unwrap();
        assert_eq!(req.thread, crate::layers::testing::thread(4));

        let failing = Mock::new(|_, _| Box::pin(async { Err(BotError::NoFloor) }));
        let svc = TimeoutLayer::new(Duration::from_secs(10)).layer(failing);
        let err = svc.oneshot(Req::customer(1)).await.unwrap_err();
        assert!(matches!(err, BotError::NoFloor), "{err:?}");
    }
}
