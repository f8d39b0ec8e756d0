//! The SDK examples (custom_layer, typed_state, handoff, group_thread) run against a whole
//! system on loopback: an in-process relay, Acme's admin, a customer `Device`, the example's
//! bot run by the SDK's `Runtime`.

#![allow(clippy::unwrap_used, clippy::panic, missing_docs)]

#[path = "../../bots/common/world.rs"]
mod world;

use std::sync::atomic::{AtomicU32, Ordering};

use switchboard::prelude::*;
use switchboard_admin::Outcome;
use switchboard_examples::custom_layer::{BusinessHoursLayer, DaytimeBot};
use switchboard_examples::group_thread::{ASKED, GREETING, GroupBot};
use switchboard_examples::handoff::{CONNECTING, HandoffBot};
use switchboard_examples::typed_state::TurnCounter;
use world::{Routing, World, bot, human, new_epoch, receive_replies, said, spoke_as};

fn routing() -> Routing {
    Routing {
        rules: vec![],
        fallback: "bots",
        handoff_team: "support",
    }
}

async fn send(customer: &mut switchboard_client::Device, thread: ThreadId, text: &str) {
    customer
        .send(thread, &Content::text(text), None)
        .await
        .unwrap();
}

/// The hour the business-hours layer sees in the test.
static HOUR: AtomicU32 = AtomicU32::new(23);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn custom_layer_answers_outside_business_hours_without_waking_the_bot() {
    let mut world = World::new("ex-layer", &routing(), &[bot("DayBot", "bots")]).await;
    let layer = BusinessHoursLayer::new(8, 18, "We are closed; we answer from 8:00 UTC.")
        .clock(|| HOUR.load(Ordering::SeqCst));
    let runtime = world
        .builder("DayBot")
        .inbound(layer)
        .bot(DaytimeBot)
        .build()
        .await
        .unwrap();
    let running = world::spawn(runtime);

    let (mut customer, thread) = world.customer("customer", "hello").await;
    world
        .outcome(|o| matches!(o, Outcome::Routed { agent, .. } if agent == "DayBot"))
        .await;
    new_epoch(&mut customer, thread).await;
    // 23:00: the layer answers; the bot is not woken.
    send(&mut customer, thread, "where is my parcel?").await;
    let events = receive_replies(&mut customer, thread, "DayBot", 1).await;
    assert_eq!(
        said(&events, thread, "DayBot"),
        ["We are closed; we answer from 8:00 UTC."]
    );
    // 10:00: the bot answers.
    HOUR.store(10, Ordering::SeqCst);
    send(&mut customer, thread, "and now?").await;
    let events = receive_replies(&mut customer, thread, "DayBot", 1).await;
    assert_eq!(
        said(&events, thread, "DayBot"),
        ["Happy to help with: and now?"]
    );

    running.stop().await;
    world.stop_admin().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_state_counts_turns_per_thread() {
    let mut world = World::new("ex-state", &routing(), &[bot("Counter", "bots")]).await;
    let running = world.start("Counter", TurnCounter).await;

    let (mut first, thread_a) = world.customer("first", "a1").await;
    let events = receive_replies(&mut first, thread_a, "Counter", 1).await;
    assert_eq!(said(&events, thread_a, "Counter"), ["Turn 1: a1"]);
    let (mut second, thread_b) = world.customer("second", "b1").await;
    let events = receive_replies(&mut second, thread_b, "Counter", 1).await;
    assert_eq!(said(&events, thread_b, "Counter"), ["Turn 1: b1"]);
    send(&mut first, thread_a, "a2").await;
    send(&mut first, thread_a, "a3").await;
    let events = receive_replies(&mut first, thread_a, "Counter", 2).await;
    assert_eq!(
        said(&events, thread_a, "Counter"),
        ["Turn 2: a2", "Turn 3: a3"]
    );
    // The other thread counts on its own.
    send(&mut second, thread_b, "b2").await;
    let events = receive_replies(&mut second, thread_b, "Counter", 1).await;
    assert_eq!(said(&events, thread_b, "Counter"), ["Turn 2: b2"]);

    running.stop().await;
    world.stop_admin().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handoff_example_hands_off_to_a_human_on_request() {
    let mut world = World::new(
        "ex-handoff",
        &routing(),
        &[bot("HelpBot", "bots"), human("Dana", "support")],
    )
    .await;
    let running = world.start("HelpBot", HandoffBot).await;

    let (mut customer, thread) = world.customer("customer", "hello").await;
    world
        .outcome(|o| matches!(o, Outcome::Routed { agent, .. } if agent == "HelpBot"))
        .await;
    new_epoch(&mut customer, thread).await;
    send(&mut customer, thread, "what are you?").await;
    send(&mut customer, thread, "Human please!").await;
    let handed = world
        .outcome(|o| matches!(o, Outcome::HandedOff { thread: t, .. } if *t == thread))
        .await;
    let Outcome::HandedOff { to, .. } = handed else {
        unreachable!()
    };
    assert_eq!(to, "Dana");
    let events = receive_replies(&mut customer, thread, "HelpBot", 2).await;
    assert_eq!(
        said(&events, thread, "HelpBot"),
        ["I am a bot; say \"human please\" for a person.", CONNECTING]
    );
    assert!(spoke_as(&events, thread, "HelpBot", AgentKind::Bot));

    running.stop().await;
    world.stop_admin().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_bot_keeps_quiet_unless_named_and_asks_to_add_a_specialist() {
    let mut world = World::new(
        "ex-group",
        &routing(),
        &[
            bot("GroupBot", "bots"),
            human("Dana", "support"),
            human("Spec", "specialists"),
        ],
    )
    .await;
    let running = world.start("GroupBot", GroupBot).await;

    let (mut customer, thread) = world.customer("customer", "hello").await;
    world
        .outcome(|o| matches!(o, Outcome::Routed { agent, .. } if agent == "GroupBot"))
        .await;
    let events = receive_replies(&mut customer, thread, "GroupBot", 1).await;
    assert_eq!(said(&events, thread, "GroupBot"), [GREETING]);

    // The admin adds Dana: a group. The customer talks to Dana; the bot keeps quiet until named.
    world.add_to_group(thread, "Dana");
    new_epoch(&mut customer, thread).await;
    send(&mut customer, thread, "Hi Dana, can you help?").await;
    send(&mut customer, thread, "GroupBot, please add a specialist").await;
    let handed = world
        .outcome(|o| matches!(o, Outcome::HandedOff { thread: t, .. } if *t == thread))
        .await;
    let Outcome::HandedOff { to, .. } = handed else {
        unreachable!()
    };
    assert_eq!(to, "Spec");
    let events = receive_replies(&mut customer, thread, "GroupBot", 1).await;
    assert_eq!(said(&events, thread, "GroupBot"), [ASKED]);

    running.stop().await;
    world.stop_admin().await;
}
