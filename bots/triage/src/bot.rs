//! The triage bot as a [`Bot`]: the thread's first question (from the forwarded history) or
//! the next message decides; the bot tells the customer where the question goes and hands the
//! thread to that team with a short note. It routes a thread once.

use serde::{Deserialize, Serialize};
use switchboard::prelude::*;

use crate::Triage;

/// Routes each new thread to the right team.
#[derive(Debug)]
pub struct TriageBot {
    triage: Triage,
}

/// What the bot keeps per thread.
#[derive(Debug, Default, Serialize, Deserialize)]
struct TriageThread {
    /// The team the thread was routed to.
    routed_to: Option<String>,
}

/// The note for the team: the route and the customer's question, one line, bounded.
fn note(team: &str, confidence: f64, matched: &[String], question: &str) -> String {
    let question: String = question
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .chars()
        .take(300)
        .collect();
    format!(
        "triage: {team} (confidence {confidence:.2}; matched {}): {question}",
        if matched.is_empty() {
            "nothing".to_owned()
        } else {
            matched.join(", ")
        }
    )
}

impl TriageBot {
    /// A bot routing by `triage`.
    #[must_use]
    pub fn new(triage: Triage) -> Self {
        Self { triage }
    }

    async fn route(&self, cx: &mut Ctx, text: &str) -> Result<(), BotError> {
        if !cx.has_floor() || text.trim().is_empty() {
            return Ok(());
        }
        let mut thread: TriageThread = cx.state()?;
        if thread.routed_to.is_some() {
            return Ok(());
        }
        let route = self.triage.route(text);
        let note = note(&route.team, route.confidence, &route.matched, text);
        thread.routed_to = Some(route.team.clone());
        cx.set_state(&thread)?;
        cx.reply(Content::text(format!(
            "Thanks! I am passing you to our {} team.",
            route.team
        )))
        .await?;
        cx.handoff(Handoff::to_team(route.team).note(note)).await
    }
}

#[async_trait]
impl Bot for TriageBot {
    /// Routes on what the customer wrote before the bot joined (the routing question first).
    async fn on_thread(
        &self,
        cx: &mut Ctx,
        _thread: &ThreadInfo,
        history: &[Message],
    ) -> Result<(), BotError> {
        let question: Vec<&str> = history
            .iter()
            .filter(|m| m.is_from_customer())
            .map(Message::text)
            .collect();
        if question.is_empty() {
            return Ok(()); // wait for the first message
        }
        self.route(cx, &question.join("\n")).await
    }

    async fn on_message(&self, cx: &mut Ctx, msg: &Message) -> Result<(), BotError> {
        if msg.is_from_customer() {
            self.route(cx, msg.text()).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::note;

    #[test]
    fn the_note_is_one_bounded_line() {
        let long = format!("refund\nplease {}", "x".repeat(1000));
        let n = note("billing", 0.5, &["refund".to_owned()], &long);
        assert!(n.starts_with("triage: billing (confidence 0.50; matched refund): refund please"));
        assert!(!n.contains('\n'));
        assert!(n.chars().count() < 400);
        assert!(note("support", 0.0, &[], "hi").contains("matched nothing"));
    }
}
