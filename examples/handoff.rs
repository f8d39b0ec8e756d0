//! Run: `cargo run -p switchboard-examples --example handoff` in a directory holding an agent's
//! `bot.keystore` and `bot.key` (`switchboard agent init`, enrolled by the admin).
//!
//! A bot that hands the thread to a human when the customer asks ("human please"): it says so,
//! and asks the admin for a handoff with a note for whoever takes over. The admin picks the
//! human (its `handoff_team`) and transfers the thread in a new epoch; the bot loses the floor
//! (`on_floor_lost`) and is removed (`on_removed`).

use switchboard::prelude::*;

/// What the bot says when it hands off.
pub const CONNECTING: &str = "Connecting you to a human colleague.";

/// Answers until the customer asks for a human, then hands off.
#[derive(Debug, Default)]
pub struct HandoffBot;

#[async_trait]
impl Bot for HandoffBot {
    async fn on_message(&self, cx: &mut Ctx, msg: &Message) -> Result<(), BotError> {
        if !msg.is_from_customer() || !cx.has_floor() {
            return Ok(());
        }
        if msg.text().to_lowercase().contains("human please") {
            cx.reply(Content::text(CONNECTING)).await?;
            let note: String = msg.text().chars().take(200).collect();
            return cx
                .handoff(Handoff::to_human().note(format!("the customer asked: {note}")))
                .await;
        }
        cx.reply(Content::text(
            "I am a bot; say \"human please\" for a person.",
        ))
        .await?;
        Ok(())
    }

    async fn on_floor_lost(&self, cx: &mut Ctx) -> Result<(), BotError> {
        tracing::info!(thread = %cx.thread(), "a human took over");
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<(), BotError> {
    Runtime::builder()
        .keystore("bot.keystore")
        .key_file("bot.key")
        .bot(HandoffBot)
        .build()
        .await?
        .run_until_shutdown()
        .await
}
