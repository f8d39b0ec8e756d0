//! The order-status bot end to end on loopback: a relay, Acme's admin routing a question about
//! an order to OrderBot (team "orders"), the fake order API on 127.0.0.1:0, a customer asking.
//! The customer verifies each answer as OrderBot's; a question the bot cannot answer reaches
//! the admin as a handoff, which gives the thread to Dana (billing).

#![allow(clippy::unwrap_used, clippy::panic, missing_docs)]

#[path = "../../common/world.rs"]
mod world;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::http::StatusCode;
use axum::response::IntoResponse as _;
use axum::routing::get;
use switchboard::prelude::*;
use switchboard_admin::Outcome;
use switchboard_bot_order_status::fake_api::{self, FakeOrder};
use switchboard_bot_order_status::{ASK_FOR_NUMBER, HANDING_OFF, OrderApi, OrderBot};
use world::{Routing, World, bot, human, receive_replies, said, spoke_as};

fn routing() -> Routing {
    Routing {
        rules: vec![(vec!["order"], "orders")],
        fallback: "orders",
        handoff_team: "billing",
    }
}

async fn order_api(
    orders: HashMap<String, FakeOrder>,
) -> (OrderApi, tokio::task::JoinHandle<std::io::Result<()>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let server = fake_api::serve(listener, orders);
    (OrderApi::new(&url, reqwest::Client::new()).unwrap(), server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn order_bot_answers_from_the_api_asks_for_the_number_and_hands_off() {
    let mut world = World::new(
        "order-e2e",
        &routing(),
        &[bot("OrderBot", "orders"), human("Dana", "billing")],
    )
    .await;
    let (api, server) = order_api(fake_api::demo_orders()).await;
    let running = world.start("OrderBot", OrderBot::new(api)).await;

    // The routing question is answered from the API, as OrderBot (a bot of Acme).
    let (mut customer, thread) = world
        .customer("customer", "Hi, where is my order 42?")
        .await;
    world
        .outcome(|o| matches!(o, Outcome::Routed { agent, .. } if agent == "OrderBot"))
        .await;
    let events = receive_replies(&mut customer, thread, "OrderBot", 1).await;
    assert_eq!(
        said(&events, thread, "OrderBot"),
        ["Order 42 is on its way; expected tomorrow."]
    );
    assert!(spoke_as(&events, thread, "OrderBot", AgentKind::Bot));

    // An unknown order gets a polite answer; a question without a number, a request for it.
    for text in [
        "And order 999?",
        "What about my other order?",
        "order #7 please",
    ] {
        customer
            .send(thread, &Content::text(text), None)
            .await
            .unwrap();
    }
    let events = receive_replies(&mut customer, thread, "OrderBot", 3).await;
    assert_eq!(
        said(&events, thread, "OrderBot"),
        [
            "I cannot find order 999. Could you check the number?",
            ASK_FOR_NUMBER,
            "Order 7 is being prepared; expected in 3 days."
        ]
    );

    // Anything else goes to billing: the bot says so, the admin gives the thread to Dana.
    customer
        .send(thread, &Content::text("I would rather get a refund."), None)
        .await
        .unwrap();
    let handed = world
        .outcome(|o| matches!(o, Outcome::HandedOff { to, .. } if to == "Dana"))
        .await;
    let Outcome::HandedOff { reason, .. } = handed else {
        unreachable!()
    };
    assert!(reason.contains("billing"), "{reason}");
    let events = receive_replies(&mut customer, thread, "OrderBot", 1).await;
    assert_eq!(said(&events, thread, "OrderBot"), [HANDING_OFF]);

    running.stop().await;
    world.stop_admin().await;
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transient_api_failure_is_retried_by_the_runtime() {
    let mut world = World::new("order-retry", &routing(), &[bot("OrderBot", "orders")]).await;
    // An API that fails with 503 at the first request, then answers.
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&calls);
    let app = Router::new().route(
        "/orders/{id}",
        get(move || {
            let counted = Arc::clone(&counted);
            async move {
                if counted.fetch_add(1, Ordering::SeqCst) == 0 {
                    (StatusCode::SERVICE_UNAVAILABLE, "busy").into_response()
                } else {
                    axum::Json(
                        serde_json::json!({ "id": "99", "status": "shipped", "eta": "today" }),
                    )
                    .into_response()
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let api = OrderApi::new(&url, reqwest::Client::new()).unwrap();
    let running = world.start("OrderBot", OrderBot::new(api)).await;

    let (mut customer, thread) = world.customer("customer", "where is order 99?").await;
    let events = receive_replies(&mut customer, thread, "OrderBot", 1).await;
    // One answer, after the retry; nothing of the failed attempt was posted.
    assert_eq!(
        said(&events, thread, "OrderBot"),
        ["Order 99 is on its way; expected today."]
    );
    assert_eq!(calls.load(Ordering::SeqCst), 2);

    running.stop().await;
    world.stop_admin().await;
    server.abort();
}
