//! The FAQ bot end to end on loopback: a relay, Acme's admin routing a new thread to FaqBot,
//! a customer asking from the sample FAQ (bots/faq/faq.toml). The customer verifies each answer
//! as FaqBot's; a question the FAQ cannot answer reaches the admin as a handoff to "support",
//! which gives the thread to Sam.

#![allow(clippy::unwrap_used, clippy::panic, missing_docs)]

#[path = "../../common/world.rs"]
mod world;

use switchboard::prelude::*;
use switchboard_admin::Outcome;
use switchboard_bot_faq::{Answer, Faq, FaqBot, HANDING_OFF};
use world::{Routing, World, bot, human, receive_replies, said, spoke_as};

fn faq() -> Faq {
    Faq::from_toml(include_str!("../faq.toml")).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faq_bot_answers_the_routing_question_and_hands_off_when_unsure() {
    let routing = Routing {
        rules: vec![],
        fallback: "faq",
        handoff_team: "support",
    };
    let mut world = World::new(
        "faq-e2e",
        &routing,
        &[bot("FaqBot", "faq"), human("Sam", "support")],
    )
    .await;
    let running = world.start("FaqBot", FaqBot::new(faq())).await;

    let question = "When are you open?";
    let Answer::Reply(hours) = faq().answer(question) else {
        panic!("the sample FAQ answers {question:?}");
    };
    assert!(hours.contains("Monday to Friday"));
    let (mut customer, thread) = world.customer("customer", question).await;
    world
        .outcome(|o| matches!(o, Outcome::Routed { agent, .. } if agent == "FaqBot"))
        .await;
    let events = receive_replies(&mut customer, thread, "FaqBot", 1).await;
    assert_eq!(said(&events, thread, "FaqBot"), [hours]);
    assert!(spoke_as(&events, thread, "FaqBot", AgentKind::Bot));

    // A paraphrase is answered from its entry; a question the FAQ has no entry for is handed
    // to support with a note quoting it, and the admin gives the thread to Sam.
    customer
        .send(
            thread,
            &Content::text("Can I send back shoes that don't fit?"),
            None,
        )
        .await
        .unwrap();
    let events = receive_replies(&mut customer, thread, "FaqBot", 1).await;
    assert!(
        said(&events, thread, "FaqBot")[0].contains("return"),
        "{events:?}"
    );
    customer
        .send(thread, &Content::text("My parrot is sad"), None)
        .await
        .unwrap();
    let handed = world
        .outcome(|o| matches!(o, Outcome::HandedOff { to, .. } if to == "Sam"))
        .await;
    let Outcome::HandedOff { reason, .. } = handed else {
        unreachable!()
    };
    assert!(reason.contains("support"), "{reason}");
    let events = receive_replies(&mut customer, thread, "FaqBot", 1).await;
    assert_eq!(said(&events, thread, "FaqBot"), [HANDING_OFF]);

    running.stop().await;
    world.stop_admin().await;
}
