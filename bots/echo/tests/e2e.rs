//! The echo bot end to end on loopback: a relay, Acme's admin routing a new thread to EchoBot,
//! a customer asking; the customer verifies every answer as EchoBot's (a bot of Acme).

#![allow(clippy::unwrap_used, clippy::panic, missing_docs)]

#[path = "../../common/world.rs"]
mod world;

use switchboard::prelude::*;
use switchboard_admin::Outcome;
use switchboard_bot_echo::EchoBot;
use world::{Routing, World, bot, receive_replies, said, spoke_as};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_bot_echoes_the_routing_question_and_every_later_text() {
    let routing = Routing {
        rules: vec![],
        fallback: "support",
        handoff_team: "support",
    };
    let mut world = World::new("echo-e2e", &routing, &[bot("EchoBot", "support")]).await;
    let running = world.start("EchoBot", EchoBot).await;

    let (mut customer, thread) = world.customer("customer", "  hello there  ").await;
    world
        .outcome(|o| matches!(o, Outcome::Routed { agent, .. } if agent == "EchoBot"))
        .await;
    let events = receive_replies(&mut customer, thread, "EchoBot", 1).await;
    assert_eq!(said(&events, thread, "EchoBot"), ["hello there"]);
    assert!(spoke_as(&events, thread, "EchoBot", AgentKind::Bot));

    // Whitespace gets no answer; the texts after it are echoed in order.
    for text in [" \n ", "one", "two"] {
        customer
            .send(thread, &Content::text(text), None)
            .await
            .unwrap();
    }
    let events = receive_replies(&mut customer, thread, "EchoBot", 2).await;
    assert_eq!(said(&events, thread, "EchoBot"), ["one", "two"]);

    running.stop().await;
    world.stop_admin().await;
}
