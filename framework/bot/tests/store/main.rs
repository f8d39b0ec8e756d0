//! The bot store suite, run against every backend: in memory, SQLite in memory, SQLite on a
//! file, and PostgreSQL when `SWITCHBOARD_TEST_PG` names a database (each test in a schema of its
//! own, dropped after; elsewhere those tests say that they were skipped).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::print_stderr,
    missing_docs,
    unreachable_pub
)]

mod device;
mod on_disk;
mod suite;

use std::path::PathBuf;
use std::sync::Arc;

use switchboard::store::{self, BotStore, StoreKey};
use switchboard_protocol::{Csprng, DeviceId, ThreadId};
use switchboard_testkit::pg::PgSchema;

/// The seed every test store key derives from (a wrong-key test uses another).
pub const SEED: [u8; 32] = [7; 32];

pub fn random_hex() -> String {
    let bytes: [u8; 8] = Csprng::from_os().unwrap().array();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn random_thread() -> ThreadId {
    ThreadId::from_bytes(Csprng::from_os().unwrap().array())
}

pub fn random_device() -> DeviceId {
    DeviceId::from_bytes(Csprng::from_os().unwrap().array())
}

/// A store under test and how to open it again.
#[derive(Debug)]
pub struct Backend {
    pub store: Arc<dyn BotStore>,
    pub device: DeviceId,
    /// Whether concurrent commits share transactions.
    pub grouped: bool,
    /// The URL to open the same database again (None: in memory).
    url: Option<String>,
    /// PostgreSQL: the test's schema, dropped at the end.
    schema: Option<PgSchema>,
}

impl Backend {
    async fn open(url: &str, grouped: bool, reopen: bool) -> Self {
        let device = random_device();
        let store = store::open(url, device, StoreKey::derive(&SEED))
            .await
            .unwrap();
        Self {
            store,
            device,
            grouped,
            url: reopen.then(|| url.to_owned()),
            schema: None,
        }
    }

    /// The same database opened again for `device` with a key from `seed` (None in memory).
    pub async fn reopen(&self, device: DeviceId, seed: &[u8; 32]) -> Option<Arc<dyn BotStore>> {
        let url = self.url.as_deref()?;
        Some(
            store::open(url, device, StoreKey::derive(seed))
                .await
                .unwrap(),
        )
    }

    /// Runs `sql` on the backend's database beside the store; false in memory.
    pub async fn raw_sql(&self, sql: &'static str) -> bool {
        let Some(url) = self.url.as_deref() else {
            return false;
        };
        if url.starts_with("sqlite:") {
            let pool = sqlx::SqlitePool::connect(url).await.unwrap();
            sqlx::raw_sql(sql).execute(&pool).await.unwrap();
            pool.close().await;
        } else {
            let pool = sqlx::PgPool::connect(url).await.unwrap();
            sqlx::raw_sql(sql).execute(&pool).await.unwrap();
            pool.close().await;
        }
        true
    }

    async fn finish(self) {
        drop(self.store);
        drop(self.schema);
    }
}

async fn memory() -> Option<Backend> {
    Some(Backend::open("memory", false, false).await)
}

async fn sqlite_memory() -> Option<Backend> {
    Some(Backend::open("sqlite::memory:", true, false).await)
}

pub fn temp_db() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("switchboard-bot-store-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(format!("{}.db", random_hex()))
}

async fn sqlite_file() -> Option<Backend> {
    let url = format!("sqlite://{}", temp_db().display());
    Some(Backend::open(&url, true, true).await)
}

async fn postgres() -> Option<Backend> {
    let schema = PgSchema::create("bot store test", "botstore_test").await?;
    let mut backend = Backend::open(&schema.url(), true, true).await;
    backend.schema = Some(schema);
    Some(backend)
}

macro_rules! run_suite {
    ($($backend:ident),*) => {
        $(
            mod $backend {
                macro_rules! case {
                    ($name:ident) => {
                        #[tokio::test]
                        async fn $name() {
                            if let Some(backend) = super::$backend().await {
                                super::suite::$name(&backend).await;
                                backend.finish().await;
                            }
                        }
                    };
                }
                case!(a_new_thread_is_stored_and_loads_back);
                case!(a_stale_version_conflicts_and_writes_nothing);
                case!(history_entries_append_prune_and_conflict_with_the_event);
                case!(a_journal_key_handled_before_conflicts_and_writes_nothing);
                case!(an_outbox_message_id_queued_before_conflicts);
                case!(an_event_without_new_state_keeps_the_version_but_checks_it);
                case!(concurrent_commits_on_different_threads_land_in_shared_transactions);
                case!(outbox_lists_in_commit_order_and_sent_removes);
                case!(meta_values_are_kept_replaced_and_bounded);
                case!(prune_journal_forgets_old_keys_only);
                case!(oversized_values_are_refused_clearly);
                case!(a_reopened_store_keeps_everything);
                case!(a_wrong_key_reads_corrupt_not_garbage);
                case!(devices_sharing_a_database_see_only_their_rows);
                case!(a_failed_transaction_fails_every_commit_in_it_as_transient);
                case!(two_instances_racing_on_one_thread_commit_once);
            }
        )*
    };
}

run_suite!(memory, sqlite_memory, sqlite_file, postgres);

#[tokio::test]
async fn open_refuses_an_unknown_url() {
    let err = store::open(
        "mysql://user:secret@host/db",
        random_device(),
        StoreKey::derive(&SEED),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, store::StoreError::Config(_)), "{err:?}");
    assert!(!err.to_string().contains("secret"), "{err}");
}
