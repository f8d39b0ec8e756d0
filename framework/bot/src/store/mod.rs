//! Placeholder of the bot state store, so that [`BotError`](crate::BotError) compiles on the
//! layers branch. The store's own module (BotStore, SQLite, PostgreSQL) replaces this file when
//! the branches merge; `StoreError` here is exactly the shared spec's.

use switchboard_protocol::ThreadId;

/// What went wrong in the bot's state store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The database failed or could not be reached.
    #[error("database: {0}")]
    Database(String),
    /// Another instance changed the thread first: nothing was written.
    #[error("thread {thread} was changed concurrently")]
    Conflict {
        /// The thread.
        thread: ThreadId,
    },
    /// Stored data could not be decrypted or decoded.
    #[error("corrupt store data: {0}")]
    Corrupt(String),
    /// The store URL or configuration is invalid.
    #[error("store configuration: {0}")]
    Config(String),
    /// The store was closed.
    #[error("the store is closed")]
    Closed,
}

impl StoreError {
    /// Whether trying again may succeed (database connection errors).
    #[must_use]
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::Database(_))
    }
}
