//! Attacks by a hostile relay on the admin and its agents, through the client: a proxy in front
//! of the real relay ([`HostileRelay`]) replays, substitutes and watches.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use switchboard_admin::audit::AuditEvent;
use switchboard_admin::{Admin, Outcome};
use switchboard_client::{ClientError, Device, Event, NewDevice, NewRole};
use switchboard_protocol::api::ItemKind;
use switchboard_protocol::{AgentKind, Content, EntityId};
use switchboard_testkit::hostile::{HostileRelay, Method};
use switchboard_testkit::{scratch_dir, until};

use crate::{agent, config, secret, step_until};

/// Receives once on `device` (up to 1 s).
async fn receive(device: &mut Device) -> Vec<Event> {
    device.receive(Duration::from_secs(1)).await.unwrap()
}

/// An agent removed from a thread (its device dropped the thread's state) is sent the old
/// commit that added it again, by a relay that kept it. The device refuses it (it remembers,
/// durably, that it saw a later epoch of the thread and was removed), also after a restart, so
/// it never seals again under the epoch it left (same key, same generations: keystream reuse)
/// and never answers the thread's replayed messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removed_agent_refuses_a_replayed_add_commit_through_the_client() {
    let relay = switchboard_relay::server::start("sqlite::memory:", "127.0.0.1:0")
        .await
        .unwrap();
    let url = relay.url();
    let hostile = HostileRelay::start(&url).await;
    let dir = scratch_dir("admin-replay");
    let mut admin = Admin::init(config(&dir, &url)).await.unwrap();
    // The bot talks to the relay through the hostile proxy.
    let mut bot = agent(&dir, &hostile.url(), "orderbot").await;
    admin
        .add_agent("OrderBot", AgentKind::Bot, bot.id(), vec!["orders".into()])
        .await
        .unwrap();
    let mut customer = Device::create(
        &dir.join("customer.keystore"),
        &secret(),
        NewDevice::new(&url, NewRole::Customer),
    )
    .await
    .unwrap();
    let thread = customer
        .open_thread(&EntityId::new("acme").unwrap())
        .await
        .unwrap();
    customer
        .send(thread, &Content::text("where is my order 42?"), None)
        .await
        .unwrap();
    step_until(&mut admin, |o| matches!(o, Outcome::Routed { .. })).await;
    until(&mut bot, |e| matches!(e, Event::Joined { .. })).await;
    bot.send(thread, &Content::text("Order 42 ships today"), None)
        .await
        .unwrap();

    admin.remove_from_thread(thread, "OrderBot").await.unwrap();
    until(&mut bot, |e| matches!(e, Event::Removed { .. })).await;
    assert!(bot.thread(thread).is_none());

    // The relay re-delivers the commit that added the bot (its wrap is valid for 30 days).
    let add = hostile
        .delivered(bot.id())
        .into_iter()
        .find(|item| item.kind == ItemKind::Commit && item.thread == thread)
        .expect("the add commit went through the proxy");
    hostile.inject(bot.id(), add.clone());
    let events = receive(&mut bot).await;
    assert!(
        !events.iter().any(|e| matches!(e, Event::Joined { .. })),
        "the removed bot rejoined from a replayed commit: {events:#?}"
    );
    assert!(
        events.iter().any(|e| matches!(
            e,
            Event::Refused {
                kind: ItemKind::Commit,
                ..
            }
        )),
        "the replayed commit is reported as refused: {events:#?}"
    );
    assert!(bot.thread(thread).is_none());
    assert!(matches!(
        bot.send(thread, &Content::text("refund approved"), None)
            .await,
        Err(ClientError::UnknownThread(_))
    ));

    // What the device remembers is in its keystore: after a restart it refuses again.
    drop(bot);
    let mut bot = Device::open(&dir.join("orderbot.keystore"), &secret(), None)
        .await
        .unwrap();
    hostile.inject(bot.id(), add);
    let events = receive(&mut bot).await;
    assert!(
        !events.iter().any(|e| matches!(e, Event::Joined { .. })),
        "after a restart the removed bot rejoined from a replayed commit: {events:#?}"
    );
    assert!(bot.thread(thread).is_none());
}

/// Grant and revocation lines of an audit log, as (event, epoch).
type Audited = Vec<(&'static str, u64)>;

/// The audit lines of one log, as (event, epoch) pairs for grants and revocations.
fn audited(path: &std::path::Path) -> Audited {
    let Ok(records) = switchboard_admin::audit::AuditLog::read(path) else {
        return Vec::new();
    };
    records
        .into_iter()
        .filter_map(|r| match r.event {
            AuditEvent::Granted { epoch, .. } => Some(("granted", epoch.0)),
            AuditEvent::Revoked { epoch, .. } => Some(("revoked", epoch.0)),
            _ => None,
        })
        .collect()
}

/// Every commit the admin posts is audited first: at the moment the relay receives the commit,
/// the audit line for the grant (assign) or the revocation (removal) of its epoch is already in
/// the log file (written and fsync'd), so a crash between the two can never leave a grant the
/// audit does not show.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_line_is_on_disk_before_the_commit_it_records_is_posted() {
    let relay = switchboard_relay::server::start("sqlite::memory:", "127.0.0.1:0")
        .await
        .unwrap();
    let url = relay.url();
    let watcher = HostileRelay::start(&url).await;
    let dir = scratch_dir("admin-audit-order");
    // The admin talks to the relay through the watching proxy.
    let mut admin = Admin::init(config(&dir, &watcher.url())).await.unwrap();
    let audit_log = dir.join("audit.jsonl");
    let at_post: Arc<Mutex<Vec<Audited>>> = Arc::default();
    {
        let at_post = Arc::clone(&at_post);
        let audit_log = audit_log.clone();
        watcher.watch(Box::new(move |method, path| {
            if method == Method::POST && path.ends_with("/commits") {
                at_post.lock().unwrap().push(audited(&audit_log));
            }
        }));
    }
    let mut bot = agent(&dir, &url, "orderbot").await;
    admin
        .add_agent("OrderBot", AgentKind::Bot, bot.id(), vec!["orders".into()])
        .await
        .unwrap();
    let mut customer = Device::create(
        &dir.join("customer.keystore"),
        &secret(),
        NewDevice::new(&url, NewRole::Customer),
    )
    .await
    .unwrap();
    let thread = customer
        .open_thread(&EntityId::new("acme").unwrap())
        .await
        .unwrap();
    customer
        .send(thread, &Content::text("where is my order 42?"), None)
        .await
        .unwrap();
    step_until(&mut admin, |o| matches!(o, Outcome::Routed { .. })).await;
    until(&mut bot, |e| matches!(e, Event::Joined { .. })).await;
    admin.remove_from_thread(thread, "OrderBot").await.unwrap();

    let seen = at_post.lock().unwrap().clone();
    assert_eq!(seen.len(), 2, "two commits were posted: {seen:?}");
    assert!(
        seen[0].contains(&("granted", 1)),
        "when the assign commit (epoch 1) reached the relay the audit log held {:?}",
        seen[0]
    );
    assert!(
        seen[1].contains(&("revoked", 2)),
        "when the removal commit (epoch 2) reached the relay the audit log held {:?}",
        seen[1]
    );
}
