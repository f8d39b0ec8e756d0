//! # switchboard-relay
//!
//! The relay stores and forwards ciphertext and routing metadata between devices; it can never
//! read a message or a key. This crate holds its storage layer ([`store`]): the [`Store`] trait
//! with an embedded SQLite backend (the default) and a PostgreSQL backend for several relay
//! processes sharing one database. The HTTP server on top of it is being built (see the
//! changelog).
//!
//! ```no_run
//! # async fn demo() -> Result<(), switchboard_relay::store::StoreError> {
//! let store = switchboard_relay::store::open("sqlite::memory:").await?;
//! # let _ = store; Ok(()) }
//! ```

pub mod store;

pub use store::{Store, StoreError};
