//! The reads of the delivery path (inbox pages) on synchronous `rusqlite` connections of the
//! store's own, run by the task that asks: a page read is a few indexed lookups in the OS's
//! page cache, cheaper than the hops to and from a pool's worker thread that an sqlx read
//! takes (two thread wake-ups per statement). WAL lets them read beside the writer.
//!
//! A read never waits on the async worker: the connections have no busy timeout, and a read
//! the database refuses as busy (rare in WAL mode: another connection recovering the log) is
//! done again on a blocking thread, with the usual busy timeout.

use std::path::{Path, PathBuf};
use std::sync::{Arc, LazyLock, Mutex, PoisonError};
use std::time::Duration;

use rusqlite::{Connection, ErrorCode, OpenFlags, ToSql};

use crate::store::{InboxItem, InboxRow, LEASE_AVAILABLE, LeasedFetch, StoreError, page_sql};

/// Idle reader connections kept (more are opened when more reads run at once, and closed
/// after).
const IDLE_READERS: usize = 4;
/// How long a read done again on a blocking thread waits for a busy database.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// `Store::fetch`'s page: `$1` device, `$2` after, `$3` limit, `$4` most bytes.
static PAGE: LazyLock<String> = LazyLock::new(|| {
    page_sql(
        "",
        "SELECT seq AS s, CAST(length(payload) AS BIGINT) AS len FROM inbox \
         WHERE device_id = $1 AND seq > $2 ORDER BY seq LIMIT $3",
        "$4",
    )
});

/// A leased fetch's page with each item's lease, in one statement (one snapshot): `$1` device,
/// `$2` instance, `$3` now, `$4` after, `$5` limit, `$6` most bytes.
static LEASED_PAGE: LazyLock<String> = LazyLock::new(|| {
    page_sql(
        ", p.instance, p.expires_at",
        &format!(
            "SELECT i.seq AS s, CAST(length(i.payload) AS BIGINT) AS len, \
             l.instance AS instance, l.expires_at AS expires_at \
             {LEASE_AVAILABLE} ORDER BY i.seq LIMIT $5"
        ),
        "$6",
    )
});

/// The store's reader connections.
#[derive(Debug)]
pub(super) struct Readers {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

/// A leased page's rows: the item and its lease (holder, expiry), if any.
pub(super) type LeasedRow = (InboxRow, Option<String>, Option<i64>);

impl Readers {
    pub(super) fn new(path: &Path) -> Arc<Self> {
        Arc::new(Self {
            path: path.to_path_buf(),
            idle: Mutex::new(Vec::new()),
        })
    }

    fn open(&self) -> rusqlite::Result<Connection> {
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.pragma_update(None, "query_only", "ON")?;
        Ok(conn)
    }

    /// Runs `read` on an idle connection (a new one if none is idle) and puts it back.
    fn run<T>(
        &self,
        busy: Duration,
        read: &impl Fn(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, rusqlite::Error> {
        let idle = self
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        let conn = match idle {
            Some(conn) => conn,
            None => self.open()?,
        };
        conn.busy_timeout(busy)?;
        let result = read(&conn);
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        if idle.len() < IDLE_READERS {
            idle.push(conn);
        }
        result
    }

    /// Runs `read` here, or, if the database is busy, on a blocking thread that waits for it.
    async fn read<T: Send + 'static>(
        self: &Arc<Self>,
        read: impl Fn(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        match self.run(Duration::ZERO, &read) {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if matches!(e.code, ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) =>
            {
                let readers = Arc::clone(self);
                tokio::task::spawn_blocking(move || readers.run(BUSY_TIMEOUT, &read))
                    .await
                    .map_err(|e| StoreError::ReadFailed(format!("the read was cancelled: {e}")))?
                    .map_err(read_failed)
            }
            other => other.map_err(read_failed),
        }
    }

    /// `Store::fetch`: the page after `after`, cut at `max_bytes` (but keeping its first item).
    pub(super) async fn page(
        self: &Arc<Self>,
        device: String,
        after: i64,
        limit: i64,
        max_bytes: i64,
    ) -> Result<Vec<InboxItem>, StoreError> {
        let rows = self
            .read(move |conn| {
                let mut stmt = conn.prepare_cached(&PAGE)?;
                let params: [(&str, &dyn ToSql); 4] = [
                    ("$1", &device),
                    ("$2", &after),
                    ("$3", &limit),
                    ("$4", &max_bytes),
                ];
                stmt.query_map(&params[..], inbox_row)?
                    .collect::<rusqlite::Result<Vec<InboxRow>>>()
            })
            .await?;
        rows.into_iter().map(crate::store::inbox_item).collect()
    }

    /// A leased fetch's page with each item's lease (see `SqliteStore::fetch_leased_read`).
    pub(super) async fn leased_page(
        self: &Arc<Self>,
        f: &LeasedFetch,
        now: i64,
        after: i64,
    ) -> Result<Vec<LeasedRow>, StoreError> {
        let device = f.device.to_string();
        let instance = f.instance.clone();
        let limit = i64::from(f.limit);
        let max_bytes = i64::try_from(f.max_bytes).unwrap_or(i64::MAX);
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(&LEASED_PAGE)?;
            let params: [(&str, &dyn ToSql); 6] = [
                ("$1", &device),
                ("$2", &instance),
                ("$3", &now),
                ("$4", &after),
                ("$5", &limit),
                ("$6", &max_bytes),
            ];
            stmt.query_map(&params[..], |row| -> rusqlite::Result<LeasedRow> {
                Ok((inbox_row(row)?, row.get(6)?, row.get(7)?))
            })?
            .collect::<rusqlite::Result<Vec<LeasedRow>>>()
        })
        .await
    }
}

#[allow(clippy::needless_pass_by_value)] // the shape `map_err` takes
fn read_failed(e: rusqlite::Error) -> StoreError {
    StoreError::ReadFailed(e.to_string())
}

/// The item columns every page selects first.
pub(super) fn inbox_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<InboxRow> {
    Ok((
        row.get(0)?,
        row.get(1)?,
        row.get(2)?,
        row.get(3)?,
        row.get(4)?,
        row.get(5)?,
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;
    use crate::store::Store as _;
    use crate::store::sqlite::SqliteStore;

    fn failure(code: std::ffi::c_int) -> rusqlite::Error {
        rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(code), None)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_read_refused_as_busy_is_done_again_off_the_worker_and_other_errors_are_not() {
        let store = SqliteStore::open("sqlite::memory:").await.unwrap();
        let device = switchboard_protocol::DeviceId::from_bytes([3; 16]);
        assert!(
            store
                .fetch(device, 0, 10, 1 << 20)
                .await
                .unwrap()
                .is_empty()
        );
        let readers = Arc::clone(&store.readers);
        let here = std::thread::current().id();

        let tries = Arc::new(AtomicU32::new(0));
        let counted = Arc::clone(&tries);
        let value = readers
            .read(move |conn| {
                if counted.fetch_add(1, Ordering::SeqCst) == 0 {
                    return Err(failure(rusqlite::ffi::SQLITE_BUSY));
                }
                assert_ne!(
                    std::thread::current().id(),
                    here,
                    "done again on the worker"
                );
                conn.query_row("SELECT count(*) FROM inbox", [], |r| r.get::<_, i64>(0))
            })
            .await
            .unwrap();
        assert_eq!((value, tries.load(Ordering::SeqCst)), (0, 2));

        let tries = Arc::new(AtomicU32::new(0));
        let counted = Arc::clone(&tries);
        let err = readers
            .read(move |_| -> rusqlite::Result<()> {
                counted.fetch_add(1, Ordering::SeqCst);
                Err(failure(rusqlite::ffi::SQLITE_CORRUPT))
            })
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::ReadFailed(_)), "{err:?}");
        assert_eq!(tries.load(Ordering::SeqCst), 1, "not retried");
    }
}
