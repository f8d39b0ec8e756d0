//! A small local order API, for tests and the demo: `GET /orders/{id}` answers from a map.
//!
//! ```no_run
//! # async fn run() -> std::io::Result<()> {
//! use switchboard_bot_order_status::fake_api;
//!
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let url = format!("http://{}", listener.local_addr()?);
//! let server = fake_api::serve(listener, fake_api::demo_orders());
//! // ... OrderApi::new(&url, client) asks it ...
//! server.abort();
//! # Ok(())
//! # }
//! ```

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::OrderStatus;

/// What the fake API answers for one order number.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum FakeOrder {
    /// 200 with the order's status as JSON.
    Found(OrderStatus),
    /// 500: the API is failing.
    ServerError,
    /// Never answers (the connection stays open): a slow API.
    Hang,
    /// 200 with this body as is (with a `Content-Length`): malformed or oversized answers.
    Raw(String),
    /// 200 with this body sent chunked, without a `Content-Length`.
    Chunked(String),
}

/// The fake API's routes over `orders`; an order number not in the map answers 404.
pub fn app(orders: HashMap<String, FakeOrder>) -> Router {
    Router::new()
        .route("/orders/{id}", get(order))
        .with_state(Arc::new(orders))
}

/// Serves [`app`] on `listener` (bind it to `127.0.0.1:0` in tests) until the task is aborted.
pub fn serve(
    listener: TcpListener,
    orders: HashMap<String, FakeOrder>,
) -> JoinHandle<std::io::Result<()>> {
    tokio::spawn(async move { axum::serve(listener, app(orders)).await })
}

/// The orders of the demo entity Acme: 42 (shipped, expected tomorrow), A-1234 (delivered),
/// 7 (being prepared), 13 (cancelled).
#[must_use]
pub fn demo_orders() -> HashMap<String, FakeOrder> {
    [
        OrderStatus::new("42", "shipped", Some("tomorrow".to_owned())),
        OrderStatus::new("A-1234", "delivered", None),
        OrderStatus::new("7", "processing", Some("in 3 days".to_owned())),
        OrderStatus::new("13", "cancelled", None),
    ]
    .into_iter()
    .map(|o| (o.id.clone(), FakeOrder::Found(o)))
    .collect()
}

async fn order(
    State(orders): State<Arc<HashMap<String, FakeOrder>>>,
    Path(id): Path<String>,
) -> Response {
    match orders.get(&id) {
        None => (
            StatusCode::NOT_FOUND,
            Json(serde_json::json!({ "error": "unknown order" })),
        )
            .into_response(),
        Some(FakeOrder::Found(status)) => Json(status).into_response(),
        Some(FakeOrder::ServerError) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(serde_json::json!({ "error": "database unavailable" })),
        )
            .into_response(),
        Some(FakeOrder::Hang) => std::future::pending().await,
        Some(FakeOrder::Raw(body)) => {
            ([(header::CONTENT_TYPE, "application/json")], body.clone()).into_response()
        }
        Some(FakeOrder::Chunked(body)) => {
            let chunks: Vec<Result<Bytes, Infallible>> = body
                .as_bytes()
                .chunks(1024)
                .map(|c| Ok(Bytes::copy_from_slice(c)))
                .collect();
            (
                [(header::CONTENT_TYPE, "application/json")],
                Body::from_stream(futures_util::stream::iter(chunks)),
            )
                .into_response()
        }
    }
}
