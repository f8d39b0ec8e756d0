//! The FAQ bot passes the conformance suite (docs/conformance.md): it answers from its FAQ and
//! hands a question it cannot answer to its handoff team.

#![allow(clippy::unwrap_used, missing_docs)]

use switchboard_bot_faq::{Faq, FaqBot};
use switchboard_testkit::conformance::{Expect, conformance};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_faq_bot_passes_the_conformance_suite() {
    let faq = Faq::from_toml(include_str!("../faq.toml")).unwrap();
    let team = faq.handoff_team().to_owned();
    conformance(FaqBot::new(faq))
        .named("faq")
        .ask(
            "What are your opening hours?",
            Expect::contains("Monday to Friday"),
        )
        .ask(
            "How do I return an item?",
            Expect::contains("within 30 days"),
        )
        .ask("When are you open?", Expect::contains("Monday to Friday"))
        .hand_off_on("Can you recommend a good restaurant nearby?")
        .human_teams(&[&team])
        .await
        .assert_passed();
}
