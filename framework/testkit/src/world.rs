//! A whole Switchboard system in one test process: a relay on in-memory SQLite on loopback,
//! an entity's admin device with a routing policy stepping in the background, agents (bots
//! and humans) enrolled by the admin, and simulated customers ([`SimCustomer`]). The tests of
//! bots/, the conformance suite ([`crate::conformance`]) and the SDK's own tests build on it.
//!
//! Every method returns a [`WorldError`] rather than panicking (the conformance suite turns
//! them into failed checks), and every wait is bounded by the time it is given.
//!
//! ```no_run
//! # async fn run() -> Result<(), switchboard_testkit::world::WorldError> {
//! use std::time::Duration;
//! use switchboard_testkit::world::{AgentSpec, Routing, World};
//!
//! let world = World::start("doc", &Routing::default(), &[AgentSpec::bot("EchoBot", "support")]).await?;
//! let bot = world.enrollment("EchoBot")?; // its keystore and key file, for a bot's runtime
//! let mut customer = world.customer().await?;
//! let thread = customer.open_thread(world.entity()).await?;
//! customer.send(thread, "hello").await?;
//! world.outcome(Duration::from_secs(30), |o| matches!(o, switchboard_admin::Outcome::Routed { .. })).await?;
//! # let _ = bot; Ok(()) }
//! ```

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use switchboard_admin::{Admin, AdminError, Config, Outcome};
use switchboard_client::{ClientError, Device, ExpectedKey, KeystoreSecret, NewDevice, NewRole};
use switchboard_protocol::{AgentKind, DeviceId, EntityId, Epoch, Fingerprint, ThreadId};
use switchboard_relay::http::Limits;
use switchboard_relay::server::{Running, ServerConfig};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout};

use crate::scratch_dir;
use crate::sim::SimCustomer;

/// The entity every world serves.
pub const ENTITY: &str = "acme";

/// How many admin outcomes a world keeps (a bot that floods its threads cannot make the
/// world grow without bound; later outcomes are counted, not kept).
pub const MAX_OUTCOMES: usize = 10_000;

/// How long one admin step waits for its inbox.
const ADMIN_STEP: Duration = Duration::from_millis(200);

/// How long the admin may take to stop.
const ADMIN_STOP: Duration = Duration::from_secs(20);

/// What went wrong in a world.
#[derive(Debug, thiserror::Error)]
pub enum WorldError {
    /// Setting the world up failed (a directory, a file, the relay's listener).
    #[error("setting the world up: {0}")]
    Setup(String),
    /// The admin device refused or failed.
    #[error("the admin: {0}")]
    Admin(#[from] AdminError),
    /// A device (customer or agent) failed.
    #[error("a device: {0}")]
    Client(#[from] ClientError),
    /// What was waited for did not happen in time.
    #[error("timed out after {after:?} waiting for {what}")]
    Timeout {
        /// What was awaited.
        what: String,
        /// How long.
        after: Duration,
    },
    /// No agent of that name was enrolled.
    #[error("no agent named {0:?} in this world")]
    UnknownAgent(String),
    /// The admin task is gone (it was stopped, or it panicked).
    #[error("the admin has stopped")]
    AdminStopped,
}

/// The entity's routing policy: keyword rules, the team for everything else, the team
/// handoffs to "any human" go to.
#[derive(Clone, Debug)]
pub struct Routing {
    /// Keyword rules, in order: (keywords, team).
    pub rules: Vec<(Vec<String>, String)>,
    /// The team of threads no rule matches.
    pub fallback_team: String,
    /// The team of handoffs to any human.
    pub handoff_team: String,
    /// Whether an agent a thread is routed to reads what the customer wrote before (the
    /// signed history grant).
    pub history_on_route: bool,
    /// Whether an agent a thread is handed to reads the thread so far.
    pub history_on_handoff: bool,
}

impl Default for Routing {
    /// Everything to team `support`, bots first; handoffs to team `humans`; history granted on
    /// route and on handoff.
    fn default() -> Self {
        Self {
            rules: Vec::new(),
            fallback_team: "support".to_owned(),
            handoff_team: "humans".to_owned(),
            history_on_route: true,
            history_on_handoff: true,
        }
    }
}

impl Routing {
    /// Adds a rule: a message with one of `keywords` goes to `team`.
    #[must_use]
    pub fn rule(mut self, keywords: &[&str], team: &str) -> Self {
        self.rules.push((
            keywords.iter().map(|k| (*k).to_owned()).collect(),
            team.to_owned(),
        ));
        self
    }

    fn toml(&self, relay: &str) -> String {
        let mut rules = String::new();
        for (keywords, team) in &self.rules {
            let keywords: Vec<String> = keywords.iter().map(|k| format!("{k:?}")).collect();
            rules.push_str(&format!(
                "[[rules]]\nkeywords = [{}]\nteam = {team:?}\n\n",
                keywords.join(", ")
            ));
        }
        format!(
            "entity = {ENTITY:?}\ndisplay_name = \"Acme\"\nrelay = {relay:?}\n\
             keystore = \"admin.keystore\"\nkey_file = \"admin.key\"\naudit_log = \"audit.jsonl\"\n\n\
             [routing]\nbot_first = true\nfallback_team = {:?}\nhandoff_team = {:?}\n\n{rules}\
             [history]\non_route = {}\non_handoff = {}\n",
            self.fallback_team, self.handoff_team, self.history_on_route, self.history_on_handoff
        )
    }
}

/// An agent the admin enrolls.
#[derive(Clone, Debug)]
pub struct AgentSpec {
    /// Its name (in its credential: what customers see).
    pub name: String,
    /// Bot or human.
    pub kind: AgentKind,
    /// Its team.
    pub team: String,
}

impl AgentSpec {
    /// A bot of `team`.
    #[must_use]
    pub fn bot(name: &str, team: &str) -> Self {
        Self {
            name: name.to_owned(),
            kind: AgentKind::Bot,
            team: team.to_owned(),
        }
    }

    /// A human agent of `team`.
    #[must_use]
    pub fn human(name: &str, team: &str) -> Self {
        Self {
            name: name.to_owned(),
            kind: AgentKind::Human,
            team: team.to_owned(),
        }
    }
}

/// An enrolled agent: its device and where its keystore is (closed: a runtime or a process
/// may open it, one at a time).
#[derive(Clone, Debug)]
pub struct Enrollment {
    /// Its name.
    pub name: String,
    /// Bot or human.
    pub kind: AgentKind,
    /// Its device.
    pub device: DeviceId,
    /// Its device's fingerprint.
    pub fingerprint: Fingerprint,
    /// Its keystore.
    pub keystore: PathBuf,
    /// The key file that unlocks it.
    pub key_file: PathBuf,
}

impl Enrollment {
    /// The secret that unlocks its keystore.
    #[must_use]
    pub fn secret(&self) -> KeystoreSecret {
        KeystoreSecret::KeyFile(self.key_file.clone())
    }
}

/// Something the world asks of its admin.
enum Command {
    AddToGroup(ThreadId, String),
    Remove(ThreadId, String),
    Transfer(ThreadId, String),
    GiveFloor(ThreadId, String),
}

/// What the admin task shares with the world.
#[derive(Default)]
struct Seen {
    outcomes: Vec<Outcome>,
    /// Outcomes beyond [`MAX_OUTCOMES`], counted only.
    dropped: usize,
    /// Step errors, as text (the first [`MAX_OUTCOMES`]).
    errors: Vec<String>,
}

struct Shared {
    seen: Mutex<Seen>,
    changed: Notify,
}

impl Shared {
    fn seen(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.seen.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A relay, the entity's admin and its agents (see the module docs).
pub struct World {
    relay: Option<Running>,
    /// The relay's database if it is a file ([`World::start_durable`]), for restarts.
    relay_db: Option<String>,
    url: String,
    dir: PathBuf,
    entity: EntityId,
    admin_fingerprint: Fingerprint,
    agents: Vec<Enrollment>,
    commands: mpsc::Sender<(Command, oneshot::Sender<Result<Epoch, AdminError>>)>,
    shared: Arc<Shared>,
    admin: Option<(JoinHandle<()>, oneshot::Sender<()>)>,
}

impl std::fmt::Debug for World {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("World")
            .field("url", &self.url)
            .field("dir", &self.dir)
            .field("agents", &self.agents)
            .finish_non_exhaustive()
    }
}

impl World {
    /// Starts a relay on in-memory SQLite on `127.0.0.1:0` (limits lifted: tests send faster
    /// than people, from one address), creates the entity's admin with `routing` in a fresh
    /// scratch directory named after `name`, and enrolls `agents` (each with a keystore
    /// unlocked by a key file, closed again).
    ///
    /// # Errors
    /// [`WorldError::Setup`], and the admin's and devices' errors.
    pub async fn start(
        name: &str,
        routing: &Routing,
        agents: &[AgentSpec],
    ) -> Result<Self, WorldError> {
        Self::start_in(scratch_dir(name), None, routing, agents).await
    }

    /// [`World::start`] with the relay's store in a SQLite file of the world's directory, so
    /// that [`World::restart_relay`] can stop the relay and start it again with what it held.
    ///
    /// # Errors
    /// As [`World::start`].
    pub async fn start_durable(
        name: &str,
        routing: &Routing,
        agents: &[AgentSpec],
    ) -> Result<Self, WorldError> {
        let dir = scratch_dir(name);
        let db = format!("sqlite://{}", dir.join("relay.db").display());
        Self::start_in(dir, Some(db), routing, agents).await
    }

    async fn start_in(
        dir: PathBuf,
        relay_db: Option<String>,
        routing: &Routing,
        agents: &[AgentSpec],
    ) -> Result<Self, WorldError> {
        let relay = start_relay(relay_db.as_deref(), "127.0.0.1:0").await?;
        let url = relay.url();
        let setup = |e: std::io::Error| WorldError::Setup(e.to_string());
        KeystoreSecret::create_key_file(&dir.join("admin.key")).map_err(ClientError::from)?;
        let config_path = dir.join("entity.toml");
        std::fs::write(&config_path, routing.toml(&url)).map_err(setup)?;
        let mut admin = Admin::init(Config::load(&config_path)?).await?;
        let admin_fingerprint = admin.device().fingerprint();
        let mut enrolled = Vec::new();
        for spec in agents {
            enrolled.push(enroll(&mut admin, &dir, &url, spec).await?);
        }
        let shared = Arc::new(Shared {
            seen: Mutex::new(Seen::default()),
            changed: Notify::new(),
        });
        let (commands, rx) = mpsc::channel(16);
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(step_admin(admin, rx, stopped, Arc::clone(&shared)));
        Ok(Self {
            relay: Some(relay),
            relay_db,
            url,
            dir,
            entity: EntityId::new(ENTITY).map_err(|e| WorldError::Setup(e.to_string()))?,
            admin_fingerprint,
            agents: enrolled,
            commands,
            shared,
            admin: Some((task, stop)),
        })
    }

    /// The relay's `http://HOST:PORT`.
    #[must_use]
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The world's scratch directory (keystores, the admin's audit log).
    #[must_use]
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The entity.
    #[must_use]
    pub fn entity(&self) -> &EntityId {
        &self.entity
    }

    /// The admin device's fingerprint (what an agent pins).
    #[must_use]
    pub fn admin_fingerprint(&self) -> &Fingerprint {
        &self.admin_fingerprint
    }

    /// The enrolled agent `name`.
    ///
    /// # Errors
    /// [`WorldError::UnknownAgent`].
    pub fn enrollment(&self, name: &str) -> Result<&Enrollment, WorldError> {
        self.agents
            .iter()
            .find(|a| a.name == name)
            .ok_or_else(|| WorldError::UnknownAgent(name.to_owned()))
    }

    /// Opens the keystore of the agent `name` as a [`Device`] (a human agent at work, or a bot
    /// driven by hand). Close it (drop it) before a runtime opens the same keystore.
    ///
    /// # Errors
    /// [`WorldError::UnknownAgent`], the device's errors.
    pub async fn open_agent(&self, name: &str) -> Result<Device, WorldError> {
        let agent = self.enrollment(name)?;
        Ok(Device::open(&agent.keystore, &agent.secret(), None).await?)
    }

    /// A new customer, registered at the relay (it opens threads with
    /// `customer.open_thread(world.entity())`).
    ///
    /// # Errors
    /// The relay's.
    pub async fn customer(&self) -> Result<SimCustomer, WorldError> {
        Ok(SimCustomer::register(&self.url).await?)
    }

    /// Waits up to `within` for an admin outcome that `want` accepts (one seen before this call
    /// counts too) and returns it.
    ///
    /// # Errors
    /// [`WorldError::Timeout`] naming the outcomes seen.
    pub async fn outcome(
        &self,
        within: Duration,
        want: impl Fn(&Outcome) -> bool,
    ) -> Result<Outcome, WorldError> {
        let deadline = Instant::now() + within;
        loop {
            let changed = self.shared.changed.notified();
            if let Some(found) = self.shared.seen().outcomes.iter().find(|o| want(o)) {
                return Ok(found.clone());
            }
            if timeout(deadline.saturating_duration_since(Instant::now()), changed)
                .await
                .is_err()
            {
                let seen = self.shared.seen();
                return Err(WorldError::Timeout {
                    what: format!(
                        "an admin outcome; it saw {} ({} errors: {:?})",
                        summary(&seen.outcomes),
                        seen.errors.len(),
                        seen.errors.iter().take(3).collect::<Vec<_>>()
                    ),
                    after: within,
                });
            }
        }
    }

    /// The admin's outcomes so far (at most [`MAX_OUTCOMES`]).
    #[must_use]
    pub fn outcomes(&self) -> Vec<Outcome> {
        self.shared.seen().outcomes.clone()
    }

    /// The admin's step errors so far.
    #[must_use]
    pub fn admin_errors(&self) -> Vec<String> {
        self.shared.seen().errors.clone()
    }

    async fn command(&self, command: Command) -> Result<Epoch, WorldError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send((command, tx))
            .await
            .map_err(|_| WorldError::AdminStopped)?;
        Ok(rx.await.map_err(|_| WorldError::AdminStopped)??)
    }

    /// Asks the admin to add the agent `name` to `thread`, making it a group.
    ///
    /// # Errors
    /// The admin's.
    pub async fn add_to_group(&self, thread: ThreadId, name: &str) -> Result<Epoch, WorldError> {
        self.command(Command::AddToGroup(thread, name.to_owned()))
            .await
    }

    /// Asks the admin to remove the agent `name` from `thread` (a new epoch it cannot read).
    ///
    /// # Errors
    /// The admin's.
    pub async fn remove(&self, thread: ThreadId, name: &str) -> Result<Epoch, WorldError> {
        self.command(Command::Remove(thread, name.to_owned())).await
    }

    /// Asks the admin to transfer `thread` from its floor holder to the agent `name`.
    ///
    /// # Errors
    /// The admin's.
    pub async fn transfer(&self, thread: ThreadId, name: &str) -> Result<Epoch, WorldError> {
        self.command(Command::Transfer(thread, name.to_owned()))
            .await
    }

    /// Asks the admin to give the floor of `thread` to the agent `name`, a member of it (the
    /// other agents stay, and may only send receipts and typing indicators).
    ///
    /// # Errors
    /// The admin's.
    pub async fn give_floor(&self, thread: ThreadId, name: &str) -> Result<Epoch, WorldError> {
        self.command(Command::GiveFloor(thread, name.to_owned()))
            .await
    }

    /// Stops the relay, waits `down`, and starts it again on the same address and store (a
    /// relay restart: its sessions are gone, what it stored is not). Every device's requests
    /// meanwhile fail to connect.
    ///
    /// # Errors
    /// [`WorldError::Setup`] if the world was not started with [`World::start_durable`], or
    /// the relay fails to stop or to start again.
    pub async fn restart_relay(&mut self, down: Duration) -> Result<(), WorldError> {
        let Some(db) = self.relay_db.clone() else {
            return Err(WorldError::Setup(
                "the relay of this world keeps its store in memory: start it with World::start_durable to restart it".to_owned(),
            ));
        };
        if let Some(relay) = self.relay.take() {
            let addr = relay.addr();
            relay
                .stop()
                .await
                .map_err(|e| WorldError::Setup(format!("stopping the relay: {e}")))?;
            tokio::time::sleep(down).await;
            self.relay = Some(start_relay(Some(&db), &addr.to_string()).await?);
            Ok(())
        } else {
            Err(WorldError::Setup("the relay is not running".to_owned()))
        }
    }

    /// Stops the admin (bounded) and the relay.
    ///
    /// # Errors
    /// [`WorldError::Timeout`] if the admin does not stop; the relay's errors stopping.
    pub async fn stop(mut self) -> Result<(), WorldError> {
        if let Some((task, stop)) = self.admin.take() {
            let _ = stop.send(());
            timeout(ADMIN_STOP, task)
                .await
                .map_err(|_| WorldError::Timeout {
                    what: "the admin to stop".to_owned(),
                    after: ADMIN_STOP,
                })?
                .map_err(|_| WorldError::AdminStopped)?;
        }
        if let Some(relay) = self.relay.take() {
            relay
                .stop()
                .await
                .map_err(|e| WorldError::Setup(format!("stopping the relay: {e}")))?;
        }
        Ok(())
    }
}

/// A relay with lifted limits (tests send faster than people, from one address) on `db` (in
/// memory if `None`), listening on `listen`.
async fn start_relay(db: Option<&str>, listen: &str) -> Result<Running, WorldError> {
    switchboard_relay::server::start_with(
        db.unwrap_or("sqlite::memory:"),
        listen,
        ServerConfig {
            limits: Limits::lifted(),
            // A restart should not wait out the long-polls in flight.
            shutdown_grace_secs: 1,
            ..ServerConfig::default()
        },
    )
    .await
    .map_err(|e| WorldError::Setup(format!("the relay on {listen}: {e}")))
}

impl Drop for World {
    fn drop(&mut self) {
        if let Some((task, _)) = self.admin.take() {
            task.abort();
        }
    }
}

/// Creates the agent's device (keystore and key file in `dir`), pinning the admin, and has the
/// admin enroll it.
async fn enroll(
    admin: &mut Admin,
    dir: &Path,
    url: &str,
    spec: &AgentSpec,
) -> Result<Enrollment, WorldError> {
    let stem: String = spec
        .name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    let key_file = dir.join(format!("{stem}.key"));
    let keystore = dir.join(format!("{stem}.keystore"));
    let secret = KeystoreSecret::create_key_file(&key_file).map_err(ClientError::from)?;
    let role = NewRole::Agent {
        entity: EntityId::new(ENTITY).map_err(|e| WorldError::Setup(e.to_string()))?,
        admin: ExpectedKey::Fingerprint(admin.device().fingerprint()),
    };
    let device = Device::create(&keystore, &secret, NewDevice::new(url, role)).await?;
    let (id, fingerprint) = (device.id(), device.fingerprint());
    // Closed: the keystore's lock is released for whoever runs the agent.
    drop(device);
    admin
        .add_agent(
            &spec.name,
            spec.kind,
            id,
            vec![spec.team.clone()],
            &ExpectedKey::Fingerprint(fingerprint),
        )
        .await?;
    Ok(Enrollment {
        name: spec.name.clone(),
        kind: spec.kind,
        device: id,
        fingerprint,
        keystore,
        key_file,
    })
}

/// Steps the admin until told to stop, carrying out commands between steps.
async fn step_admin(
    mut admin: Admin,
    mut commands: mpsc::Receiver<(Command, oneshot::Sender<Result<Epoch, AdminError>>)>,
    mut stop: oneshot::Receiver<()>,
    shared: Arc<Shared>,
) {
    while let Err(oneshot::error::TryRecvError::Empty) = stop.try_recv() {
        while let Ok((command, reply)) = commands.try_recv() {
            let result = match command {
                Command::AddToGroup(thread, name) => admin.add_to_group(thread, &name).await,
                Command::Remove(thread, name) => admin.remove_from_thread(thread, &name).await,
                Command::Transfer(thread, name) => admin.transfer(thread, &name).await,
                Command::GiveFloor(thread, name) => admin.give_floor(thread, &name).await,
            };
            let _ = reply.send(result);
        }
        match admin.step(ADMIN_STEP).await {
            Ok(outcomes) if outcomes.is_empty() => {}
            Ok(outcomes) => {
                {
                    let mut seen = shared.seen();
                    for outcome in outcomes {
                        if seen.outcomes.len() < MAX_OUTCOMES {
                            seen.outcomes.push(outcome);
                        } else {
                            seen.dropped += 1;
                        }
                    }
                }
                shared.changed.notify_waiters();
            }
            Err(e) => {
                {
                    let mut seen = shared.seen();
                    if seen.errors.len() < MAX_OUTCOMES {
                        seen.errors.push(e.to_string());
                    }
                }
                tokio::time::sleep(ADMIN_STEP).await;
            }
        }
    }
    admin.flush_acks().await;
}

/// A short account of outcomes, for timeout messages.
fn summary(outcomes: &[Outcome]) -> String {
    let names: Vec<&str> = outcomes
        .iter()
        .map(|o| match o {
            Outcome::ThreadOpened { .. } => "thread opened",
            Outcome::Routed { .. } => "routed",
            Outcome::Unrouted { .. } => "unrouted",
            Outcome::HandedOff { .. } => "handed off",
            Outcome::HandoffRefused { .. } => "handoff refused",
            Outcome::Rekeyed { .. } => "rekeyed",
            Outcome::Event(_) => "event",
        })
        .collect();
    if names.is_empty() {
        "nothing".to_owned()
    } else {
        names.join(", ")
    }
}
