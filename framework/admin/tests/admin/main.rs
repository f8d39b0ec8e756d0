//! The admin over a real relay on loopback: routing by rule, handoff arbitration, groups,
//! revocation, the audit log, restarts.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs,
    unreachable_pub
)]

use std::path::Path;
use std::time::Duration;

use switchboard_admin::audit::{AuditEvent, AuditLog};
use switchboard_admin::{Admin, Config, Outcome};
use switchboard_client::{
    ClientError, Device, Event, ExpectedKey, KeystoreSecret, NewDevice, NewRole,
};
use switchboard_protocol::{AgentKind, Content, EntityId, HandoffTarget, Sender, ThreadId};
use switchboard_testkit::{agent_said, gather, new_agent, said_by, scratch_dir, until};

mod attacks;
mod equivocation;
mod rotation;

fn config(dir: &Path, relay: &str) -> Config {
    KeystoreSecret::create_key_file(&dir.join("admin.key")).ok();
    let text = format!(
        r#"
        entity = "acme"
        display_name = "Acme"
        relay = "{relay}"
        keystore = "admin.keystore"
        key_file = "admin.key"
        audit_log = "audit.jsonl"

        [routing]
        bot_first = true
        fallback_team = "support"
        handoff_team = "billing"

        [[rules]]
        keywords = ["order", "shipping"]
        team = "orders"

        [[rules]]
        keywords = ["refund"]
        team = "billing"

        [history]
        on_route = true
        on_handoff = true
        "#
    );
    std::fs::write(dir.join("entity.toml"), text).unwrap();
    Config::load(&dir.join("entity.toml")).unwrap()
}

fn secret() -> KeystoreSecret {
    KeystoreSecret::passphrase("agent passphrase")
}

/// An agent device of acme that checks the admin key against `admin`'s fingerprint.
async fn agent(dir: &Path, relay: &str, name: &str, admin: &Admin) -> Device {
    new_agent(
        &dir.join(format!("{name}.keystore")),
        &secret(),
        relay,
        "acme",
        ExpectedKey::Fingerprint(admin.device().fingerprint()),
    )
    .await
}

/// What the admin expects of `agent`'s key: its fingerprint, as `agent init` prints it.
fn fingerprint_of(agent: &Device) -> ExpectedKey {
    ExpectedKey::Fingerprint(agent.fingerprint())
}

/// Enrols `agent` with the admin under `name`, bound to the agent's own fingerprint.
async fn enrol(admin: &mut Admin, agent: &Device, name: &str, kind: AgentKind, teams: Vec<String>) {
    admin
        .add_agent(name, kind, agent.id(), teams, &fingerprint_of(agent))
        .await
        .unwrap();
}

/// OrderBot (team "orders"), a bot device at `relay` enrolled with the admin.
async fn order_bot(admin: &mut Admin, dir: &Path, relay: &str) -> Device {
    let bot = agent(dir, relay, "orderbot", admin).await;
    enrol(
        admin,
        &bot,
        "OrderBot",
        AgentKind::Bot,
        vec!["orders".into()],
    )
    .await;
    bot
}

/// A customer at `relay` opens a thread with "where is my order 42?", and the admin routes it.
async fn order_thread(admin: &mut Admin, dir: &Path, relay: &str) -> (Device, ThreadId) {
    let mut customer = new_customer(dir, relay).await;
    let thread = customer
        .open_thread(&EntityId::new("acme").unwrap())
        .await
        .unwrap();
    customer
        .send(thread, &Content::text("where is my order 42?"), None)
        .await
        .unwrap();
    step_until(admin, |o| matches!(o, Outcome::Routed { .. })).await;
    (customer, thread)
}

/// A new customer device at `relay`, its keystore in `dir`.
async fn new_customer(dir: &Path, relay: &str) -> Device {
    Device::create(
        &dir.join("customer.keystore"),
        &secret(),
        NewDevice::new(relay, NewRole::Customer),
    )
    .await
    .unwrap()
}

/// Steps the admin until an outcome matches (bounded).
async fn step_until(admin: &mut Admin, want: impl Fn(&Outcome) -> bool) -> Outcome {
    for _ in 0..20 {
        for outcome in admin.step(Duration::from_secs(1)).await.unwrap() {
            if want(&outcome) {
                return outcome;
            }
        }
    }
    panic!("the admin never got there");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_by_rule_arbitrates_handoff_and_audits_every_grant() {
    let relay = switchboard_relay::server::start("sqlite::memory:", "127.0.0.1:0")
        .await
        .unwrap();
    let url = relay.url();
    let dir = scratch_dir("admin");
    let mut admin = Admin::init(config(&dir, &url)).await.unwrap();
    let mut order_bot = agent(&dir, &url, "orderbot", &admin).await;
    let mut dana = agent(&dir, &url, "dana", &admin).await;
    let faq_bot = agent(&dir, &url, "faqbot", &admin).await;
    enrol(
        &mut admin,
        &order_bot,
        "OrderBot",
        AgentKind::Bot,
        vec!["orders".into()],
    )
    .await;
    enrol(
        &mut admin,
        &dana,
        "Dana",
        AgentKind::Human,
        vec!["orders".into(), "billing".into()],
    )
    .await;
    enrol(
        &mut admin,
        &faq_bot,
        "FaqBot",
        AgentKind::Bot,
        vec!["support".into()],
    )
    .await;
    // Names and devices are unique.
    assert!(
        admin
            .add_agent(
                "OrderBot",
                AgentKind::Bot,
                faq_bot.id(),
                vec![],
                &fingerprint_of(&faq_bot)
            )
            .await
            .is_err()
    );

    let mut customer = new_customer(&dir, &url).await;
    let acme = EntityId::new("acme").unwrap();
    let thread = customer.open_thread(&acme).await.unwrap();
    customer
        .send(thread, &Content::text("Where is my order 42?"), None)
        .await
        .unwrap();

    // The keyword rule sends it to the orders team, where the bot goes first.
    let routed = step_until(&mut admin, |o| matches!(o, Outcome::Routed { .. })).await;
    let Outcome::Routed { agent, reason, .. } = routed else {
        unreachable!()
    };
    assert_eq!(agent, "OrderBot");
    assert!(reason.contains("keyword \"order\""), "{reason}");
    // The policy grants history on routing: the bot reads what the customer wrote first.
    let joined = gather(&mut order_bot, |es| {
        es.iter().any(|e| matches!(e, Event::History { .. }))
    })
    .await;
    assert!(matches!(joined[0], Event::Joined { .. }));
    let Some(Event::History { messages, .. }) = joined.last() else {
        panic!("no history: {joined:?}")
    };
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].content, Content::text("Where is my order 42?"));
    assert_eq!(messages[0].sender_info, Sender::Customer);
    order_bot
        .send(thread, &Content::text("Order 42 ships today."), None)
        .await
        .unwrap();
    let reply = until(&mut customer, |e| said_by(e).is_some()).await;
    assert_eq!(
        said_by(&reply).unwrap().0,
        &Sender::Agent {
            display_name: "OrderBot".into(),
            kind: AgentKind::Bot
        }
    );

    // The bot hands off to billing; the admin transfers the thread to Dana in a new epoch.
    order_bot
        .send(
            thread,
            &Content::HandoffRequest {
                target: HandoffTarget::Team("billing".into()),
                note: "wants a refund".into(),
            },
            None,
        )
        .await
        .unwrap();
    let handed = step_until(&mut admin, |o| matches!(o, Outcome::HandedOff { .. })).await;
    assert!(matches!(handed, Outcome::HandedOff { ref to, .. } if to == "Dana"));
    until(&mut order_bot, |e| matches!(e, Event::Removed { .. })).await;
    // Dana gets the conversation so far: the customer's question, the bot's answer and its
    // handoff request, each verified against the epoch it was sent in.
    let joined = gather(&mut dana, |es| {
        es.iter().any(|e| matches!(e, Event::History { .. }))
    })
    .await;
    let Some(Event::History { messages, .. }) = joined.last() else {
        panic!("no history: {joined:?}")
    };
    let said: Vec<(String, Option<&str>)> = messages
        .iter()
        .map(|m| (format!("{:?}", m.sender_info), m.content.as_text()))
        .collect();
    assert_eq!(said.len(), 3, "{said:?}");
    assert_eq!(said[0].1, Some("Where is my order 42?"));
    assert!(said[1].0.contains("OrderBot") && said[1].1 == Some("Order 42 ships today."));
    assert!(matches!(
        messages[2].content,
        Content::HandoffRequest { .. }
    ));
    dana.send(
        thread,
        &Content::text("Dana here, refund on its way."),
        None,
    )
    .await
    .unwrap();
    let from_dana = until(&mut customer, |e| agent_said(e, "Dana")).await;
    assert!(matches!(
        said_by(&from_dana).unwrap().0,
        Sender::Agent {
            kind: AgentKind::Human,
            ..
        }
    ));
    assert!(
        order_bot.thread(thread).is_none(),
        "the bot holds nothing of the thread"
    );

    // In a group every agent may ask for a handoff; a team nobody is in is refused (and
    // audited), and nothing changes.
    admin.add_to_group(thread, "FaqBot").await.unwrap();
    let mut faq_bot = faq_bot;
    until(&mut faq_bot, |e| matches!(e, Event::Joined { .. })).await;
    faq_bot
        .send(
            thread,
            &Content::HandoffRequest {
                target: HandoffTarget::Team("legal".into()),
                note: "lawyer?".into(),
            },
            None,
        )
        .await
        .unwrap();
    let refused = step_until(&mut admin, |o| matches!(o, Outcome::HandoffRefused { .. })).await;
    assert!(
        matches!(refused, Outcome::HandoffRefused { ref reason, .. } if reason.contains("legal"))
    );

    // Revoking Dana removes her from the thread (a new epoch) and unregisters her.
    let removed_from = admin.revoke_agent("Dana").await.unwrap();
    assert_eq!(removed_from, [thread]);
    until(&mut dana, |e| matches!(e, Event::Removed { .. })).await;
    assert!(admin.agents().iter().all(|a| a.name != "Dana"));

    // The audit log has every grant and revocation, in order, and no message text.
    let log = AuditLog::read(&dir.join("audit.jsonl")).unwrap();
    let kinds: Vec<&str> = log
        .iter()
        .map(|r| match &r.event {
            AuditEvent::CredentialIssued { .. } => "issued",
            AuditEvent::CredentialRevoked { .. } => "credential_revoked",
            AuditEvent::ThreadOpened { .. } => "opened",
            AuditEvent::Granted { .. } => "granted",
            AuditEvent::Revoked { .. } => "revoked",
            AuditEvent::HandoffRefused { .. } => "handoff_refused",
            AuditEvent::HistoryGranted { .. } => "history",
            AuditEvent::Rekeyed { .. } => "rekeyed",
            AuditEvent::Equivocation { .. } => "equivocation",
            AuditEvent::LateMessage { .. } => "late_message",
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "issued",
            "issued",
            "issued",
            "opened",
            "granted", // OrderBot, by rule
            "history", // ... with the customer's first message
            "granted", // Dana, by handoff
            "revoked", // OrderBot, transferred (same commit: audited before it is posted)
            "history", // ... with the conversation so far
            "granted", // FaqBot, added to the group
            "history",
            "handoff_refused",
            "revoked", // Dana, revoked
            "credential_revoked",
        ]
    );
    let text = std::fs::read_to_string(dir.join("audit.jsonl")).unwrap();
    assert!(!text.contains("order 42") && !text.contains("refund on its way"));

    // The admin restarts with its agents and threads.
    drop(admin);
    let admin = Admin::open(config(&dir, &url)).await.unwrap();
    let names: Vec<&str> = admin.agents().iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["OrderBot", "FaqBot"]);
    assert!(admin.device().thread(thread).is_some());
    let _: ThreadId = thread;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_in_a_device_store_routes_restarts_and_routes_on() {
    use std::sync::Arc;
    use switchboard_client::store::{DeviceStore, MemoryStore};

    let relay = switchboard_relay::server::start("sqlite::memory:", "127.0.0.1:0")
        .await
        .unwrap();
    let url = relay.url();
    let dir = scratch_dir("admin-store");
    let store = Arc::new(MemoryStore::new());
    let mut admin = Admin::init_in(
        config(&dir, &url),
        Arc::clone(&store) as Arc<dyn DeviceStore>,
    )
    .await
    .unwrap();
    let admin_id = admin.device().id();
    let mut bot = order_bot(&mut admin, &dir, &url).await;
    let (mut customer, thread) = order_thread(&mut admin, &dir, &url).await;
    assert_eq!(store.thread_rows(admin_id), 1);

    // Restarted from its keystore and the store: the agent registry and the thread are there.
    admin.flush_acks().await;
    drop(admin);
    let mut admin = Admin::open_in(config(&dir, &url), Arc::clone(&store) as _)
        .await
        .unwrap();
    assert_eq!(admin.agents().len(), 1);
    assert!(admin.device().thread(thread).is_some());

    // A second customer's thread is routed after the restart; the first stays as it was.
    let second = dir.join("second");
    std::fs::create_dir_all(&second).unwrap();
    let writes = store.thread_writes();
    let (_other, other_thread) = order_thread(&mut admin, &second, &url).await;
    assert_ne!(other_thread, thread);
    assert_eq!(store.thread_rows(admin_id), 2);
    assert!(store.thread_writes() > writes);
    let joined = gather(&mut bot, |e| {
        e.iter()
            .filter(|e| matches!(e, Event::Joined { .. }))
            .count()
            >= 2
    })
    .await;
    assert_eq!(
        joined
            .iter()
            .filter(|e| matches!(e, Event::Joined { .. }))
            .count(),
        2
    );
    bot.send(other_thread, &Content::text("Order 42 ships today."), None)
        .await
        .unwrap();
    customer
        .send(thread, &Content::text("thanks!"), None)
        .await
        .unwrap();
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gives_the_floor_to_one_agent_of_a_group() {
    let relay = switchboard_relay::server::start("sqlite::memory:", "127.0.0.1:0")
        .await
        .unwrap();
    let url = relay.url();
    let dir = scratch_dir("admin-floor");
    let mut admin = Admin::init(config(&dir, &url)).await.unwrap();
    let mut order_bot = order_bot(&mut admin, &dir, &url).await;
    let mut dana = agent(&dir, &url, "dana", &admin).await;
    enrol(
        &mut admin,
        &dana,
        "Dana",
        AgentKind::Human,
        vec!["billing".into()],
    )
    .await;
    let (mut customer, thread) = order_thread(&mut admin, &dir, &url).await;
    until(&mut order_bot, |e| matches!(e, Event::Joined { .. })).await;

    // Not a member yet: the floor cannot go to Dana, and nothing changes.
    assert!(admin.give_floor(thread, "Dana").await.is_err());
    assert!(matches!(
        admin.give_floor(thread, "Nobody").await,
        Err(switchboard_admin::AdminError::UnknownAgent(_))
    ));
    admin.add_to_group(thread, "Dana").await.unwrap();
    until(&mut dana, |e| matches!(e, Event::Joined { .. })).await;
    let epoch = admin.give_floor(thread, "Dana").await.unwrap();
    until(
        &mut order_bot,
        |e| matches!(e, Event::RosterChanged { epoch: at, .. } if *at == epoch),
    )
    .await;

    // The bot stays a member but may no longer say more than a receipt; Dana may.
    let refused = order_bot
        .send(thread, &Content::text("still here"), None)
        .await;
    assert!(
        matches!(&refused, Err(ClientError::Protocol(_))),
        "{refused:?}"
    );
    dana.send(thread, &Content::text("Dana has it now."), None)
        .await
        .unwrap();
    until(&mut customer, |e| agent_said(e, "Dana")).await;
}
