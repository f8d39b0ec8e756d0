//! The conformance suite against a bot run as a process of its own, given its world through
//! the environment variables of docs/conformance.md: `switchboard-test-bot` behind a shell
//! line that turns the variables into its flags.

use switchboard_testkit::conformance::{Check, Expect, ProcessBot, Suite, Verdict};

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
        .only(&[Check::AnswersForwardedThread])
        .await;
    assert!(!report.passed());
    match report.verdict(Check::AnswersForwardedThread) {
        Some(Verdict::Failed(why)) => {
            assert!(why.contains("did not print `ready`"), "{why}");
            assert!(why.contains("no keystore here"), "the log is quoted: {why}");
        }
        other => panic!("{other:?}"),
    }
}

/// The bot written on `switchboard-client` alone (`switchboard-client-bot`), as a process.
/// It is at most once across a crash (see its docs), so the crash check is skipped for it.
fn client_bot(flaw: Option<&str>) -> ProcessBot {
    let script = match flaw {
        None => r#"exec "$0""#.to_owned(),
        Some(flaw) => format!(r#"SWITCHBOARD_CLIENT_BOT_FLAW={flaw} exec "$0""#),
    };
    ProcessBot::new(
        "sh",
        [
            "-c".to_owned(),
            script,
            env!("CARGO_BIN_EXE_switchboard-client-bot").to_owned(),
        ],
    )
}

fn client_suite(name: &str, bot: ProcessBot) -> Suite {
    Suite::new(name, bot)
        .ask("hello there", Expect::contains("you said: hello there"))
        .ask("one", Expect::contains("you said: one"))
        .ask("two", Expect::contains("you said: two"))
        .ask("three", Expect::contains("you said: three"))
        .never_hands_off("the client bot answers every text")
        .skip(
            Check::ExactlyOnce,
            "a Device saves its cursor before the bot answers: at most once across a crash",
        )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bot_without_the_sdk_passes_the_suite_as_a_process() {
    let report = client_suite("client bot", client_bot(None)).await;
    report.assert_passed();
    let passed = report
        .results
        .iter()
        .filter(|r| r.verdict == Verdict::Passed)
        .count();
    assert_eq!(passed, Check::ALL.len() - 2, "{}", report.table());
}

/// Runs the suite against the client bot with `flaw` and asserts that `check` alone fails.
async fn fails_only(flaw: &str, check: Check) {
    fails_only_saying(flaw, check, "").await;
}

/// [`fails_only`], and the failure says `why`.
async fn fails_only_saying(flaw: &str, check: Check, why: &str) {
    let report = client_suite(&format!("client bot, {flaw}"), client_bot(Some(flaw))).await;
    assert_eq!(report.failed(), [check], "\n{}", report.table());
    let said = report.results.iter().find_map(|r| match &r.verdict {
        Verdict::Failed(said) => Some(said.as_str()),
        _ => None,
    });
    assert!(
        said.is_some_and(|said| said.contains(why)),
        "expected a failure saying {why:?}:\n{}",
        report.table()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bot_that_ignores_retry_after_fails_honours_retry_after() {
    fails_only("ignore-retry-after", Check::HonoursRetryAfter).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bot_that_exits_on_a_refused_item_fails_ignores_foreign_items() {
    fails_only("exit-on-refused", Check::IgnoresForeignItems).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bot_that_exits_when_the_relay_is_down_fails_recovers_after_relay_restart() {
    fails_only("exit-when-relay-down", Check::RecoversAfterRelayRestart).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bot_that_answers_newest_first_fails_keeps_order_per_thread() {
    fails_only("newest-first", Check::KeepsThreadOrder).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bot_that_answers_without_the_floor_fails_stops_posting() {
    fails_only_saying(
        "ignores-floor",
        Check::StopsWithoutTheFloor,
        "that only the floor holder may send",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bot_that_says_goodbye_when_removed_fails_stops_posting() {
    fails_only_saying(
        "farewell",
        Check::StopsWithoutTheFloor,
        "was removed from a thread and then posted",
    )
    .await;
}
