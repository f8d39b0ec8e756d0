//! The echo bot as a [`Bot`]: it answers every text message of the customer with the same
//! text, the question that routed the thread included.

use switchboard::prelude::*;

use crate::echo_reply;

/// Answers every text message of the customer with the same text (see [`echo_reply`]).
#[derive(Debug, Default, Clone, Copy)]
pub struct EchoBot;

impl EchoBot {
    async fn echo(cx: &mut Ctx, msg: &Message) -> Result<(), BotError> {
        if !msg.is_from_customer() || !cx.has_floor() {
            return Ok(());
        }
        if let Some(reply) = echo_reply(msg.text()) {
            cx.reply(Content::text(reply)).await?;
        }
        Ok(())
    }
}

#[async_trait]
impl Bot for EchoBot {
    /// Echoes what the customer wrote before the bot joined (the routing question first).
    async fn on_thread(
        &self,
        cx: &mut Ctx,
        _thread: &ThreadInfo,
        history: &[Message],
    ) -> Result<(), BotError> {
        for msg in history {
            Self::echo(cx, msg).await?;
        }
        Ok(())
    }

    async fn on_message(&self, cx: &mut Ctx, msg: &Message) -> Result<(), BotError> {
        Self::echo(cx, msg).await
    }
}
