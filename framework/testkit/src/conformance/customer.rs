//! A customer of a check: a [`SimCustomer`] in one thread with the entity, keeping what it was
//! told (bounded).

use std::time::Duration;

use switchboard_client::Event;
use switchboard_protocol::{AgentKind, Content, MessageId, Sender, ThreadId};
use tokio::time::Instant;

use crate::sim::SimCustomer;
use crate::world::World;

/// How many messages of agents a customer keeps (a bot that floods the thread is noticed, not
/// stored without bound).
const MAX_KEPT: usize = 1_000;

/// The most characters of one message a customer keeps (the rest is cut).
const MAX_TEXT_CHARS: usize = 4_000;

/// How long one receive waits at most.
const POLL: Duration = Duration::from_millis(300);

/// A message of an agent as the customer received it (verified by the customer's device).
#[derive(Clone, Debug)]
pub(crate) struct Said {
    /// The agent's name in its credential.
    pub(crate) name: String,
    /// Its kind in its credential.
    pub(crate) kind: AgentKind,
    /// The text (of a text message or a reply), its first [`MAX_TEXT_CHARS`] characters.
    pub(crate) text: String,
    /// The message's id.
    pub(crate) id: MessageId,
}

/// A customer talking in one thread.
pub(crate) struct Talker {
    sim: SimCustomer,
    pub(crate) thread: ThreadId,
    /// What agents said, in order of arrival (at most [`MAX_KEPT`]).
    pub(crate) said: Vec<Said>,
    /// Agent messages beyond [`MAX_KEPT`].
    pub(crate) overflow: usize,
    /// Roster changes seen (new epochs).
    pub(crate) epochs: usize,
    /// Equivocations seen (a generation sealed twice).
    pub(crate) equivocations: usize,
    /// Receive errors (at most [`MAX_KEPT`]).
    pub(crate) errors: Vec<String>,
    /// How long it waits for an answer (the suite's [`answer_wait`](super::Suite::answer_wait)).
    pub(crate) wait: Duration,
}

impl Talker {
    /// A new customer who opens a thread and says `first` there.
    pub(crate) async fn open(world: &World, first: &str, wait: Duration) -> Result<Self, String> {
        let mut sim = world
            .customer()
            .await
            .map_err(|e| format!("a customer: {e}"))?;
        let thread = sim
            .open_thread(world.entity())
            .await
            .map_err(|e| format!("a customer opening a thread: {e}"))?;
        sim.send(thread, first)
            .await
            .map_err(|e| format!("a customer's first message: {e}"))?;
        Ok(Self {
            sim,
            thread,
            said: Vec::new(),
            overflow: 0,
            epochs: 0,
            equivocations: 0,
            errors: Vec::new(),
            wait,
        })
    }

    /// Says `text` in the thread.
    pub(crate) async fn say(&mut self, text: &str) -> Result<(), String> {
        self.sim
            .send(self.thread, text)
            .await
            .map(drop)
            .map_err(|e| format!("a customer sending {text:?}: {e}"))
    }

    /// Sends `content` (a typing indicator, a receipt, ...) in the thread.
    pub(crate) async fn send(&mut self, content: &Content) -> Result<(), String> {
        self.sim
            .send_content(self.thread, content, None)
            .await
            .map(drop)
            .map_err(|e| format!("a customer sending a {:?}: {e}", content.content_type()))
    }

    /// Receives once (waiting up to `wait`) and keeps what came.
    pub(crate) async fn pump(&mut self, wait: Duration) {
        match self.sim.receive(wait.min(POLL)).await {
            Ok(events) => {
                for event in events {
                    self.keep(event);
                }
            }
            Err(e) => {
                if self.errors.len() < MAX_KEPT {
                    self.errors.push(e.to_string());
                }
                tokio::time::sleep(wait.min(POLL)).await;
            }
        }
    }

    fn keep(&mut self, event: Event) {
        match event {
            Event::Message {
                thread, message, ..
            } if thread == self.thread => {
                let id = message.id;
                let Sender::Agent { display_name, kind } = message.sender_info else {
                    return;
                };
                // Typing indicators, receipts: not something said.
                let (Content::Text { text } | Content::Reply { text }) = message.content else {
                    return;
                };
                if self.said.len() < MAX_KEPT {
                    let text = match text.char_indices().nth(MAX_TEXT_CHARS) {
                        Some((end, _)) => text.get(..end).unwrap_or_default().to_owned(),
                        None => text,
                    };
                    self.said.push(Said {
                        name: display_name,
                        kind,
                        text,
                        id,
                    });
                } else {
                    self.overflow += 1;
                }
            }
            Event::RosterChanged { thread, .. } if thread == self.thread => self.epochs += 1,
            Event::Equivocation { thread, .. } if thread == self.thread => {
                self.equivocations += 1;
            }
            _ => {}
        }
    }

    /// Receives until `done` holds or `within` passed; whether it holds.
    pub(crate) async fn until(&mut self, within: Duration, done: impl Fn(&Self) -> bool) -> bool {
        let deadline = Instant::now() + within;
        loop {
            if done(self) {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            self.pump(left).await;
        }
    }

    /// Keeps receiving for `wait` (to catch what comes late: a duplicate, a loop).
    pub(crate) async fn linger(&mut self, wait: Duration) {
        let _ = self.until(wait, |_| false).await;
    }

    /// The texts the agent `name` said, as a bot, in order.
    pub(crate) fn texts_of(&self, name: &str) -> Vec<&str> {
        self.said
            .iter()
            .filter(|s| s.name == name && s.kind == AgentKind::Bot)
            .map(|s| s.text.as_str())
            .collect()
    }

    /// How many texts the bot `name` sent that this customer got.
    pub(crate) fn count_of(&self, name: &str) -> usize {
        self.texts_of(name).len()
    }
}
