//! # switchboard-relay
//!
//! The relay stores and forwards ciphertext and routing metadata between devices; it can never
//! read a message or a key. [`store`] is its storage: the [`Store`] trait with an embedded SQLite
//! backend (the default) and a PostgreSQL backend for several relay processes sharing one
//! database. [`http`] is the JSON API (`app(state) -> Router`), every request signed by the
//! device's identity key: registration, the directory, threads, commits, messages and inboxes
//! with long-polling, acks and bot-instance leases. [`server::run`] serves it with graceful
//! shutdown.
//!
//! ```no_run
//! # async fn demo() -> Result<(), switchboard_relay::store::StoreError> {
//! let store = switchboard_relay::store::open("sqlite::memory:").await?;
//! # let _ = store; Ok(()) }
//! ```

pub mod bench;
pub mod http;
pub mod server;
pub mod store;

pub use http::{ApiError, RelayState, app};
pub use store::{Store, StoreError};
