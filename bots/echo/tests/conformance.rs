//! The echo bot passes the conformance suite (docs/conformance.md).

#![allow(missing_docs)]

use switchboard_bot_echo::EchoBot;
use switchboard_testkit::conformance::{Expect, ProcessBot, Suite, conformance};

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

/// The binary `switchboard-bot-echo` as a bot process: it reads its world from the suite's
/// `SWITCHBOARD_*` variables and says `ready`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_echo_bot_binary_passes_the_conformance_suite_as_a_process() {
    let bot = ProcessBot::new(
        env!("CARGO_BIN_EXE_switchboard-bot-echo"),
        std::iter::empty::<String>(),
    );
    Suite::new("echo process", bot)
        .ask("hello there", Expect::contains("hello there"))
        .never_hands_off("the echo bot echoes every text; it has nobody to hand off to")
        .await
        .assert_passed();
}
