//! The triage bot end to end on loopback: a relay, Acme's admin routing every new thread to
//! TriageBot, a customer asking; the bot tells the customer where the question goes (verified
//! as TriageBot's) and hands the thread to that team, which the admin gives to its human.

#![allow(clippy::unwrap_used, clippy::panic, missing_docs)]

#[path = "../../common/world.rs"]
mod world;

use switchboard::prelude::*;
use switchboard_admin::Outcome;
use switchboard_bot_triage::{Triage, TriageBot};
use world::{Routing, World, bot, human, receive_replies, said, spoke_as};

fn triage() -> Triage {
    Triage::from_toml(include_str!("../triage.toml")).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn triage_bot_routes_the_routing_question_to_the_right_team() {
    let routing = Routing {
        rules: vec![],
        fallback: "triage",
        handoff_team: "support",
    };
    let mut world = World::new(
        "triage-e2e",
        &routing,
        &[
            bot("TriageBot", "triage"),
            human("Bea", "billing"),
            human("Olli", "orders"),
        ],
    )
    .await;
    let running = world.start("TriageBot", TriageBot::new(triage())).await;

    // A billing question goes to billing (Bea), not orders (Olli).
    let (mut billing, thread) = world
        .customer("billing-customer", "I was charged twice, I want a refund")
        .await;
    world
        .outcome(|o| matches!(o, Outcome::Routed { agent, thread: t, .. } if agent == "TriageBot" && *t == thread))
        .await;
    let handed = world
        .outcome(|o| matches!(o, Outcome::HandedOff { thread: t, .. } if *t == thread))
        .await;
    let Outcome::HandedOff { to, reason, .. } = handed else {
        unreachable!()
    };
    assert_eq!(to, "Bea", "{reason}");
    let events = receive_replies(&mut billing, thread, "TriageBot", 1).await;
    assert_eq!(
        said(&events, thread, "TriageBot"),
        ["Thanks! I am passing you to our billing team."]
    );
    assert!(spoke_as(&events, thread, "TriageBot", AgentKind::Bot));

    // A delivery question goes to orders (Olli).
    let (mut orders, thread) = world
        .customer(
            "orders-customer",
            "My parcel is late, can you track the delivery?",
        )
        .await;
    let handed = world
        .outcome(|o| matches!(o, Outcome::HandedOff { thread: t, .. } if *t == thread))
        .await;
    let Outcome::HandedOff { to, .. } = handed else {
        unreachable!()
    };
    assert_eq!(to, "Olli");
    let events = receive_replies(&mut orders, thread, "TriageBot", 1).await;
    assert_eq!(
        said(&events, thread, "TriageBot"),
        ["Thanks! I am passing you to our orders team."]
    );

    running.stop().await;
    world.stop_admin().await;
}
