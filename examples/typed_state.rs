//! Run: `cargo run -p switchboard-examples --example typed_state` in a directory holding an
//! agent's `bot.keystore` and `bot.key` (`switchboard agent init`, enrolled by the admin).
//!
//! Typed per-thread state: the bot counts the customer's turns in each thread with
//! `cx.state::<Turns>()` / `cx.set_state(..)`. The state is committed with the event's effects
//! (in the same store transaction as the reply), so a redelivered or retried event never counts
//! twice.

use serde::{Deserialize, Serialize};
use switchboard::prelude::*;

/// What the bot keeps per thread.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Turns {
    /// The customer's messages answered so far.
    pub count: u32,
}

/// Answers every customer message with its turn number in the thread.
#[derive(Debug, Default)]
pub struct TurnCounter;

impl TurnCounter {
    async fn turn(cx: &mut Ctx, text: &str) -> Result<(), BotError> {
        let mut turns: Turns = cx.state()?;
        turns.count += 1;
        cx.set_state(&turns)?;
        cx.reply(Content::text(format!("Turn {}: {text}", turns.count)))
            .await?;
        Ok(())
    }
}

#[async_trait]
impl Bot for TurnCounter {
    async fn on_thread(
        &self,
        cx: &mut Ctx,
        _thread: &ThreadInfo,
        history: &[Message],
    ) -> Result<(), BotError> {
        match history.iter().find(|m| m.is_from_customer()) {
            Some(first) => Self::turn(cx, first.text()).await,
            None => Ok(()),
        }
    }

    async fn on_message(&self, cx: &mut Ctx, msg: &Message) -> Result<(), BotError> {
        if msg.is_from_customer() {
            Self::turn(cx, msg.text()).await?;
        }
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<(), BotError> {
    Runtime::builder()
        .keystore("bot.keystore")
        .key_file("bot.key")
        .bot(TurnCounter)
        .build()
        .await?
        .run_until_shutdown()
        .await
}
