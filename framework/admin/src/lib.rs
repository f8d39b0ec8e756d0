//! # switchboard-admin
//!
//! The admin device of an entity, as a library (the `switchboard admin` command runs it). The
//! admin receives every new thread, holds its keys (all epochs: the security-information
//! repository, in its encrypted keystore), and forwards each thread by a declarative
//! [`Policy`](config::Policy) — keyword rules to teams, bots first with humans after, least
//! busy or round robin, business hours for humans, a fallback team — with a signed commit that
//! wraps the epoch secret to the chosen agent. It arbitrates handoff requests (one floor holder
//! per thread unless it is a group), issues and revokes agent credentials, and writes every
//! grant and revocation to an append-only [`AuditLog`](audit::AuditLog).

mod admin;
pub mod audit;
pub mod config;
mod error;
mod history_log;
pub mod policy;

pub use admin::{Admin, AgentRecord, DEFAULT_KEY_SWEEP, Outcome};
pub use config::Config;
pub use error::AdminError;
