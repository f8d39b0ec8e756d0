//! Devices whose state lives in a `DeviceStore` (a row per thread) instead of their keystore.

use std::sync::Arc;

use switchboard_client::store::{DeviceStore, MemoryStore};
use switchboard_client::{ClientError, Device, NewDevice, NewRole};
use switchboard_protocol::{Content, EntityId};

use crate::{events, messages, relay, scratch, secret};

/// A customer device of `relay` at `dir/name.keystore`, in `store`.
async fn customer_in(
    dir: &std::path::Path,
    name: &str,
    relay: &str,
    store: &Arc<MemoryStore>,
) -> Device {
    Device::create_in(
        &dir.join(format!("{name}.keystore")),
        &secret(),
        NewDevice::new(relay, NewRole::Customer),
        Arc::clone(store) as Arc<dyn DeviceStore>,
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_in_a_store_writes_only_the_threads_an_event_touched_and_reopens() {
    let server = relay().await;
    let relay = server.url();
    let dir = scratch();
    let entity = EntityId::new("acme").unwrap();
    let store = Arc::new(MemoryStore::new());
    let path = dir.join("admin.keystore");
    let mut admin = Device::create_in(
        &path,
        &secret(),
        NewDevice::new(
            &relay,
            NewRole::Admin {
                entity: entity.clone(),
                display_name: "Acme".into(),
            },
        ),
        Arc::clone(&store) as Arc<dyn DeviceStore>,
    )
    .await
    .unwrap();
    let admin_id = admin.id();

    // Three customers open threads; the admin holds three thread rows.
    let mut customers = Vec::new();
    for i in 0..3 {
        let mut customer = customer_in(&dir, &format!("c{i}"), &relay, &store).await;
        let thread = customer.open_thread(&entity).await.unwrap();
        customers.push((customer, thread));
    }
    events(&mut admin, 3).await;
    assert_eq!(store.thread_rows(admin_id), 3);

    // One message in one thread: the admin's receive writes that thread's row alone.
    let before = store.thread_writes();
    let (customer, thread) = &mut customers[1];
    customer
        .send(*thread, &Content::text("where is order 42?"), None)
        .await
        .unwrap();
    let after_send = store.thread_writes();
    assert_eq!(
        after_send - before,
        1,
        "the customer's send writes its one thread"
    );
    let got = events(&mut admin, 1).await;
    assert_eq!(
        messages(&got)[0].content,
        Content::text("where is order 42?")
    );
    assert_eq!(
        store.thread_writes() - after_send,
        1,
        "the admin's receive writes the one thread it touched"
    );

    // The keystore holds only the keys: opening it without its store is refused clearly.
    let cursor = admin.cursor();
    drop(admin);
    let err = Device::open(&path, &secret(), None).await.unwrap_err();
    assert!(
        matches!(&err, ClientError::KeystoreContents(why) if why.contains("Device::open_in")),
        "{err}"
    );
    // In another store there is nothing for it.
    let err = Device::open_in(&path, &secret(), None, Arc::new(MemoryStore::new()))
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Store(_)), "{err}");

    // Reopened in its store, it continues where it stopped.
    let mut admin = Device::open_in(&path, &secret(), None, Arc::clone(&store) as _)
        .await
        .unwrap();
    assert_eq!(admin.cursor(), cursor);
    assert_eq!(admin.threads().count(), 3);
    let (customer, thread) = &mut customers[2];
    customer
        .send(*thread, &Content::text("and order 43?"), None)
        .await
        .unwrap();
    let got = events(&mut admin, 1).await;
    assert_eq!(messages(&got)[0].content, Content::text("and order 43?"));
    std::fs::remove_dir_all(&dir).ok();
}

/// An admin of "acme" at `path`, its whole state in its keystore.
async fn admin_at(path: &std::path::Path, relay: &str) -> Device {
    Device::create(
        path,
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_with_its_state_in_its_keystore_moves_into_a_store() {
    let server = relay().await;
    let relay = server.url();
    let dir = scratch();
    let path = dir.join("admin.keystore");
    let mut admin = admin_at(&path, &relay).await;
    let entity = EntityId::new("acme").unwrap();
    let store = Arc::new(MemoryStore::new());
    let mut customer = customer_in(&dir, "c", &relay, &store).await;
    let thread = customer.open_thread(&entity).await.unwrap();
    customer
        .send(thread, &Content::text("hello"), None)
        .await
        .unwrap();
    events(&mut admin, 2).await;
    let (id, cursor) = (admin.id(), admin.cursor());
    drop(admin);

    let admin = Device::open_in(&path, &secret(), None, Arc::clone(&store) as _)
        .await
        .unwrap();
    assert_eq!(store.thread_rows(id), 1);
    assert_eq!(admin.cursor(), cursor);
    drop(admin);
    // From now on the keystore names the store.
    assert!(Device::open(&path, &secret(), None).await.is_err());
    let mut admin = Device::open_in(&path, &secret(), None, Arc::clone(&store) as _)
        .await
        .unwrap();
    assert_eq!(admin.thread(thread).map(|s| s.thread()), Some(thread));
    customer
        .send(thread, &Content::text("still there?"), None)
        .await
        .unwrap();
    let got = events(&mut admin, 1).await;
    assert_eq!(messages(&got)[0].content, Content::text("still there?"));
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_store_write_fails_send_and_nothing_is_posted() {
    let server = relay().await;
    let relay = server.url();
    let dir = scratch();
    let mut admin = admin_at(&dir.join("admin.keystore"), &relay).await;
    let store = Arc::new(MemoryStore::new());
    let mut customer = customer_in(&dir, "c", &relay, &store).await;
    let thread = customer
        .open_thread(&EntityId::new("acme").unwrap())
        .await
        .unwrap();
    events(&mut admin, 1).await;

    store.fail_writes(true);
    let err = customer
        .send(thread, &Content::text("lost?"), None)
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Store(_)), "{err}");
    store.fail_writes(false);
    customer
        .send(thread, &Content::text("second try"), None)
        .await
        .unwrap();
    // Only the message whose state was stored reached the relay.
    let got = events(&mut admin, 1).await;
    assert_eq!(messages(&got)[0].content, Content::text("second try"));
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_rows_are_sealed_and_a_moved_altered_or_foreign_row_is_refused() {
    let server = relay().await;
    let relay = server.url();
    let dir = scratch();
    let mut admin = admin_at(&dir.join("admin.keystore"), &relay).await;
    let entity = EntityId::new("acme").unwrap();
    let store = Arc::new(MemoryStore::new());
    let path = dir.join("c.keystore");
    let mut customer = customer_in(&dir, "c", &relay, &store).await;
    let first = customer.open_thread(&entity).await.unwrap();
    let second = customer.open_thread(&entity).await.unwrap();
    let mut other = customer_in(&dir, "d", &relay, &store).await;
    let foreign = other.open_thread(&entity).await.unwrap();
    events(&mut admin, 3).await;
    let (id, other_id) = (customer.id(), other.id());
    drop(customer);

    // The store sees ciphertext only: no JSON, not even the entity's name.
    let row = store.thread_row(id, first).unwrap();
    let state = store.state_row(id).unwrap();
    for bytes in [&row, &state] {
        assert!(serde_json::from_slice::<serde_json::Value>(bytes).is_err());
        assert!(!bytes.windows(4).any(|w| w == b"acme"));
    }

    // Each forgery is refused at open with a clear error; the real row opens again after.
    let mut altered = row.clone();
    let middle = altered.len() / 2;
    altered[middle] ^= 1;
    let forgeries = [
        (
            "the first thread's row in the second's place",
            second,
            row.clone(),
        ),
        ("an altered row", first, altered),
        (
            "another device's row",
            first,
            store.thread_row(other_id, foreign).unwrap(),
        ),
        ("a truncated row", first, row[..10].to_vec()),
    ];
    for (what, place, forged) in forgeries {
        let genuine = store.thread_row(id, place).unwrap();
        store.put_thread_row(id, place, forged);
        let err = Device::open_in(&path, &secret(), None, Arc::clone(&store) as _)
            .await
            .err()
            .unwrap_or_else(|| panic!("{what} was accepted"));
        assert!(
            matches!(&err, ClientError::Store(why) if why.contains(&place.to_string())),
            "{what}: {err}"
        );
        store.put_thread_row(id, place, genuine);
    }
    let customer = Device::open_in(&path, &secret(), None, Arc::clone(&store) as _)
        .await
        .unwrap();
    assert_eq!(customer.threads().count(), 2);
    std::fs::remove_dir_all(&dir).ok();
}
