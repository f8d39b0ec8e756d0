//! The SDK's public types are Send + Sync.

use switchboard::layers::Metrics;
use switchboard::pipeline::{Delivery, Inbound, Outgoing};
use switchboard::store::memory::MemoryStore;
use switchboard::store::{Effects, OutboxEntry, StoreError, ThreadRecord};

use super::*;

fn assert_send_sync<T: Send + Sync>() {}

#[test]
fn public_types_are_send_and_sync() {
    assert_send_sync::<Runtime>();
    assert_send_sync::<RuntimeBuilder>();
    assert_send_sync::<RuntimeHandle>();
    assert_send_sync::<Ctx>();
    assert_send_sync::<TypingHandle>();
    assert_send_sync::<Message>();
    assert_send_sync::<ThreadInfo>();
    assert_send_sync::<MemberChange>();
    assert_send_sync::<Receipt>();
    assert_send_sync::<Handoff>();
    assert_send_sync::<Identity>();
    assert_send_sync::<BotError>();
    assert_send_sync::<BotEvent>();
    assert_send_sync::<Inbound>();
    assert_send_sync::<Outgoing>();
    assert_send_sync::<Delivery>();
    assert_send_sync::<Metrics>();
    assert_send_sync::<StoreError>();
    assert_send_sync::<StoreKey>();
    assert_send_sync::<ThreadRecord>();
    assert_send_sync::<Effects>();
    assert_send_sync::<OutboxEntry>();
    assert_send_sync::<MemoryStore>();
}
