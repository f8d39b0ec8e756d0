//! The audit log: one JSON line per grant and revocation, appended and fsync'd before the
//! admin acts on it. It holds ids, names and reasons, never a secret or a message text.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use switchboard_protocol::{DeviceId, Epoch, MessageDigest, ThreadId, Timestamp};

use crate::error::AdminError;

/// What happened.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case", deny_unknown_fields)]
pub enum AuditEvent {
    /// A credential was issued to an agent.
    CredentialIssued {
        /// The agent's name.
        agent: String,
        /// Its device.
        device: DeviceId,
        /// Until when.
        expires_at: Timestamp,
    },
    /// An agent's credential was revoked: it was removed from every thread and unregistered.
    CredentialRevoked {
        /// The agent's name.
        agent: String,
        /// Its device.
        device: DeviceId,
        /// The threads it was removed from.
        threads: Vec<ThreadId>,
    },
    /// A customer opened a thread.
    ThreadOpened {
        /// The thread.
        thread: ThreadId,
        /// The customer's device.
        customer: DeviceId,
    },
    /// A thread's epoch secret was granted to an agent (assign, add to group, or transfer in).
    Granted {
        /// The thread.
        thread: ThreadId,
        /// The agent's name.
        agent: String,
        /// Its device.
        device: DeviceId,
        /// The epoch it can read from.
        epoch: Epoch,
        /// How: assign, add_to_group, transfer.
        how: String,
        /// Why (the routing decision).
        reason: String,
    },
    /// An agent lost access to a thread: the new epoch is not wrapped to it.
    Revoked {
        /// The thread.
        thread: ThreadId,
        /// The agent's device.
        device: DeviceId,
        /// The first epoch it cannot read.
        epoch: Epoch,
        /// Why.
        reason: String,
    },
    /// An agent that joined a thread was granted its earlier messages (history grant).
    HistoryGranted {
        /// The thread.
        thread: ThreadId,
        /// The agent's name.
        agent: String,
        /// Its device.
        device: DeviceId,
        /// The epochs before this one were granted.
        before: Epoch,
        /// How many messages.
        messages: usize,
    },
    /// A thread was rekeyed because members rotated their KEM keys: its new epoch is wrapped to
    /// their new keys.
    Rekeyed {
        /// The thread.
        thread: ThreadId,
        /// The new epoch.
        epoch: Epoch,
        /// Why.
        reason: String,
    },
    /// A member signed two different messages under one generation: the first stands, the
    /// second was dropped (members may disagree about what it said).
    Equivocation {
        /// The thread.
        thread: ThreadId,
        /// The member.
        device: DeviceId,
        /// The epoch.
        epoch: Epoch,
        /// The generation used twice.
        generation: u64,
        /// Digest of the message accepted first.
        first: MessageDigest,
        /// Digest of the dropped one.
        second: MessageDigest,
    },
    /// A message of an old epoch arrived after the grace period and was dropped: its sender
    /// may have missed a commit (a relay withholding it), or the old epoch's secret is being
    /// used by someone who should have moved on.
    LateMessage {
        /// The thread.
        thread: ThreadId,
        /// The sender.
        device: DeviceId,
        /// The message's (old) epoch.
        epoch: Epoch,
        /// The epoch the admin had installed after it.
        next: Epoch,
        /// When the admin installed it.
        next_installed_at: Timestamp,
    },
    /// A handoff request was not granted.
    HandoffRefused {
        /// The thread.
        thread: ThreadId,
        /// The requesting agent.
        device: DeviceId,
        /// Why.
        reason: String,
    },
}

/// One line of the log. (Unknown fields are refused by the event's own schema; serde cannot
/// combine that check with the flattening here.)
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// When (Unix seconds).
    pub at: Timestamp,
    /// What.
    #[serde(flatten)]
    pub event: AuditEvent,
}

/// The log file, open for appending.
#[derive(Debug)]
pub struct AuditLog {
    path: PathBuf,
    file: File,
}

impl AuditLog {
    /// Opens (creating) the log at `path`.
    ///
    /// # Errors
    /// [`AdminError::Audit`] if it cannot be opened.
    pub fn open(path: &Path) -> Result<Self, AdminError> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .map_err(|source| AdminError::Audit {
                path: path.to_owned(),
                source,
            })?;
        Ok(Self {
            path: path.to_owned(),
            file,
        })
    }

    /// Appends one record and makes it durable.
    ///
    /// # Errors
    /// [`AdminError::Audit`] if it cannot be written.
    pub fn record(&mut self, at: Timestamp, event: AuditEvent) -> Result<(), AdminError> {
        let audit = |source| AdminError::Audit {
            path: self.path.clone(),
            source,
        };
        let mut line = serde_json::to_vec(&AuditRecord { at, event })
            .map_err(|e| audit(std::io::Error::other(e)))?;
        line.push(b'\n');
        self.file.write_all(&line).map_err(audit)?;
        self.file.sync_data().map_err(audit)
    }

    /// Reads every record of the log at `path` (for tools and tests).
    ///
    /// # Errors
    /// [`AdminError::Audit`] if it cannot be read or a line is not a record.
    pub fn read(path: &Path) -> Result<Vec<AuditRecord>, AdminError> {
        let audit = |source| AdminError::Audit {
            path: path.to_owned(),
            source,
        };
        let text = std::fs::read_to_string(path).map_err(audit)?;
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).map_err(|e| audit(std::io::Error::other(e))))
            .collect()
    }
}
