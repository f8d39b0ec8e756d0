//! A whole Switchboard system on loopback in one test process, for the end-to-end tests of the
//! bots in bots/ and of examples/ (shared source: included with
//! `#[path = "../../common/world.rs"] mod world;`): an in-process relay, Acme's admin stepped
//! in the background, agents enrolled by the admin, customers as real `Device`s, and bots run
//! by the SDK's `Runtime` over a memory store. Every wait is bounded.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    dead_code,
    missing_docs,
    unreachable_pub
)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use switchboard::prelude::*;
use switchboard::store::BotStore;
use switchboard::store::memory::MemoryStore;
use switchboard_admin::{Admin, Config, Outcome};
use switchboard_client::{Device, Event, ExpectedKey, NewDevice, NewRole};
use switchboard_testkit::{new_agent, scratch_dir};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// How many rounds of 1 s a wait may take.
const ROUNDS: usize = 60;

/// An agent the admin enrols: its credential name, kind and team.
#[derive(Clone, Debug)]
pub struct AgentSpec {
    pub name: &'static str,
    pub kind: AgentKind,
    pub team: &'static str,
    /// Keep the keystore as `STEM.keystore`, unlocked by the key file `STEM.key` (default:
    /// `<name>.keystore` and a passphrase).
    pub key_file: Option<&'static str>,
}

impl AgentSpec {
    /// With its keystore at `STEM.keystore` and a key file `STEM.key` in the world's directory.
    pub fn with_key_file(mut self, stem: &'static str) -> Self {
        self.key_file = Some(stem);
        self
    }
}

/// A bot agent of `team`.
pub fn bot(name: &'static str, team: &'static str) -> AgentSpec {
    AgentSpec {
        name,
        kind: AgentKind::Bot,
        team,
        key_file: None,
    }
}

/// A human agent of `team`.
pub fn human(name: &'static str, team: &'static str) -> AgentSpec {
    AgentSpec {
        name,
        kind: AgentKind::Human,
        team,
        key_file: None,
    }
}

/// What the admin of the world is asked to do from the test.
enum Command {
    AddToGroup(ThreadId, String),
}

/// Acme's routing: `rules` (keywords -> team), bots first, unmatched threads to `fallback`.
pub struct Routing {
    pub rules: Vec<(Vec<&'static str>, &'static str)>,
    pub fallback: &'static str,
    pub handoff_team: &'static str,
}

pub struct World {
    _relay: switchboard_relay::server::Running,
    pub url: String,
    pub dir: PathBuf,
    admin: Option<(JoinHandle<Admin>, Arc<AtomicBool>)>,
    commands: mpsc::UnboundedSender<Command>,
    outcomes: mpsc::UnboundedReceiver<Outcome>,
    keystores: HashMap<&'static str, (PathBuf, KeystoreSecret)>,
}

pub fn secret() -> KeystoreSecret {
    KeystoreSecret::passphrase("agent passphrase")
}

fn config(dir: &Path, relay: &str, routing: &Routing) -> Config {
    KeystoreSecret::create_key_file(&dir.join("admin.key")).ok();
    let mut rules = String::new();
    for (keywords, team) in &routing.rules {
        let keywords: Vec<String> = keywords.iter().map(|k| format!("{k:?}")).collect();
        rules.push_str(&format!(
            "[[rules]]\nkeywords = [{}]\nteam = {team:?}\n\n",
            keywords.join(", ")
        ));
    }
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
fallback_team = {fallback:?}
handoff_team = {handoff:?}

{rules}
[history]
on_route = true
on_handoff = true
"#,
        fallback = routing.fallback,
        handoff = routing.handoff_team,
    );
    std::fs::write(dir.join("entity.toml"), text).unwrap();
    Config::load(&dir.join("entity.toml")).unwrap()
}

impl World {
    /// A relay, Acme's admin with `routing`, and `agents` enrolled (their keystores kept for
    /// [`World::runtime`]).
    pub async fn new(name: &str, routing: &Routing, agents: &[AgentSpec]) -> Self {
        let _ = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::WARN)
            .with_test_writer()
            .try_init();
        let relay = switchboard_relay::server::start("sqlite::memory:", "127.0.0.1:0")
            .await
            .unwrap();
        let url = relay.url();
        let dir = scratch_dir(name);
        let mut admin = Admin::init(config(&dir, &url, routing)).await.unwrap();
        let expected = ExpectedKey::Fingerprint(admin.device().fingerprint());
        let mut keystores = HashMap::new();
        for agent in agents {
            let (path, agent_secret) = match agent.key_file {
                Some(stem) => {
                    let key = dir.join(format!("{stem}.key"));
                    KeystoreSecret::create_key_file(&key).unwrap();
                    (
                        dir.join(format!("{stem}.keystore")),
                        KeystoreSecret::KeyFile(key),
                    )
                }
                None => (
                    dir.join(format!("{}.keystore", agent.name.to_lowercase())),
                    secret(),
                ),
            };
            let device = new_agent(&path, &agent_secret, &url, "acme", expected.clone()).await;
            admin
                .add_agent(
                    agent.name,
                    agent.kind,
                    device.id(),
                    vec![agent.team.to_owned()],
                    &ExpectedKey::Fingerprint(device.fingerprint()),
                )
                .await
                .unwrap();
            keystores.insert(agent.name, (path, agent_secret));
        }
        let (tx, outcomes) = mpsc::unbounded_channel();
        let (commands, mut rx) = mpsc::unbounded_channel::<Command>();
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let task = tokio::spawn(async move {
            while !stopping.load(Ordering::Relaxed) {
                while let Ok(command) = rx.try_recv() {
                    match command {
                        Command::AddToGroup(thread, name) => {
                            admin.add_to_group(thread, &name).await.unwrap();
                        }
                    }
                }
                for outcome in admin.step(Duration::from_millis(300)).await.unwrap() {
                    let _ = tx.send(outcome);
                }
            }
            admin
        });
        Self {
            _relay: relay,
            url,
            dir,
            admin: Some((task, stop)),
            commands,
            outcomes,
            keystores,
        }
    }

    /// The keystore of the agent `name`.
    pub fn keystore(&self, name: &str) -> &Path {
        &self.keystores.get(name).expect("an enrolled agent").0
    }

    /// A runtime builder for the agent `name` over a fresh memory store (the bot still to be
    /// added).
    pub fn builder(&self, name: &str) -> RuntimeBuilder {
        let store: Arc<dyn BotStore> = Arc::new(MemoryStore::new());
        Runtime::builder()
            .keystore(self.keystore(name))
            .secret(
                self.keystores
                    .get(name)
                    .expect("an enrolled agent")
                    .1
                    .clone(),
            )
            .store_backend(store)
            .instance(format!("test-{name}"))
            .shutdown_timeout(Duration::from_secs(10))
    }

    /// Builds and starts `bot` as the agent `name`.
    pub async fn start(&self, name: &str, bot: impl Bot) -> Running {
        spawn(self.builder(name).bot(bot).build().await.unwrap())
    }

    /// A new customer who opens a thread with `first` as its first message.
    pub async fn customer(&self, name: &str, first: &str) -> (Device, ThreadId) {
        let mut customer = Device::create(
            &self.dir.join(format!("{name}.keystore")),
            &secret(),
            NewDevice::new(&self.url, NewRole::Customer),
        )
        .await
        .unwrap();
        let thread = customer
            .open_thread(&EntityId::new("acme").unwrap())
            .await
            .unwrap();
        customer
            .send(thread, &Content::text(first), None)
            .await
            .unwrap();
        (customer, thread)
    }

    /// Waits (bounded) for an admin outcome that matches.
    pub async fn outcome(&mut self, want: impl Fn(&Outcome) -> bool) -> Outcome {
        let mut seen = Vec::new();
        for _ in 0..ROUNDS {
            match tokio::time::timeout(Duration::from_secs(1), self.outcomes.recv()).await {
                Ok(Some(outcome)) if want(&outcome) => return outcome,
                Ok(Some(outcome)) => seen.push(outcome),
                _ => {}
            }
        }
        panic!("the admin never got there; it saw {seen:#?}");
    }

    /// Asks the admin to add the agent `name` to `thread` (making it a group).
    pub fn add_to_group(&self, thread: ThreadId, name: &str) {
        self.commands
            .send(Command::AddToGroup(thread, name.to_owned()))
            .unwrap();
    }

    pub async fn stop_admin(&mut self) {
        if let Some((task, stop)) = self.admin.take() {
            stop.store(true, Ordering::Relaxed);
            tokio::time::timeout(Duration::from_secs(30), task)
                .await
                .expect("the admin stops")
                .unwrap();
        }
    }
}

/// A runtime running in the background.
pub struct Running {
    handle: RuntimeHandle,
    task: JoinHandle<Result<(), BotError>>,
}

/// Runs `runtime` in the background.
pub fn spawn(runtime: Runtime) -> Running {
    let handle = runtime.handle();
    let task = tokio::spawn(runtime.run_until(std::future::pending()));
    Running { handle, task }
}

impl Running {
    /// Shuts the runtime down gracefully (bounded) and checks it ended well.
    pub async fn stop(self) {
        self.handle.shutdown();
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("the runtime shuts down")
            .unwrap()
            .unwrap();
    }
}

/// The texts the agent named `name` said in `thread` (verified by its credential), with its
/// kind, from a device's events.
pub fn said(events: &[Event], thread: ThreadId, name: &str) -> Vec<String> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Message {
                thread: t, message, ..
            } if *t == thread => match (&message.sender_info, &message.content) {
                (
                    Sender::Agent { display_name, .. },
                    Content::Text { text } | Content::Reply { text },
                ) if display_name == name => Some(text.clone()),
                _ => None,
            },
            _ => None,
        })
        .collect()
}

/// Whether `events` hold a text of `thread` from the agent `name` of kind `kind`.
pub fn spoke_as(events: &[Event], thread: ThreadId, name: &str, kind: AgentKind) -> bool {
    events.iter().any(|e| {
        matches!(e, Event::Message { thread: t, message, .. }
            if *t == thread
                && matches!(&message.sender_info,
                    Sender::Agent { display_name, kind: k } if display_name == name && *k == kind))
    })
}

/// Receives on `device` until the agent `name` said `n` things in `thread` (bounded), then one
/// more round to catch anything said twice; returns all events received.
pub async fn receive_replies(
    device: &mut Device,
    thread: ThreadId,
    name: &str,
    n: usize,
) -> Vec<Event> {
    let mut events = Vec::new();
    for _ in 0..ROUNDS {
        events.extend(device.receive(Duration::from_secs(1)).await.unwrap());
        if said(&events, thread, name).len() >= n {
            events.extend(device.receive(Duration::from_millis(500)).await.unwrap());
            return events;
        }
    }
    panic!(
        "{name} never said {n} thing(s) in the thread; the device got {:#?}",
        said(&events, thread, name)
    );
}

/// Receives on `device` until `want` holds for the events so far (bounded); returns them.
pub async fn receive_until(device: &mut Device, want: impl Fn(&[Event]) -> bool) -> Vec<Event> {
    let mut events = Vec::new();
    for _ in 0..ROUNDS {
        events.extend(device.receive(Duration::from_secs(1)).await.unwrap());
        if want(&events) {
            return events;
        }
    }
    panic!("the device never got there; it got {events:#?}");
}

/// Receives on a customer's `device` until it is in the thread's new epoch (the admin routed
/// or changed the thread): what it sends after this, the agents can read. Returns the events.
pub async fn new_epoch(device: &mut Device, thread: ThreadId) -> Vec<Event> {
    receive_until(device, |events| {
        events
            .iter()
            .any(|e| matches!(e, Event::RosterChanged { thread: t, .. } if *t == thread))
    })
    .await
}
