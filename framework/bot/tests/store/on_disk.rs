//! What only a SQLite file can show: its mode and its bytes on disk.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use switchboard::store::{self, BotStore, Effects, HistoryEntry, OutboxEntry, StoreKey};

use super::{SEED, random_device, random_thread, temp_db};

/// The database file and the WAL and shared-memory files beside it, those that exist.
fn files(db: &Path) -> Vec<PathBuf> {
    let mut files = vec![db.to_owned()];
    for suffix in ["-wal", "-shm"] {
        let mut name = db.as_os_str().to_owned();
        name.push(suffix);
        let path = PathBuf::from(name);
        if path.exists() {
            files.push(path);
        }
    }
    files
}

/// A new thread's first event: state `x`, journal key `k`.
fn new_thread(thread: switchboard_protocol::ThreadId) -> Effects {
    Effects {
        thread,
        expected_version: None,
        data: Some(b"x".to_vec()),
        handled: vec!["k".to_owned()],
        outbox: vec![],
        history: Vec::new(),
        history_from: 0,
    }
}

/// A store on a new file.
async fn open_file() -> (PathBuf, Arc<dyn BotStore>) {
    let db = temp_db();
    let url = format!("sqlite://{}", db.display());
    let store = store::open(&url, random_device(), StoreKey::derive(&SEED))
        .await
        .unwrap();
    (db, store)
}

#[cfg(unix)]
#[tokio::test]
async fn a_new_store_file_is_private_to_its_owner() {
    use std::os::unix::fs::PermissionsExt as _;
    let (db, store) = open_file().await;
    store.commit(new_thread(random_thread())).await.unwrap();
    let files = files(&db);
    assert!(files.len() >= 2, "no WAL file beside {}", db.display());
    for file in files {
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{} has mode {mode:o}", file.display());
    }
}

#[tokio::test]
async fn the_file_never_holds_plaintext_thread_state() {
    const SECRET: &[u8] = b"PLAINTEXT-THREAD-STATE-MARKER";
    const JOURNAL_KEY: &str = "JOURNAL-KEY-MARKER";
    const HISTORY: &[u8] = b"PLAINTEXT-HISTORY-MARKER";
    let (db, store) = open_file().await;
    let thread = random_thread();
    let mut state = SECRET.to_vec();
    let version = store
        .commit(Effects {
            thread,
            expected_version: None,
            data: Some(state.clone()),
            handled: vec![JOURNAL_KEY.to_owned()],
            outbox: vec![OutboxEntry {
                id: 0,
                thread,
                message_id: "m1".to_owned(),
                body: b"sealed".to_vec(),
            }],
            history: vec![HistoryEntry {
                index: 0,
                data: HISTORY.to_vec(),
            }],
            history_from: 0,
        })
        .await
        .unwrap();
    state.extend_from_slice(b" and more");
    store
        .commit(Effects {
            thread,
            expected_version: Some(version),
            data: Some(state.clone()),
            handled: vec![],
            outbox: vec![],
            history: Vec::new(),
            history_from: 0,
        })
        .await
        .unwrap();
    assert_eq!(store.load(thread).await.unwrap().unwrap().data, state);
    let bytes: Vec<u8> = files(&db)
        .iter()
        .flat_map(|file| std::fs::read(file).unwrap())
        .collect();
    // The scan finds what is stored as it is (journal keys), so it would find the state too.
    assert!(
        bytes
            .windows(JOURNAL_KEY.len())
            .any(|w| w == JOURNAL_KEY.as_bytes()),
        "the scan does not see the journal key"
    );
    assert!(
        !bytes.windows(SECRET.len()).any(|w| w == SECRET),
        "plaintext thread state in {}",
        db.display()
    );
    assert!(
        !bytes.windows(HISTORY.len()).any(|w| w == HISTORY),
        "plaintext history in {}",
        db.display()
    );
}

#[tokio::test]
async fn a_missing_directory_is_a_clear_error() {
    let db = temp_db().with_file_name("no-such-dir").join("bot.db");
    let url = format!("sqlite://{}", db.display());
    let err = store::open(&url, random_device(), StoreKey::derive(&SEED))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no-such-dir"), "{err}");
}

#[tokio::test]
async fn a_store_written_under_another_key_is_refused_at_start() {
    let db = temp_db();
    let url = format!("sqlite://{}", db.display());
    let device = random_device();
    let mine = StoreKey::derive(&SEED);
    let store = store::open(&url, device, StoreKey::derive(&SEED))
        .await
        .unwrap();
    store::check_key(store.as_ref(), &mine).await.unwrap();
    // Again with the same key: fine.
    store::check_key(store.as_ref(), &mine).await.unwrap();
    drop(store);
    let other = StoreKey::derive(&[0x55; 32]);
    let reopened = store::open(&url, device, StoreKey::derive(&[0x55; 32]))
        .await
        .unwrap();
    let err = store::check_key(reopened.as_ref(), &other)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("another store key"), "{err}");
    // The right key still opens it.
    store::check_key(reopened.as_ref(), &mine).await.unwrap();
}

#[tokio::test]
async fn sync_puts_every_commit_so_far_on_disk_with_one_fsync() {
    let (_db, store) = open_file().await;
    for _ in 0..3 {
        store.commit(new_thread(random_thread())).await.unwrap();
    }
    assert_eq!(store.stats().syncs, 0, "commits return without an fsync");
    store.sync().await.unwrap();
    assert_eq!(store.stats().syncs, 1, "one fsync for the three commits");
    store.sync().await.unwrap();
    assert_eq!(store.stats().syncs, 1, "nothing new: no fsync");
    store.put_meta("cursor", b"7").await.unwrap();
    let (a, b) = tokio::join!(store.sync(), store.sync());
    a.unwrap();
    b.unwrap();
    assert_eq!(
        store.stats().syncs,
        2,
        "two syncs at once after one write: one fsync"
    );
}

#[tokio::test]
async fn a_temporary_store_never_syncs() {
    let store = store::open("sqlite::memory:", random_device(), StoreKey::derive(&SEED))
        .await
        .unwrap();
    store.put_meta("cursor", b"7").await.unwrap();
    store.sync().await.unwrap();
    assert_eq!(store.stats().syncs, 0);
}
