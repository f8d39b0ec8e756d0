//! The other bot of [`Check::NoBotLoop`](super::Check::NoBotLoop): it answers every text
//! anyone else says, bots included, without end.

use switchboard::prelude::*;

/// Answers every text of every other member (see the module docs).
pub(crate) struct Parrot;

#[async_trait]
impl Bot for Parrot {
    async fn on_message(&self, cx: &mut Ctx, msg: &Message) -> Result<(), BotError> {
        if !msg.text().is_empty() && cx.has_floor() {
            let text: String = msg.text().chars().take(200).collect();
            cx.reply(format!("parrot: {text}")).await?;
        }
        Ok(())
    }
}
