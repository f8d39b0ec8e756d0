//! The conformance suite against a reference bot that passes it, and against bots broken on
//! purpose, one flaw each: each fails exactly the check made for its flaw (so no check passes
//! whatever the bot does).

#![allow(clippy::unwrap_used, clippy::panic, missing_docs)]

use std::sync::Arc;
use std::time::Duration;

use switchboard::prelude::*;
use switchboard::store::BotStore;
use switchboard::store::memory::MemoryStore;
use switchboard_testkit::conformance::{Check, Expect, Report, RustBot, Suite, Verdict};

/// What is wrong with a bot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Flaw {
    /// Never says anything.
    Silent,
    /// Greets instead of reading the question.
    Greets,
    /// Takes its time before it answers a new thread.
    Slow,
    /// Never hands off.
    NeverHandsOff,
    /// Answers every member, bots included.
    AnswersBots,
}

/// How long the slow bot waits before it answers a new thread (more than [`LIMIT`]).
const SLOW: Duration = Duration::from_secs(6);
/// The answer time limit of the suites of the slow bot.
const LIMIT: Duration = Duration::from_secs(4);

/// Answers each customer text with `you said: TEXT`; hands off when the customer wants a
/// human; unless `flaw` says otherwise.
struct Reference {
    flaw: Option<Flaw>,
}

impl Reference {
    /// Answers `msg`; `routed`: the message that routed the thread to the bot.
    async fn answer(&self, cx: &mut Ctx, msg: &Message, routed: bool) -> Result<(), BotError> {
        let from_customer = msg.is_from_customer();
        if !cx.has_floor() || msg.text().is_empty() {
            return Ok(());
        }
        if !from_customer && self.flaw != Some(Flaw::AnswersBots) {
            return Ok(());
        }
        if from_customer && msg.text().contains("human") && self.flaw != Some(Flaw::NeverHandsOff) {
            return cx
                .handoff(Handoff::to_team("humans").note("asked for a human"))
                .await;
        }
        match self.flaw {
            Some(Flaw::Silent) => return Ok(()),
            Some(Flaw::Greets) => {
                cx.reply("Hello! How can I help?").await?;
                return Ok(());
            }
            Some(Flaw::Slow) if routed => tokio::time::sleep(SLOW).await,
            _ => {}
        }
        cx.reply(format!("you said: {}", msg.text())).await?;
        Ok(())
    }
}

#[async_trait]
impl Bot for Reference {
    async fn on_thread(
        &self,
        cx: &mut Ctx,
        _thread: &ThreadInfo,
        history: &[Message],
    ) -> Result<(), BotError> {
        for msg in history {
            self.answer(cx, msg, true).await?;
        }
        Ok(())
    }

    async fn on_message(&self, cx: &mut Ctx, msg: &Message) -> Result<(), BotError> {
        self.answer(cx, msg, false).await
    }
}

fn suite(name: &str, bot: RustBot) -> Suite {
    Suite::new(name, bot)
        .ask("what is two and two?", Expect::contains("two and two"))
        .ask("and three and three?", Expect::contains("three and three"))
        .ask("and four and four?", Expect::contains("four and four"))
        .hand_off_on("I want to talk to a human")
}

fn broken(flaw: Flaw) -> RustBot {
    RustBot::new(Reference { flaw: Some(flaw) })
}

/// The checks that failed, with the report when they are not `want`.
fn assert_failed_exactly(report: &Report, want: &[Check]) {
    assert_eq!(report.failed(), want, "\n{}", report.table());
    for check in want {
        match report.verdict(*check) {
            Some(Verdict::Failed(why)) => assert!(!why.is_empty()),
            other => panic!("{check}: {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reference_bot_passes_every_check() {
    let report = suite("reference", RustBot::new(Reference { flaw: None })).await;
    report.assert_passed();
    assert_eq!(report.results.len(), Check::ALL.len());
    assert!(
        report.results.iter().all(|r| r.verdict == Verdict::Passed),
        "nothing skipped:\n{}",
        report.table()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_bot_fails_every_check_that_needs_an_answer() {
    // What it waits for never comes: a shorter wait.
    let report = suite("silent", broken(Flaw::Silent))
        .answer_wait(Duration::from_secs(8))
        .await;
    // It still hands off when asked for a human: that check alone passes.
    assert_failed_exactly(
        &report,
        &[
            Check::AnswersForwardedThread,
            Check::ReadsRoutingMessage,
            Check::ExactlyOnce,
            Check::AnswersInTime,
            Check::NoBotLoop,
        ],
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bot_that_greets_without_reading_fails_reads_routing_message() {
    let report = suite("greets", broken(Flaw::Greets)).await;
    assert_failed_exactly(&report, &[Check::ReadsRoutingMessage]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bot_that_forgets_its_state_at_restart_fails_exactly_once() {
    // Its store is in memory: a restart loses what it had handled.
    let bot = RustBot::new(Reference { flaw: None }).configure(|builder| {
        let store: Arc<dyn BotStore> = Arc::new(MemoryStore::new());
        builder.store_backend(store)
    });
    let report = suite("forgets", bot).await;
    assert_failed_exactly(&report, &[Check::ExactlyOnce]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_bot_fails_answers_in_time() {
    let report = suite("slow", broken(Flaw::Slow)).reply_within(LIMIT).await;
    assert_failed_exactly(&report, &[Check::AnswersInTime]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bot_that_never_hands_off_fails_hands_off_when_asked() {
    let report = suite("never-hands-off", broken(Flaw::NeverHandsOff)).await;
    assert_failed_exactly(&report, &[Check::HandsOffWhenAsked]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bot_that_answers_bots_fails_no_bot_loop() {
    let report = suite("answers-bots", broken(Flaw::AnswersBots)).await;
    assert_failed_exactly(&report, &[Check::NoBotLoop]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skipped_checks_are_reported_not_run() {
    let report = Suite::new("skips", RustBot::new(Reference { flaw: None }))
        .never_hands_off("this bot answers everything itself")
        .only(&[
            Check::AnswersForwardedThread,
            Check::ReadsRoutingMessage,
            Check::HandsOffWhenAsked,
        ])
        .await;
    report.assert_passed();
    assert_eq!(
        report.verdict(Check::AnswersForwardedThread),
        Some(&Verdict::Passed)
    );
    // The default question accepts any answer: reading it cannot be checked.
    assert!(matches!(
        report.verdict(Check::ReadsRoutingMessage),
        Some(Verdict::Skipped(_))
    ));
    assert_eq!(
        report.verdict(Check::HandsOffWhenAsked),
        Some(&Verdict::Skipped(
            "this bot answers everything itself".to_owned()
        ))
    );
    assert_eq!(report.verdict(Check::ExactlyOnce), None);
}
