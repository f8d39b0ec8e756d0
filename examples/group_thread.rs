//! Run: `cargo run -p switchboard-examples --example group_thread` in a directory holding an
//! agent's `bot.keystore` and `bot.key` (`switchboard agent init`, enrolled by the admin).
//!
//! A bot in a group thread (the admin added another agent, so every agent may post). It keeps
//! quiet there unless a message names it; named with "add", it asks the admin to add a
//! specialist (`cx.ask_to_add`), which the admin does by adding one of the "specialists" team
//! to the group.

use serde::{Deserialize, Serialize};
use switchboard::prelude::*;

/// The bot's greeting when a thread is forwarded to it.
pub const GREETING: &str = "Hi! I am the group's bot. Name me to ask me something.";
/// What the bot says when it asks for a specialist.
pub const ASKED: &str = "I have asked for a specialist to join us.";

/// What the bot keeps per thread.
#[derive(Debug, Default, Serialize, Deserialize)]
struct GroupState {
    /// Another agent joined: the thread is a group.
    group: bool,
}

/// Answers alone; in a group, only when named.
#[derive(Debug, Default)]
pub struct GroupBot;

#[async_trait]
impl Bot for GroupBot {
    async fn on_thread(
        &self,
        cx: &mut Ctx,
        _thread: &ThreadInfo,
        _history: &[Message],
    ) -> Result<(), BotError> {
        cx.reply(Content::text(GREETING)).await?;
        Ok(())
    }

    async fn on_member(&self, cx: &mut Ctx, change: &MemberChange) -> Result<(), BotError> {
        if let MemberChange::Joined {
            who: Sender::Agent { .. },
            device,
        } = change
            && *device != cx.me().device
        {
            cx.set_state(&GroupState { group: true })?;
        }
        Ok(())
    }

    async fn on_message(&self, cx: &mut Ctx, msg: &Message) -> Result<(), BotError> {
        if !msg.is_from_customer() || !cx.has_floor() {
            return Ok(());
        }
        let state: GroupState = cx.state()?;
        let text = msg.text().to_lowercase();
        let me = cx.me().display_name.to_lowercase();
        let named = !me.is_empty() && text.contains(&me);
        if state.group && !named {
            return Ok(()); // the humans talk; the bot keeps quiet
        }
        if named && text.contains("add") {
            cx.reply(Content::text(ASKED)).await?;
            let note: String = msg.text().chars().take(200).collect();
            return cx
                .ask_to_add(Handoff::to_team("specialists").note(note))
                .await;
        }
        cx.reply(Content::text(format!("You said: {}", msg.text())))
            .await?;
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<(), BotError> {
    Runtime::builder()
        .keystore("bot.keystore")
        .key_file("bot.key")
        .bot(GroupBot)
        .build()
        .await?
        .run_until_shutdown()
        .await
}
