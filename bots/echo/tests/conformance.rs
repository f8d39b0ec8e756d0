//! The echo bot passes the conformance suite (docs/conformance.md).

#![allow(missing_docs)]

use switchboard_bot_echo::EchoBot;
use switchboard_testkit::conformance::{Expect, conformance};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_echo_bot_passes_the_conformance_suite() {
    conformance(EchoBot)
        .named("echo")
        .ask("hello there", Expect::contains("hello there"))
        .ask("one", Expect::contains("one"))
        .ask("two", Expect::contains("two"))
        .never_hands_off("the echo bot echoes every text; it has nobody to hand off to")
        .await
        .assert_passed();
}
