//! KEM key rotation seen from the admin: commits wrap to agents' and customers' current keys,
//! and threads whose members rotated are rekeyed and audited.

use std::time::Duration;

use switchboard_admin::Outcome;
use switchboard_admin::audit::{AuditEvent, AuditLog};
use switchboard_client::{Event, KemRotation};
use switchboard_protocol::{Content, EntityId};
use switchboard_testkit::{scratch_dir, until};

use super::{config, new_customer, order_bot, step_until};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_wrap_to_rotated_keys_and_rotations_trigger_an_audited_rekey() {
    let relay = switchboard_relay::server::start("sqlite::memory:", "127.0.0.1:0")
        .await
        .unwrap();
    let url = relay.url();
    let dir = scratch_dir("admin-rotation");
    let mut admin = switchboard_admin::Admin::init(config(&dir, &url))
        .await
        .unwrap();
    admin.set_key_sweep(Duration::ZERO);
    let mut bot = order_bot(&mut admin, &dir, &url).await;

    // The bot rotates after it was enrolled and deletes its old key at once (no grace): the
    // admin must wrap to the bundle the bot publishes now, not the one on record.
    bot.set_kem_rotation(KemRotation {
        grace: Duration::ZERO,
        ..KemRotation::default()
    });
    let enrolled = admin.agents()[0].bundle.clone();
    bot.rotate_kem().await.unwrap();
    bot.maintain_keys().await.unwrap();
    assert!(!bot.keys().holds_kem_key(&enrolled.kem_key));

    let mut customer = new_customer(&dir, &url).await;
    let acme = EntityId::new("acme").unwrap();
    let thread = customer.open_thread(&acme).await.unwrap();
    customer
        .send(thread, &Content::text("Where is my order 42?"), None)
        .await
        .unwrap();
    step_until(&mut admin, |o| matches!(o, Outcome::Routed { .. })).await;
    let joined = until(&mut bot, |e| {
        matches!(e, Event::Joined { .. } | Event::Refused { .. })
    })
    .await;
    assert!(matches!(joined, Event::Joined { .. }), "{joined:?}");
    assert_eq!(admin.agents()[0].bundle, bot.bundle());

    // The customer rotates: the admin's next sweep rekeys the thread to the new key, audited.
    until(&mut customer, |e| matches!(e, Event::RosterChanged { .. })).await;
    let rotated = customer.rotate_kem().await.unwrap();
    let Outcome::Rekeyed {
        thread: rekeyed,
        epoch,
    } = step_until(&mut admin, |o| matches!(o, Outcome::Rekeyed { .. })).await
    else {
        unreachable!()
    };
    assert_eq!(rekeyed, thread);
    let state = admin.device().thread(thread).unwrap();
    assert_eq!(state.epoch(), epoch);
    assert_eq!(state.roster().get(customer.id()).unwrap().bundle, rotated);
    until(&mut customer, |e| matches!(e, Event::RosterChanged { .. })).await;
    until(&mut bot, |e| matches!(e, Event::RosterChanged { .. })).await;
    // Nothing left to rekey.
    assert!(admin.rekey_rotated_members().await.unwrap().is_empty());
    let log = AuditLog::read(&dir.join("audit.jsonl")).unwrap();
    assert!(log.iter().any(|r| matches!(
        &r.event,
        AuditEvent::Rekeyed { thread: t, epoch: e, .. } if *t == thread && *e == epoch
    )));
}
