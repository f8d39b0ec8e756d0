//! Scripted scenarios: a conversation with the bot under test written as steps (the customer
//! says, expect a reply matching, expect a handoff, inject a fault, crash the bot), run in a
//! world of its own like a check, and recorded as a [`Transcript`]: what the customer said and
//! saw, decrypted and verified, and the handoffs. A transcript saved as JSON is a golden one:
//! [`replay`] runs its customer's lines against a bot again and [`Transcript::diff`] shows
//! what changed.
//!
//! ```no_run
//! # use switchboard::prelude::*;
//! # struct MyBot;
//! # #[async_trait] impl Bot for MyBot {}
//! # async fn run() -> Result<(), switchboard_testkit::conformance::scenario::ScenarioError> {
//! use switchboard_testkit::conformance::scenario::{Fault, Scenario};
//! use switchboard_testkit::conformance::{Expect, RustBot};
//!
//! let transcript = Scenario::new("refund")
//!     .says("where is order 42?")
//!     .expect_reply(Expect::contains("42"))
//!     .fault(Fault::Redeliver(3))
//!     .fault(Fault::CrashAndRestart)
//!     .says("I want a human")
//!     .expect_handoff()
//!     .run(RustBot::new(MyBot))
//!     .await?;
//! std::fs::write("refund.golden.json", transcript.to_json()).ok();
//! # Ok(()) }
//! ```

use std::time::Duration;

use serde::{Deserialize, Serialize};
use switchboard_admin::Outcome;

use super::checks::Scene;
use super::customer::Talker;
use super::launch::Launcher;
use super::{BOT_NAME, Expect};

/// The largest transcript [`Transcript::from_json`] reads, in bytes.
pub const MAX_TRANSCRIPT_BYTES: usize = 1024 * 1024;

/// The most entries a transcript holds (a bot that floods is recorded up to here).
pub const MAX_ENTRIES: usize = 1_000;

/// How long a run listens at the end for answers nobody expected (duplicates, late ones).
const TAIL: Duration = Duration::from_secs(1);

/// A fault injected between the relay and the bot (see [`crate::hostile::HostileRelay`]).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Fault {
    /// From now on every inbox item of the bot is delivered this many times.
    Redeliver(u32),
    /// The bot's next `n` requests are answered with `status` (and `Retry-After`).
    FailNext {
        /// How many requests.
        n: u32,
        /// The HTTP status (429, 503, ...).
        status: u16,
        /// The `Retry-After` seconds, if any.
        retry_after: Option<u64>,
    },
    /// The bot's next `n` connections are closed without an answer.
    ResetConnections(u32),
    /// The bot is killed (as a crash) and started again on the same keystore and store.
    CrashAndRestart,
}

/// One step of a scenario.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Step {
    /// The customer says this (the first one opens the thread and routes it to the bot).
    Says(String),
    /// The bot's next answer matches.
    ExpectReply(Expect),
    /// The bot says nothing for this long.
    ExpectSilence(Duration),
    /// The bot asks the admin for a handoff, and the admin grants it.
    ExpectHandoff,
    /// A fault from now on.
    Fault(Fault),
    /// Nothing happens for this long (the customer keeps listening).
    Pause(Duration),
}

/// Who an entry of a transcript is from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Party {
    /// The customer said it.
    Customer,
    /// The bot said it (verified by the customer's device as the bot's).
    Bot,
    /// The admin granted the bot's handoff (the text names who took over).
    Handoff,
}

/// One entry of a transcript.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Who.
    pub party: Party,
    /// What.
    pub text: String,
}

/// What happened in a scenario, in order (see the module docs).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Transcript {
    /// The scenario's name.
    pub scenario: String,
    /// The entries, at most [`MAX_ENTRIES`].
    pub entries: Vec<Entry>,
}

impl Transcript {
    fn push(&mut self, party: Party, text: &str) {
        if self.entries.len() < MAX_ENTRIES {
            self.entries.push(Entry {
                party,
                text: text.to_owned(),
            });
        }
    }

    /// The transcript as pretty JSON (a golden file).
    #[must_use]
    pub fn to_json(&self) -> String {
        // A transcript is strings and enums only: it always serializes.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// A transcript read from JSON.
    ///
    /// # Errors
    /// [`TranscriptError`] if it is larger than [`MAX_TRANSCRIPT_BYTES`], holds more than
    /// [`MAX_ENTRIES`] entries or is not a transcript.
    pub fn from_json(json: &str) -> Result<Self, TranscriptError> {
        if json.len() > MAX_TRANSCRIPT_BYTES {
            return Err(TranscriptError(format!(
                "{} bytes: a transcript may have at most {MAX_TRANSCRIPT_BYTES}",
                json.len()
            )));
        }
        let transcript: Self =
            serde_json::from_str(json).map_err(|e| TranscriptError(e.to_string()))?;
        if transcript.entries.len() > MAX_ENTRIES {
            return Err(TranscriptError(format!(
                "{} entries: a transcript may have at most {MAX_ENTRIES}",
                transcript.entries.len()
            )));
        }
        Ok(transcript)
    }

    /// What differs from `other`, one line per entry that is not the same at its position
    /// (`-` this transcript's, `+` the other's); empty if they are equal.
    #[must_use]
    pub fn diff(&self, other: &Self) -> Vec<String> {
        let mut lines = Vec::new();
        let longest = self.entries.len().max(other.entries.len());
        for i in 0..longest {
            let (a, b) = (self.entries.get(i), other.entries.get(i));
            if a == b {
                continue;
            }
            if let Some(a) = a {
                lines.push(format!("{i}: - {:?}: {:?}", a.party, a.text));
            }
            if let Some(b) = b {
                lines.push(format!("{i}: + {:?}: {:?}", b.party, b.text));
            }
        }
        lines
    }

    /// The scenario that says what this transcript's customer said and expects an answer
    /// wherever the bot answered (any answer: [`Transcript::diff`] compares them) and a
    /// handoff wherever one was granted.
    #[must_use]
    pub fn to_scenario(&self) -> Scenario {
        let mut scenario = Scenario::new(self.scenario.clone());
        for entry in &self.entries {
            scenario = match entry.party {
                Party::Customer => scenario.says(entry.text.clone()),
                Party::Bot => scenario.expect_reply(Expect::Anything),
                Party::Handoff => scenario.expect_handoff(),
            };
        }
        scenario
    }
}

/// A transcript that cannot be read.
#[derive(Debug, thiserror::Error)]
#[error("not a transcript: {0}")]
pub struct TranscriptError(String);

/// A scenario that did not go as written: at which step, why, and what happened until then.
#[derive(Debug, thiserror::Error)]
#[error("scenario {scenario:?}, step {step}: {why}")]
pub struct ScenarioError {
    /// The scenario.
    pub scenario: String,
    /// The step that failed (1 for the first), 0 for the set-up.
    pub step: usize,
    /// Why.
    pub why: String,
    /// What happened until then.
    pub transcript: Transcript,
}

/// A scripted conversation with the bot under test (see the module docs).
#[derive(Clone, Debug)]
pub struct Scenario {
    name: String,
    steps: Vec<Step>,
    answer_wait: Duration,
    human_teams: Vec<String>,
}

impl Scenario {
    /// An empty scenario named `name`; each answer may take 30 s, handoffs go to team `humans`.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            steps: Vec::new(),
            answer_wait: Duration::from_secs(30),
            human_teams: vec!["humans".to_owned()],
        }
    }

    /// Adds a step.
    #[must_use]
    pub fn step(mut self, step: Step) -> Self {
        self.steps.push(step);
        self
    }

    /// The customer says `text`.
    #[must_use]
    pub fn says(self, text: impl Into<String>) -> Self {
        self.step(Step::Says(text.into()))
    }

    /// The bot's next answer matches `expect`.
    #[must_use]
    pub fn expect_reply(self, expect: Expect) -> Self {
        self.step(Step::ExpectReply(expect))
    }

    /// The bot says nothing for `wait`.
    #[must_use]
    pub fn expect_silence(self, wait: Duration) -> Self {
        self.step(Step::ExpectSilence(wait))
    }

    /// The bot hands off (and the admin grants it).
    #[must_use]
    pub fn expect_handoff(self) -> Self {
        self.step(Step::ExpectHandoff)
    }

    /// A fault from now on.
    #[must_use]
    pub fn fault(self, fault: Fault) -> Self {
        self.step(Step::Fault(fault))
    }

    /// A pause.
    #[must_use]
    pub fn pause(self, wait: Duration) -> Self {
        self.step(Step::Pause(wait))
    }

    /// How long each expected answer or handoff may take (default 30 s).
    #[must_use]
    pub fn answer_wait(mut self, wait: Duration) -> Self {
        self.answer_wait = wait;
        self
    }

    /// Teams that get a human agent (default `humans`, also the team of handoffs to any human).
    #[must_use]
    pub fn human_teams(mut self, teams: &[&str]) -> Self {
        self.human_teams = teams.iter().map(|t| (*t).to_owned()).collect();
        self
    }

    /// Runs the scenario against the bot `launcher` starts, in a world of its own; returns its
    /// transcript (with any answer nobody expected, heard in the second after the last step).
    ///
    /// # Errors
    /// [`ScenarioError`] at the first step that did not go as written.
    pub async fn run(&self, launcher: impl Launcher) -> Result<Transcript, ScenarioError> {
        let mut transcript = Transcript {
            scenario: self.name.clone(),
            entries: Vec::new(),
        };
        let fail = |step: usize, why: String, transcript: &Transcript| ScenarioError {
            scenario: self.name.clone(),
            step,
            why,
            transcript: transcript.clone(),
        };
        let handoff_team = self
            .human_teams
            .first()
            .cloned()
            .unwrap_or_else(|| "humans".to_owned());
        let mut scene = Scene::build(
            &self.name,
            std::sync::Arc::new(launcher),
            self.answer_wait,
            &self.human_teams,
            &handoff_team,
            false,
            false,
        )
        .await
        .map_err(|why| fail(0, why, &transcript))?;
        if let Err(why) = scene.start().await {
            let _ = scene.finish().await;
            return Err(fail(0, why, &transcript));
        }
        let outcome = self.play(&mut scene, &mut transcript).await;
        let finished = scene.finish().await;
        match outcome {
            Err((step, why)) => Err(fail(step, why, &transcript)),
            Ok(()) => finished
                .map(|()| transcript.clone())
                .map_err(|why| fail(self.steps.len(), why, &transcript)),
        }
    }

    async fn play(
        &self,
        scene: &mut Scene,
        transcript: &mut Transcript,
    ) -> Result<(), (usize, String)> {
        let mut customer: Option<Talker> = None;
        // Answers of the bot already in the transcript, and handoffs already seen.
        let mut heard = 0;
        let mut handoffs = 0;
        for (i, step) in self.steps.iter().enumerate() {
            let n = i + 1;
            match step {
                Step::Says(text) => {
                    match customer.as_mut() {
                        None => customer = Some(scene.customer(text).await.map_err(|e| (n, e))?),
                        Some(c) => c.say(text).await.map_err(|e| (n, e))?,
                    }
                    transcript.push(Party::Customer, text);
                }
                Step::ExpectReply(expect) => {
                    let c = talking(customer.as_mut(), n)?;
                    if !c
                        .until(self.answer_wait, |c| c.count_of(BOT_NAME) > heard)
                        .await
                    {
                        return Err((
                            n,
                            format!(
                                "no answer within {:?} (expected {expect})",
                                self.answer_wait
                            ),
                        ));
                    }
                    let answer = c
                        .texts_of(BOT_NAME)
                        .get(heard)
                        .map(|t| (*t).to_owned())
                        .unwrap_or_default();
                    heard += 1;
                    transcript.push(Party::Bot, &answer);
                    if !expect.matches(&answer) {
                        return Err((n, format!("the bot said {answer:?}; expected {expect}")));
                    }
                }
                Step::ExpectSilence(wait) => {
                    let c = talking(customer.as_mut(), n)?;
                    c.linger(*wait).await;
                    let said: Vec<String> = c
                        .texts_of(BOT_NAME)
                        .iter()
                        .skip(heard)
                        .map(|t| (*t).to_owned())
                        .collect();
                    if !said.is_empty() {
                        for text in &said {
                            transcript.push(Party::Bot, text);
                        }
                        return Err((
                            n,
                            format!("the bot said {said:?} where it should have kept quiet"),
                        ));
                    }
                }
                Step::ExpectHandoff => {
                    let c = talking(customer.as_mut(), n)?;
                    let (thread, bot) = (c.thread, scene.bot_device().map_err(|e| (n, e))?);
                    let granted = |o: &Outcome| matches!(o, Outcome::HandedOff { thread: t, from, .. } if *t == thread && *from == bot);
                    let deadline = tokio::time::Instant::now() + self.answer_wait;
                    let to = loop {
                        let next = scene
                            .world
                            .outcomes()
                            .into_iter()
                            .filter(|o| granted(o))
                            .nth(handoffs);
                        if let Some(Outcome::HandedOff { to, .. }) = next {
                            break to;
                        }
                        if tokio::time::Instant::now() >= deadline {
                            return Err((
                                n,
                                format!("no handoff granted within {:?}", self.answer_wait),
                            ));
                        }
                        c.pump(Duration::from_millis(100)).await;
                    };
                    handoffs += 1;
                    transcript.push(Party::Handoff, &to);
                }
                Step::Fault(fault) => match fault {
                    Fault::Redeliver(times) => {
                        let bot = scene.bot_device().map_err(|e| (n, e))?;
                        scene.hostile.redeliver(bot, *times);
                    }
                    Fault::FailNext {
                        n: count,
                        status,
                        retry_after,
                    } => {
                        scene.hostile.fail_next(*count, *status, *retry_after);
                    }
                    Fault::ResetConnections(count) => scene.hostile.reset_connections(*count),
                    Fault::CrashAndRestart => scene.restart().await.map_err(|e| (n, e))?,
                },
                Step::Pause(wait) => match customer.as_mut() {
                    Some(c) => c.linger(*wait).await,
                    None => tokio::time::sleep(*wait).await,
                },
            }
        }
        // Anything else the bot said: a duplicate, a late answer.
        if let Some(c) = customer.as_mut() {
            c.linger(TAIL).await;
            for text in c.texts_of(BOT_NAME).iter().skip(heard) {
                transcript.push(Party::Bot, text);
            }
        }
        Ok(())
    }
}

/// The customer, once the scenario's first `Says` opened its thread.
fn talking(customer: Option<&mut Talker>, step: usize) -> Result<&mut Talker, (usize, String)> {
    customer.ok_or_else(|| {
        (
            step,
            "the customer has said nothing yet: start with says".to_owned(),
        )
    })
}

/// Replays the golden transcript `golden` against the bot `launcher` starts: the differences
/// (empty if the bot said the same), or the step at which it did not answer or hand off.
///
/// # Errors
/// [`ScenarioError`] as [`Scenario::run`].
pub async fn replay(
    golden: &Transcript,
    launcher: impl Launcher,
) -> Result<Vec<String>, ScenarioError> {
    let now = golden.to_scenario().run(launcher).await?;
    Ok(golden.diff(&now))
}
