//! `/metrics` in the Prometheus text format: requests by method, route and status.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, PoisonError};

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::RelayState;

/// (method, route template, status).
type RequestKey = (String, String, u16);

/// Request counters of one relay process.
#[derive(Clone, Debug, Default)]
pub(super) struct Metrics {
    requests: Arc<Mutex<BTreeMap<RequestKey, u64>>>,
}

impl Metrics {
    fn count(&self, method: &str, route: &str, status: u16) {
        let mut map = self.requests.lock().unwrap_or_else(PoisonError::into_inner);
        *map.entry((method.to_owned(), route.to_owned(), status))
            .or_default() += 1;
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

/// Middleware: counts every response by route template (never by raw path, so ids do not
/// become label values).
pub(super) async fn count(
    State(state): State<RelayState>,
    request: Request,
    next: Next,
) -> Response {
    let method = request.method().as_str().to_owned();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let response = next.run(request).await;
    state
        .metrics
        .count(&method, &route, response.status().as_u16());
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
