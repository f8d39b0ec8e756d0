//! The bot conformance suite: named checks run against any bot, each in a world of its own
//! (see [`crate::world`]) with the bot behind a fault-injecting proxy
//! ([`crate::hostile::HostileRelay`]).
//!
//! In a `cargo test` of a bot written with the SDK:
//!
//! ```no_run
//! # use switchboard::prelude::*;
//! # #[derive(Clone)] struct MyBot;
//! # #[async_trait] impl Bot for MyBot {}
//! # async fn run() {
//! use switchboard_testkit::conformance::{Expect, conformance};
//!
//! conformance(MyBot)
//!     .ask("where is order 42?", Expect::contains("order 42"))
//!     .hand_off_on("I want to speak to a person")
//!     .await
//!     .assert_passed();
//! # }
//! ```
//!
//! A bot in another language runs as a process ([`ProcessBot`], or the CLI's
//! `switchboard conformance -- CMD ARGS`). What each check proves: [`Check::proves`] and
//! docs/conformance.md.

mod checks;
mod customer;
mod launch;
mod peer;
mod report;
pub mod scenario;

use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

pub use launch::{
    BotEnv, ENV_ADMIN_FINGERPRINT, ENV_BOT_NAME, ENV_ENTITY, ENV_INSTANCE, ENV_KEY_FILE,
    ENV_KEYSTORE, ENV_RELAY, ENV_STORE, Launched, Launcher, ProcessBot, RustBot, START_WAIT,
    STOP_WAIT,
};
pub use report::{CheckResult, Report, Verdict};

/// The bot under test's name at the entity (what customers see in its credential).
pub const BOT_NAME: &str = "BotUnderTest";
/// The stem of the human agents' names (`Human0`, ... one per team in
/// [`Suite::human_teams`]).
pub const HUMAN_NAME: &str = "Human";
/// The other bot of [`Check::NoBotLoop`].
pub const PEER_NAME: &str = "PeerBot";

/// A named check.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Check {
    /// A thread routed to the bot gets an answer, verified by the customer's device as sent
    /// by the bot's own device under the credential the admin issued it (a bot of the entity,
    /// with its name).
    AnswersForwardedThread,
    /// The answer to the message that routed the thread shows that the bot read it (it
    /// matches the suite's [`Expect`] for that message): the bot reads the history the admin
    /// granted.
    ReadsRoutingMessage,
    /// Under redelivery (every inbox item of the bot delivered three times, also after it was
    /// acknowledged) and a crash (the bot killed just after a question came, then started
    /// again on the same keystore and store), every customer question gets exactly one
    /// answer, and no generation is sealed twice.
    ExactlyOnce,
    /// New threads are answered within the suite's time limit ([`Suite::reply_within`]).
    AnswersInTime,
    /// A customer message that the business's rules say goes to a human makes the bot ask the
    /// admin for a handoff ([`Suite::hand_off_on`]).
    HandsOffWhenAsked,
    /// In a group with another bot that answers everything, the bot does not answer it
    /// without end.
    NoBotLoop,
    /// A request the relay refuses with 429 and `Retry-After` is not sent again (nor another
    /// of its kind) before that time, and the customer's question is answered all the same.
    HonoursRetryAfter,
    /// Items that are not for the bot or not what they claim (tampered copies of a message and
    /// of a history grant, a message with a content type no protocol version knows, a message
    /// relabelled with another thread and with a thread that does not exist, a commit whose
    /// wrap is for another agent) and content it has no answer for (typing indicators, a read
    /// receipt) get no answer and do not stop it: its threads (and a new one) are answered
    /// after them, once each, and it says nothing in the other agent's thread.
    IgnoresForeignItems,
    /// After the floor of a thread went to another agent (the bot still a member, in a
    /// group), the customer's next question gets nothing from the bot but receipts and typing
    /// indicators; after the bot was removed from another thread (once it had answered there),
    /// it posts nothing more to that thread, not even to say goodbye; and it still answers a
    /// new thread. For a bot that answers one question per thread (no [`Suite::ask`] after the
    /// first) only the removal is tried.
    StopsWithoutTheFloor,
    /// After the relay is stopped for two seconds and started again (on the same store, its
    /// sessions gone), a question in a thread the bot answered before (if the suite has later
    /// questions) and a new thread are answered, once each.
    RecoversAfterRelayRestart,
    /// In three threads at once, the customers' later questions sent back to back are answered
    /// in the order they were asked (each answer matches the suite's [`Expect`] of the
    /// question in its position), and none twice.
    KeepsThreadOrder,
}

impl Check {
    /// Every check, in the order the suite runs them.
    pub const ALL: [Self; 11] = [
        Self::AnswersForwardedThread,
        Self::ReadsRoutingMessage,
        Self::ExactlyOnce,
        Self::IgnoresForeignItems,
        Self::StopsWithoutTheFloor,
        Self::AnswersInTime,
        Self::HandsOffWhenAsked,
        Self::NoBotLoop,
        Self::HonoursRetryAfter,
        Self::RecoversAfterRelayRestart,
        Self::KeepsThreadOrder,
    ];

    /// Its name (in tables and JUnit).
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::AnswersForwardedThread => "answers_forwarded_thread",
            Self::ReadsRoutingMessage => "reads_routing_message",
            Self::ExactlyOnce => "exactly_once_under_redelivery_and_restart",
            Self::AnswersInTime => "answers_in_time",
            Self::HandsOffWhenAsked => "hands_off_when_asked",
            Self::NoBotLoop => "no_bot_loop",
            Self::HonoursRetryAfter => "honours_retry_after",
            Self::IgnoresForeignItems => "ignores_foreign_and_tampered_items",
            Self::StopsWithoutTheFloor => "stops_posting_after_floor_loss_or_removal",
            Self::RecoversAfterRelayRestart => "recovers_after_relay_restart",
            Self::KeepsThreadOrder => "keeps_order_per_thread",
        }
    }

    /// The check named `name`.
    #[must_use]
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.name() == name)
    }

    /// What it proves, in one sentence.
    #[must_use]
    pub fn proves(self) -> &'static str {
        match self {
            Self::AnswersForwardedThread => {
                "a thread routed to the bot is answered, and the answer verifies for the customer as the bot's own"
            }
            Self::ReadsRoutingMessage => {
                "the bot reads the message that routed the thread (the admin's history grant)"
            }
            Self::ExactlyOnce => {
                "every question gets exactly one answer under redelivery and a crash, no generation sealed twice"
            }
            Self::AnswersInTime => "new threads are answered within the time limit",
            Self::HandsOffWhenAsked => {
                "a message the rules give to a human makes the bot ask the admin for a handoff"
            }
            Self::NoBotLoop => "the bot does not answer another bot without end in a group",
            Self::HonoursRetryAfter => {
                "the bot waits the Retry-After of a 429 before it asks again, and still answers"
            }
            Self::IgnoresForeignItems => {
                "tampered, misaddressed and foreign items and unanswerable content neither get an answer nor stop the bot"
            }
            Self::StopsWithoutTheFloor => {
                "the bot posts no answer once another agent holds the floor, and nothing once it was removed"
            }
            Self::RecoversAfterRelayRestart => {
                "the bot answers again, once, after the relay was down and restarted"
            }
            Self::KeepsThreadOrder => {
                "questions sent back to back are answered in order in each of several concurrent threads"
            }
        }
    }
}

impl std::fmt::Display for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// What an answer must look like.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Expect {
    /// Any text.
    Anything,
    /// A text containing this, ignoring case.
    Contains(String),
}

impl Expect {
    /// A text containing `text`, ignoring case.
    #[must_use]
    pub fn contains(text: impl Into<String>) -> Self {
        Self::Contains(text.into())
    }

    /// Whether `answer` is what is expected.
    #[must_use]
    pub fn matches(&self, answer: &str) -> bool {
        match self {
            Self::Anything => true,
            Self::Contains(part) => answer.to_lowercase().contains(&part.to_lowercase()),
        }
    }
}

impl std::fmt::Display for Expect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Anything => f.write_str("any text"),
            Self::Contains(part) => write!(f, "a text containing {part:?}"),
        }
    }
}

/// A customer message the bot answers with one message, and what that answer looks like.
#[derive(Clone, Debug)]
pub struct Ask {
    /// What the customer says.
    pub text: String,
    /// What the answer must look like.
    pub expect: Expect,
}

/// The suite for one bot: what to ask it, what it should do, which checks to run. Run it with
/// [`Suite::run`] or `.await`.
pub struct Suite {
    name: String,
    launcher: Arc<dyn Launcher>,
    /// The question that routes the threads.
    first: Ask,
    /// The questions after it, in a conversation.
    then: Vec<Ask>,
    asked: bool,
    handoff_on: Option<String>,
    no_handoff: Option<String>,
    handoff_team: String,
    human_teams: Vec<String>,
    reply_within: Duration,
    answer_wait: Duration,
    checks: Vec<Check>,
    skipped: Vec<(Check, String)>,
}

impl std::fmt::Debug for Suite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Suite")
            .field("name", &self.name)
            .field("first", &self.first)
            .field("then", &self.then)
            .field("handoff_on", &self.handoff_on)
            .field("reply_within", &self.reply_within)
            .field("checks", &self.checks)
            .finish_non_exhaustive()
    }
}

/// The suite for `bot`, a bot of the SDK run in this process (see [`Suite`]).
pub fn conformance(bot: impl switchboard::Bot) -> Suite {
    Suite::new("bot", RustBot::new(bot))
}

impl Suite {
    /// The suite named `name` (in reports) for the bot `launcher` starts. By default it asks
    /// `hello` and accepts any answer, expects no handoff, gives each new thread 10 s in
    /// [`Check::AnswersInTime`] and any answer 30 s elsewhere.
    pub fn new(name: impl Into<String>, launcher: impl Launcher) -> Self {
        Self {
            name: name.into(),
            launcher: Arc::new(launcher),
            first: Ask {
                text: "hello".to_owned(),
                expect: Expect::Anything,
            },
            then: Vec::new(),
            asked: false,
            handoff_on: None,
            no_handoff: None,
            handoff_team: "humans".to_owned(),
            human_teams: vec!["humans".to_owned()],
            reply_within: Duration::from_secs(10),
            answer_wait: Duration::from_secs(30),
            checks: Check::ALL.to_vec(),
            skipped: Vec::new(),
        }
    }

    /// Names the suite (the JUnit test suite's name).
    #[must_use]
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// A question the bot answers with one message matching `expect`. The first one routes the
    /// threads of the checks; the others follow in a conversation. The first call replaces the
    /// default `hello`.
    #[must_use]
    pub fn ask(mut self, text: impl Into<String>, expect: Expect) -> Self {
        let ask = Ask {
            text: text.into(),
            expect,
        };
        if self.asked {
            self.then.push(ask);
        } else {
            self.first = ask;
            self.asked = true;
        }
        self
    }

    /// A customer's first message after which the business's rules want a human: the bot must
    /// ask the admin for a handoff ([`Check::HandsOffWhenAsked`]).
    #[must_use]
    pub fn hand_off_on(mut self, text: impl Into<String>) -> Self {
        self.handoff_on = Some(text.into());
        self.no_handoff = None;
        self
    }

    /// The bot never hands off, for the reason given: [`Check::HandsOffWhenAsked`] is
    /// skipped.
    #[must_use]
    pub fn never_hands_off(mut self, why: impl Into<String>) -> Self {
        self.no_handoff = Some(why.into());
        self.handoff_on = None;
        self
    }

    /// Teams the bot hands off to: each gets a human agent in the checks' worlds (default:
    /// `humans`, also the admin's team for handoffs to any human).
    #[must_use]
    pub fn human_teams(mut self, teams: &[&str]) -> Self {
        self.human_teams = teams.iter().map(|t| (*t).to_owned()).collect();
        if let Some(first) = self.human_teams.first() {
            self.handoff_team.clone_from(first);
        }
        self
    }

    /// How long a new thread may wait for its first answer in [`Check::AnswersInTime`]
    /// (default 10 s).
    #[must_use]
    pub fn reply_within(mut self, limit: Duration) -> Self {
        self.reply_within = limit;
        self
    }

    /// How long a customer waits for an answer in the checks other than
    /// [`Check::AnswersInTime`] (default 30 s, generous for a slow machine: they check what
    /// the bot answers, not how fast; a restart of the bot counts in it).
    #[must_use]
    pub fn answer_wait(mut self, wait: Duration) -> Self {
        self.answer_wait = wait;
        self
    }

    /// Runs only `checks` (in the suite's order).
    #[must_use]
    pub fn only(mut self, checks: &[Check]) -> Self {
        self.checks = Check::ALL
            .into_iter()
            .filter(|c| checks.contains(c))
            .collect();
        self
    }

    /// Skips `check`, for the reason given (reported as skipped).
    #[must_use]
    pub fn skip(mut self, check: Check, why: impl Into<String>) -> Self {
        self.skipped.push((check, why.into()));
        self
    }

    /// Whether answers out of order would show: at least two questions after the first, with
    /// expectations that differ and accept not any text.
    fn order_visible(&self) -> bool {
        self.then.len() >= 2
            && self.then.iter().enumerate().all(|(i, ask)| {
                ask.expect != Expect::Anything
                    && self
                        .then
                        .iter()
                        .skip(i + 1)
                        .all(|other| other.expect != ask.expect)
            })
    }

    /// Why `check` is skipped, if it is.
    fn skip_reason(&self, check: Check) -> Option<String> {
        if let Some((_, why)) = self.skipped.iter().find(|(c, _)| *c == check) {
            return Some(why.clone());
        }
        match check {
            Check::HandsOffWhenAsked if self.handoff_on.is_none() => Some(
                self.no_handoff
                    .clone()
                    .unwrap_or_else(|| "no handoff trigger given (Suite::hand_off_on)".to_owned()),
            ),
            Check::KeepsThreadOrder if !self.order_visible() => Some(
                "the order of answers cannot be seen: give Suite::ask at least two questions after the first, each with an Expect::contains that the answers to the others do not match"
                    .to_owned(),
            ),
            Check::ReadsRoutingMessage if self.first.expect == Expect::Anything => Some(
                "the first question accepts any answer (give Suite::ask an Expect::contains)"
                    .to_owned(),
            ),
            _ => None,
        }
    }

    /// Runs the checks one after another and reports.
    pub async fn run(self) -> Report {
        let mut results = Vec::new();
        for &check in &self.checks {
            let started = tokio::time::Instant::now();
            let verdict = match self.skip_reason(check) {
                Some(why) => Verdict::Skipped(why),
                None => match checks::run(&self, check).await {
                    Ok(()) => Verdict::Passed,
                    Err(why) => Verdict::Failed(why),
                },
            };
            results.push(CheckResult {
                check,
                verdict,
                took: started.elapsed(),
            });
        }
        Report {
            name: self.name,
            results,
        }
    }
}

impl IntoFuture for Suite {
    type Output = Report;
    type IntoFuture = Pin<Box<dyn Future<Output = Report> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.run())
    }
}
