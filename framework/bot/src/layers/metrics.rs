//! [`Metrics`], a small Prometheus registry of our own, and [`MetricsLayer`], which counts the
//! requests of a pipeline and their latency into it.
//!
//! ```
//! use switchboard::layers::Metrics;
//!
//! let metrics = Metrics::new();
//! metrics.describe("switchboard_events_total", "Events handled, by kind and outcome.");
//! metrics
//!     .counter("switchboard_events_total", &[("kind", "message"), ("outcome", "ok")])
//!     .inc();
//! metrics
//!     .histogram("switchboard_event_seconds", &[("kind", "message")])
//!     .observe(0.004);
//! let text = metrics.render();
//! assert!(text.contains("switchboard_events_total{kind=\"message\",outcome=\"ok\"} 1\n"));
//! assert!(text.contains("switchboard_event_seconds_bucket{kind=\"message\",le=\"0.005\"} 1\n"));
//! ```
//!
//! Series are bounded: at most `max_series` label sets per metric (default 1,000) and
//! `max_metrics` metrics (default 256). A series past a cap, or with an invalid name or label,
//! is not recorded (its handle works but is not rendered) and counted in
//! `switchboard_metrics_dropped_series_total`. Label values should come from fixed sets (kinds,
//! outcomes), never from message data or thread ids.
//!
//! [`MetricsLayer`] records `switchboard_pipeline_requests_total{pipeline, kind, outcome}` and
//! `switchboard_pipeline_request_duration_seconds{pipeline, kind}` (a histogram), `kind` being
//! [`ThreadScoped::kind`] and `outcome` an [`Outcome`].

use std::task::{Context, Poll};

use tokio::time::Instant;
use tower::{Layer, Service};

use super::{BoxResponseFuture, Outcome, ThreadScoped};
use crate::BotError;

mod registry;

pub use registry::{
    Counter, DEFAULT_MAX_METRICS, DEFAULT_MAX_SERIES, DROPPED_SERIES, Histogram, LATENCY_BUCKETS,
    Metrics,
};

/// The future of [`MetricsService`].
pub type ResponseFuture<T> = BoxResponseFuture<T, BotError>;

/// The requests a [`MetricsLayer`] counted, by pipeline, kind and outcome.
pub const REQUESTS_TOTAL: &str = "switchboard_pipeline_requests_total";
/// The latency histogram of a [`MetricsLayer`], by pipeline and kind.
pub const REQUEST_DURATION: &str = "switchboard_pipeline_request_duration_seconds";

/// Applies [`MetricsService`] to a service: counts requests by outcome and their latency.
#[derive(Clone, Debug)]
pub struct MetricsLayer {
    metrics: Metrics,
    pipeline: &'static str,
}

impl MetricsLayer {
    /// Records into `metrics`, under the pipeline name `"request"`; see
    /// [`MetricsLayer::pipeline`].
    #[must_use]
    pub fn new(metrics: Metrics) -> Self {
        Self {
            metrics,
            pipeline: super::trace::DEFAULT_PIPELINE,
        }
    }

    /// Names the pipeline in the `pipeline` label (e.g. `"inbound"`).
    #[must_use]
    pub fn pipeline(mut self, name: &'static str) -> Self {
        self.pipeline = name;
        self
    }
}

impl<S> Layer<S> for MetricsLayer {
    type Service = MetricsService<S>;

    fn layer(&self, inner: S) -> MetricsService<S> {
        MetricsService {
            inner,
            metrics: self.metrics.clone(),
            pipeline: self.pipeline,
        }
    }
}

/// Counts requests and their latency (see [`MetricsLayer`]).
#[derive(Clone, Debug)]
pub struct MetricsService<S> {
    inner: S,
    metrics: Metrics,
    pipeline: &'static str,
}

impl<S> MetricsService<S> {
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

impl<S, R> Service<R> for MetricsService<S>
where
    R: ThreadScoped,
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
        let kind = req.kind();
        let pipeline = self.pipeline;
        let metrics = self.metrics.clone();
        let start = Instant::now();
        let fut = self.inner.call(req);
        Box::pin(async move {
            let result = fut.await.map_err(Into::into);
            let outcome = Outcome::of(&result);
            metrics
                .counter(
                    REQUESTS_TOTAL,
                    &[
                        ("pipeline", pipeline),
                        ("kind", kind),
                        ("outcome", outcome.as_str()),
                    ],
                )
                .inc();
            metrics
                .histogram(REQUEST_DURATION, &[("pipeline", pipeline), ("kind", kind)])
                .observe_duration(start.elapsed());
            result
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]

    use std::time::Duration;

    use tower::ServiceExt;

    use super::registry::exposition::{parse, sample};
    use super::*;
    use crate::layers::testing::{Mock, Req};

    #[tokio::test(start_paused = true)]
    async fn metrics_layer_counts_outcomes_and_latency() {
        let metrics = Metrics::new();
        let mock = Mock::new(|n, req| {
            Box::pin(async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                match n {
                    0 | 1 => Ok(req),
                    2 => Err(BotError::Timeout(Duration::from_secs(1))),
                    _ => Err(BotError::NoFloor),
                }
            })
        });
        let mut svc = MetricsLayer::new(metrics.clone())
            .pipeline("inbound")
            .layer(mock);
        for _ in 0..4 {
            let _ = svc.ready().await.unwrap().call(Req::customer(1)).await;
        }
        let _ = svc.ready().await.unwrap().call(Req::event(2)).await;
        let samples = parse(&metrics.render());
        let requests = |kind: &str, outcome: &str| {
            sample(
                &samples,
                &format!(
                    "{REQUESTS_TOTAL}{{kind=\"{kind}\",outcome=\"{outcome}\",pipeline=\"inbound\"}}"
                ),
            )
        };
        assert_eq!(requests("message", "ok"), 2.0);
        assert_eq!(requests("message", "timeout"), 1.0);
        assert_eq!(requests("message", "failed"), 1.0);
        assert_eq!(requests("member", "failed"), 1.0);
        let latency =
            format!("{REQUEST_DURATION}_bucket{{kind=\"message\",pipeline=\"inbound\",le=");
        assert_eq!(sample(&samples, &format!("{latency}\"0.01\"}}")), 0.0);
        assert_eq!(sample(&samples, &format!("{latency}\"0.025\"}}")), 4.0);
        assert_eq!(
            sample(
                &samples,
                &format!("{REQUEST_DURATION}_count{{kind=\"message\",pipeline=\"inbound\"}}")
            ),
            4.0
        );
    }

    #[tokio::test(start_paused = true)]
    async fn metrics_layer_series_stay_bounded_across_many_threads() {
        let metrics = Metrics::new();
        let mut svc = MetricsLayer::new(metrics.clone()).layer(Mock::echo());
        for t in 0..=255 {
            svc.ready()
                .await
                .unwrap()
                .call(Req::customer(t))
                .await
                .unwrap();
        }
        let samples = parse(&metrics.render());
        // One request series, one histogram (13 buckets, +Inf, sum, count), the drop counter.
        assert_eq!(samples.len(), 1 + 16 + 1, "{samples:?}");
        assert_eq!(metrics.dropped_series(), 0);
    }
}
