//! The bot store's databases as a `DeviceStore` (the admin device's rows): on a SQLite file,
//! SQLite in memory and PostgreSQL when `SWITCHBOARD_TEST_PG` names a server.

use std::sync::Arc;
use std::time::Duration;

use sqlx::Connection as _;
use switchboard::store::{SqlDeviceStore, StoreError, open_device_store};
use switchboard_client::store::{DeviceStore, StoreWrite, StoredDevice};
use switchboard_protocol::{DeviceId, ThreadId};

use switchboard_testkit::pg::PgSchema;

use crate::{random_device, random_thread, temp_db};

fn write(state: &[u8], threads: &[(ThreadId, Option<&[u8]>)]) -> StoreWrite {
    StoreWrite {
        state: state.to_vec(),
        threads: threads
            .iter()
            .map(|(thread, row)| (*thread, row.map(<[u8]>::to_vec)))
            .collect(),
    }
}

/// A device's state record and thread rows.
type Rows = (Option<Vec<u8>>, Vec<(ThreadId, Vec<u8>)>);

/// A write running on a thread of its own, with its device and thread.
type Running = (
    DeviceId,
    ThreadId,
    std::thread::JoinHandle<Result<(), switchboard_client::store::StoreFailure>>,
);

/// What `store` holds for `device`, threads sorted.
fn rows(store: &dyn DeviceStore, device: DeviceId) -> Rows {
    let StoredDevice { state, mut threads } = store.load(device).unwrap();
    threads.sort();
    (state, threads)
}

/// Writes, replaces and deletes rows of two devices, then opens the database again.
async fn rows_round_trip(url: &str) {
    let store = SqlDeviceStore::open(url).await.unwrap();
    let (a, b) = (random_device(), random_device());
    let (t1, t2, t3) = (random_thread(), random_thread(), random_thread());
    assert_eq!(rows(&store, a), (None, vec![]), "nothing stored yet");

    store
        .write(
            a,
            &write(b"a one", &[(t1, Some(b"t1 one")), (t2, Some(b"t2 one"))]),
        )
        .unwrap();
    store
        .write(b, &write(b"b one", &[(t3, Some(b"t3 one"))]))
        .unwrap();
    // The next write of `a` replaces its record and one row, deletes another.
    store
        .write(a, &write(b"a two", &[(t1, Some(b"t1 two")), (t2, None)]))
        .unwrap();
    // Deleting a row that is not there is not an error.
    store
        .write(b, &write(b"b two", &[(random_thread(), None)]))
        .unwrap();

    let expect_a = (Some(b"a two".to_vec()), vec![(t1, b"t1 two".to_vec())]);
    let expect_b = (Some(b"b two".to_vec()), vec![(t3, b"t3 one".to_vec())]);
    assert_eq!(rows(&store, a), expect_a);
    assert_eq!(rows(&store, b), expect_b, "each device sees its own rows");
    let stats = store.stats();
    assert_eq!((stats.writes, stats.failed_writes), (4, 0), "{stats:?}");
    drop(store);

    if url.contains(":memory:") {
        return; // nothing to open again
    }
    let again = SqlDeviceStore::open(url).await.unwrap();
    assert_eq!(rows(&again, a), expect_a, "kept across a reopen");
    assert_eq!(rows(&again, b), expect_b);
}

#[tokio::test]
async fn rows_round_trip_on_a_sqlite_file() {
    rows_round_trip(&format!("sqlite://{}", temp_db().display())).await;
}

#[tokio::test]
async fn rows_round_trip_on_sqlite_in_memory() {
    rows_round_trip("sqlite::memory:").await;
}

#[tokio::test]
async fn rows_round_trip_on_postgres() {
    let Some(schema) = PgSchema::create("device store test", "devstore_test").await else {
        return;
    };
    let url = schema.url();
    rows_round_trip(&url).await;
    // Two stores on one database at once (two processes' admins) see each other's writes.
    let (one, two) = (
        SqlDeviceStore::open(&url).await.unwrap(),
        SqlDeviceStore::open(&url).await.unwrap(),
    );
    let device = random_device();
    let thread = random_thread();
    one.write(device, &write(b"s", &[(thread, Some(b"r"))]))
        .unwrap();
    assert_eq!(rows(&two, device).1, vec![(thread, b"r".to_vec())]);
    drop((one, two, schema));
}

#[tokio::test]
async fn the_bot_store_and_the_device_store_share_one_database() {
    let url = format!("sqlite://{}", temp_db().display());
    let bot = switchboard::store::open(
        &url,
        random_device(),
        switchboard::store::StoreKey::derive(&crate::SEED),
    )
    .await
    .unwrap();
    let devices = SqlDeviceStore::open(&url).await.unwrap();
    let device = random_device();
    let thread = random_thread();
    devices
        .write(device, &write(b"s", &[(thread, Some(b"r"))]))
        .unwrap();
    bot.put_meta("k", b"v").await.unwrap();
    assert_eq!(rows(&devices, device).1, vec![(thread, b"r".to_vec())]);
    assert_eq!(bot.get_meta("k").await.unwrap().unwrap(), b"v");
}

/// Holds SQLite's write lock on `url` from a connection of its own until dropped (committed).
struct WriteLock(sqlx::SqliteConnection);

impl WriteLock {
    async fn take(url: &str) -> Self {
        let mut conn = sqlx::SqliteConnection::connect(url).await.unwrap();
        sqlx::raw_sql("BEGIN IMMEDIATE")
            .execute(&mut conn)
            .await
            .unwrap();
        Self(conn)
    }

    async fn release(mut self) {
        sqlx::raw_sql("COMMIT").execute(&mut self.0).await.unwrap();
        self.0.close().await.unwrap();
    }
}

/// Starts `count` writes of new devices on threads of their own; returns them with their
/// devices and thread rows.
fn start_writes(
    store: &Arc<SqlDeviceStore>,
    count: usize,
    row_of: impl Fn(usize) -> Vec<u8>,
) -> Vec<Running> {
    (0..count)
        .map(|i| {
            let store = Arc::clone(store);
            let (device, thread) = (random_device(), random_thread());
            let change = StoreWrite {
                state: b"state".to_vec(),
                threads: vec![(thread, Some(row_of(i)))],
            };
            let handle = std::thread::spawn(move || store.write(device, &change));
            (device, thread, handle)
        })
        .collect()
}

/// Waits until `store` was handed `requests` requests in all.
async fn until_queued(store: &SqlDeviceStore, requests: u64) {
    for _ in 0..2_000 {
        if store.stats().requests >= requests {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("the writes were not queued: {:?}", store.stats());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_queued_while_the_writer_is_busy_share_one_transaction() {
    let url = format!("sqlite://{}", temp_db().display());
    let store = Arc::new(SqlDeviceStore::open(&url).await.unwrap());
    // The writer is held at the database's write lock with the first write while 15 more
    // queue behind it (one at a time, each would be a transaction of its own).
    let lock = WriteLock::take(&url).await;
    let first = start_writes(&store, 1, |_| b"first".to_vec());
    until_queued(&store, 1).await;
    let rest = start_writes(&store, 15, |i| format!("row {i}").into_bytes());
    until_queued(&store, 16).await;
    lock.release().await;

    for (device, thread, handle) in first.into_iter().chain(rest) {
        tokio::task::spawn_blocking(move || handle.join().unwrap())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(rows(store.as_ref(), device).1.len(), 1);
        assert_eq!(rows(store.as_ref(), device).1[0].0, thread);
    }
    let stats = store.stats();
    assert_eq!(stats.writes, 16, "{stats:?}");
    // The first write alone (or with the rest, if they queued before the writer took it),
    // then the 15 queued behind it in one.
    assert!(stats.transactions <= 2, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_the_database_refuses_fails_alone_in_its_group() {
    let path = temp_db();
    let url = format!("sqlite://{}", path.display());
    let store = Arc::new(SqlDeviceStore::open(&url).await.unwrap());
    // The database refuses one row (as a full disk or a constraint would).
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    sqlx::raw_sql(
        "CREATE TRIGGER refuse_poison BEFORE INSERT ON device_threads \
         WHEN NEW.row = X'706F69736F6E' BEGIN SELECT RAISE(ABORT, 'poison refused'); END",
    )
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;

    let lock = WriteLock::take(&url).await;
    let first = start_writes(&store, 1, |_| b"first".to_vec());
    until_queued(&store, 1).await;
    let rest = start_writes(&store, 8, |i| {
        if i == 3 {
            b"poison".to_vec()
        } else {
            b"fine".to_vec()
        }
    });
    until_queued(&store, 9).await;
    lock.release().await;

    let mut refused = 0;
    for (device, _thread, handle) in first.into_iter().chain(rest) {
        let outcome = tokio::task::spawn_blocking(move || handle.join().unwrap())
            .await
            .unwrap();
        match outcome {
            Ok(()) => assert_eq!(rows(store.as_ref(), device).1.len(), 1),
            Err(e) => {
                assert!(e.to_string().contains("poison refused"), "{e}");
                assert_eq!(
                    rows(store.as_ref(), device),
                    (None, vec![]),
                    "nothing of the refused write is stored"
                );
                refused += 1;
            }
        }
    }
    assert_eq!(refused, 1, "only the poisoned write fails");
    let stats = store.stats();
    assert_eq!((stats.writes, stats.failed_writes), (8, 1), "{stats:?}");
}

#[tokio::test]
async fn a_row_over_the_limit_is_refused_and_nothing_of_its_write_is_stored() {
    let store = SqlDeviceStore::open("sqlite::memory:").await.unwrap();
    let device = random_device();
    let big = vec![0_u8; switchboard::store::MAX_THREAD_DATA + 1];
    let err = store
        .write(
            device,
            &write(
                b"s",
                &[
                    (random_thread(), Some(b"ok")),
                    (random_thread(), Some(&big)),
                ],
            ),
        )
        .unwrap_err();
    assert!(err.to_string().contains("a thread row"), "{err}");
    assert_eq!(rows(&store, device), (None, vec![]));
    let huge = vec![0_u8; switchboard::store::MAX_DEVICE_RECORD + 1];
    let err = store.write(device, &write(&huge, &[])).unwrap_err();
    assert!(err.to_string().contains("state record"), "{err}");
    assert_eq!(
        store.stats().requests,
        1,
        "refused before the writer saw them"
    );
}

#[tokio::test]
async fn a_store_url_it_does_not_know_is_a_clear_error() {
    let err = SqlDeviceStore::open("mysql://user:secret@db/x")
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Config(_)), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("sqlite://PATH") && !text.contains("secret"),
        "{text}"
    );
    // `memory` is a store in process memory.
    let memory = open_device_store("memory").await.unwrap();
    assert!(memory.load(random_device()).unwrap().state.is_none());
}

#[tokio::test]
async fn a_store_file_is_created_readable_by_its_owner_only() {
    let path = temp_db();
    let store = SqlDeviceStore::open(&format!("sqlite://{}", path.display()))
        .await
        .unwrap();
    store.write(random_device(), &write(b"s", &[])).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "{mode:o}");
    }
}
