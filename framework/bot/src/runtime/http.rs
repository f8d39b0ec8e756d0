//! The metrics and health listener: GET /metrics, /healthz, /readyz.

use std::fmt::Write as _;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;

use crate::runtime::shared::Shared;

/// The listener's routes.
pub(crate) fn app(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .with_state(shared)
}

/// Outbox entries counted at most, per scrape.
const OUTBOX_COUNT_LIMIT: u32 = 10_000;

async fn metrics(State(shared): State<Arc<Shared>>) -> String {
    let mut text = shared.metrics.render();
    // The outbox depth, as the store has it (messages committed and not yet posted).
    if let Ok(entries) = shared.store.outbox(OUTBOX_COUNT_LIMIT).await {
        let _ = writeln!(text, "# TYPE switchboard_outbox_depth gauge");
        let _ = writeln!(text, "switchboard_outbox_depth {}", entries.len());
    }
    text
}

async fn ready(State(shared): State<Arc<Shared>>) -> (StatusCode, &'static str) {
    if shared.is_ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}
