//! # switchboard
//!
//! The Switchboard bot SDK: a bot author implements the `Bot` trait, and the runtime feeds it
//! the events of its threads through tower pipelines. Inbound events pass a
//! `tower::Service` stack before the bot; outgoing messages pass one before they are sealed;
//! sealed messages pass one on their way to the relay.
//!
//! The built-in middleware lives in [`layers`]: rate limits, retry, timeout, a typing
//! indicator, a content guard, a bot-loop guard, tracing and Prometheus metrics. How to write
//! and test a layer of your own is in [`layers::guide`].

mod error;
pub mod layers;
pub mod store;

pub use error::BotError;
