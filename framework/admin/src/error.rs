//! Errors of the admin.

use std::path::PathBuf;

/// Why an admin operation failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The configuration file is missing or wrong.
    #[error("config {path}: {detail}")]
    Config {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// The device, keystore or relay failed.
    #[error(transparent)]
    Client(#[from] switchboard_client::ClientError),
    /// A protocol operation failed (issuing a credential, ...).
    #[error(transparent)]
    Protocol(#[from] switchboard_protocol::Error),
    /// The audit log cannot be written. The admin stops rather than act unaudited.
    #[error("audit log {path}: {source}")]
    Audit {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The history log (the ciphertexts kept for history grants) cannot be used.
    #[error("history log {path}: {source}")]
    HistoryLog {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// No agent of that name is registered.
    #[error("no agent named {0:?} is registered (see `switchboard admin agents`)")]
    UnknownAgent(String),
    /// An agent with that name or device is registered already.
    #[error("{0}")]
    AgentExists(String),
    /// The admin state kept in the keystore is not valid.
    #[error("admin state in the keystore is not valid: {0}")]
    State(String),
    /// The request does not fit the thread (not in it, already in it, ...).
    #[error("{0}")]
    Refused(String),
}
