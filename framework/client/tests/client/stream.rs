//! The inbox as a stream (`GET /v1/inbox/stream`) against a real relay: items in order as they
//! arrive, and a stream dropped and opened again from the cursor loses and repeats nothing.

use std::sync::Arc;
use std::time::Duration;

use switchboard_client::{InboxStream, RelayClient, now};
use switchboard_protocol::api::ItemKind;
use switchboard_protocol::{
    CipherSuite, Content, Csprng, DeviceId, DeviceKeys, EntityId, ThreadState,
};

use super::relay;

struct Pair {
    _server: switchboard_relay::server::Running,
    customer: (Arc<DeviceKeys>, RelayClient),
    admin: RelayClient,
    view: ThreadState,
}

/// A relay, an admin with its entity, a customer with an open thread.
async fn pair() -> Pair {
    let server = relay().await;
    let mut rng = Csprng::from_os().unwrap();
    let keys = |rng: &mut Csprng| {
        Arc::new(DeviceKeys::generate(
            DeviceId::random(rng),
            CipherSuite::default(),
            rng,
        ))
    };
    let (admin_keys, customer_keys) = (keys(&mut rng), keys(&mut rng));
    let admin = RelayClient::new(&server.url(), Arc::clone(&admin_keys)).unwrap();
    let customer = RelayClient::new(&server.url(), Arc::clone(&customer_keys)).unwrap();
    admin.register().await.unwrap();
    customer.register().await.unwrap();
    let entity = EntityId::new("acme").unwrap();
    admin.create_entity(&entity, "Acme").await.unwrap();
    let (view, open) = ThreadState::open(
        &customer_keys,
        entity,
        &admin_keys.bundle(now()),
        now(),
        &mut rng,
    )
    .unwrap();
    customer.open_thread(&open).await.unwrap();
    Pair {
        _server: server,
        customer: (customer_keys, customer),
        admin,
        view,
    }
}

impl Pair {
    async fn say(&mut self, text: &str) {
        let (keys, relay) = &self.customer;
        let sealed = self.view.seal(keys, &Content::text(text), None).unwrap();
        relay
            .post_message(self.view.thread(), &sealed)
            .await
            .unwrap();
    }
}

/// Reads items from `stream` until `n` arrived (bounded); their positions and kinds.
async fn take(stream: &mut InboxStream, n: usize) -> Vec<(u64, ItemKind)> {
    let mut got = Vec::new();
    while got.len() < n {
        let page = tokio::time::timeout(Duration::from_secs(20), stream.next_items())
            .await
            .expect("items arrive")
            .unwrap()
            .expect("the stream goes on");
        got.extend(page.0.iter().map(|item| (item.seq, item.kind)));
    }
    got
}

#[tokio::test]
async fn items_stream_in_order_as_they_arrive() {
    let mut pair = pair().await;
    let mut stream = pair.admin.inbox_stream(0, None).await.unwrap();
    // What was queued before the stream opened comes first.
    let first = take(&mut stream, 1).await;
    assert_eq!(first[0].1, ItemKind::ThreadOpen);
    // Then each message as it is posted.
    let mut seen = first;
    for i in 0..5 {
        pair.say(&format!("message {i}")).await;
        seen.extend(take(&mut stream, 1).await);
    }
    assert_eq!(seen.len(), 6, "{seen:?}");
    assert!(
        seen.windows(2).all(|w| w[0].0 < w[1].0),
        "in order: {seen:?}"
    );
    assert!(seen[1..].iter().all(|(_, kind)| *kind == ItemKind::Message));
}

#[tokio::test]
async fn a_stream_opened_again_from_the_cursor_loses_and_repeats_nothing() {
    let mut pair = pair().await;
    for i in 0..3 {
        pair.say(&format!("before {i}")).await;
    }
    let mut stream = pair.admin.inbox_stream(0, None).await.unwrap();
    let first = take(&mut stream, 2).await;
    let cursor = first.last().unwrap().0;
    // The connection drops (the device goes away) with items still coming.
    drop(stream);
    for i in 0..3 {
        pair.say(&format!("after {i}")).await;
    }
    let mut again = pair.admin.inbox_stream(cursor, None).await.unwrap();
    // Open + 6 messages in all; the first stream took some of them.
    let rest = take(&mut again, 7 - first.len()).await;
    let mut all: Vec<u64> = first.iter().chain(&rest).map(|(seq, _)| *seq).collect();
    let count = all.len();
    all.dedup();
    assert_eq!(all.len(), count, "nothing repeated: {all:?}");
    assert_eq!(count, 7, "nothing lost: {all:?}");
    assert!(all.windows(2).all(|w| w[0] < w[1]), "in order: {all:?}");
    // Acknowledged, the items are gone for a stream from the start too.
    pair.admin.ack(*all.last().unwrap(), None).await.unwrap();
    let mut fresh = pair.admin.inbox_stream(0, None).await.unwrap();
    pair.say("last").await;
    let last = take(&mut fresh, 1).await;
    assert!(last[0].0 > *all.last().unwrap(), "{last:?}");
}
