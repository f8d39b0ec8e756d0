//! A simulated customer against a real relay and a real admin device.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs,
    unreachable_pub
)]

use std::time::Duration;

use switchboard_client::{Device, Event, KeystoreSecret, NewDevice, NewRole};
use switchboard_protocol::{Content, EntityId, Sender};
use switchboard_testkit::sim::SimCustomer;
use switchboard_testkit::{gather, said_by, scratch_dir, until};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sim_customer_and_admin_exchange_messages_both_ways() {
    let relay = switchboard_relay::server::start("sqlite::memory:", "127.0.0.1:0")
        .await
        .unwrap();
    let url = relay.url();
    let dir = scratch_dir("testkit-sim");
    let acme = EntityId::new("acme").unwrap();
    let mut admin = Device::create(
        &dir.join("admin.keystore"),
        &KeystoreSecret::passphrase("sim passphrase"),
        NewDevice::new(
            &url,
            NewRole::Admin {
                entity: acme.clone(),
                display_name: "Acme".into(),
            },
        ),
    )
    .await
    .unwrap();

    let mut sim = SimCustomer::register(&url).await.unwrap();
    let thread = sim.open_thread(&acme).await.unwrap();
    assert!(sim.thread(thread).is_some());
    let asked = sim.send(thread, "where is my order 42?").await.unwrap();

    // The open and the message may come in one answer: gather both.
    let events = gather(&mut admin, |events| {
        events.iter().any(|e| said_by(e).is_some())
    })
    .await;
    assert!(events.iter().any(
        |e| matches!(e, Event::ThreadOpened { thread: t, customer } if *t == thread && *customer == sim.id())
    ));
    let Some(Event::Message { message, .. }) = events.iter().find(|e| said_by(e).is_some()) else {
        unreachable!()
    };
    assert_eq!(message.id, asked);
    assert_eq!(message.sender, sim.id());
    assert_eq!(message.content, Content::text("where is my order 42?"));

    let answer = admin
        .send(thread, &Content::text("it ships today"), None)
        .await
        .unwrap();
    let mut got = Vec::new();
    for _ in 0..30 {
        got.extend(sim.receive(Duration::from_secs(1)).await.unwrap());
        if got.iter().any(|e| said_by(e).is_some()) {
            break;
        }
    }
    let messages: Vec<_> = got
        .iter()
        .filter_map(|e| match e {
            Event::Message { message, .. } => Some(message),
            _ => None,
        })
        .collect();
    assert_eq!(messages.len(), 1, "{got:#?}");
    assert_eq!(messages[0].id, answer.header.message_id());
    assert_eq!(messages[0].content, Content::text("it ships today"));
    assert!(
        matches!(messages[0].sender_info, Sender::Admin),
        "{:?}",
        messages[0].sender_info
    );
    assert!(sim.cursor() > 0);
    sim.flush_acks().await.unwrap();
    // Acknowledged: nothing comes again.
    let again = sim.receive(Duration::from_secs(1)).await.unwrap();
    assert!(again.is_empty(), "{again:#?}");

    // A second thread with the same entity uses the pinned key.
    let second = sim.open_thread(&acme).await.unwrap();
    assert_ne!(second, thread);
    until(
        &mut admin,
        |e| matches!(e, Event::ThreadOpened { thread: t, .. } if *t == second),
    )
    .await;
}
