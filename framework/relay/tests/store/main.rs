//! The store test suite, run against every backend: SQLite in memory, SQLite on a file, and
//! PostgreSQL when `SWITCHBOARD_TEST_PG` names a database (CI sets it; elsewhere those tests say
//! that they were skipped). Tests use random ids, so they can share one PostgreSQL database.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::print_stderr,
    missing_docs,
    unreachable_pub
)]

mod suite;

use std::io::Write as _;

use switchboard_relay::store::{PostgresStore, SqliteStore, Store};

async fn sqlite_memory() -> Option<Box<dyn Store>> {
    Some(Box::new(
        SqliteStore::open("sqlite::memory:").await.unwrap(),
    ))
}

async fn sqlite_file() -> Option<Box<dyn Store>> {
    let dir = std::env::temp_dir().join(format!("switchboard-store-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{}.db", suite::random_hex()));
    Some(Box::new(
        SqliteStore::open(&format!("sqlite://{}", path.display()))
            .await
            .unwrap(),
    ))
}

async fn postgres() -> Option<Box<dyn Store>> {
    let Ok(url) = std::env::var("SWITCHBOARD_TEST_PG") else {
        // Written to the real stderr (not captured by the test harness) so that skips are visible.
        let _ = writeln!(
            std::io::stderr(),
            "SKIPPED: PostgreSQL store test (set SWITCHBOARD_TEST_PG=postgres://... to run it)"
        );
        return None;
    };
    Some(Box::new(PostgresStore::open(&url).await.unwrap()))
}

macro_rules! run_suite {
    ($($backend:ident),*) => {
        $(
            mod $backend {
                macro_rules! case {
                    ($name:ident) => {
                        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                        async fn $name() {
                            if let Some(store) = super::$backend().await {
                                super::suite::$name(store.as_ref()).await;
                            }
                        }
                    };
                }
                case!(devices_register_update_and_refuse_another_key);
                case!(entities_need_a_registered_admin_and_keep_it);
                case!(open_thread_queues_for_the_admin_once);
                case!(posts_reach_other_members_in_thread_order);
                case!(commit_reaches_removed_member_then_membership_changes);
                case!(unacked_items_are_fetched_again_acked_are_gone);
                case!(replayed_nonce_is_refused_and_expired_ones_forgotten);
                case!(a_post_spends_its_nonce_once_in_its_own_transaction);
                case!(a_message_from_a_non_member_is_refused_and_queues_nothing);
                case!(concurrent_posts_keep_one_order_per_thread);
                case!(posting_to_unknown_thread_is_not_found);
                case!(leases_give_each_thread_to_one_instance_and_move_on_expiry);
                case!(a_refused_post_does_not_undo_posts_committed_with_it);
                case!(commits_amid_concurrent_posts_decide_who_gets_what);
                case!(a_nonce_used_twice_at_once_is_fresh_once);
                case!(a_message_posted_again_is_stored_once_even_concurrently);
                case!(a_removed_senders_message_posted_again_is_answered_as_stored);
                case!(fetch_pages_by_bytes_but_always_returns_one_item);
                case!(device_roles_come_from_entities_and_threads);
            }
        )*
    };
}

run_suite!(sqlite_memory, sqlite_file, postgres);

/// Nonces and acknowledgements are committed without waiting for an fsync (posts and opens
/// wait for theirs), but committed all the same: a store dropped and opened again still refuses
/// the spent nonce and does not deliver the acknowledged items again. (A relay killed instead of
/// closed leaves them in the write-ahead log, in the operating system's cache, where the next
/// open reads them; only a power failure before the next fsync loses them.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lazily_committed_nonces_and_acks_outlive_the_store() {
    let dir = std::env::temp_dir().join(format!("switchboard-store-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!(
        "sqlite://{}",
        dir.join(format!("{}.db", suite::random_hex())).display()
    );
    let store = SqliteStore::open(&url).await.unwrap();
    let (device, acked) = suite::spend_and_ack(&store).await;
    drop(store);
    let again = SqliteStore::open(&url).await.unwrap();
    assert!(
        !again.use_nonce(device, b"lazy", 100, 10).await.unwrap(),
        "the nonce is still spent"
    );
    let left = again.fetch(device, 0, 10, u64::MAX).await.unwrap();
    assert!(
        left.iter().all(|item| item.seq > acked),
        "acknowledged items stay gone: {left:?}"
    );
}
