//! `/metrics` in the Prometheus text format: requests by method, route and status. Every label
//! takes its value from a fixed set (methods outside the standard ones count as `other`, paths
//! outside the routes as `unmatched`), so no request can grow the table.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, PoisonError};

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::Instrument as _;

use super::RelayState;

/// (method, route template, status).
type RequestKey = (&'static str, String, u16);

/// The method as a label value from a fixed set.
fn method_label(method: &axum::http::Method) -> &'static str {
    match method.as_str() {
        "GET" => "GET",
        "POST" => "POST",
        "PUT" => "PUT",
        "DELETE" => "DELETE",
        "HEAD" => "HEAD",
        "OPTIONS" => "OPTIONS",
        "PATCH" => "PATCH",
        _ => "other",
    }
}

/// Request counters of one relay process.
#[derive(Clone, Debug, Default)]
pub(super) struct Metrics {
    requests: Arc<Mutex<BTreeMap<RequestKey, u64>>>,
}

impl Metrics {
    fn count(&self, method: &'static str, route: &str, status: u16) {
        let mut map = self.requests.lock().unwrap_or_else(PoisonError::into_inner);
        *map.entry((method, route.to_owned(), status)).or_default() += 1;
    }

    fn render(&self) -> String {
        let map = self.requests.lock().unwrap_or_else(PoisonError::into_inner);
        let mut out = String::from(
            "# HELP switchboard_http_requests_total HTTP requests by method, route and status.\n\
             # TYPE switchboard_http_requests_total counter\n",
        );
        for ((method, route, status), n) in map.iter() {
            let _ = writeln!(
                out,
                "switchboard_http_requests_total{{method=\"{method}\",route=\"{route}\",status=\"{status}\"}} {n}"
            );
        }
        out
    }
}

/// Middleware: traces and counts every request. Each request runs in a `request` span (method,
/// route template, claimed device) so that what handlers log carries it, and ends with one event:
/// status and latency, at `warn` for server failures, `info` for refusals (`debug` for rate
/// limiting, which comes in floods), `debug` for success. Responses are
/// counted by route template (never by raw path, so ids do not become label values).
pub(super) async fn observe(
    State(state): State<RelayState>,
    request: Request,
    next: Next,
) -> Response {
    let started = std::time::Instant::now();
    let method = method_label(request.method());
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let device = request
        .headers()
        .get(super::headers::DEVICE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .chars()
        .take(64) // a claim, not yet checked: bounded so that it cannot flood the log
        .collect::<String>();
    let span = tracing::info_span!("request", %method, %route, %device);
    let response = next.run(request).instrument(span.clone()).await;
    let status = response.status().as_u16();
    let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
    span.in_scope(|| {
        match status {
            500.. => tracing::warn!(status, micros, "failed"),
            // A flood of rate-limited requests must not flood the log too.
            429 => tracing::debug!(status, micros, "refused"),
            400.. => tracing::info!(status, micros, "refused"),
            _ => tracing::debug!(status, micros, "served"),
        }
    });
    state.metrics.count(method, &route, status);
    response
}

/// `GET /metrics`.
pub(super) async fn metrics(State(state): State<RelayState>) -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        state.metrics.render(),
    )
}
