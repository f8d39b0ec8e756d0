//! Attacks by a hostile relay on the admin and its agents, through the client: a proxy in front
//! of the real relay ([`HostileRelay`]) replays, substitutes and watches.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use switchboard_admin::audit::AuditEvent;
use switchboard_admin::{Admin, AdminError};
use switchboard_client::{ClientError, Device, Event, ExpectedKey, NewDevice, NewRole};
use switchboard_protocol::api::ItemKind;
use switchboard_protocol::{AgentKind, Content, EntityId};
use switchboard_testkit::hostile::{HostileRelay, Method, Slip};
use switchboard_testkit::{gather, scratch_dir, until};

use crate::{agent, config, fingerprint_of, order_bot, order_thread, secret};

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
    let mut bot = order_bot(&mut admin, &dir, &hostile.url()).await;
    let (_customer, thread) = order_thread(&mut admin, &dir, &url).await;
    until(&mut bot, |e| matches!(e, Event::Joined { .. })).await;
    bot.send(thread, &Content::text("Order 42 ships today"), None)
        .await
        .unwrap();

    // The commit that added the bot, as the relay delivered it (its wrap is valid for 30 days).
    let add = hostile
        .delivered(bot.id())
        .into_iter()
        .find(|item| item.kind == ItemKind::Commit && item.thread == thread)
        .expect("the add commit went through the proxy");

    // The admin removes the bot; the relay sends the removal and, right after it, the old add.
    hostile.inject(bot.id(), add.clone(), Slip::After);
    admin.remove_from_thread(thread, "OrderBot").await.unwrap();
    let events = gather(&mut bot, |events| {
        events.iter().any(|e| matches!(e, Event::Removed { .. }))
    })
    .await;
    let events = [events, receive(&mut bot).await].concat();
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

    // What the device remembers is in its keystore: after a restart it refuses the replay
    // again, and still accepts the admin adding it anew (a new commit at a later epoch).
    drop(bot);
    let mut bot = Device::open(&dir.join("orderbot.keystore"), &secret(), None)
        .await
        .unwrap();
    hostile.inject(bot.id(), add, Slip::Before);
    let epoch = admin.add_to_group(thread, "OrderBot").await.unwrap();
    let events = gather(&mut bot, |events| {
        events.iter().any(|e| matches!(e, Event::Joined { .. }))
    })
    .await;
    assert!(
        matches!(
            events.first(),
            Some(Event::Refused {
                kind: ItemKind::Commit,
                ..
            })
        ),
        "after a restart the replayed commit is refused: {events:#?}"
    );
    let joined: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            Event::Joined { epoch, .. } => Some(*epoch),
            _ => None,
        })
        .collect();
    assert_eq!(
        joined,
        [epoch],
        "only the new commit is joined: {events:#?}"
    );
    bot.send(thread, &Content::text("back again"), None)
        .await
        .unwrap();
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
    let mut bot = order_bot(&mut admin, &dir, &url).await;
    let (_customer, thread) = order_thread(&mut admin, &dir, &url).await;
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

/// A relay that substitutes the agent's key bundle when the admin enrols it (`add-agent`)
/// would become the agent: the admin would sign a credential for the relay's key and wrap every
/// thread routed to "Dana" to it. Bound to the fingerprint Dana's `agent init` printed, the
/// admin refuses the substitute and issues nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_agent_refuses_a_bundle_the_relay_substituted() {
    let relay = switchboard_relay::server::start("sqlite::memory:", "127.0.0.1:0")
        .await
        .unwrap();
    let url = relay.url();
    let hostile = HostileRelay::start(&url).await;
    let dir = scratch_dir("admin-enrol-bundle");
    let mut admin = Admin::init(config(&dir, &hostile.url())).await.unwrap();
    let dana = agent(&dir, &url, "dana", &admin).await;
    // Mallory's keys under Dana's device id: a bundle that verifies (self-signed).
    let mut rng = switchboard_protocol::Csprng::from_os().unwrap();
    let mallory = switchboard_protocol::DeviceKeys::generate(
        dana.id(),
        switchboard_protocol::CipherSuite::default(),
        &mut rng,
    );
    hostile.replace_answer(
        &format!("/v1/devices/{}", dana.id()),
        serde_json::to_value(mallory.bundle(switchboard_client::now())).unwrap(),
    );
    let err = admin
        .add_agent(
            "Dana",
            AgentKind::Human,
            dana.id(),
            vec!["orders".into()],
            &fingerprint_of(&dana),
        )
        .await
        .map(|record| record.bundle.identity_key.fingerprint())
        .expect_err("the admin signed a credential for the key the relay served");
    match err {
        AdminError::Client(ClientError::FingerprintMismatch {
            expected, served, ..
        }) => {
            assert_eq!(expected, dana.fingerprint());
            assert_eq!(served, mallory.identity_public().fingerprint());
        }
        other => panic!("refused, but not for the fingerprint: {other}"),
    }
    assert!(admin.agents().is_empty(), "nothing was issued or recorded");
    let issued = switchboard_admin::audit::AuditLog::read(&dir.join("audit.jsonl")).unwrap();
    assert!(
        !issued
            .iter()
            .any(|r| matches!(r.event, AuditEvent::CredentialIssued { .. })),
        "{issued:?}"
    );
    // With the relay honest again, the same command enrols the real Dana.
    drop((hostile, admin));
    let mut admin = Admin::open(config(&dir, &url)).await.unwrap();
    let record = admin
        .add_agent(
            "Dana",
            AgentKind::Human,
            dana.id(),
            vec!["orders".into()],
            &fingerprint_of(&dana),
        )
        .await
        .unwrap();
    assert_eq!(record.bundle.identity_key, dana.keys().identity_public());
}

/// A relay that substitutes the admin's directory record when an agent is set up (`agent
/// init`) would make the agent pin the relay's key as its admin (and accept its commits). Bound
/// to the fingerprint `admin init` printed, the agent refuses and no keystore is created.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_init_refuses_an_admin_key_the_relay_substituted() {
    let relay = switchboard_relay::server::start("sqlite::memory:", "127.0.0.1:0")
        .await
        .unwrap();
    let url = relay.url();
    let hostile = HostileRelay::start(&url).await;
    let dir = scratch_dir("admin-enrol-admin");
    let admin = Admin::init(config(&dir, &url)).await.unwrap();
    let mut rng = switchboard_protocol::Csprng::from_os().unwrap();
    let mallory = switchboard_protocol::DeviceKeys::generate(
        admin.device().id(),
        switchboard_protocol::CipherSuite::default(),
        &mut rng,
    );
    let record = switchboard_protocol::api::DirectoryRecord {
        v: switchboard_protocol::Version,
        entity: EntityId::new("acme").unwrap(),
        display_name: "Acme".into(),
        admin: mallory.bundle(switchboard_client::now()),
    };
    hostile.replace_answer("/v1/entities/acme", serde_json::to_value(record).unwrap());
    let expected = ExpectedKey::Fingerprint(admin.device().fingerprint());
    let result = Device::create(
        &dir.join("dana.keystore"),
        &secret(),
        NewDevice::new(
            hostile.url(),
            NewRole::Agent {
                entity: EntityId::new("acme").unwrap(),
                admin: expected.clone(),
            },
        ),
    )
    .await;
    match result {
        Err(ClientError::FingerprintMismatch {
            expected, served, ..
        }) => {
            assert_eq!(expected, admin.device().fingerprint());
            assert_eq!(served, mallory.identity_public().fingerprint());
        }
        Err(other) => panic!("refused, but not for the fingerprint: {other}"),
        Ok(dana) => {
            let switchboard_client::DeviceRole::Agent { admin_key, .. } = dana.role() else {
                panic!("an agent");
            };
            panic!(
                "the agent pinned the admin key the relay served ({})",
                admin_key.fingerprint()
            );
        }
    }
    assert!(!dir.join("dana.keystore").exists());
    // Through the honest relay, the same fingerprint sets Dana up with the real admin key.
    let dana = Device::create(
        &dir.join("dana.keystore"),
        &secret(),
        NewDevice::new(
            &url,
            NewRole::Agent {
                entity: EntityId::new("acme").unwrap(),
                admin: expected,
            },
        ),
    )
    .await
    .unwrap();
    assert!(matches!(
        dana.role(),
        switchboard_client::DeviceRole::Agent { admin_key, .. }
            if *admin_key == admin.device().keys().identity_public()
    ));
}
