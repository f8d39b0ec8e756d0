//! [`RetryLayer`]: tries a request again when it failed with a transient error.
//!
//! Only errors whose [`Transient::is_transient`] is true are retried, up to `max_attempts`
//! attempts in all. Between attempts the layer waits with jittered exponential backoff: the
//! n-th retry waits between half and all of `min(base * 2^(n-1), max_delay)` (base 100 ms,
//! `max_delay` 10 s), and at least the error's [`Transient::retry_after`]. An error asking for
//! a wait longer than `max_delay` is returned at once: the caller (the runtime's outbox, the
//! event queue) is the better place for long waits.
//!
//! The request must be `Clone`; each retry polls a clone of the inner service ready before
//! calling it, the tower way.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tower::{Layer, Service, ServiceExt};

use super::{BoxResponseFuture, Transient};

/// The future of [`Retry`].
pub type ResponseFuture<T, E> = BoxResponseFuture<T, E>;

/// The wait before the first retry (before jitter), by default.
pub const DEFAULT_BASE_DELAY: Duration = Duration::from_millis(100);
/// The longest wait between two attempts, by default.
pub const DEFAULT_MAX_DELAY: Duration = Duration::from_secs(10);

/// Applies [`Retry`] to a service (see the [module docs](self)).
#[derive(Clone, Copy, Debug)]
pub struct RetryLayer {
    max_attempts: u32,
    base_delay: Duration,
    max_delay: Duration,
}

impl RetryLayer {
    /// At most `max_attempts` attempts in all (at least one).
    #[must_use]
    pub fn new(max_attempts: u32) -> Self {
        Self {
            max_attempts: max_attempts.max(1),
            base_delay: DEFAULT_BASE_DELAY,
            max_delay: DEFAULT_MAX_DELAY,
        }
    }

    /// The wait before the first retry, before jitter (default 100 ms).
    #[must_use]
    pub fn base_delay(mut self, base: Duration) -> Self {
        self.base_delay = base;
        self
    }

    /// The longest wait between attempts (default 10 s); also the longest `retry_after`
    /// honoured.
    #[must_use]
    pub fn max_delay(mut self, max: Duration) -> Self {
        self.max_delay = max;
        self
    }

    /// The wait before retry number `retry` (from 1) after `error`, or None to give up.
    fn delay<E: Transient>(&self, retry: u32, error: &E) -> Option<Duration> {
        let ceiling = 1u32
            .checked_shl(retry.saturating_sub(1))
            .and_then(|factor| self.base_delay.checked_mul(factor))
            .map_or(self.max_delay, |d| d.min(self.max_delay));
        let backoff = jitter(ceiling);
        match error.retry_after() {
            Some(wait) if wait > self.max_delay => None,
            Some(wait) => Some(wait.max(backoff)),
            None => Some(backoff),
        }
    }
}

impl<S> Layer<S> for RetryLayer {
    type Service = Retry<S>;

    fn layer(&self, inner: S) -> Retry<S> {
        Retry {
            inner,
            policy: *self,
        }
    }
}

/// Retries transient errors (see [`RetryLayer`]).
#[derive(Clone, Debug)]
pub struct Retry<S> {
    inner: S,
    policy: RetryLayer,
}

impl<S> Retry<S> {
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

impl<S, R> Service<R> for Retry<S>
where
    R: Clone + Send + 'static,
    S: Service<R> + Clone + Send + 'static,
    S::Error: Transient + Send + 'static,
    S::Future: Send + 'static,
    S::Response: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ResponseFuture<S::Response, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: R) -> Self::Future {
        // The service polled ready goes with the request; the clone takes its place.
        let clone = self.inner.clone();
        let mut service = std::mem::replace(&mut self.inner, clone);
        let policy = self.policy;
        Box::pin(async move {
            let mut attempt = 1;
            loop {
                if attempt >= policy.max_attempts {
                    return service.call(req).await;
                }
                let error = match service.call(req.clone()).await {
                    Ok(response) => return Ok(response),
                    Err(error) if error.is_transient() => error,
                    Err(error) => return Err(error),
                };
                let Some(wait) = policy.delay(attempt, &error) else {
                    return Err(error);
                };
                tracing::debug!(attempt, ?wait, "transient error, retrying");
                tokio::time::sleep(wait).await;
                attempt += 1;
                service.ready().await?;
            }
        })
    }
}

/// A duration between half of `ceiling` and all of it, at random ("equal jitter").
fn jitter(ceiling: Duration) -> Duration {
    let half = ceiling / 2;
    let span = u64::try_from((ceiling - half).as_nanos()).unwrap_or(u64::MAX);
    let extra = match span.checked_add(1) {
        Some(modulus) => random_u64() % modulus,
        None => random_u64(),
    };
    half.saturating_add(Duration::from_nanos(extra))
}

/// A small non-cryptographic generator (SplitMix64 over an atomic counter), seeded from the
/// operating system once. Jitter only needs to differ between processes and calls.
fn random_u64() -> u64 {
    const GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;
    static SEED: OnceLock<u64> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let seed = *SEED.get_or_init(|| {
        getrandom::u64().unwrap_or_else(|_| {
            // No OS randomness: the clock still makes processes differ.
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(GAMMA, |d| {
                    u64::try_from(d.as_nanos() & u128::from(u64::MAX)).unwrap_or(GAMMA)
                })
        })
    });
    let mut z = seed.wrapping_add(
        COUNTER
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_add(1)
            .wrapping_mul(GAMMA),
    );
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]

    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;

    use tokio::time::Instant;

    use super::*;
    use crate::BotError;
    use crate::layers::testing::{Mock, Req};

    /// Fails the first `failures` calls with `error()`, then answers.
    fn flaky(failures: usize, error: fn() -> BotError) -> Mock {
        Mock::new(move |n, req| {
            Box::pin(async move { if n < failures { Err(error()) } else { Ok(req) } })
        })
    }

    fn unreachable_relay() -> BotError {
        BotError::Timeout(Duration::from_secs(1))
    }

    #[tokio::test(start_paused = true)]
    async fn retry_retries_transient_errors_until_success() {
        let mock = flaky(2, unreachable_relay);
        let svc = RetryLayer::new(5).layer(mock.clone());
        svc.oneshot(Req::customer(1)).await.unwrap();
        assert_eq!(mock.calls(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn retry_never_retries_permanent_errors() {
        let mock = flaky(10, || BotError::NoFloor);
        let svc = RetryLayer::new(5).layer(mock.clone());
        let err = svc.oneshot(Req::customer(1)).await.unwrap_err();
        assert!(matches!(err, BotError::NoFloor), "{err:?}");
        assert_eq!(mock.calls(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn retry_stops_at_max_attempts_with_the_last_error() {
        let mock = flaky(10, unreachable_relay);
        let start = Instant::now();
        let svc = RetryLayer::new(4).layer(mock.clone());
        let err = svc.oneshot(Req::customer(1)).await.unwrap_err();
        assert!(matches!(err, BotError::Timeout(_)), "{err:?}");
        assert_eq!(mock.calls(), 4);
        // Three waits of at least 50, 100 and 200 ms (half of each backoff step), at most
        // 100, 200 and 400 ms.
        let waited = start.elapsed();
        assert!(waited >= Duration::from_millis(350), "{waited:?}");
        assert!(waited <= Duration::from_millis(700), "{waited:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn retry_honours_retry_after() {
        let mock = flaky(1, || BotError::RateLimited {
            retry_after: Duration::from_secs(3),
        });
        let start = Instant::now();
        RetryLayer::new(3)
            .layer(mock.clone())
            .oneshot(Req::customer(1))
            .await
            .unwrap();
        assert!(start.elapsed() >= Duration::from_secs(3));
        assert_eq!(mock.calls(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn retry_gives_up_when_retry_after_exceeds_the_max_delay() {
        let mock = flaky(1, || BotError::RateLimited {
            retry_after: Duration::from_secs(60),
        });
        let err = RetryLayer::new(3)
            .layer(mock.clone())
            .oneshot(Req::customer(1))
            .await
            .unwrap_err();
        assert!(matches!(err, BotError::RateLimited { .. }), "{err:?}");
        assert_eq!(mock.calls(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn retry_polls_a_fresh_clone_ready_before_each_retry() {
        /// Counts poll_ready calls across clones; fails every call transiently.
        #[derive(Clone)]
        struct Readiness(Arc<AtomicUsize>, Arc<AtomicUsize>);
        impl Service<Req> for Readiness {
            type Response = Req;
            type Error = BotError;
            type Future = BoxResponseFuture<Req, BotError>;
            fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BotError>> {
                self.0.fetch_add(1, Ordering::SeqCst);
                Poll::Ready(Ok(()))
            }
            fn call(&mut self, _: Req) -> Self::Future {
                self.1.fetch_add(1, Ordering::SeqCst);
                Box::pin(async { Err(BotError::Timeout(Duration::from_secs(1))) })
            }
        }
        let inner = Readiness(Arc::default(), Arc::default());
        let svc = RetryLayer::new(3).layer(inner.clone());
        assert!(svc.oneshot(Req::customer(1)).await.is_err());
        assert_eq!(inner.1.load(Ordering::SeqCst), 3, "three calls");
        assert_eq!(
            inner.0.load(Ordering::SeqCst),
            3,
            "each call polled ready first"
        );
    }

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter() {
        let policy = RetryLayer::new(10);
        let error = unreachable_relay();
        for (retry, ceiling_ms) in [(1, 100), (2, 200), (3, 400), (8, 10_000), (40, 10_000)] {
            for _ in 0..20 {
                let wait = policy.delay(retry, &error).unwrap();
                let ceiling = Duration::from_millis(ceiling_ms);
                assert!(wait >= ceiling / 2 && wait <= ceiling, "{retry}: {wait:?}");
            }
        }
        let waits: std::collections::HashSet<_> =
            (0..20).map(|_| policy.delay(8, &error).unwrap()).collect();
        assert!(waits.len() > 1, "jittered");
    }
}
