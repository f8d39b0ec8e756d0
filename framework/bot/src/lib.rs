//! # switchboard: the bot SDK
//!
//! A bot is a type that implements [`Bot`]; the [`Runtime`] runs it as an agent device of an
//! entity: it fetches the agent's inbox from the relay, verifies and decrypts every item, calls
//! the bot's hooks (one thread's events in order, different threads concurrently), and commits
//! each event's effects (the thread's protocol state, the bot's typed state, the sealed
//! replies) in one store transaction before the replies are posted. A redelivered event finds
//! its journal entry and does nothing again; a re-posted reply is answered by the relay as
//! already stored.
//!
//! The 20-line bot (also `examples/twenty_line_bot.rs` and the top of README.md; a test of
//! switchboard-examples keeps the three equal):
//!
//! ```no_run
//! use switchboard::prelude::*;
//!
//! struct Echo;
//!
//! #[async_trait]
//! impl Bot for Echo {
//!     async fn on_thread(&self, cx: &mut Ctx, _: &ThreadInfo, h: &[Message]) -> Result<(), BotError> {
//!         match h.iter().find(|m| m.is_from_customer()) {
//!             Some(first) => self.on_message(cx, first).await,
//!             None => Ok(()),
//!         }
//!     }
//!
//!     async fn on_message(&self, cx: &mut Ctx, msg: &Message) -> Result<(), BotError> {
//!         cx.reply(format!("You said: {}", msg.text())).await?;
//!         Ok(())
//!     }
//! }
//!
//! #[tokio::main]
//! async fn main() -> Result<(), BotError> {
//!     let builder = Runtime::builder().keystore("echo.keystore");
//!     let runtime = builder.key_file("echo.key").bot(Echo).build().await?;
//!     runtime.run_until_shutdown().await
//! }
//! ```
//!
//! Pipelines: inbound events pass through a `tower::Service` stack before the bot
//! ([`RuntimeBuilder::inbound`]), outgoing messages through one before they are sealed
//! ([`RuntimeBuilder::outbound`]), sealed messages through one on their way to the relay
//! ([`RuntimeBuilder::delivery`]). The request types are in [`pipeline`]; layers are written
//! against the traits in [`layers`], which also holds the built-in ones (rate limits, retry,
//! timeout, a typing indicator, a content guard, a bot-loop guard, tracing and Prometheus
//! metrics); how to write and test a layer of your own is in [`layers::guide`].

mod bot;
mod ctx;
mod error;
pub mod layers;
pub mod pipeline;
mod runtime;
pub mod store;

pub use bot::{Bot, Handoff, Identity, MemberChange, Message, Receipt, ThreadInfo};
pub use ctx::{Ctx, MAX_STATE_BYTES, TypingHandle};
pub use error::BotError;
pub use pipeline::{BotEvent, Delivery, Inbound, Outgoing};
pub use runtime::blob::HISTORY_LIMIT;
pub use runtime::{Runtime, RuntimeBuilder, RuntimeHandle};
pub use switchboard_client::KeystoreSecret;

/// Everything a bot needs: `use switchboard::prelude::*;`.
pub mod prelude {
    pub use async_trait::async_trait;
    pub use switchboard_protocol::{
        AgentKind, Content, DeviceId, EntityId, MessageId, ReceiptKind, Sender, ThreadId,
    };

    pub use crate::{
        Bot, BotError, BotEvent, Ctx, Handoff, Identity, KeystoreSecret, MemberChange, Message,
        Receipt, Runtime, RuntimeBuilder, RuntimeHandle, ThreadInfo, TypingHandle,
    };
}
