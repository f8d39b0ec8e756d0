//! [`RateLimitLayer`]: token buckets per thread and per bot.
//!
//! Each bucket holds up to `n` tokens and refills at `n` per `per`. A request takes one token
//! from its thread's bucket and one from the bot's (whichever are configured). When a bucket is
//! empty the request reserves the next token and waits for it, in call order, as long as that
//! wait is at most `max_wait` (default 5 s); a request that would wait longer is refused at
//! once with [`BotError::RateLimited`] carrying the wait it would have needed, and takes no
//! token. A waiting request that is dropped (cancelled) does not give its token back.
//!
//! The per-thread table is bounded (`max_threads`, default 100,000): buckets that have refilled
//! completely are dropped first (a full bucket is the same as none); past that, the least
//! recently used threads are forgotten, which gives them a fresh bucket. The per-bot bucket
//! bounds the total rate whatever the table forgets.
//!
//! All services made by one layer (and by its clones) share the buckets.

use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use switchboard_protocol::ThreadId;
use tokio::time::Instant;
use tower::{Layer, Service};

use super::table::ThreadTable;
use super::{BoxResponseFuture, ThreadScoped};
use crate::BotError;

/// The future of [`RateLimit`].
pub type ResponseFuture<T> = BoxResponseFuture<T, BotError>;

/// How long a request may wait for a token by default.
pub const DEFAULT_MAX_WAIT: Duration = Duration::from_secs(5);
/// How many threads' buckets are kept by default.
pub const DEFAULT_MAX_THREADS: usize = 100_000;

/// `n` requests per `per`, with bursts of up to `n`.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Quota {
    capacity: f64,
    per_second: f64,
}

impl Quota {
    /// At least one request, over at least a millisecond.
    fn new(n: u32, per: Duration) -> Self {
        let capacity = f64::from(n.max(1));
        let per = per.max(Duration::from_millis(1)).as_secs_f64();
        Self {
            capacity,
            per_second: capacity / per,
        }
    }
}

#[derive(Clone, Copy, Debug)]
struct Bucket {
    /// May go below zero: tokens reserved by waiting requests.
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn full(quota: Quota, now: Instant) -> Self {
        Self {
            tokens: quota.capacity,
            at: now,
        }
    }

    fn refill(&mut self, quota: Quota, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * quota.per_second).min(quota.capacity);
        self.at = now;
    }

    /// How long until a token is free for one more request.
    fn wait(&self, quota: Quota) -> Duration {
        if self.tokens >= 1.0 {
            return Duration::ZERO;
        }
        Duration::try_from_secs_f64((1.0 - self.tokens) / quota.per_second).unwrap_or(Duration::MAX)
    }

    fn is_full(&self, quota: Quota, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens + elapsed * quota.per_second >= quota.capacity
    }
}

#[derive(Clone, Copy, Debug)]
struct Config {
    per_thread: Option<Quota>,
    per_bot: Option<Quota>,
    max_wait: Duration,
    max_threads: usize,
}

#[derive(Debug)]
struct Buckets {
    bot: Option<Bucket>,
    threads: ThreadTable<Bucket>,
}

#[derive(Debug)]
struct Limiter {
    config: Config,
    buckets: Mutex<Buckets>,
}

impl Limiter {
    fn new(config: Config) -> Self {
        Self {
            config,
            buckets: Mutex::new(Buckets {
                bot: None,
                threads: ThreadTable::new(config.max_threads),
            }),
        }
    }

    /// Takes a token for `thread`: how long to wait for it, or `Err(wait)` if that is longer
    /// than `max_wait` (nothing taken).
    fn reserve(&self, thread: ThreadId, now: Instant) -> Result<Duration, Duration> {
        let config = self.config;
        let mut guard = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        let buckets = &mut *guard;
        let mut bot = config.per_bot.map(|quota| {
            let bucket = buckets.bot.get_or_insert_with(|| Bucket::full(quota, now));
            bucket.refill(quota, now);
            (bucket, quota)
        });
        let mut per_thread = config.per_thread.map(|quota| {
            let bucket = buckets.threads.entry(
                thread,
                || Bucket::full(quota, now),
                |b| b.is_full(quota, now),
            );
            bucket.refill(quota, now);
            (bucket, quota)
        });
        let wait = [bot.as_ref(), per_thread.as_ref()]
            .into_iter()
            .flatten()
            .map(|(bucket, quota)| bucket.wait(*quota))
            .max()
            .unwrap_or(Duration::ZERO);
        if wait > config.max_wait {
            return Err(wait);
        }
        for (bucket, _) in [bot.as_mut(), per_thread.as_mut()].into_iter().flatten() {
            bucket.tokens -= 1.0;
        }
        Ok(wait)
    }

    #[cfg(test)]
    fn threads(&self) -> usize {
        self.buckets
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .threads
            .len()
    }
}

/// Applies a [`RateLimit`] to a service (see the [module docs](self)).
#[derive(Clone, Debug)]
pub struct RateLimitLayer {
    limiter: Arc<Limiter>,
}

impl RateLimitLayer {
    fn with(config: Config) -> Self {
        Self {
            limiter: Arc::new(Limiter::new(config)),
        }
    }

    fn config(&self) -> Config {
        self.limiter.config
    }

    /// At most `n` requests per `per` in each thread (`n` at least 1, `per` at least 1 ms).
    #[must_use]
    pub fn per_thread(n: u32, per: Duration) -> Self {
        Self::with(Config {
            per_thread: Some(Quota::new(n, per)),
            per_bot: None,
            max_wait: DEFAULT_MAX_WAIT,
            max_threads: DEFAULT_MAX_THREADS,
        })
    }

    /// At most `n` requests per `per` across all threads of the bot.
    #[must_use]
    pub fn per_bot(n: u32, per: Duration) -> Self {
        Self::with(Config {
            per_thread: None,
            per_bot: Some(Quota::new(n, per)),
            max_wait: DEFAULT_MAX_WAIT,
            max_threads: DEFAULT_MAX_THREADS,
        })
    }

    /// Adds (or replaces) the per-thread limit.
    #[must_use]
    pub fn and_per_thread(self, n: u32, per: Duration) -> Self {
        Self::with(Config {
            per_thread: Some(Quota::new(n, per)),
            ..self.config()
        })
    }

    /// Adds (or replaces) the per-bot limit.
    #[must_use]
    pub fn and_per_bot(self, n: u32, per: Duration) -> Self {
        Self::with(Config {
            per_bot: Some(Quota::new(n, per)),
            ..self.config()
        })
    }

    /// How long a request may wait for a token before it is refused (default 5 s).
    #[must_use]
    pub fn max_wait(self, max_wait: Duration) -> Self {
        Self::with(Config {
            max_wait,
            ..self.config()
        })
    }

    /// How many threads' buckets are kept at most (default 100,000).
    #[must_use]
    pub fn max_threads(self, max_threads: usize) -> Self {
        Self::with(Config {
            max_threads,
            ..self.config()
        })
    }
}

impl<S> Layer<S> for RateLimitLayer {
    type Service = RateLimit<S>;

    fn layer(&self, inner: S) -> RateLimit<S> {
        RateLimit {
            inner,
            limiter: Arc::clone(&self.limiter),
        }
    }
}

/// Limits the rate of requests per thread and per bot (see [`RateLimitLayer`]).
#[derive(Clone, Debug)]
pub struct RateLimit<S> {
    inner: S,
    limiter: Arc<Limiter>,
}

impl<S> RateLimit<S> {
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

impl<S, R> Service<R> for RateLimit<S>
where
    R: ThreadScoped + Send + 'static,
    S: Service<R> + Clone + Send + 'static,
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
        match self.limiter.reserve(req.thread(), Instant::now()) {
            Err(retry_after) => Box::pin(std::future::ready(Err(BotError::RateLimited {
                retry_after,
            }))),
            Ok(Duration::ZERO) => {
                let fut = self.inner.call(req);
                Box::pin(async move { fut.await.map_err(Into::into) })
            }
            Ok(wait) => {
                // The service polled ready goes with the request; the clone takes its place.
                let clone = self.inner.clone();
                let mut ready = std::mem::replace(&mut self.inner, clone);
                Box::pin(async move {
                    tokio::time::sleep(wait).await;
                    ready.call(req).await.map_err(Into::into)
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]

    use tower::ServiceExt;

    use super::*;
    use crate::layers::testing::{Mock, Req};

    async fn send<S>(svc: &mut S, req: Req) -> Result<Req, BotError>
    where
        S: Service<Req, Response = Req, Error = BotError>,
    {
        svc.ready().await?.call(req).await
    }

    #[tokio::test(start_paused = true)]
    async fn rate_limit_waits_for_a_token_then_refuses() {
        let mock = Mock::echo();
        let mut svc = RateLimitLayer::per_thread(2, Duration::from_secs(1))
            .max_wait(Duration::from_secs(1))
            .layer(mock.clone());
        let start = Instant::now();
        send(&mut svc, Req::customer(1)).await.unwrap();
        send(&mut svc, Req::customer(1)).await.unwrap();
        assert_eq!(
            start.elapsed(),
            Duration::ZERO,
            "a burst of 2 passes at once"
        );

        // The third waits for the next token (2 per second: half a second).
        let third = svc.ready().await.unwrap().call(Req::customer(1));
        // The fourth reserves the token after it (1 s), the fifth would need 1.5 s: refused.
        let fourth = svc.ready().await.unwrap().call(Req::customer(1));
        let err = send(&mut svc, Req::customer(1)).await.unwrap_err();
        match err {
            BotError::RateLimited { retry_after } => {
                assert!(retry_after > Duration::from_secs(1), "{retry_after:?}");
                assert!(
                    retry_after <= Duration::from_millis(1500),
                    "{retry_after:?}"
                );
            }
            other => panic!("expected RateLimited, got {other:?}"),
        }
        assert_eq!(
            mock.calls(),
            2,
            "waiting and refused requests are not passed yet"
        );

        third.await.unwrap();
        assert!(start.elapsed() >= Duration::from_millis(500));
        fourth.await.unwrap();
        assert!(start.elapsed() >= Duration::from_secs(1));
        assert_eq!(
            mock.calls(),
            4,
            "the refused request never reached the inner service"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn rate_limit_buckets_refill_over_time() {
        let mut svc = RateLimitLayer::per_thread(1, Duration::from_secs(1))
            .max_wait(Duration::ZERO)
            .layer(Mock::echo());
        send(&mut svc, Req::customer(1)).await.unwrap();
        assert!(send(&mut svc, Req::customer(1)).await.is_err());
        tokio::time::advance(Duration::from_secs(1)).await;
        send(&mut svc, Req::customer(1)).await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn rate_limit_per_thread_buckets_are_independent() {
        let mut svc = RateLimitLayer::per_thread(1, Duration::from_secs(60))
            .max_wait(Duration::ZERO)
            .layer(Mock::echo());
        send(&mut svc, Req::customer(1)).await.unwrap();
        assert!(matches!(
            send(&mut svc, Req::customer(1)).await,
            Err(BotError::RateLimited { .. })
        ));
        // Other threads still have their own full bucket.
        send(&mut svc, Req::customer(2)).await.unwrap();
        send(&mut svc, Req::customer(3)).await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn rate_limit_per_bot_bucket_is_shared_by_threads_and_clones() {
        let layer = RateLimitLayer::per_bot(2, Duration::from_secs(60)).max_wait(Duration::ZERO);
        let mut a = layer.layer(Mock::echo());
        let mut b = a.clone();
        let mut c = layer.clone().layer(Mock::echo());
        send(&mut a, Req::customer(1)).await.unwrap();
        send(&mut b, Req::customer(2)).await.unwrap();
        let err = send(&mut c, Req::customer(3)).await.unwrap_err();
        assert!(matches!(err, BotError::RateLimited { .. }), "{err:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn rate_limit_both_limits_apply_and_a_refusal_takes_no_token() {
        let mut svc = RateLimitLayer::per_thread(1, Duration::from_secs(60))
            .and_per_bot(2, Duration::from_secs(60))
            .max_wait(Duration::ZERO)
            .layer(Mock::echo());
        send(&mut svc, Req::customer(1)).await.unwrap();
        // Thread 1 is out of tokens: refused, and the bot bucket keeps its second token.
        assert!(send(&mut svc, Req::customer(1)).await.is_err());
        send(&mut svc, Req::customer(2)).await.unwrap();
        // Now the bot bucket is empty, though thread 3 has a token.
        assert!(send(&mut svc, Req::customer(3)).await.is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn rate_limit_thread_table_is_bounded() {
        let layer = RateLimitLayer::per_thread(1, Duration::from_secs(3600)).max_threads(8);
        let mut svc = layer.layer(Mock::echo());
        for t in 0..100 {
            send(&mut svc, Req::customer(t)).await.unwrap();
            assert!(layer.limiter.threads() <= 8);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn rate_limit_drops_refilled_buckets_before_busy_ones() {
        let layer = RateLimitLayer::per_thread(2, Duration::from_secs(2))
            .max_threads(2)
            .max_wait(Duration::ZERO);
        let mut svc = layer.layer(Mock::echo());
        send(&mut svc, Req::customer(2)).await.unwrap();
        send(&mut svc, Req::customer(2)).await.unwrap();
        send(&mut svc, Req::customer(1)).await.unwrap();
        tokio::time::advance(Duration::from_secs(1)).await;
        // Thread 1 (used last) has refilled, thread 2 (used first) has not: thread 1's bucket
        // is the one dropped for thread 3, and thread 2 keeps its single token.
        send(&mut svc, Req::customer(3)).await.unwrap();
        send(&mut svc, Req::customer(2)).await.unwrap();
        assert!(send(&mut svc, Req::customer(2)).await.is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn rate_limit_passes_inner_errors() {
        let failing = Mock::new(|_, _| Box::pin(async { Err(BotError::NoFloor) }));
        let svc = RateLimitLayer::per_bot(10, Duration::from_secs(1)).layer(failing);
        let err = svc.oneshot(Req::customer(1)).await.unwrap_err();
        assert!(matches!(err, BotError::NoFloor), "{err:?}");
    }
}
