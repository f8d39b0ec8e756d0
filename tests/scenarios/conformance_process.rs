//! The conformance suite against a bot run as a process of its own, given its world through
//! the environment variables of docs/conformance.md: `switchboard-test-bot` behind a shell
//! line that turns the variables into its flags.

use switchboard_testkit::conformance::{Expect, ProcessBot, Suite, Verdict};

/// The test bot's command line, from the suite's environment variables.
const SCRIPT: &str = r#"exec "$0" --keystore "$SWITCHBOARD_KEYSTORE" --key-file "$SWITCHBOARD_KEY_FILE" --relay "$SWITCHBOARD_RELAY" --store "$SWITCHBOARD_STORE" --instance "$SWITCHBOARD_INSTANCE""#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bot_process_passes_the_suite_through_the_environment() {
    let bot = ProcessBot::new(
        "sh",
        ["-c", SCRIPT, env!("CARGO_BIN_EXE_switchboard-test-bot")],
    );
    let report = Suite::new("test-bot process", bot)
        .ask("hello there", Expect::contains("echo: hello there"))
        .ask("one", Expect::contains("echo: one"))
        .ask("two", Expect::contains("echo: two"))
        .never_hands_off("the test bot echoes every text")
        .await;
    report.assert_passed();
    assert!(
        report
            .results
            .iter()
            .filter(|r| r.verdict == Verdict::Passed)
            .count()
            >= 5,
        "{}",
        report.table()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bot_process_that_never_gets_ready_fails_with_its_log() {
    let bot = ProcessBot::new(
        "sh",
        ["-c", "echo starting; echo 'no keystore here' >&2; exit 3"],
    );
    let report = Suite::new("broken process", bot)
        .only(&[switchboard_testkit::conformance::Check::AnswersForwardedThread])
        .await;
    assert!(!report.passed());
    match report.verdict(switchboard_testkit::conformance::Check::AnswersForwardedThread) {
        Some(Verdict::Failed(why)) => {
            assert!(why.contains("did not print `ready`"), "{why}");
            assert!(why.contains("no keystore here"), "the log is quoted: {why}");
        }
        other => panic!("{other:?}"),
    }
}
