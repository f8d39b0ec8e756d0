//! # switchboard
//!
//! The Switchboard bot SDK. A bot is an agent device of a business entity: it receives the
//! threads the entity's admin forwards to it, answers customers, hands off to humans. A bot
//! author implements the `Bot` trait, and the runtime feeds it the events of its threads through
//! tower pipelines: inbound events pass a `tower::Service` stack before the bot; outgoing
//! messages pass one before they are sealed; sealed messages pass one on their way to the relay.
//!
//! The built-in middleware lives in [`layers`]: rate limits, retry, timeout, a typing
//! indicator, a content guard, a bot-loop guard, tracing and Prometheus metrics. How to write
//! and test a layer of your own is in [`layers::guide`].
//!
//! The bot's state lives in its [`store`]: per-thread protocol and bot state encrypted at rest,
//! an inbound journal and an outbox, committed together for every handled event, on SQLite
//! (embedded default) or PostgreSQL (several instances of one bot).

mod error;
pub mod layers;
pub mod store;

pub use error::BotError;
