//! The admin's log of the sealed messages of its threads, kept so that it can grant history to
//! agents that join later. One JSON-lines file per thread; it holds ciphertext only (the
//! messages as the relay carried them), in a directory of mode 0700 with files of mode 0600.
//! A crash may lose the last lines: a later grant then lacks those messages, nothing else.

use std::fs::{File, OpenOptions};
use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};

use switchboard_protocol::{Epoch, SealedMessage, ThreadId, decode, encode};

use crate::error::AdminError;

/// The log directory.
#[derive(Debug)]
pub(crate) struct HistoryLog {
    dir: PathBuf,
}

impl HistoryLog {
    /// Opens (creating) the directory.
    pub(crate) fn open(dir: &Path) -> Result<Self, AdminError> {
        let io = |source| AdminError::HistoryLog {
            path: dir.to_owned(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(io)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io)?;
        }
        Ok(Self {
            dir: dir.to_owned(),
        })
    }

    fn file(&self, thread: ThreadId) -> PathBuf {
        self.dir.join(format!("{thread}.jsonl"))
    }

    /// Appends a message of `thread`.
    pub(crate) fn append(
        &self,
        thread: ThreadId,
        message: &SealedMessage,
    ) -> Result<(), AdminError> {
        let path = self.file(thread);
        let io = |source| AdminError::HistoryLog {
            path: path.clone(),
            source,
        };
        let mut options = OpenOptions::new();
        options.create(true).append(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            options.mode(0o600);
        }
        let mut file: File = options.open(&path).map_err(io)?;
        let mut line = encode(message).map_err(|e| io(std::io::Error::other(e)))?;
        line.push(b'\n');
        file.write_all(&line).map_err(io)
    }

    /// The last `max` logged messages of `thread` from epochs before `epoch`, oldest first.
    /// Lines that do not decode (a torn last line after a crash) are skipped.
    pub(crate) fn before(
        &self,
        thread: ThreadId,
        epoch: Epoch,
        max: usize,
    ) -> Result<Vec<SealedMessage>, AdminError> {
        let path = self.file(thread);
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => return Err(AdminError::HistoryLog { path, source }),
        };
        let mut out: Vec<SealedMessage> = BufReader::new(file)
            .lines()
            .map_while(Result::ok)
            .filter_map(|line| decode::<SealedMessage>(line.as_bytes()).ok())
            .filter(|m| m.header.thread == thread && m.header.epoch < epoch)
            .collect();
        let skip = out.len().saturating_sub(max);
        out.drain(..skip);
        Ok(out)
    }
}
