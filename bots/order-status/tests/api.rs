//! `OrderApi` against the local fake API on 127.0.0.1.

#![allow(clippy::unwrap_used, clippy::panic, missing_docs)]

use std::collections::HashMap;
use std::time::Duration;

use switchboard_bot_order_status::fake_api::{self, FakeOrder};
use switchboard_bot_order_status::{
    ApiError, DEFAULT_MAX_BODY, OrderApi, OrderStatus, order_id, reply_for,
};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// A running fake API and a client of it.
struct Fixture {
    api: OrderApi,
    server: JoinHandle<std::io::Result<()>>,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn fixture(orders: HashMap<String, FakeOrder>) -> Fixture {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let server = fake_api::serve(listener, orders);
    let api = OrderApi::new(&url, reqwest::Client::new()).unwrap();
    Fixture { api, server }
}

fn one(id: &str, order: FakeOrder) -> HashMap<String, FakeOrder> {
    HashMap::from([(id.to_owned(), order)])
}

#[test]
fn public_types_are_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<OrderApi>();
    assert_send_sync::<OrderStatus>();
    assert_send_sync::<ApiError>();
    assert_send_sync::<FakeOrder>();
}

#[tokio::test]
async fn a_known_order_is_found() {
    let f = fixture(fake_api::demo_orders()).await;
    let status = f.api.status("42").await.unwrap();
    assert_eq!(
        status,
        OrderStatus::new("42", "shipped", Some("tomorrow".into()))
    );
    assert_eq!(
        reply_for(&status),
        "Order 42 is on its way; expected tomorrow."
    );
    let status = f.api.status("A-1234").await.unwrap();
    assert_eq!(reply_for(&status), "Order A-1234 has been delivered.");
}

#[tokio::test]
async fn the_demo_question_gets_its_answer_end_to_end() {
    let f = fixture(fake_api::demo_orders()).await;
    let id = order_id("Hi, where is my order 42?").unwrap();
    let reply = reply_for(&f.api.status(&id).await.unwrap());
    assert_eq!(reply, "Order 42 is on its way; expected tomorrow.");
}

#[tokio::test]
async fn an_unknown_order_is_a_final_error() {
    let f = fixture(fake_api::demo_orders()).await;
    let err = f.api.status("999").await.unwrap_err();
    assert!(
        matches!(&err, ApiError::UnknownOrder(id) if id == "999"),
        "{err:?}"
    );
    assert!(!err.is_transient());
    assert_eq!(err.to_string(), "order 999 is unknown to the order API");
}

#[tokio::test]
async fn a_server_error_is_transient() {
    let f = fixture(one("42", FakeOrder::ServerError)).await;
    let err = f.api.status("42").await.unwrap_err();
    assert!(matches!(err, ApiError::Server { status: 500 }), "{err:?}");
    assert!(err.is_transient());
}

#[tokio::test]
async fn a_slow_api_times_out() {
    let f = fixture(one("42", FakeOrder::Hang)).await;
    let timeout = Duration::from_millis(300);
    let api = f.api.clone().with_timeout(timeout);
    let err = api.status("42").await.unwrap_err();
    assert!(
        matches!(err, ApiError::Timeout(d) if d == timeout),
        "{err:?}"
    );
    assert!(err.is_transient());
}

#[tokio::test]
async fn an_oversized_body_is_refused() {
    let big = format!(
        r#"{{"id":"42","status":"shipped","padding":"{}"}}"#,
        "x".repeat(DEFAULT_MAX_BODY)
    );
    let f = fixture(HashMap::from([
        ("42".to_owned(), FakeOrder::Raw(big.clone())),
        ("43".to_owned(), FakeOrder::Chunked(big.replace("42", "43"))),
    ]))
    .await;
    // Announced by Content-Length.
    let err = f.api.status("42").await.unwrap_err();
    assert!(
        matches!(
            err,
            ApiError::TooLarge {
                max: DEFAULT_MAX_BODY
            }
        ),
        "{err:?}"
    );
    assert!(!err.is_transient());
    // Sent chunked (no Content-Length): refused while reading.
    let raw = reqwest::Client::new()
        .get(format!("{}orders/43", f.api.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(raw.content_length(), None);
    let err = f.api.status("43").await.unwrap_err();
    assert!(matches!(err, ApiError::TooLarge { .. }), "{err:?}");
    // The same answers fit under a larger cap.
    let api = f.api.clone().with_max_body(2 * DEFAULT_MAX_BODY);
    assert_eq!(api.status("42").await.unwrap().status, "shipped");
    assert_eq!(api.status("43").await.unwrap().status, "shipped");
}

#[tokio::test]
async fn a_malformed_answer_is_refused() {
    let f = fixture(HashMap::from([
        ("1".to_owned(), FakeOrder::Raw("<html>oops</html>".into())),
        ("2".to_owned(), FakeOrder::Raw(r#"{"id":"2"}"#.into())),
        (
            "3".to_owned(),
            FakeOrder::Found(OrderStatus::new("4", "shipped", None)),
        ),
        ("5".to_owned(), FakeOrder::Chunked("{\"id\":".into())),
    ]))
    .await;
    for id in ["1", "2", "3", "5"] {
        let err = f.api.status(id).await.unwrap_err();
        assert!(matches!(err, ApiError::Malformed(_)), "{id}: {err:?}");
        assert!(!err.is_transient());
    }
}

#[tokio::test]
async fn an_invalid_order_number_is_refused_before_asking() {
    let f = fixture(fake_api::demo_orders()).await;
    for id in ["", "../admin", "42/../../x", "42?x=1", "abc"] {
        let err = f.api.status(id).await.unwrap_err();
        assert!(
            matches!(err, ApiError::InvalidOrderId(_)),
            "{id:?}: {err:?}"
        );
    }
}

#[tokio::test]
async fn an_unreachable_api_is_a_transient_connect_error() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    drop(listener);
    let api = OrderApi::new(&url, reqwest::Client::new()).unwrap();
    let err = api.status("42").await.unwrap_err();
    assert!(matches!(err, ApiError::Connect(_)), "{err:?}");
    assert!(err.is_transient());
}
