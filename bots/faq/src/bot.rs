//! The FAQ bot as a [`Bot`]: it answers the question that routed the thread and each later one
//! from the FAQ, and hands the thread to the FAQ's team when no entry fits; after handing off
//! it stays silent.

use serde::{Deserialize, Serialize};
use switchboard::prelude::*;

use crate::{Answer, Faq};

/// What the bot says before it hands a thread on.
pub const HANDING_OFF: &str = "Let me get a colleague who can help with that.";

/// Answers from an FAQ, hands off when unsure.
#[derive(Debug)]
pub struct FaqBot {
    faq: Faq,
}

/// What the bot keeps per thread.
#[derive(Debug, Default, Serialize, Deserialize)]
struct FaqThread {
    /// The bot asked for a handoff: it answers no more (until the floor comes back, it cannot).
    handed_off: bool,
}

impl FaqBot {
    /// A bot answering from `faq`.
    #[must_use]
    pub fn new(faq: Faq) -> Self {
        Self { faq }
    }

    async fn answer(&self, cx: &mut Ctx, text: &str) -> Result<(), BotError> {
        if !cx.has_floor() || text.trim().is_empty() {
            return Ok(());
        }
        let mut thread: FaqThread = cx.state()?;
        if thread.handed_off {
            return Ok(());
        }
        match self.faq.answer(text) {
            Answer::Reply(reply) => {
                cx.reply(Content::text(reply)).await?;
            }
            Answer::Handoff { team, note } => {
                thread.handed_off = true;
                cx.set_state(&thread)?;
                cx.reply(Content::text(HANDING_OFF)).await?;
                cx.handoff(Handoff::to_team(team).note(note)).await?;
            }
        }
        Ok(())
    }
}

#[async_trait]
impl Bot for FaqBot {
    /// Answers the question that routed the thread (the customer's first message).
    async fn on_thread(
        &self,
        cx: &mut Ctx,
        _thread: &ThreadInfo,
        history: &[Message],
    ) -> Result<(), BotError> {
        match history.iter().find(|m| m.is_from_customer()) {
            Some(first) => self.answer(cx, first.text()).await,
            None => Ok(()),
        }
    }

    async fn on_message(&self, cx: &mut Ctx, msg: &Message) -> Result<(), BotError> {
        if msg.is_from_customer() {
            self.answer(cx, msg.text()).await?;
        }
        Ok(())
    }
}
