//! The client against a real relay on a loopback socket: the whole flow over HTTP, restarts from
//! the keystore, and the keystore's protection at rest.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs,
    unreachable_pub
)]

mod failures;
mod flow;
mod keystore;
mod rotation;
mod store;
mod stream;

use std::path::PathBuf;
use std::time::Duration;

use switchboard_client::{Device, Event, ExpectedKey, KeystoreSecret, NewDevice, NewRole};
use switchboard_protocol::{
    AgentCredential, AgentKind, CommitAction, CredentialRequest, EntityId, Member, ReceivedMessage,
    ThreadId,
};

/// A relay on 127.0.0.1 with an in-memory SQLite store; stops when dropped.
pub async fn relay() -> switchboard_relay::server::Running {
    switchboard_relay::server::start("sqlite::memory:", "127.0.0.1:0")
        .await
        .unwrap()
}

/// A fresh directory for one test's keystores.
pub fn scratch() -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "switchboard-client-{}-{}",
        std::process::id(),
        switchboard_protocol::DeviceId::random(
            &mut switchboard_protocol::Csprng::from_os().unwrap()
        )
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub fn secret() -> KeystoreSecret {
    KeystoreSecret::passphrase("correct horse battery staple")
}

/// An entity with an admin, plus its agents and a customer.
#[derive(Debug)]
pub struct Cast {
    pub dir: PathBuf,
    pub server: switchboard_relay::server::Running,
    pub relay: String,
    pub entity: EntityId,
    pub admin: Device,
    pub customer: Device,
}

impl Cast {
    pub async fn new() -> Self {
        let server = relay().await;
        let relay = server.url();
        let dir = scratch();
        let entity = EntityId::new("acme").unwrap();
        let admin = Device::create(
            &dir.join("admin.keystore"),
            &secret(),
            NewDevice::new(
                &relay,
                NewRole::Admin {
                    entity: entity.clone(),
                    display_name: "Acme".into(),
                },
            ),
        )
        .await
        .unwrap();
        let customer = Device::create(
            &dir.join("customer.keystore"),
            &secret(),
            NewDevice::new(&relay, NewRole::Customer),
        )
        .await
        .unwrap();
        Self {
            dir,
            server,
            relay,
            entity,
            admin,
            customer,
        }
    }

    /// A new agent device of the entity, named `name` in its keystore file.
    pub async fn agent(&self, name: &str) -> Device {
        Device::create(
            &self.dir.join(format!("{name}.keystore")),
            &secret(),
            NewDevice::new(
                &self.relay,
                NewRole::Agent {
                    entity: self.entity.clone(),
                    admin: ExpectedKey::Fingerprint(self.admin.fingerprint()),
                },
            ),
        )
        .await
        .unwrap()
    }

    /// The admin's credential for `agent` as a roster member.
    pub fn member(&self, agent: &Device, name: &str, kind: AgentKind) -> Member {
        let bundle = agent.bundle();
        let now = switchboard_client::now();
        let credential = AgentCredential::issue(
            self.admin.keys(),
            &CredentialRequest {
                entity: &self.entity,
                agent: &bundle,
                display_name: name,
                kind,
                issued_at: now,
                expires_at: now.plus(3600),
            },
        )
        .unwrap();
        Member::agent(bundle, credential)
    }
}

impl Cast {
    /// The admin assigns `thread` to `bot` as "OrderBot"; the bot joins and the customer sees
    /// the new roster.
    pub async fn assign_bot(&mut self, thread: ThreadId, bot: &mut Device) {
        let member = self.member(bot, "OrderBot", AgentKind::Bot);
        self.admin
            .commit(
                thread,
                CommitAction::Assign {
                    agent: Box::new(member),
                },
            )
            .await
            .unwrap();
        assert!(matches!(events(bot, 1).await[0], Event::Joined { .. }));
        assert!(matches!(
            events(&mut self.customer, 1).await[0],
            Event::RosterChanged { .. }
        ));
    }
}

/// Receives until `want` events arrived (bounded: gives up after 20 rounds of 1 s).
pub async fn events(device: &mut Device, want: usize) -> Vec<Event> {
    let mut out = Vec::new();
    for _ in 0..20 {
        out.extend(
            device
                .receive_retrying(Duration::from_secs(1), Duration::from_secs(10))
                .await
                .unwrap(),
        );
        if out.len() >= want {
            break;
        }
    }
    assert_eq!(out.len(), want, "events: {out:#?}");
    out
}

/// The messages among `events`.
pub fn messages(events: &[Event]) -> Vec<&ReceivedMessage> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Message { message, .. } => Some(message),
            _ => None,
        })
        .collect()
}
