//! Issue 8 item 5 through the admin: a member that signs two different messages under one
//! generation is reported and audited, not dropped silently as a redelivery. The honest relay
//! refuses the second message (409: another message under a generation it stored); a hostile
//! relay delivers it anyway, and the admin must still notice.

use switchboard_admin::audit::{AuditEvent, AuditLog};
use switchboard_admin::{Admin, Outcome};
use switchboard_client::{ClientError, Event};
use switchboard_protocol::api::{ErrorCode, InboxItem, ItemKind};
use switchboard_protocol::{Content, EntityId, Epoch, ThreadState};
use switchboard_testkit::hostile::{HostileRelay, Slip};
use switchboard_testkit::scratch_dir;

use super::{config, new_customer, order_bot, order_thread, step_until};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_equivocating_is_audited_and_the_first_message_stands() {
    let relay = switchboard_relay::server::start("sqlite::memory:", "127.0.0.1:0")
        .await
        .unwrap();
    let url = relay.url();
    let dir = scratch_dir("admin-equivocation");
    // The admin talks to the relay through a proxy that will slip the second message in.
    let hostile = HostileRelay::start(&url).await;
    let mut admin = Admin::init(config(&dir, &hostile.url())).await.unwrap();
    let mut customer = new_customer(&dir, &url).await;
    let thread = customer
        .open_thread(&EntityId::new("acme").unwrap())
        .await
        .unwrap();
    // A second copy of the customer's state (a restored backup, or a second process).
    let mut copy =
        ThreadState::restore(customer.keys(), customer.thread(thread).unwrap().snapshot()).unwrap();
    let first = customer
        .send(thread, &Content::text("ship order 42 to my office"), None)
        .await
        .unwrap();
    let second = copy
        .seal(
            customer.keys(),
            &Content::text("ship order 42 to my home"),
            None,
        )
        .unwrap();
    assert_eq!(first.header.generation, second.header.generation);
    let refused = customer
        .relay()
        .post_message(thread, &second)
        .await
        .unwrap_err();
    assert!(
        matches!(
            refused,
            ClientError::Refused {
                code: ErrorCode::Conflict,
                ..
            }
        ),
        "the relay must refuse another message under a stored generation: {refused}"
    );
    // Delivered after the first message, in the admin's first inbox answer.
    hostile.inject(
        admin.device().id(),
        InboxItem {
            seq: 0,
            thread,
            thread_seq: 0,
            sender: customer.id(),
            kind: ItemKind::Message,
            payload: serde_json::to_value(&second).unwrap(),
        },
        Slip::After,
    );

    let outcome = step_until(&mut admin, |o| {
        matches!(o, Outcome::Event(Event::Equivocation { .. }))
    })
    .await;
    let Outcome::Event(Event::Equivocation {
        sender,
        generation,
        first: first_digest,
        second: second_digest,
        ..
    }) = outcome
    else {
        unreachable!()
    };
    assert_eq!(sender, customer.id());
    assert_eq!(generation, first.header.generation);
    assert_eq!(first_digest, first.digest());
    assert_eq!(second_digest, second.digest());
    let audit = AuditLog::read(&dir.join("audit.jsonl")).unwrap();
    assert!(
        audit.iter().any(|r| r.event
            == AuditEvent::Equivocation {
                thread,
                device: customer.id(),
                epoch: first.header.epoch,
                generation,
                first: first.digest(),
                second: second.digest(),
            }),
        "{audit:#?}"
    );
}

/// Issue 8 item 4 through the admin: a customer that never got the commit that moved the thread
/// on (here it simply has not fetched it; a hostile relay would withhold it) keeps writing in
/// the old epoch. Past the configured grace the admin refuses those messages and audits each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_epoch_messages_past_the_grace_are_refused_and_audited_as_late() {
    let relay = switchboard_relay::server::start("sqlite::memory:", "127.0.0.1:0")
        .await
        .unwrap();
    let url = relay.url();
    let dir = scratch_dir("admin-late");
    let mut config = config(&dir, &url);
    // No grace at all: every old-epoch message after the next epoch is installed is late.
    config.old_epoch_grace_secs = 0;
    let mut admin = Admin::init(config).await.unwrap();
    let _bot = order_bot(&mut admin, &dir, &url).await;
    let (mut customer, thread) = order_thread(&mut admin, &dir, &url).await;

    // The customer has not applied the assign commit: it still writes in epoch 0.
    let late = customer
        .send(thread, &Content::text("my card ends in 4242"), None)
        .await
        .unwrap();
    assert_eq!(late.header.epoch, Epoch(0));
    let outcome = step_until(&mut admin, |o| {
        matches!(o, Outcome::Event(Event::LateMessage { .. }))
    })
    .await;
    let Outcome::Event(Event::LateMessage {
        sender,
        epoch,
        next,
        ..
    }) = outcome
    else {
        unreachable!()
    };
    assert_eq!((sender, epoch, next), (customer.id(), Epoch(0), Epoch(1)));
    let audit = AuditLog::read(&dir.join("audit.jsonl")).unwrap();
    assert!(
        audit.iter().any(|r| matches!(
            r.event,
            AuditEvent::LateMessage { thread: t, device, epoch: Epoch(0), next: Epoch(1), .. }
                if t == thread && device == customer.id()
        )),
        "{audit:#?}"
    );
}

#[test]
fn old_epoch_grace_is_configurable_and_bounded() {
    let dir = scratch_dir("admin-grace-config");
    assert_eq!(
        config(&dir, "http://127.0.0.1:1").old_epoch_grace_secs,
        switchboard_protocol::DEFAULT_OLD_EPOCH_GRACE_SECS
    );
    let path = dir.join("entity.toml");
    std::fs::write(
        &path,
        "entity = \"acme\"\ndisplay_name = \"Acme\"\nrelay = \"http://127.0.0.1:1\"\n\
         keystore = \"a.keystore\"\nkey_file = \"a.key\"\nold_epoch_grace_secs = 86401\n",
    )
    .unwrap();
    let err = switchboard_admin::Config::load(&path).unwrap_err();
    assert!(err.to_string().contains("old_epoch_grace_secs"), "{err}");
}
