//! The behaviours every backend shares.

use std::sync::Arc;

use switchboard::store::{
    BotStore, Effects, HistoryEntry, MAX_META_VALUE, MAX_THREAD_DATA, OutboxEntry, StoreError,
};
use switchboard_protocol::ThreadId;

use super::{Backend, SEED, random_device, random_thread};

fn entry(thread: ThreadId, message_id: &str, body: &[u8]) -> OutboxEntry {
    OutboxEntry {
        id: 0,
        thread,
        message_id: message_id.to_owned(),
        body: body.to_vec(),
    }
}

fn effects(
    thread: ThreadId,
    expected_version: Option<u64>,
    data: Option<&[u8]>,
    handled: &[&str],
    outbox: Vec<OutboxEntry>,
) -> Effects {
    Effects {
        thread,
        expected_version,
        data: data.map(<[u8]>::to_vec),
        handled: handled.iter().map(|k| (*k).to_owned()).collect(),
        outbox,
        history: Vec::new(),
        history_from: 0,
    }
}

fn said(index: u64, text: &str) -> HistoryEntry {
    HistoryEntry {
        index,
        data: text.as_bytes().to_vec(),
    }
}

fn texts(record: &switchboard::store::ThreadRecord) -> Vec<(u64, String)> {
    record
        .history
        .iter()
        .map(|e| (e.index, String::from_utf8_lossy(&e.data).into_owned()))
        .collect()
}

fn message_ids(entries: &[OutboxEntry]) -> Vec<&str> {
    entries.iter().map(|e| e.message_id.as_str()).collect()
}

fn assert_conflict(result: Result<u64, StoreError>, thread: ThreadId) {
    match result {
        Err(StoreError::Conflict { thread: t }) => assert_eq!(t, thread),
        other => panic!("expected a conflict on {thread}, got {other:?}"),
    }
}

/// A thread at version 1 with journal key `k1` and outbox entry `m1`.
async fn seeded(store: &dyn BotStore) -> ThreadId {
    let thread = random_thread();
    let v = store
        .commit(effects(
            thread,
            None,
            Some(b"state one"),
            &["k1"],
            vec![entry(thread, "m1", b"sealed one")],
        ))
        .await
        .unwrap();
    assert_eq!(v, 1);
    thread
}

/// The store has not changed since [`seeded`].
async fn still_seeded(store: &dyn BotStore, thread: ThreadId) {
    let record = store.load(thread).await.unwrap().unwrap();
    assert_eq!(
        (record.version, record.data.as_slice()),
        (1, &b"state one"[..])
    );
    assert!(store.handled(thread, "k1").await.unwrap());
    assert!(!store.handled(thread, "k2").await.unwrap());
    assert_eq!(message_ids(&store.outbox(100).await.unwrap()), ["m1"]);
}

pub async fn a_new_thread_is_stored_and_loads_back(b: &Backend) {
    let store = b.store.as_ref();
    let thread = random_thread();
    assert!(store.load(thread).await.unwrap().is_none());
    assert!(!store.handled(thread, "k1").await.unwrap());
    let v1 = store
        .commit(effects(thread, None, Some(b"first"), &["k1"], vec![]))
        .await
        .unwrap();
    assert_eq!(v1, 1);
    let record = store.load(thread).await.unwrap().unwrap();
    assert_eq!((record.version, record.data), (1, b"first".to_vec()));
    assert!(store.handled(thread, "k1").await.unwrap());
    let v2 = store
        .commit(effects(thread, Some(1), Some(b"second"), &["k2"], vec![]))
        .await
        .unwrap();
    assert_eq!(v2, 2);
    let record = store.load(thread).await.unwrap().unwrap();
    assert_eq!((record.version, record.data), (2, b"second".to_vec()));
    assert!(store.load(random_thread()).await.unwrap().is_none());
}

pub async fn history_entries_append_prune_and_conflict_with_the_event(b: &Backend) {
    let store = b.store.as_ref();
    let thread = random_thread();
    let mut first = effects(thread, None, Some(b"s1"), &["k1"], vec![]);
    first.history = vec![said(0, "hello"), said(1, "hi there")];
    store.commit(first).await.unwrap();
    let record = store.load(thread).await.unwrap().unwrap();
    assert_eq!(
        texts(&record),
        [(0, "hello".to_owned()), (1, "hi there".to_owned())]
    );
    // The next event appends one and drops those below position 1.
    let mut next = effects(thread, Some(1), Some(b"s2"), &["k2"], vec![]);
    next.history = vec![said(2, "where is my order?")];
    next.history_from = 1;
    store.commit(next).await.unwrap();
    let record = store.load(thread).await.unwrap().unwrap();
    assert_eq!(
        texts(&record),
        [
            (1, "hi there".to_owned()),
            (2, "where is my order?".to_owned())
        ]
    );
    // A position used before conflicts, and the whole event is undone (journal key too).
    let mut again = effects(thread, Some(2), Some(b"s3"), &["k3"], vec![]);
    again.history = vec![said(2, "other")];
    assert_conflict(store.commit(again).await, thread);
    assert!(!store.handled(thread, "k3").await.unwrap());
    let record = store.load(thread).await.unwrap().unwrap();
    assert_eq!(record.version, 2);
    assert_eq!(record.history.len(), 2);
    // History comes only with a new state.
    let mut without_state = effects(thread, Some(2), None, &["k4"], vec![]);
    without_state.history = vec![said(3, "x")];
    assert!(matches!(
        store.commit(without_state).await,
        Err(StoreError::Config(_))
    ));
    // Everything can go (a removed thread).
    let mut all = effects(thread, Some(2), Some(b"tombstone"), &["k5"], vec![]);
    all.history_from = 3;
    store.commit(all).await.unwrap();
    assert!(
        store
            .load(thread)
            .await
            .unwrap()
            .unwrap()
            .history
            .is_empty()
    );
}

pub async fn a_stale_version_conflicts_and_writes_nothing(b: &Backend) {
    let store = b.store.as_ref();
    let thread = seeded(store).await;
    let stale = effects(
        thread,
        Some(0),
        Some(b"lost update"),
        &["k2"],
        vec![entry(thread, "m2", b"sealed two")],
    );
    assert_conflict(store.commit(stale).await, thread);
    // A second "first" event for the thread is stale too.
    let again = effects(
        thread,
        None,
        Some(b"lost update"),
        &["k2"],
        vec![entry(thread, "m2", b"sealed two")],
    );
    assert_conflict(store.commit(again).await, thread);
    still_seeded(store, thread).await;
    let stats = store.stats();
    assert_eq!((stats.commits, stats.conflicts), (1, 2), "{stats:?}");
}

pub async fn a_journal_key_handled_before_conflicts_and_writes_nothing(b: &Backend) {
    let store = b.store.as_ref();
    let thread = seeded(store).await;
    // Right version, but k1 was handled (by another instance): the whole event is refused.
    let handled_twice = effects(
        thread,
        Some(1),
        Some(b"handled twice"),
        &["k2", "k1"],
        vec![entry(thread, "m2", b"sealed two")],
    );
    assert_conflict(store.commit(handled_twice).await, thread);
    still_seeded(store, thread).await;
    // One key twice in one event is that key once.
    let v = store
        .commit(effects(
            thread,
            Some(1),
            Some(b"two"),
            &["k3", "k3"],
            vec![],
        ))
        .await
        .unwrap();
    assert_eq!(v, 2);
    assert!(store.handled(thread, "k3").await.unwrap());
}

pub async fn an_outbox_message_id_queued_before_conflicts(b: &Backend) {
    let store = b.store.as_ref();
    let thread = seeded(store).await;
    let reused = effects(
        thread,
        Some(1),
        Some(b"reuses m1"),
        &["k2"],
        vec![entry(thread, "m2", b"x"), entry(thread, "m1", b"y")],
    );
    assert_conflict(store.commit(reused).await, thread);
    still_seeded(store, thread).await;
    let twice = effects(
        thread,
        Some(1),
        Some(b"queues m3 twice"),
        &["k2"],
        vec![entry(thread, "m3", b"x"), entry(thread, "m3", b"y")],
    );
    assert_conflict(store.commit(twice).await, thread);
    still_seeded(store, thread).await;
}

pub async fn an_event_without_new_state_keeps_the_version_but_checks_it(b: &Backend) {
    let store = b.store.as_ref();
    let thread = seeded(store).await;
    let v = store
        .commit(effects(thread, Some(1), None, &["k2"], vec![]))
        .await
        .unwrap();
    assert_eq!(v, 1);
    assert!(store.handled(thread, "k2").await.unwrap());
    assert_conflict(
        store
            .commit(effects(thread, Some(3), None, &["k3"], vec![]))
            .await,
        thread,
    );
    assert!(!store.handled(thread, "k3").await.unwrap());
    // A thread without state: only its journal is written, and only while it has no row.
    let fresh = random_thread();
    let v = store
        .commit(effects(fresh, None, None, &["seq:1"], vec![]))
        .await
        .unwrap();
    assert_eq!(v, 0);
    assert!(store.load(fresh).await.unwrap().is_none());
    assert!(store.handled(fresh, "seq:1").await.unwrap());
    assert_conflict(
        store
            .commit(effects(thread, None, None, &["seq:2"], vec![]))
            .await,
        thread,
    );
    let record = store.load(thread).await.unwrap().unwrap();
    assert_eq!(
        (record.version, record.data.as_slice()),
        (1, &b"state one"[..])
    );
}

pub async fn concurrent_commits_on_different_threads_land_in_shared_transactions(b: &Backend) {
    const N: usize = 200;
    let before = b.store.stats();
    let threads: Vec<ThreadId> = (0..N).map(|_| random_thread()).collect();
    let mut tasks = Vec::new();
    for (i, thread) in threads.iter().copied().enumerate() {
        let store = Arc::clone(&b.store);
        tasks.push(tokio::spawn(async move {
            let data = format!("state {i}");
            store
                .commit(effects(
                    thread,
                    None,
                    Some(data.as_bytes()),
                    &[&format!("k{i}")],
                    vec![entry(thread, &format!("m{i}"), data.as_bytes())],
                ))
                .await
        }));
    }
    // Stale commits among them fail alone.
    let mut stale = Vec::new();
    for _ in 0..10 {
        let store = Arc::clone(&b.store);
        let thread = random_thread();
        stale.push((
            thread,
            tokio::spawn(async move {
                store
                    .commit(effects(thread, Some(5), Some(b"stale"), &["k"], vec![]))
                    .await
            }),
        ));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap().unwrap(), 1);
    }
    for (thread, task) in stale {
        assert_conflict(task.await.unwrap(), thread);
        assert!(!b.store.handled(thread, "k").await.unwrap());
    }
    for (i, thread) in threads.iter().enumerate() {
        let record = b.store.load(*thread).await.unwrap().unwrap();
        assert_eq!(record.data, format!("state {i}").into_bytes());
        assert!(b.store.handled(*thread, &format!("k{i}")).await.unwrap());
    }
    assert_eq!(b.store.outbox(1000).await.unwrap().len(), N);
    let after = b.store.stats();
    assert_eq!(after.commits - before.commits, N as u64, "{after:?}");
    assert_eq!(after.conflicts - before.conflicts, 10, "{after:?}");
    let transactions = after.transactions - before.transactions;
    if b.grouped {
        assert!(
            transactions < N as u64,
            "{N} commits took {transactions} transactions"
        );
    }
    assert!(transactions >= 1);
}

pub async fn outbox_lists_in_commit_order_and_sent_removes(b: &Backend) {
    let store = b.store.as_ref();
    let (t1, t2) = (random_thread(), random_thread());
    store
        .commit(effects(
            t1,
            None,
            Some(b"a"),
            &[],
            vec![entry(t1, "a1", b"A1")],
        ))
        .await
        .unwrap();
    store
        .commit(effects(
            t2,
            None,
            Some(b"b"),
            &[],
            vec![entry(t2, "b1", b"B1"), entry(t2, "b2", b"B2")],
        ))
        .await
        .unwrap();
    store
        .commit(effects(
            t1,
            Some(1),
            Some(b"a"),
            &[],
            vec![entry(t1, "a2", b"A2")],
        ))
        .await
        .unwrap();
    let all = store.outbox(10).await.unwrap();
    assert_eq!(message_ids(&all), ["a1", "b1", "b2", "a2"]);
    assert!(all.windows(2).all(|w| w[0].id < w[1].id), "{all:?}");
    assert_eq!((all[1].thread, all[1].body.as_slice()), (t2, &b"B1"[..]));
    assert_eq!((all[3].thread, all[3].body.as_slice()), (t1, &b"A2"[..]));
    assert_eq!(message_ids(&store.outbox(2).await.unwrap()), ["a1", "b1"]);
    assert!(store.outbox(0).await.unwrap().is_empty());
    // One thread's entries, in commit order, whatever else is queued between them.
    assert_eq!(
        message_ids(&store.outbox_for(t1, 10).await.unwrap()),
        ["a1", "a2"]
    );
    assert_eq!(message_ids(&store.outbox_for(t1, 1).await.unwrap()), ["a1"]);
    assert_eq!(
        message_ids(&store.outbox_for(t2, 10).await.unwrap()),
        ["b1", "b2"]
    );
    assert!(
        store
            .outbox_for(random_thread(), 10)
            .await
            .unwrap()
            .is_empty()
    );
    store.sent("b1").await.unwrap();
    store.sent("never queued").await.unwrap();
    assert_eq!(
        message_ids(&store.outbox(10).await.unwrap()),
        ["a1", "b2", "a2"]
    );
    for id in ["a1", "b2", "a2"] {
        store.sent(id).await.unwrap();
    }
    assert!(store.outbox(10).await.unwrap().is_empty());
}

pub async fn meta_values_are_kept_replaced_and_bounded(b: &Backend) {
    let store = b.store.as_ref();
    assert_eq!(store.get_meta("cursor:a").await.unwrap(), None);
    store.put_meta("cursor:a", b"17").await.unwrap();
    store.put_meta("cursor:b", b"").await.unwrap();
    assert_eq!(
        store.get_meta("cursor:a").await.unwrap(),
        Some(b"17".to_vec())
    );
    assert_eq!(store.get_meta("cursor:b").await.unwrap(), Some(Vec::new()));
    store.put_meta("cursor:a", b"18").await.unwrap();
    assert_eq!(
        store.get_meta("cursor:a").await.unwrap(),
        Some(b"18".to_vec())
    );
    let big = vec![0u8; MAX_META_VALUE + 1];
    let err = store.put_meta("cursor:a", &big).await.unwrap_err();
    assert!(matches!(err, StoreError::TooLarge { .. }), "{err:?}");
    assert_eq!(
        store.get_meta("cursor:a").await.unwrap(),
        Some(b"18".to_vec())
    );
    store
        .put_meta("largest", &vec![1u8; MAX_META_VALUE])
        .await
        .unwrap();
}

pub async fn prune_journal_forgets_old_keys_only(b: &Backend) {
    let store = b.store.as_ref();
    let thread = random_thread();
    store
        .commit(effects(
            thread,
            None,
            Some(b"x"),
            &["k1", "k2", "k3"],
            vec![],
        ))
        .await
        .unwrap();
    // Nothing was handled before the epoch.
    assert_eq!(store.prune_journal(0).await.unwrap(), 0);
    assert!(store.handled(thread, "k2").await.unwrap());
    let later = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 10;
    assert_eq!(store.prune_journal(later).await.unwrap(), 3);
    assert!(!store.handled(thread, "k2").await.unwrap());
    assert_eq!(store.prune_journal(u64::MAX).await.unwrap(), 0);
    // The thread's state is not part of the journal.
    assert!(store.load(thread).await.unwrap().is_some());
}

pub async fn oversized_values_are_refused_clearly(b: &Backend) {
    let store = b.store.as_ref();
    let thread = random_thread();
    let big = vec![0u8; MAX_THREAD_DATA + 1];
    let err = store
        .commit(effects(thread, None, Some(&big), &["k1"], vec![]))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::TooLarge {
                what: "the thread state",
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("thread state"), "{err}");
    assert!(!err.is_transient());
    let long_key = "k".repeat(1000);
    let err = store
        .commit(effects(thread, None, Some(b"x"), &[&long_key], vec![]))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::TooLarge { .. }), "{err:?}");
    assert!(store.load(thread).await.unwrap().is_none());
    assert!(!store.handled(thread, "k1").await.unwrap());
    // The largest blob fits.
    let largest = vec![9u8; MAX_THREAD_DATA];
    store
        .commit(effects(thread, None, Some(&largest), &[], vec![]))
        .await
        .unwrap();
    assert_eq!(
        store.load(thread).await.unwrap().unwrap().data.len(),
        MAX_THREAD_DATA
    );
}

pub async fn a_reopened_store_keeps_everything(b: &Backend) {
    let thread = seeded(b.store.as_ref()).await;
    b.store.put_meta("cursor", b"42").await.unwrap();
    b.store.sync().await.unwrap();
    let Some(reopened) = b.reopen(b.device, &SEED).await else {
        return; // in memory: nothing to reopen
    };
    still_seeded(reopened.as_ref(), thread).await;
    assert_eq!(
        reopened.get_meta("cursor").await.unwrap(),
        Some(b"42".to_vec())
    );
    let v = reopened
        .commit(effects(thread, Some(1), Some(b"two"), &["k2"], vec![]))
        .await
        .unwrap();
    assert_eq!(v, 2);
    assert_eq!(b.store.load(thread).await.unwrap().unwrap().data, b"two");
}

pub async fn a_wrong_key_reads_corrupt_not_garbage(b: &Backend) {
    let thread = seeded(b.store.as_ref()).await;
    let Some(reopened) = b.reopen(b.device, &[8; 32]).await else {
        return; // in memory: nothing is sealed
    };
    let err = reopened.load(thread).await.unwrap_err();
    assert!(matches!(err, StoreError::Corrupt(_)), "{err:?}");
    assert!(!err.is_transient());
}

pub async fn devices_sharing_a_database_see_only_their_rows(b: &Backend) {
    let thread = seeded(b.store.as_ref()).await;
    b.store.put_meta("cursor", b"1").await.unwrap();
    let other_device = random_device();
    let Some(other) = b.reopen(other_device, &SEED).await else {
        return; // in memory: one device per store
    };
    assert!(other.load(thread).await.unwrap().is_none());
    assert!(!other.handled(thread, "k1").await.unwrap());
    assert!(other.outbox(100).await.unwrap().is_empty());
    assert_eq!(other.get_meta("cursor").await.unwrap(), None);
    // The same thread id is a thread of its own for the other device.
    let v = other
        .commit(effects(
            thread,
            None,
            Some(b"other"),
            &["k1"],
            vec![entry(thread, "m1", b"o")],
        ))
        .await
        .unwrap();
    assert_eq!(v, 1);
    other.sent("m1").await.unwrap();
    assert_eq!(other.prune_journal(u64::MAX).await.unwrap(), 1);
    still_seeded(b.store.as_ref(), thread).await;
}

pub async fn a_failed_transaction_fails_every_commit_in_it_as_transient(b: &Backend) {
    let thread = seeded(b.store.as_ref()).await;
    // Break the database under the store: every commit journals a key.
    if !b.raw_sql("DROP TABLE bot_journal").await {
        return; // in memory: nothing to break
    }
    let before = b.store.stats();
    let mut tasks = Vec::new();
    for i in 0..20 {
        let store = Arc::clone(&b.store);
        let thread = random_thread();
        tasks.push((
            thread,
            tokio::spawn(async move {
                store
                    .commit(effects(
                        thread,
                        None,
                        Some(b"x"),
                        &[&format!("k{i}")],
                        vec![],
                    ))
                    .await
            }),
        ));
    }
    for (thread, task) in tasks {
        let err = task.await.unwrap().unwrap_err();
        assert!(matches!(err, StoreError::Database(_)), "{err:?}");
        assert!(err.is_transient());
        assert!(b.store.load(thread).await.unwrap().is_none());
    }
    let after = b.store.stats();
    assert_eq!(after.commits, before.commits);
    assert!(
        after.failed_transactions > before.failed_transactions,
        "{after:?}"
    );
    // What was committed before is intact.
    let record = b.store.load(thread).await.unwrap().unwrap();
    assert_eq!(record.data, b"state one");
}

pub async fn two_instances_racing_on_one_thread_commit_once(b: &Backend) {
    let thread = seeded(b.store.as_ref()).await;
    let Some(second) = b.reopen(b.device, &SEED).await else {
        return; // in memory: one instance
    };
    let commit = |store: Arc<dyn BotStore>, key: &'static str| {
        tokio::spawn(async move {
            store
                .commit(effects(
                    thread,
                    Some(1),
                    Some(key.as_bytes()),
                    &[key],
                    vec![entry(thread, key, b"reply")],
                ))
                .await
        })
    };
    let first = commit(Arc::clone(&b.store), "from-a");
    let other = commit(second, "from-b");
    let outcomes = [first.await.unwrap(), other.await.unwrap()];
    let winners: Vec<u64> = outcomes
        .iter()
        .filter_map(|o| o.as_ref().ok().copied())
        .collect();
    assert_eq!(winners, [2], "{outcomes:?}");
    let record = b.store.load(thread).await.unwrap().unwrap();
    let winner = String::from_utf8(record.data).unwrap();
    let loser = if winner == "from-a" {
        "from-b"
    } else {
        "from-a"
    };
    assert!(b.store.handled(thread, &winner).await.unwrap());
    assert!(!b.store.handled(thread, loser).await.unwrap());
    assert_eq!(
        message_ids(&b.store.outbox(10).await.unwrap()),
        ["m1", winner.as_str()]
    );
}
