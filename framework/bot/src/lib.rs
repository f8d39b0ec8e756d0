//! The Switchboard bot SDK.
//!
//! A bot is an agent device of a business entity: it receives the threads the entity's admin
//! forwards to it, answers customers, hands off to humans. This crate holds everything a bot
//! needs; this part is its state store ([`store`]): per-thread protocol and bot state encrypted
//! at rest, an inbound journal and an outbox, committed together for every handled event, on
//! SQLite (embedded default) or PostgreSQL (several instances of one bot).

pub mod store;
