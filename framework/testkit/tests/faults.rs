//! The hostile relay's faults against a real relay on loopback: redelivery, error answers,
//! closed connections.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs,
    unreachable_pub
)]

use std::collections::BTreeMap;
use std::time::Duration;

use switchboard_client::{
    ClientError, Device, Event, KeystoreSecret, NewDevice, NewRole, RelayClient,
};
use switchboard_protocol::api::ItemKind;
use switchboard_protocol::{Content, EntityId, ThreadId};
use switchboard_testkit::hostile::HostileRelay;
use switchboard_testkit::{said_by, scratch_dir, until};

fn secret() -> KeystoreSecret {
    KeystoreSecret::passphrase("faults passphrase")
}

async fn admin(dir: &std::path::Path, relay: &str) -> Device {
    Device::create(
        &dir.join("admin.keystore"),
        &secret(),
        NewDevice::new(
            relay,
            NewRole::Admin {
                entity: EntityId::new("acme").unwrap(),
                display_name: "Acme".into(),
            },
        ),
    )
    .await
    .unwrap()
}

async fn customer(dir: &std::path::Path, name: &str, relay: &str) -> Device {
    Device::create(
        &dir.join(format!("{name}.keystore")),
        &secret(),
        NewDevice::new(relay, NewRole::Customer),
    )
    .await
    .unwrap()
}

/// `customer` opens a thread with acme; the admin accepts it and says `texts` in it.
async fn admin_says(admin: &mut Device, customer: &mut Device, texts: &[&str]) -> ThreadId {
    let thread = customer
        .open_thread(&EntityId::new("acme").unwrap())
        .await
        .unwrap();
    until(
        admin,
        |e| matches!(e, Event::ThreadOpened { thread: t, .. } if *t == thread),
    )
    .await;
    for text in texts {
        admin
            .send(thread, &Content::text(*text), None)
            .await
            .unwrap();
    }
    thread
}

fn text_of(event: &Event) -> Option<String> {
    match said_by(event) {
        Some((_, Content::Text { text, .. })) => Some(text.clone()),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redelivered_items_come_three_times_and_are_reported_once() {
    let relay = switchboard_relay::server::start("sqlite::memory:", "127.0.0.1:0")
        .await
        .unwrap();
    let url = relay.url();
    let hostile = HostileRelay::start(&url).await;
    let dir = scratch_dir("testkit-redeliver");
    let mut admin = admin(&dir, &url).await;

    // A raw client behind the proxy sees each item three times: twice in the answer that
    // brings it, once more in the next answer, after it acknowledged it.
    let mut raw = customer(&dir, "raw", &hostile.url()).await;
    hostile.redeliver(raw.id(), 3);
    admin_says(&mut admin, &mut raw, &["one", "two"]).await;
    let client = RelayClient::new(&hostile.url(), raw.shared_keys()).unwrap();
    let mut seen: BTreeMap<u64, usize> = BTreeMap::new();
    let mut cursor = 0;
    for _ in 0..20 {
        let items = client
            .inbox(cursor, 100, Duration::from_secs(1), None)
            .await
            .unwrap();
        for item in &items {
            assert_eq!(item.kind, ItemKind::Message);
            *seen.entry(item.seq).or_default() += 1;
        }
        assert!(items.windows(2).all(|w| w[0].seq <= w[1].seq), "in order");
        if let Some(last) = items.iter().map(|i| i.seq).max() {
            cursor = cursor.max(last);
            client.ack(cursor, None).await.unwrap();
        }
        if seen.len() == 2 && seen.values().all(|n| *n >= 3) {
            break;
        }
    }
    // Copies are spent: further answers are empty.
    let later = client
        .inbox(cursor, 100, Duration::from_secs(1), None)
        .await
        .unwrap();
    assert!(later.is_empty(), "{later:?}");
    assert_eq!(seen.len(), 2, "{seen:?}");
    assert!(seen.values().all(|n| *n == 3), "{seen:?}");

    // A device behind the proxy reports each message once, and refuses nothing.
    let mut alice = customer(&dir, "alice", &hostile.url()).await;
    hostile.redeliver(alice.id(), 3);
    admin_says(&mut admin, &mut alice, &["hello", "again"]).await;
    let mut events = Vec::new();
    for _ in 0..30 {
        events.extend(alice.receive(Duration::from_secs(1)).await.unwrap());
        let texts: Vec<String> = events.iter().filter_map(text_of).collect();
        if texts.len() >= 2 {
            break;
        }
    }
    // Rounds that carry the redelivered copies.
    for _ in 0..3 {
        events.extend(alice.receive(Duration::from_secs(1)).await.unwrap());
    }
    let texts: Vec<String> = events.iter().filter_map(text_of).collect();
    assert_eq!(texts, ["hello", "again"], "{events:#?}");
    assert!(
        !events.iter().any(|e| matches!(e, Event::Refused { .. })),
        "{events:#?}"
    );
    let copies = hostile.delivered(alice.id()).len();
    assert_eq!(copies, 2, "the relay delivered each message once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redelivery_keeps_lease_instances_apart() {
    let relay = switchboard_relay::server::start("sqlite::memory:", "127.0.0.1:0")
        .await
        .unwrap();
    let url = relay.url();
    let hostile = HostileRelay::start(&url).await;
    let dir = scratch_dir("testkit-redeliver-instance");
    let mut admin = admin(&dir, &url).await;
    let mut raw = customer(&dir, "raw", &hostile.url()).await;
    hostile.redeliver(raw.id(), 3);
    admin_says(&mut admin, &mut raw, &["one"]).await;
    let client = RelayClient::new(&hostile.url(), raw.shared_keys()).unwrap();
    let wait = Duration::from_secs(1);
    // The query with `instance` reaches the relay intact (it is signed): the lease works.
    let first = client.inbox(0, 100, wait, Some("a")).await.unwrap();
    let seqs: Vec<u64> = first.iter().map(|i| i.seq).collect();
    assert_eq!(seqs.len(), 2, "{seqs:?}");
    assert_eq!(seqs[0], seqs[1]);
    client.ack(seqs[0], Some("a")).await.unwrap();
    // The third copy goes to instance a, not b.
    let other = client.inbox(seqs[0], 100, wait, Some("b")).await.unwrap();
    assert!(other.is_empty(), "{other:?}");
    let again = client.inbox(seqs[0], 100, wait, Some("a")).await.unwrap();
    assert_eq!(
        again.iter().map(|i| i.seq).collect::<Vec<_>>(),
        [seqs[0]],
        "{again:?}"
    );
    let spent = client.inbox(seqs[0], 100, wait, Some("a")).await.unwrap();
    assert!(spent.is_empty(), "{spent:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_next_answers_with_the_status_and_retry_after() {
    let relay = switchboard_relay::server::start("sqlite::memory:", "127.0.0.1:0")
        .await
        .unwrap();
    let url = relay.url();
    let hostile = HostileRelay::start(&url).await;
    let dir = scratch_dir("testkit-fail");
    let mut admin = admin(&dir, &url).await;
    let mut alice = customer(&dir, "alice", &hostile.url()).await;

    // A first request opens alice's relay session (its opening is a request too), so that the
    // failures below meet inbox reads only.
    alice.receive(Duration::from_millis(10)).await.unwrap();
    hostile.fail_next(2, 429, Some(7));
    for _ in 0..2 {
        match alice.receive(Duration::from_secs(1)).await {
            Err(ClientError::Refused {
                status: 429,
                retry_after: Some(7),
                ..
            }) => {}
            other => panic!("expected a 429 with Retry-After, got {other:?}"),
        }
    }
    hostile.fail_next(1, 503, None);
    let e = alice.receive(Duration::from_secs(1)).await.unwrap_err();
    assert!(e.is_transient(), "{e}");
    assert!(
        matches!(
            e,
            ClientError::Refused {
                status: 503,
                retry_after: None,
                ..
            }
        ),
        "{e}"
    );
    // Then requests pass again, and nothing was lost.
    admin_says(&mut admin, &mut alice, &["after the outage"]).await;
    let event = until(&mut alice, |e| text_of(e).is_some()).await;
    assert_eq!(text_of(&event).unwrap(), "after the outage");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_connections_closes_without_an_answer() {
    let relay = switchboard_relay::server::start("sqlite::memory:", "127.0.0.1:0")
        .await
        .unwrap();
    let url = relay.url();
    let hostile = HostileRelay::start(&url).await;
    let dir = scratch_dir("testkit-reset");
    let mut admin = admin(&dir, &url).await;
    let mut alice = customer(&dir, "alice", &hostile.url()).await;
    // A request before, so that a pooled connection exists: it must not escape the reset.
    alice.receive(Duration::from_secs(1)).await.unwrap();

    hostile.reset_connections(2);
    for _ in 0..2 {
        match alice.receive(Duration::from_secs(1)).await {
            Err(ClientError::Unreachable { .. }) => {}
            other => panic!("expected a closed connection, got {other:?}"),
        }
    }
    admin_says(&mut admin, &mut alice, &["back"]).await;
    let event = until(&mut alice, |e| text_of(e).is_some()).await;
    assert_eq!(text_of(&event).unwrap(), "back");
}
