//! The triage bot passes the conformance suite (docs/conformance.md): it tells the customer
//! which team the question goes to and hands the thread there, once per thread.

#![allow(clippy::unwrap_used, missing_docs)]

use switchboard_bot_triage::{Triage, TriageBot};
use switchboard_testkit::conformance::{Expect, conformance};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_triage_bot_passes_the_conformance_suite() {
    let triage = Triage::from_toml(include_str!("../triage.toml")).unwrap();
    // It answers one question per thread (then the thread is the team's).
    conformance(TriageBot::new(triage))
        .named("triage")
        .ask("my parcel is late", Expect::contains("orders team"))
        .hand_off_on("I want a refund for my invoice")
        .human_teams(&["billing", "orders", "returns", "technical", "support"])
        .await
        .assert_passed();
}
