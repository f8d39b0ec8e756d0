//! The order-status bot passes the conformance suite (docs/conformance.md), asking a local
//! order API (the crate's fake one) for the orders' status.

#![allow(clippy::unwrap_used, missing_docs)]

use switchboard_bot_order_status::fake_api;
use switchboard_bot_order_status::{DEFAULT_HANDOFF_TEAM, OrderApi, OrderBot};
use switchboard_testkit::conformance::{Expect, conformance};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_order_status_bot_passes_the_conformance_suite() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let server = fake_api::serve(listener, fake_api::demo_orders());
    let api = OrderApi::new(&url, reqwest::Client::new()).unwrap();
    conformance(OrderBot::new(api))
        .named("order-status")
        .ask("where is order 42?", Expect::contains("42"))
        .ask("and order 7?", Expect::contains("7"))
        .ask("what about order A-1234?", Expect::contains("A-1234"))
        .hand_off_on("I would like to complain about your staff")
        .human_teams(&[DEFAULT_HANDOFF_TEAM])
        .await
        .assert_passed();
    server.abort();
}
