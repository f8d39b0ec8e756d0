//! [`TraceLayer`]: one tracing span per request, with its outcome and latency.
//!
//! The span is `switchboard.request` at info level, with the fields `pipeline` (the name given
//! to the layer, e.g. `"inbound"`), `kind` ([`ThreadScoped::kind`]), `thread`, and, once the
//! request is done, `outcome` ([`Outcome`]) and `latency_ms`. The inner service is called and
//! polled inside the span, so everything it logs carries those fields. The end of each request
//! is also logged: successes at debug, refusals and rate limits at info, failures at warn.

use std::task::{Context, Poll};

use tokio::time::Instant;
use tower::{Layer, Service};
use tracing::Instrument;

use super::{BoxResponseFuture, ThreadScoped};
use crate::BotError;

/// The future of [`Trace`].
pub type ResponseFuture<T> = BoxResponseFuture<T, BotError>;

/// The pipeline name used when none is given.
pub const DEFAULT_PIPELINE: &str = "request";

/// How a request ended, as a fixed set of names (a bounded metrics label).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Outcome {
    /// The request succeeded.
    Ok,
    /// A layer refused it ([`BotError::Refused`]).
    Refused,
    /// It was rate limited ([`BotError::RateLimited`]).
    RateLimited,
    /// It timed out ([`BotError::Timeout`]).
    Timeout,
    /// Another transient error ([`BotError::is_transient`]).
    Transient,
    /// A permanent error.
    Failed,
}

impl Outcome {
    /// The outcome of a result.
    #[must_use]
    pub fn of<T>(result: &Result<T, BotError>) -> Self {
        match result {
            Ok(_) => Self::Ok,
            Err(error) => Self::of_error(error),
        }
    }

    /// The outcome of an error.
    #[must_use]
    pub fn of_error(error: &BotError) -> Self {
        match error {
            BotError::Refused { .. } => Self::Refused,
            BotError::RateLimited { .. } => Self::RateLimited,
            BotError::Timeout(_) => Self::Timeout,
            other if other.is_transient() => Self::Transient,
            _ => Self::Failed,
        }
    }

    /// The outcome's name: `ok`, `refused`, `rate_limited`, `timeout`, `transient`, `failed`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Refused => "refused",
            Self::RateLimited => "rate_limited",
            Self::Timeout => "timeout",
            Self::Transient => "transient",
            Self::Failed => "failed",
        }
    }
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Applies [`Trace`] to a service (see the [module docs](self)).
#[derive(Clone, Copy, Debug)]
pub struct TraceLayer {
    pipeline: &'static str,
}

impl Default for TraceLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl TraceLayer {
    /// Traces requests of a pipeline named `"request"`; see [`TraceLayer::pipeline`].
    #[must_use]
    pub fn new() -> Self {
        Self {
            pipeline: DEFAULT_PIPELINE,
        }
    }

    /// Names the pipeline in the span (e.g. `"inbound"`, `"outbound"`, `"delivery"`).
    #[must_use]
    pub fn pipeline(mut self, name: &'static str) -> Self {
        self.pipeline = name;
        self
    }
}

impl<S> Layer<S> for TraceLayer {
    type Service = Trace<S>;

    fn layer(&self, inner: S) -> Trace<S> {
        Trace {
            inner,
            pipeline: self.pipeline,
        }
    }
}

/// Traces each request in a span (see [`TraceLayer`]).
#[derive(Clone, Debug)]
pub struct Trace<S> {
    inner: S,
    pipeline: &'static str,
}

impl<S> Trace<S> {
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

impl<S, R> Service<R> for Trace<S>
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
        let span = tracing::info_span!(
            "switchboard.request",
            pipeline = self.pipeline,
            kind = req.kind(),
            thread = %req.thread(),
            outcome = tracing::field::Empty,
            latency_ms = tracing::field::Empty,
        );
        let start = Instant::now();
        let fut = span.in_scope(|| self.inner.call(req));
        let record = span.clone();
        Box::pin(
            async move {
                let result = fut.await.map_err(Into::into);
                let outcome = Outcome::of(&result);
                let latency_ms = start.elapsed().as_secs_f64() * 1000.0;
                record.record("outcome", outcome.as_str());
                record.record("latency_ms", latency_ms);
                match (&result, outcome) {
                    (Ok(_), _) => {
                        tracing::debug!(%outcome, latency_ms, "request done");
                    }
                    (Err(error), Outcome::Refused | Outcome::RateLimited) => {
                        tracing::info!(%outcome, latency_ms, %error, "request not passed");
                    }
                    (Err(error), _) => {
                        tracing::warn!(%outcome, latency_ms, %error, "request failed");
                    }
                }
                result
            }
            .instrument(span),
        )
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]

    use std::collections::BTreeMap;
    use std::fmt::Debug;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};

    use tower::ServiceExt;
    use tracing::field::{Field, Visit};
    use tracing::span::{Attributes, Id, Record};
    use tracing::{Event, Metadata, Subscriber};

    use super::*;
    use crate::layers::testing::{Mock, Req};

    type Fields = BTreeMap<String, String>;
    /// Each event's fields, with the span it happened in.
    type Events = Vec<(Option<u64>, Fields)>;

    /// Records the fields of every span, and the span each event happened in.
    #[derive(Clone, Default)]
    struct Recorder {
        spans: Arc<Mutex<BTreeMap<u64, (String, Fields)>>>,
        events: Arc<Mutex<Events>>,
        current: Arc<Mutex<Vec<u64>>>,
        next: Arc<AtomicU64>,
    }

    struct Collect<'a>(&'a mut Fields);

    impl Visit for Collect<'_> {
        fn record_debug(&mut self, field: &Field, value: &dyn Debug) {
            self.0.insert(field.name().to_owned(), format!("{value:?}"));
        }
        fn record_str(&mut self, field: &Field, value: &str) {
            self.0.insert(field.name().to_owned(), value.to_owned());
        }
    }

    impl Subscriber for Recorder {
        fn enabled(&self, _: &Metadata<'_>) -> bool {
            true
        }
        fn new_span(&self, span: &Attributes<'_>) -> Id {
            let id = self.next.fetch_add(1, Ordering::SeqCst) + 1;
            let mut fields = Fields::new();
            span.record(&mut Collect(&mut fields));
            self.spans
                .lock()
                .unwrap()
                .insert(id, (span.metadata().name().to_owned(), fields));
            Id::from_u64(id)
        }
        fn record(&self, span: &Id, values: &Record<'_>) {
            let mut spans = self.spans.lock().unwrap();
            let (_, fields) = spans.get_mut(&span.into_u64()).unwrap();
            values.record(&mut Collect(fields));
        }
        fn record_follows_from(&self, _: &Id, _: &Id) {}
        fn event(&self, event: &Event<'_>) {
            let mut fields = Fields::new();
            event.record(&mut Collect(&mut fields));
            let current = self.current.lock().unwrap().last().copied();
            self.events.lock().unwrap().push((current, fields));
        }
        fn enter(&self, span: &Id) {
            self.current.lock().unwrap().push(span.into_u64());
        }
        fn exit(&self, _: &Id) {
            self.current.lock().unwrap().pop();
        }
    }

    #[tokio::test(start_paused = true)]
    async fn trace_records_a_span_per_request_with_its_outcome() {
        let recorder = Recorder::default();
        let _guard = tracing::subscriber::set_default(recorder.clone());
        let mock = Mock::new(|n, req| {
            Box::pin(async move {
                tokio::time::sleep(std::time::Duration::from_millis(250)).await;
                tracing::info!(inner = true, "handling");
                if n == 0 {
                    Ok(req)
                } else {
                    Err(BotError::Refused {
                        layer: "test",
                        reason: "no".to_owned(),
                    })
                }
            })
        });
        let mut svc = TraceLayer::new().pipeline("inbound").layer(mock);
        svc.ready()
            .await
            .unwrap()
            .call(Req::customer(1))
            .await
            .unwrap();
        let err = svc.ready().await.unwrap().call(Req::event(2)).await;
        assert!(matches!(err, Err(BotError::Refused { .. })));

        let spans = recorder.spans.lock().unwrap().clone();
        assert_eq!(spans.len(), 2, "{spans:?}");
        let (name, first) = &spans[&1];
        assert_eq!(name, "switchboard.request");
        assert_eq!(first["pipeline"], "inbound");
        assert_eq!(first["kind"], "message");
        assert_eq!(
            first["thread"],
            crate::layers::testing::thread(1).to_string()
        );
        assert_eq!(first["outcome"], "ok");
        assert_eq!(first["latency_ms"], "250.0");
        let (_, second) = &spans[&2];
        assert_eq!(second["kind"], "member");
        assert_eq!(second["outcome"], "refused");

        // The inner service's own events happen inside the request's span.
        let events = recorder.events.lock().unwrap().clone();
        let inner: Vec<_> = events
            .iter()
            .filter(|(_, fields)| fields.contains_key("inner"))
            .map(|(span, _)| *span)
            .collect();
        assert_eq!(inner, vec![Some(1), Some(2)]);
    }

    #[test]
    fn outcomes_classify_errors() {
        use std::time::Duration;
        let cases = [
            (BotError::NoFloor, Outcome::Failed, "failed"),
            (
                BotError::Refused {
                    layer: "x",
                    reason: String::new(),
                },
                Outcome::Refused,
                "refused",
            ),
            (
                BotError::RateLimited {
                    retry_after: Duration::ZERO,
                },
                Outcome::RateLimited,
                "rate_limited",
            ),
            (
                BotError::Timeout(Duration::ZERO),
                Outcome::Timeout,
                "timeout",
            ),
            (
                BotError::Store(crate::store::StoreError::Database("down".to_owned())),
                Outcome::Transient,
                "transient",
            ),
        ];
        for (error, outcome, name) in cases {
            assert_eq!(Outcome::of_error(&error), outcome);
            assert_eq!(outcome.as_str(), name);
        }
        assert_eq!(Outcome::of(&Ok::<(), BotError>(())), Outcome::Ok);
    }
}
