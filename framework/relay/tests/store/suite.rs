//! Backend-independent store tests.

use std::sync::Arc;

use switchboard_protocol::{Csprng, DeviceId, EntityId, ThreadId};
use switchboard_relay::store::{
    DeviceRecord, DeviceRole, EntityRecord, ItemKind, Post, PostKey, Registered, RequestNonce,
    Store, StoreError, ThreadRecord,
};

pub fn random_hex() -> String {
    DeviceId::random(&mut Csprng::from_os().unwrap()).to_string()
}

fn rng() -> Csprng {
    Csprng::from_os().unwrap()
}

async fn device(store: &dyn Store) -> DeviceId {
    let mut rng = rng();
    let id = DeviceId::random(&mut rng);
    let record = DeviceRecord {
        device: id,
        identity_key: rng.array(),
        bundle: b"{}".to_vec(),
        registered_at: 1,
    };
    assert_eq!(
        store.register_device(&record).await.unwrap(),
        Registered::Created
    );
    id
}

/// An entity with an admin, and a thread opened by a customer. Returns (thread, customer, admin).
async fn thread(store: &dyn Store) -> (ThreadRecord, DeviceId, DeviceId) {
    let (customer, admin) = (device(store).await, device(store).await);
    let entity = EntityId::new(format!("e{}", &random_hex()[..12])).unwrap();
    store
        .create_entity(&EntityRecord {
            entity: entity.clone(),
            admin,
            display_name: "Acme".into(),
        })
        .await
        .unwrap();
    let mut members = vec![customer, admin];
    members.sort_unstable();
    let record = ThreadRecord {
        thread: ThreadId::random(&mut rng()),
        entity,
        customer,
        admin,
        epoch: 0,
        members,
    };
    store.open_thread(&record, b"open").await.unwrap();
    (record, customer, admin)
}

fn message<'a>(thread: ThreadId, sender: DeviceId, payload: &'a [u8]) -> Post<'a> {
    Post {
        thread,
        sender,
        kind: ItemKind::Message,
        payload,
        new_roster: None,
        to: None,
        key: None,
    }
}

pub async fn devices_register_update_and_refuse_another_key(store: &dyn Store) {
    let mut rng = rng();
    let id = DeviceId::random(&mut rng);
    let key: [u8; 32] = rng.array();
    let mut record = DeviceRecord {
        device: id,
        identity_key: key,
        bundle: b"v1".to_vec(),
        registered_at: 7,
    };
    assert_eq!(
        store.register_device(&record).await.unwrap(),
        Registered::Created
    );
    record.bundle = b"v2".to_vec();
    assert_eq!(
        store.register_device(&record).await.unwrap(),
        Registered::Updated
    );
    assert_eq!(store.device(id).await.unwrap(), Some(record.clone()));
    let mut thief = record.clone();
    thief.identity_key = rng.array();
    assert!(matches!(
        store.register_device(&thief).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(store.device(id).await.unwrap().unwrap().identity_key, key);
    assert_eq!(
        store.device(DeviceId::random(&mut rng)).await.unwrap(),
        None
    );
}

pub async fn entities_need_a_registered_admin_and_keep_it(store: &dyn Store) {
    let entity = EntityId::new(format!("e{}", &random_hex()[..12])).unwrap();
    let stranger = DeviceId::random(&mut rng());
    let record = EntityRecord {
        entity: entity.clone(),
        admin: stranger,
        display_name: "Acme".into(),
    };
    assert!(matches!(
        store.create_entity(&record).await,
        Err(StoreError::NotFound(_))
    ));
    let admin = device(store).await;
    let record = EntityRecord { admin, ..record };
    store.create_entity(&record).await.unwrap();
    store.create_entity(&record).await.unwrap(); // idempotent
    let other = EntityRecord {
        admin: device(store).await,
        ..record.clone()
    };
    assert!(matches!(
        store.create_entity(&other).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(store.entity(&entity).await.unwrap(), Some(record));
}

pub async fn open_thread_queues_for_the_admin_once(store: &dyn Store) {
    let (record, customer, admin) = thread(store).await;
    let items = store.fetch(admin, 0, 10, u64::MAX).await.unwrap();
    assert_eq!(items.len(), 1);
    assert_eq!(
        (items[0].kind, items[0].sender, items[0].payload.as_slice()),
        (ItemKind::ThreadOpen, customer, &b"open"[..])
    );
    assert!(
        store
            .fetch(customer, 0, 10, u64::MAX)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(matches!(
        store.open_thread(&record, b"again").await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(store.thread(record.thread).await.unwrap(), Some(record));
}

pub async fn posts_reach_other_members_in_thread_order(store: &dyn Store) {
    let (record, customer, admin) = thread(store).await;
    for i in 0..5u8 {
        let posted = store
            .post(&message(record.thread, customer, &[i]))
            .await
            .unwrap();
        assert_eq!(posted.recipients, vec![admin]);
    }
    let items = store.fetch(admin, 0, 100, u64::MAX).await.unwrap();
    let payloads: Vec<&[u8]> = items.iter().skip(1).map(|i| i.payload.as_slice()).collect();
    assert_eq!(payloads, [&[0u8][..], &[1], &[2], &[3], &[4]]);
    assert!(
        items
            .windows(2)
            .all(|w| w[0].seq < w[1].seq && w[0].thread_seq < w[1].thread_seq)
    );
    assert!(
        store
            .fetch(customer, 0, 100, u64::MAX)
            .await
            .unwrap()
            .is_empty(),
        "the sender gets no copy"
    );
    // Limit and cursor.
    let first_two = store.fetch(admin, 0, 2, u64::MAX).await.unwrap();
    assert_eq!(first_two.len(), 2);
    let rest = store
        .fetch(admin, first_two[1].seq, 100, u64::MAX)
        .await
        .unwrap();
    assert_eq!(rest.len(), 4);
}

pub async fn commit_reaches_removed_member_then_membership_changes(store: &dyn Store) {
    let (record, customer, admin) = thread(store).await;
    let bot = device(store).await;
    let mut with_bot = vec![customer, admin, bot];
    with_bot.sort_unstable();
    let add = Post {
        kind: ItemKind::Commit,
        new_roster: Some((1, &with_bot)),
        to: None,
        key: None,
        ..message(record.thread, admin, b"add")
    };
    let posted = store.post(&add).await.unwrap();
    assert_eq!(posted.recipients.len(), 2, "customer and the new bot");
    assert_eq!(
        store.thread(record.thread).await.unwrap().unwrap().members,
        with_bot
    );
    store
        .post(&message(record.thread, bot, b"hi"))
        .await
        .unwrap();
    let mut without_bot = vec![customer, admin];
    without_bot.sort_unstable();
    let remove = Post {
        kind: ItemKind::Commit,
        new_roster: Some((2, &without_bot)),
        to: None,
        key: None,
        ..message(record.thread, admin, b"rm")
    };
    let posted = store.post(&remove).await.unwrap();
    assert!(
        posted.recipients.contains(&bot),
        "the removed bot learns of its removal"
    );
    let after = store
        .post(&message(record.thread, customer, b"secret"))
        .await
        .unwrap();
    assert_eq!(after.recipients, vec![admin]);
    let bot_items = store.fetch(bot, 0, 100, u64::MAX).await.unwrap();
    assert_eq!(bot_items.last().unwrap().payload, b"rm");
    let t = store.thread(record.thread).await.unwrap().unwrap();
    assert_eq!((t.epoch, t.members), (2, without_bot));
}

pub async fn unacked_items_are_fetched_again_acked_are_gone(store: &dyn Store) {
    let (record, customer, admin) = thread(store).await;
    store
        .post(&message(record.thread, customer, b"a"))
        .await
        .unwrap();
    store
        .post(&message(record.thread, customer, b"b"))
        .await
        .unwrap();
    let first = store.fetch(admin, 0, 10, u64::MAX).await.unwrap();
    assert_eq!(first.len(), 3);
    // Not acked: a reconnecting client gets the same items again.
    assert_eq!(store.fetch(admin, 0, 10, u64::MAX).await.unwrap(), first);
    assert_eq!(store.ack(admin, first[1].seq).await.unwrap(), 2);
    let rest = store.fetch(admin, 0, 10, u64::MAX).await.unwrap();
    assert_eq!(rest, first[2..].to_vec());
    assert_eq!(
        store.ack(admin, first[1].seq).await.unwrap(),
        0,
        "acks are idempotent"
    );
}

/// Spends the nonce `lazy` of a thread's admin, then acknowledges the first two of its three
/// items; returns the admin and the position acknowledged.
pub async fn spend_and_ack(store: &dyn Store) -> (DeviceId, u64) {
    let (record, customer, admin) = thread(store).await;
    for body in [b"a", b"b"] {
        store
            .post(&message(record.thread, customer, body))
            .await
            .unwrap();
    }
    assert!(store.use_nonce(admin, b"lazy", 100, 10).await.unwrap());
    let items = store.fetch(admin, 0, 10, u64::MAX).await.unwrap();
    assert_eq!(items.len(), 3);
    assert_eq!(store.ack(admin, items[1].seq).await.unwrap(), 2);
    (admin, items[1].seq)
}

pub async fn replayed_nonce_is_refused_and_expired_ones_forgotten(store: &dyn Store) {
    let d = device(store).await;
    assert!(store.use_nonce(d, b"n1", 100, 10).await.unwrap());
    assert!(!store.use_nonce(d, b"n1", 100, 20).await.unwrap());
    assert!(store.use_nonce(d, b"n2", 100, 20).await.unwrap());
    // Another device may use the same nonce bytes.
    let other = device(store).await;
    assert!(store.use_nonce(other, b"n1", 100, 20).await.unwrap());
    // After expiry the row is pruned (requests that old are refused by their timestamp).
    assert!(store.use_nonce(d, b"n1", 300, 200).await.unwrap());
}

pub async fn a_post_spends_its_nonce_once_in_its_own_transaction(store: &dyn Store) {
    let (record, customer, admin) = thread(store).await;
    let nonce = |bytes: &[u8]| RequestNonce {
        device: customer,
        nonce: bytes.to_vec(),
        expires_at: 100,
        now: 10,
    };
    let first = store
        .post_once(&message(record.thread, customer, b"one"), &nonce(b"a"))
        .await
        .unwrap();
    // The same request again (same nonce): refused, and nothing more reaches the admin.
    let again = store
        .post_once(&message(record.thread, customer, b"one"), &nonce(b"a"))
        .await;
    assert!(matches!(again, Err(StoreError::Replayed)), "{again:?}");
    // The nonce a post spent is spent for other requests too, and the other way round.
    assert!(!store.use_nonce(customer, b"a", 100, 10).await.unwrap());
    assert!(store.use_nonce(customer, b"b", 100, 10).await.unwrap());
    let replay = store
        .post_once(&message(record.thread, customer, b"two"), &nonce(b"b"))
        .await;
    assert!(matches!(replay, Err(StoreError::Replayed)), "{replay:?}");
    // A post refused for another reason still spends its nonce.
    let stranger = ThreadId::from_bytes([0xee; 16]);
    let missing = store
        .post_once(&message(stranger, customer, b"x"), &nonce(b"c"))
        .await;
    assert!(
        matches!(missing, Err(StoreError::NotFound(_))),
        "{missing:?}"
    );
    assert!(!store.use_nonce(customer, b"c", 100, 10).await.unwrap());
    // Two posts with one nonce at once: one is stored, the other refused.
    let (post_x, post_y, d) = (
        message(record.thread, customer, b"x"),
        message(record.thread, customer, b"y"),
        nonce(b"d"),
    );
    let (x, y) = tokio::join!(store.post_once(&post_x, &d), store.post_once(&post_y, &d));
    assert!(
        x.is_ok() != y.is_ok(),
        "exactly one of two posts with one nonce is stored: {x:?} {y:?}"
    );
    let items = store.fetch(admin, 0, 100, u64::MAX).await.unwrap();
    let payloads: Vec<&[u8]> = items
        .iter()
        .filter(|i| i.kind == ItemKind::Message)
        .map(|i| i.payload.as_slice())
        .collect();
    assert_eq!(payloads.len(), 2, "{payloads:?}");
    assert_eq!(payloads[0], b"one");
    assert!(first.recipients.contains(&admin));
}

pub async fn a_message_from_a_non_member_is_refused_and_queues_nothing(store: &dyn Store) {
    let (record, customer, admin) = thread(store).await;
    let stranger = device(store).await;
    let messages = |items: Vec<switchboard_relay::store::InboxItem>| {
        items
            .into_iter()
            .filter(|i| i.kind == ItemKind::Message)
            .count()
    };
    let refused = store
        .post(&message(record.thread, stranger, b"let me in"))
        .await;
    assert!(
        matches!(refused, Err(StoreError::NotMember(_))),
        "{refused:?}"
    );
    assert_eq!(
        messages(store.fetch(admin, 0, 10, u64::MAX).await.unwrap()),
        0
    );
    // A member's message still goes through.
    store
        .post(&message(record.thread, customer, b"hello"))
        .await
        .unwrap();
    assert_eq!(
        messages(store.fetch(admin, 0, 10, u64::MAX).await.unwrap()),
        1
    );
}

pub async fn concurrent_posts_keep_one_order_per_thread(store: &dyn Store) {
    let (record, customer, admin) = thread(store).await;
    let bot = device(store).await;
    let mut members = vec![customer, admin, bot];
    members.sort_unstable();
    let add = Post {
        kind: ItemKind::Commit,
        new_roster: Some((1, &members)),
        to: None,
        key: None,
        ..message(record.thread, admin, b"add")
    };
    store.post(&add).await.unwrap();
    // Two senders post concurrently; every recipient must see one thread order.
    let store: Arc<&dyn Store> = Arc::new(store);
    let post_many = |sender: DeviceId, tag: u8| {
        let store = Arc::clone(&store);
        async move {
            for i in 0..25u8 {
                store
                    .post(&message(record.thread, sender, &[tag, i]))
                    .await
                    .unwrap();
            }
        }
    };
    tokio::join!(post_many(customer, 1), post_many(bot, 2));
    let admin_items = store.fetch(admin, 0, 1000, u64::MAX).await.unwrap();
    let messages: Vec<_> = admin_items
        .iter()
        .filter(|i| i.kind == ItemKind::Message)
        .collect();
    assert_eq!(messages.len(), 50);
    assert!(
        messages
            .windows(2)
            .all(|w| w[0].seq < w[1].seq && w[0].thread_seq < w[1].thread_seq)
    );
    // The customer sees the bot's posts in the same relative order as the admin does.
    let order = |items: &[switchboard_relay::store::InboxItem], tag: u8| -> Vec<u64> {
        items
            .iter()
            .filter(|i| i.payload.first() == Some(&tag))
            .map(|i| i.thread_seq)
            .collect()
    };
    let customer_items = store.fetch(customer, 0, 1000, u64::MAX).await.unwrap();
    assert_eq!(order(&customer_items, 2), order(&admin_items, 2));
    for tag in [1, 2] {
        let seqs: Vec<u8> = admin_items
            .iter()
            .filter(|i| i.payload.first() == Some(&tag))
            .map(|i| i.payload[1])
            .collect();
        assert_eq!(
            seqs,
            (0..25).collect::<Vec<u8>>(),
            "sender {tag}'s posts in its own order"
        );
    }
}

pub async fn posting_to_unknown_thread_is_not_found(store: &dyn Store) {
    let d = device(store).await;
    let err = store
        .post(&message(ThreadId::random(&mut rng()), d, b"x"))
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NotFound(_)), "{err}");
}

pub async fn leases_give_each_thread_to_one_instance_and_move_on_expiry(store: &dyn Store) {
    // One bot device in two threads; two instances of the bot share the work.
    let bot = device(store).await;
    let mut threads = Vec::new();
    for _ in 0..2 {
        let (record, customer, admin) = thread(store).await;
        let mut members = vec![customer, admin, bot];
        members.sort_unstable();
        let add = Post {
            kind: ItemKind::Commit,
            new_roster: Some((1, &members)),
            to: None,
            key: None,
            ..message(record.thread, admin, b"add")
        };
        store.post(&add).await.unwrap();
        threads.push((record.thread, customer));
    }
    for (thread, customer) in &threads {
        for i in 0..3u8 {
            store
                .post(&message(*thread, *customer, &[i]))
                .await
                .unwrap();
        }
    }
    let (t1, t2) = (threads[0].0, threads[1].0);
    // Instance A takes the first item: thread 1 is now A's.
    let a = store
        .fetch_leased(bot, "a", 0, 1, u64::MAX, 100, 30)
        .await
        .unwrap();
    assert_eq!((a.len(), a[0].thread), (1, t1));
    // Instance B gets only thread 2's items.
    let b = store
        .fetch_leased(bot, "b", 0, 100, u64::MAX, 100, 30)
        .await
        .unwrap();
    assert!(
        !b.is_empty() && b.iter().all(|i| i.thread == t2),
        "B only gets thread 2"
    );
    // A continues with thread 1 after its cursor, in order, never thread 2.
    let a2 = store
        .fetch_leased(bot, "a", a[0].seq, 100, u64::MAX, 110, 30)
        .await
        .unwrap();
    assert!(a2.iter().all(|i| i.thread == t1));
    assert_eq!(a2.len(), 3, "the rest of thread 1");
    assert!(a2.windows(2).all(|w| w[0].thread_seq < w[1].thread_seq));
    // A acks only its own thread's items.
    let last_a = a2.last().unwrap().seq;
    let acked = store
        .ack_leased(bot, "a", last_a.max(b.last().unwrap().seq))
        .await
        .unwrap();
    assert_eq!(acked, 4, "thread 1's four items, not thread 2's");
    // B goes silent; after its lease expires A takes thread 2 over and gets its unacked items
    // again, from the start, though they are before A's cursor.
    assert!(
        store
            .fetch_leased(bot, "a", last_a, 100, u64::MAX, 120, 30)
            .await
            .unwrap()
            .is_empty(),
        "B's lease holds"
    );
    let takeover = store
        .fetch_leased(bot, "a", last_a, 100, u64::MAX, 131, 30)
        .await
        .unwrap();
    assert_eq!(
        takeover.iter().map(|i| i.seq).collect::<Vec<_>>(),
        b.iter().map(|i| i.seq).collect::<Vec<_>>()
    );
    // And B, back, finds thread 2 taken.
    assert!(
        store
            .fetch_leased(bot, "b", 0, 100, u64::MAX, 132, 30)
            .await
            .unwrap()
            .is_empty()
    );
}

pub async fn a_refused_post_does_not_undo_posts_committed_with_it(store: &dyn Store) {
    let (record, customer, admin) = thread(store).await;
    let missing = ThreadId::random(&mut rng());
    let good = |i: u8| async move { store.post(&message(record.thread, customer, &[i])).await };
    let bad_post = message(missing, customer, b"x");
    let bad = store.post(&bad_post);
    // Posted concurrently, so a group-committing store batches them together.
    let (r0, r1, r2, r3, refused) = tokio::join!(good(0), good(1), good(2), good(3), bad);
    for r in [r0, r1, r2, r3] {
        r.unwrap();
    }
    assert!(matches!(refused, Err(StoreError::NotFound(_))));
    let items = store.fetch(admin, 0, 100, u64::MAX).await.unwrap();
    assert_eq!(
        items.iter().filter(|i| i.kind == ItemKind::Message).count(),
        4
    );
}

/// Many threads, each with a customer's posts racing the admin's two commits (add a bot, then
/// remove it): the bot gets exactly the posts ordered between the two commits, every thread's
/// positions are 1..=n without gaps, and every inbox stays in order.
pub async fn commits_amid_concurrent_posts_decide_who_gets_what(store: &dyn Store) {
    use futures_util::future::join_all;
    const THREADS: usize = 4;
    const POSTS: u8 = 30;
    let bot = device(store).await;
    let mut threads = Vec::new();
    for _ in 0..THREADS {
        threads.push(thread(store).await);
    }
    let messages: Vec<(ThreadId, DeviceId, [u8; 2])> = threads
        .iter()
        .flat_map(|(record, customer, _)| (0..POSTS).map(|i| (record.thread, *customer, [b'm', i])))
        .collect();
    let customers_post = join_all(
        messages
            .iter()
            .map(|(thread, customer, payload)| async move {
                store.post(&message(*thread, *customer, payload)).await
            }),
    );
    // The admin of each thread adds the bot, then (once that is answered) removes it.
    let admins_commit = join_all(threads.iter().map(|(record, customer, admin)| async move {
        let mut with_bot = vec![*customer, *admin, bot];
        with_bot.sort_unstable();
        let mut without = vec![*customer, *admin];
        without.sort_unstable();
        fn commit<'a>(
            thread: ThreadId,
            admin: DeviceId,
            payload: &'a [u8],
            epoch: u64,
            roster: &'a [DeviceId],
        ) -> Post<'a> {
            Post {
                kind: ItemKind::Commit,
                new_roster: Some((epoch, roster)),
                to: None,
                key: None,
                ..message(thread, admin, payload)
            }
        }
        let added = store
            .post(&commit(record.thread, *admin, b"add", 1, &with_bot))
            .await;
        let removed = store
            .post(&commit(record.thread, *admin, b"remove", 2, &without))
            .await;
        let (added, removed) = (added.unwrap().thread_seq, removed.unwrap().thread_seq);
        (added, removed)
    }));
    let (posted, commits) = tokio::join!(customers_post, admins_commit);
    let posted: Vec<u64> = posted.into_iter().map(|r| r.unwrap().thread_seq).collect();

    let bot_items = store.fetch(bot, 0, 10_000, u64::MAX).await.unwrap();
    assert!(bot_items.windows(2).all(|w| w[0].seq < w[1].seq));
    for ((record, customer, admin), (added, removed)) in threads.iter().zip(commits) {
        assert!(added < removed);
        let of_thread: Vec<u64> = messages
            .iter()
            .zip(&posted)
            .filter(|((t, ..), _)| *t == record.thread)
            .map(|(_, seq)| *seq)
            .collect();
        let mut positions = of_thread.clone();
        positions.extend([added, removed]);
        positions.sort_unstable();
        // Position 1 is the thread open.
        let n = positions.len() as u64;
        assert_eq!(
            positions,
            (2..=n + 1).collect::<Vec<_>>(),
            "no gaps, no repeats"
        );
        // What the bot must have got of this thread: both commits and the messages between.
        let mut expected: Vec<u64> = of_thread
            .iter()
            .copied()
            .filter(|seq| *seq > added && *seq < removed)
            .chain([added, removed])
            .collect();
        expected.sort_unstable();
        let got: Vec<u64> = bot_items
            .iter()
            .filter(|i| i.thread == record.thread)
            .map(|i| i.thread_seq)
            .collect();
        assert_eq!(
            got, expected,
            "the bot gets exactly what was posted while it was a member"
        );
        for member in [customer, admin] {
            let items = store.fetch(*member, 0, 10_000, u64::MAX).await.unwrap();
            assert!(items.windows(2).all(|w| w[0].seq < w[1].seq));
            let mine: Vec<u64> = items
                .iter()
                .filter(|i| i.thread == record.thread)
                .map(|i| i.thread_seq)
                .collect();
            assert!(mine.windows(2).all(|w| w[0] < w[1]), "thread order");
        }
        // The admin got every message, nothing twice.
        let admin_messages = store
            .fetch(*admin, 0, 10_000, u64::MAX)
            .await
            .unwrap()
            .into_iter()
            .filter(|i| i.thread == record.thread && i.kind == ItemKind::Message)
            .count();
        assert_eq!(admin_messages, usize::from(POSTS));
    }
}

/// Concurrent requests carrying the same nonce: exactly one is fresh.
pub async fn a_nonce_used_twice_at_once_is_fresh_once(store: &dyn Store) {
    use futures_util::future::join_all;
    let d = device(store).await;
    let nonces: Vec<Vec<u8>> = (0..20u8).map(|i| vec![i % 10]).collect();
    let fresh = join_all(nonces.iter().map(|n| store.use_nonce(d, n, 100, 10))).await;
    let fresh: Vec<bool> = fresh.into_iter().map(Result::unwrap).collect();
    assert_eq!(fresh.iter().filter(|f| **f).count(), 10);
    for i in 0..10u8 {
        let uses = nonces
            .iter()
            .zip(&fresh)
            .filter(|(n, f)| n.as_slice() == [i] && **f)
            .count();
        assert_eq!(uses, 1, "nonce {i} fresh exactly once");
    }
}

pub async fn a_message_posted_again_is_stored_once_even_concurrently(store: &dyn Store) {
    let (t, customer, admin) = thread(store).await;
    let keyed = |payload: &'static [u8], generation: u64| Post {
        key: Some(PostKey {
            epoch: 0,
            generation,
            digest: [payload[0]; 32],
        }),
        ..message(t.thread, customer, payload)
    };
    let first = store.post(&keyed(b"a", 0)).await.unwrap();
    assert!(!first.stored_before);
    let again = store.post(&keyed(b"a", 0)).await.unwrap();
    assert!(again.stored_before);
    assert_eq!(
        (again.thread_seq, again.recipient_count),
        (first.thread_seq, 1)
    );
    assert!(matches!(
        store.post(&keyed(b"b", 0)).await,
        Err(StoreError::Conflict(_))
    ));
    // Ten copies of one new message at once (one group commit on SQLite): one is stored.
    let copy = keyed(b"c", 1);
    let copies = futures_util::future::join_all((0..10).map(|_| store.post(&copy))).await;
    let stored: Vec<_> = copies.into_iter().map(Result::unwrap).collect();
    assert_eq!(stored.iter().filter(|p| !p.stored_before).count(), 1);
    assert!(stored.iter().all(|p| p.thread_seq == stored[0].thread_seq));
    let items = store.fetch(admin, 0, 100, u64::MAX).await.unwrap();
    assert_eq!(items.len(), 3, "the open, a and c, once each");
}

/// A message its sender posts again after it was removed from the thread (its first post's
/// answer was lost, say, and the thread moved on before the retry) is answered as stored, not
/// refused: the sender's retry loop ends. Nothing new can come from it: a new message, or other
/// bytes under a stored generation, is refused, and nothing is queued.
pub async fn a_removed_senders_message_posted_again_is_answered_as_stored(store: &dyn Store) {
    let (t, customer, admin) = thread(store).await;
    let bot = device(store).await;
    let mut with_bot = vec![customer, admin, bot];
    with_bot.sort_unstable();
    let add = Post {
        kind: ItemKind::Commit,
        new_roster: Some((1, &with_bot)),
        to: None,
        key: None,
        ..message(t.thread, admin, b"add")
    };
    store.post(&add).await.unwrap();
    let keyed = |payload: &'static [u8], generation: u64| Post {
        key: Some(PostKey {
            epoch: 1,
            generation,
            digest: [payload[0]; 32],
        }),
        ..message(t.thread, bot, payload)
    };
    let first = store.post(&keyed(b"r", 0)).await.unwrap();
    let mut without_bot = vec![customer, admin];
    without_bot.sort_unstable();
    let remove = Post {
        kind: ItemKind::Commit,
        new_roster: Some((2, &without_bot)),
        to: None,
        key: None,
        ..message(t.thread, admin, b"rm")
    };
    store.post(&remove).await.unwrap();
    let queued = store.fetch(customer, 0, 100, u64::MAX).await.unwrap().len();

    let again = store.post(&keyed(b"r", 0)).await.unwrap();
    assert!(again.stored_before, "the retry is answered as stored");
    assert_eq!(again.thread_seq, first.thread_seq);
    assert!(matches!(
        store.post(&keyed(b"n", 1)).await,
        Err(StoreError::NotMember(_))
    ));
    assert!(matches!(
        store.post(&keyed(b"x", 0)).await,
        Err(StoreError::Conflict(_) | StoreError::NotMember(_))
    ));
    assert_eq!(
        store.fetch(customer, 0, 100, u64::MAX).await.unwrap().len(),
        queued,
        "nothing more queued"
    );
}

pub async fn fetch_pages_by_bytes_but_always_returns_one_item(store: &dyn Store) {
    let (t, customer, admin) = thread(store).await;
    let big = vec![b'x'; 1000];
    for _ in 0..5 {
        store
            .post(&message(t.thread, customer, &big))
            .await
            .unwrap();
    }
    // The open (4 bytes) and two messages fit in 2,100 bytes; the third would pass it.
    let page = store.fetch(admin, 0, 100, 2_100).await.unwrap();
    assert_eq!(page.len(), 3);
    // One byte of budget still returns the first item.
    let one = store.fetch(admin, page[2].seq, 100, 1).await.unwrap();
    assert_eq!(one.len(), 1);
    let leased = store
        .fetch_leased(admin, "a", 0, 100, 2_100, 100, 30)
        .await
        .unwrap();
    assert_eq!(leased.len(), 3);
}

pub async fn device_roles_come_from_entities_and_threads(store: &dyn Store) {
    let (t, customer, admin) = thread(store).await;
    let bot = device(store).await;
    assert_eq!(
        store.device_role(customer).await.unwrap(),
        DeviceRole::Customer
    );
    assert_eq!(store.device_role(bot).await.unwrap(), DeviceRole::Customer);
    assert_eq!(
        store.device_role(admin).await.unwrap(),
        DeviceRole::Admin(t.entity.clone())
    );
    let members = [customer, admin, bot];
    store
        .post(&Post {
            thread: t.thread,
            sender: admin,
            kind: ItemKind::Commit,
            payload: b"add bot",
            new_roster: Some((1, &members)),
            to: None,
            key: None,
        })
        .await
        .unwrap();
    assert_eq!(
        store.device_role(bot).await.unwrap(),
        DeviceRole::Agent(t.entity.clone())
    );
    store.ping().await.unwrap();
}
