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
    /// Greets instead of reading the question that routed the thread (it reads the later
    /// ones).
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
            Some(Flaw::Greets) if routed => {
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
            Check::IgnoresForeignItems,
            Check::StopsWithoutTheFloor,
            Check::AnswersInTime,
            Check::NoBotLoop,
            Check::HonoursRetryAfter,
            Check::RecoversAfterRelayRestart,
            Check::KeepsThreadOrder,
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

mod scenarios {
    //! Scripted scenarios and golden transcripts.

    use std::time::Duration;

    use switchboard_testkit::conformance::scenario::{
        Entry, Fault, MAX_ENTRIES, MAX_TRANSCRIPT_BYTES, Party, Scenario, Transcript, replay,
    };
    use switchboard_testkit::conformance::{Expect, RustBot};

    use super::{Flaw, Reference, broken};

    fn good() -> RustBot {
        RustBot::new(Reference { flaw: None })
    }

    fn refund() -> Scenario {
        Scenario::new("refund")
            .says("where is my parcel?")
            .expect_reply(Expect::contains("parcel"))
            .fault(Fault::Redeliver(3))
            .says("it is late")
            .expect_reply(Expect::contains("late"))
            .fault(Fault::CrashAndRestart)
            .says("still nothing")
            .expect_reply(Expect::contains("still nothing"))
            .says("I want a human")
            .expect_handoff()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_scenario_records_what_the_customer_saw_and_replays_the_same() {
        let transcript = refund().run(good()).await.unwrap();
        let said = |party, text: &str| Entry {
            party,
            text: text.to_owned(),
        };
        assert_eq!(
            transcript.entries,
            [
                said(Party::Customer, "where is my parcel?"),
                said(Party::Bot, "you said: where is my parcel?"),
                said(Party::Customer, "it is late"),
                said(Party::Bot, "you said: it is late"),
                said(Party::Customer, "still nothing"),
                said(Party::Bot, "you said: still nothing"),
                said(Party::Customer, "I want a human"),
                said(Party::Handoff, "Human0"),
            ],
            "exactly once under redelivery and a crash, then the handoff"
        );
        let golden = Transcript::from_json(&transcript.to_json()).unwrap();
        assert_eq!(golden, transcript);
        assert_eq!(replay(&golden, good()).await.unwrap(), Vec::<String>::new());

        // Another bot (it greets instead of answering the first message, and answers the
        // rest): the replay says where it differs, and only there.
        let diff = replay(&golden, broken(Flaw::Greets)).await.unwrap();
        assert_eq!(diff.len(), 2, "{diff:#?}");
        assert!(
            diff[0].starts_with("1: - Bot: \"you said: where is my parcel?\""),
            "{diff:#?}"
        );
        assert!(
            diff[1].starts_with("1: + Bot: \"Hello! How can I help?\""),
            "{diff:#?}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_step_that_does_not_hold_fails_with_its_number_and_the_transcript() {
        let error = Scenario::new("wrong")
            .says("hello")
            .expect_reply(Expect::contains("goodbye"))
            .run(good())
            .await
            .unwrap_err();
        assert_eq!(error.step, 2);
        assert!(
            error.why.contains("expected a text containing \"goodbye\""),
            "{error}"
        );
        assert_eq!(error.transcript.entries.len(), 2);

        let error = Scenario::new("quiet")
            .says("hello")
            .expect_silence(Duration::from_secs(3))
            .run(good())
            .await
            .unwrap_err();
        assert_eq!(error.step, 2);
        assert!(error.why.contains("should have kept quiet"), "{error}");

        let error = Scenario::new("mute")
            .answer_wait(Duration::from_secs(3))
            .says("hello")
            .expect_reply(Expect::Anything)
            .run(broken(Flaw::Silent))
            .await
            .unwrap_err();
        assert_eq!(error.step, 2);
        assert!(error.why.contains("no answer within 3s"), "{error}");

        let error = Scenario::new("backwards")
            .expect_handoff()
            .run(good())
            .await
            .unwrap_err();
        assert_eq!(error.step, 1);
        assert!(error.why.contains("start with says"), "{error}");
    }

    #[test]
    fn transcripts_that_are_too_large_or_not_transcripts_are_refused() {
        assert!(Transcript::from_json("{").is_err());
        assert!(
            Transcript::from_json(r#"{"scenario":"x","entries":[{"party":"robot","text":""}]}"#)
                .is_err()
        );
        let big = format!(
            r#"{{"scenario":"{}","entries":[]}}"#,
            "x".repeat(MAX_TRANSCRIPT_BYTES)
        );
        assert!(
            Transcript::from_json(&big)
                .unwrap_err()
                .to_string()
                .contains("at most")
        );
        let entry = r#"{"party":"bot","text":"a"}"#;
        let many = format!(
            r#"{{"scenario":"x","entries":[{}]}}"#,
            vec![entry; MAX_ENTRIES + 1].join(",")
        );
        assert!(
            Transcript::from_json(&many)
                .unwrap_err()
                .to_string()
                .contains("entries")
        );
        let fine = format!(
            r#"{{"scenario":"x","entries":[{}]}}"#,
            vec![entry; MAX_ENTRIES].join(",")
        );
        assert_eq!(
            Transcript::from_json(&fine).unwrap().entries.len(),
            MAX_ENTRIES
        );
    }
}
