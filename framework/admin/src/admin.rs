//! The admin device at work: receives threads, routes them, arbitrates handoffs, manages agents.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use switchboard_client::store::DeviceStore;
use switchboard_client::{Device, DeviceRole, Event, ExpectedKey, NewDevice, NewRole, now};
use switchboard_protocol::{
    AgentCredential, AgentKind, CommitAction, Content, CredentialRequest, DeviceId, Epoch, Floor,
    HandoffTarget, KeyBundle, Member, ReceivedMessage, ReplayPolicy, Sender, ThreadId, Timestamp,
};

use crate::audit::{AuditEvent, AuditLog};
use crate::config::{Config, check_team};
use crate::error::AdminError;
use crate::history_log::HistoryLog;
use crate::policy::{self, Candidate, Choice, Turns};

/// An agent the admin vouches for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentRecord {
    /// Its name (unique), shown to customers.
    pub name: String,
    /// Bot or human.
    pub kind: AgentKind,
    /// Its device.
    pub device: DeviceId,
    /// Its teams.
    pub teams: Vec<String>,
    /// Its key bundle, as fetched from the relay when it was added, replaced by newer ones (KEM
    /// key rotations of the same identity key) when it is let into a thread.
    pub bundle: KeyBundle,
    /// The credential the admin issued.
    pub credential: AgentCredential,
}

/// How an agent comes into a thread.
#[derive(Clone, Copy, Debug)]
enum Admission {
    /// It takes a thread no agent is in.
    Assign,
    /// It joins the agents there (a group).
    AddToGroup,
    /// It replaces `from`.
    Transfer { from: DeviceId },
}

/// What the admin keeps besides keys and threads (in its keystore, so it is as protected).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct AdminState {
    agents: Vec<AgentRecord>,
    turns: Turns,
}

/// What one [`Admin::step`] did.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    /// A customer opened a thread.
    ThreadOpened {
        /// The thread.
        thread: ThreadId,
    },
    /// A thread was given to an agent.
    Routed {
        /// The thread.
        thread: ThreadId,
        /// The agent's name.
        agent: String,
        /// Why.
        reason: String,
    },
    /// Nobody fits the thread now: the admin holds it and routes it at the next customer
    /// message.
    Unrouted {
        /// The thread.
        thread: ThreadId,
    },
    /// A handoff was granted.
    HandedOff {
        /// The thread.
        thread: ThreadId,
        /// Who asked.
        from: DeviceId,
        /// Who took over.
        to: String,
        /// Why.
        reason: String,
    },
    /// A handoff was refused.
    HandoffRefused {
        /// The thread.
        thread: ThreadId,
        /// Who asked.
        from: DeviceId,
        /// Why.
        reason: String,
    },
    /// A thread was rekeyed because members rotated their KEM keys.
    Rekeyed {
        /// The thread.
        thread: ThreadId,
        /// Its new epoch.
        epoch: Epoch,
    },
    /// Any other event of the admin device (messages it can read, refused items, ...).
    Event(Event),
}

/// The admin device of an entity.
#[derive(Debug)]
pub struct Admin {
    config: Config,
    device: Device,
    state: AdminState,
    audit: AuditLog,
    history: HistoryLog,
    /// How often [`Admin::step`] looks for members that rotated their KEM keys.
    key_sweep: Duration,
    /// When it looks next (`None`: at the next step).
    next_key_sweep: Option<Timestamp>,
}

/// How often the admin looks for members that rotated their KEM keys by default (hourly).
pub const DEFAULT_KEY_SWEEP: Duration = Duration::from_secs(3600);

impl Admin {
    /// Sets up a new admin: keystore, registration, and the entity at the relay.
    ///
    /// # Errors
    /// [`AdminError::Client`] if the keystore exists or the relay refuses.
    pub async fn init(config: Config) -> Result<Self, AdminError> {
        Self::init_with(config, None).await
    }

    /// [`Admin::init`] with the device's threads and changing state in `store` (a row per
    /// thread, see [`switchboard_client::store`]) and only its keys in the keystore: an event
    /// writes the threads it touched, not all of the entity's threads. Open it again with
    /// [`Admin::open_in`].
    ///
    /// # Errors
    /// As [`Admin::init`]; [`AdminError::Client`] if the store cannot be written.
    pub async fn init_in(config: Config, store: Arc<dyn DeviceStore>) -> Result<Self, AdminError> {
        Self::init_with(config, Some(store)).await
    }

    async fn init_with(
        config: Config,
        store: Option<Arc<dyn DeviceStore>>,
    ) -> Result<Self, AdminError> {
        let secret = config.unlock.secret()?;
        let new = NewDevice::new(
            &config.relay,
            NewRole::Admin {
                entity: config.entity.clone(),
                display_name: config.display_name.clone(),
            },
        );
        let device = match store {
            None => Device::create(&config.keystore, &secret, new).await?,
            Some(store) => Device::create_in(&config.keystore, &secret, new, store).await?,
        };
        Self::with_device(config, device)
    }

    /// Opens the admin from its keystore.
    ///
    /// # Errors
    /// [`AdminError::Client`] for keystore problems; [`AdminError::Config`] if the keystore is
    /// not the admin of the configured entity.
    pub async fn open(config: Config) -> Result<Self, AdminError> {
        let secret = config.unlock.secret()?;
        let device = Device::open(&config.keystore, &secret, Some(&config.relay)).await?;
        Self::with_device(config, device)
    }

    /// Opens an admin made by [`Admin::init_in`] from its keystore and `store`; an admin whose
    /// keystore holds its whole state moves into the store ([`Device::open_in`]).
    ///
    /// # Errors
    /// As [`Admin::open`]; [`AdminError::Client`] if the store cannot be read or written.
    pub async fn open_in(config: Config, store: Arc<dyn DeviceStore>) -> Result<Self, AdminError> {
        let secret = config.unlock.secret()?;
        let device = Device::open_in(&config.keystore, &secret, Some(&config.relay), store).await?;
        Self::with_device(config, device)
    }

    fn with_device(config: Config, mut device: Device) -> Result<Self, AdminError> {
        match device.role() {
            DeviceRole::Admin { entity } if *entity == config.entity => {}
            other => {
                return Err(AdminError::Config {
                    path: config.keystore.clone(),
                    detail: format!(
                        "this keystore is not the admin of {} (it is {other:?})",
                        config.entity
                    ),
                });
            }
        }
        let state = match device.app_state() {
            serde_json::Value::Null => AdminState::default(),
            value => serde_json::from_value(value.clone())
                .map_err(|e| AdminError::State(e.to_string()))?,
        };
        device.set_replay_policy(ReplayPolicy {
            old_epoch_grace_secs: config.old_epoch_grace_secs,
            ..ReplayPolicy::default()
        })?;
        let audit = AuditLog::open(&config.audit_log)?;
        let history = HistoryLog::open(&config.history.dir)?;
        Ok(Self {
            config,
            device,
            state,
            audit,
            history,
            key_sweep: DEFAULT_KEY_SWEEP,
            next_key_sweep: None,
        })
    }

    /// Sets how often [`Admin::step`] looks for members that rotated their KEM keys (and rekeys
    /// their threads); default [`DEFAULT_KEY_SWEEP`].
    pub fn set_key_sweep(&mut self, every: Duration) {
        self.key_sweep = every;
        self.next_key_sweep = None;
    }

    /// Rekeys every thread with a member that rotated its KEM key (its bundle at the relay is
    /// newer than the thread's roster: same identity key, later `created_at`), so the thread's
    /// next epoch is wrapped to the new key; each rekey is audited. Returns the threads rekeyed.
    ///
    /// # Errors
    /// Relay, protocol, keystore and audit errors.
    pub async fn rekey_rotated_members(&mut self) -> Result<Vec<(ThreadId, Epoch)>, AdminError> {
        let mut rekeyed = Vec::new();
        for thread in self.device.threads_with_rotated_members().await? {
            // Prepare, audit durably, then post: as for every commit of this admin.
            let commit = self
                .device
                .prepare_commit(thread, CommitAction::Rekey)
                .await?;
            self.audit.record(
                now(),
                AuditEvent::Rekeyed {
                    thread,
                    epoch: commit.epoch,
                    reason: "a member rotated its KEM key".to_owned(),
                },
            )?;
            self.device.post_commit(&commit).await?;
            rekeyed.push((thread, commit.epoch));
        }
        Ok(rekeyed)
    }

    /// The admin's device.
    #[must_use]
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Waits for the device's background acknowledgement (before a planned shutdown).
    pub async fn flush_acks(&mut self) {
        self.device.flush_acks().await;
    }

    /// The configuration.
    #[must_use]
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The registered agents.
    #[must_use]
    pub fn agents(&self) -> &[AgentRecord] {
        &self.state.agents
    }

    fn agent(&self, name: &str) -> Result<&AgentRecord, AdminError> {
        self.state
            .agents
            .iter()
            .find(|a| a.name == name)
            .ok_or_else(|| AdminError::UnknownAgent(name.to_owned()))
    }

    fn save(&mut self) -> Result<(), AdminError> {
        let value =
            serde_json::to_value(&self.state).map_err(|e| AdminError::State(e.to_string()))?;
        self.device.set_app_state(value)?;
        Ok(())
    }

    /// Registers an agent: fetches its key bundle from the relay, checks its identity key
    /// against `expected` (the fingerprint `switchboard agent init` printed on the agent's
    /// machine), issues it a credential (valid for the configured days), records it, and logs
    /// the grant.
    ///
    /// # Errors
    /// [`AdminError::AgentExists`] for a taken name or device; relay errors for an unknown
    /// device; [`ClientError::FingerprintMismatch`](switchboard_client::ClientError) (as
    /// [`AdminError::Client`]) for a bundle that is not the expected key (nothing is issued
    /// then); [`AdminError::Protocol`] for an invalid display name.
    pub async fn add_agent(
        &mut self,
        name: &str,
        kind: AgentKind,
        device: DeviceId,
        teams: Vec<String>,
        expected: &ExpectedKey,
    ) -> Result<&AgentRecord, AdminError> {
        if self.state.agents.iter().any(|a| a.name == name) {
            return Err(AdminError::AgentExists(format!(
                "an agent named {name:?} is registered already"
            )));
        }
        if let Some(other) = self.state.agents.iter().find(|a| a.device == device) {
            return Err(AdminError::AgentExists(format!(
                "device {device} is registered already as {:?}",
                other.name
            )));
        }
        for team in &teams {
            check_team(team).map_err(AdminError::Refused)?;
        }
        let bundle = self.device.relay().device_bundle(device).await?;
        expected.check(
            &format!("agent {name} (device {device})"),
            &bundle.identity_key,
        )?;
        let credential = self.issue(&bundle, name, kind)?;
        self.audit.record(
            now(),
            AuditEvent::CredentialIssued {
                agent: name.to_owned(),
                device,
                expires_at: credential.expires_at,
            },
        )?;
        self.state.agents.push(AgentRecord {
            name: name.to_owned(),
            kind,
            device,
            teams,
            bundle,
            credential,
        });
        self.save()?;
        self.agent(name)
    }

    fn issue(
        &self,
        bundle: &KeyBundle,
        name: &str,
        kind: AgentKind,
    ) -> Result<AgentCredential, AdminError> {
        let issued_at = now();
        Ok(AgentCredential::issue(
            self.device.keys(),
            &CredentialRequest {
                entity: &self.config.entity,
                agent: bundle,
                display_name: name,
                kind,
                issued_at,
                expires_at: issued_at.plus(self.config.credential_days.saturating_mul(86_400)),
            },
        )
        .map_err(switchboard_protocol::Error::from)?)
    }

    /// Revokes an agent: removes it from every thread it is in (a new epoch it cannot read),
    /// unregisters it, and logs it. Returns the threads it was removed from.
    ///
    /// # Errors
    /// [`AdminError::UnknownAgent`]; relay and protocol errors (then the agent stays registered
    /// and the revocation can be retried).
    pub async fn revoke_agent(&mut self, name: &str) -> Result<Vec<ThreadId>, AdminError> {
        let device = self.agent(name)?.device;
        let threads: Vec<ThreadId> = self
            .device
            .threads()
            .filter(|t| t.roster().members.contains_key(&device))
            .map(|t| t.thread())
            .collect();
        for thread in &threads {
            self.remove_device(*thread, device, "credential revoked")
                .await?;
        }
        self.audit.record(
            now(),
            AuditEvent::CredentialRevoked {
                agent: name.to_owned(),
                device,
                threads: threads.clone(),
            },
        )?;
        self.state.agents.retain(|a| a.device != device);
        self.save()?;
        Ok(threads)
    }

    /// Adds the agent `name` to `thread`, making it a group (every agent may post).
    ///
    /// # Errors
    /// [`AdminError::UnknownAgent`]; protocol errors (already a member, ...); relay errors.
    pub async fn add_to_group(
        &mut self,
        thread: ThreadId,
        name: &str,
    ) -> Result<Epoch, AdminError> {
        let history = self.config.history.on_handoff;
        self.admit(
            thread,
            name,
            Admission::AddToGroup,
            "admin request",
            history,
        )
        .await
    }

    /// Removes the agent `name` from `thread`: a new epoch it cannot read.
    ///
    /// # Errors
    /// [`AdminError::UnknownAgent`]; protocol and relay errors.
    pub async fn remove_from_thread(
        &mut self,
        thread: ThreadId,
        name: &str,
    ) -> Result<Epoch, AdminError> {
        let device = self.agent(name)?.device;
        self.remove_device(thread, device, "admin request").await
    }

    /// Transfers `thread` from its floor holder to the agent `name` (a new epoch without the
    /// previous holder).
    ///
    /// # Errors
    /// [`AdminError::Refused`] if no agent holds the floor; protocol and relay errors.
    pub async fn transfer(&mut self, thread: ThreadId, name: &str) -> Result<Epoch, AdminError> {
        let from = match self.thread_floor(thread)? {
            Floor::Agent(device) => device,
            _ => {
                return Err(AdminError::Refused(format!(
                    "no single agent holds the floor of thread {thread}"
                )));
            }
        };
        let history = self.config.history.on_handoff;
        let how = Admission::Transfer { from };
        self.admit(thread, name, how, "admin request", history)
            .await
    }

    /// Gives the floor of `thread` to the agent `name`, a member already (a new epoch with the
    /// same members: the others stay and may only send receipts and typing indicators). The
    /// audit log is not written: nobody gains or loses access to the thread.
    ///
    /// # Errors
    /// [`AdminError::UnknownAgent`]; protocol errors (the agent is not a member of the
    /// thread, ...); relay errors.
    pub async fn give_floor(&mut self, thread: ThreadId, name: &str) -> Result<Epoch, AdminError> {
        let device = self.agent(name)?.device;
        let commit = self
            .device
            .prepare_commit(
                thread,
                CommitAction::SetFloor {
                    floor: Floor::Agent(device),
                },
            )
            .await?;
        let epoch = commit.epoch;
        self.device.post_commit(&commit).await?;
        Ok(epoch)
    }

    fn thread_floor(&self, thread: ThreadId) -> Result<Floor, AdminError> {
        Ok(self
            .device
            .thread(thread)
            .ok_or_else(|| AdminError::Refused(format!("the admin is not in thread {thread}")))?
            .roster()
            .floor)
    }

    async fn remove_device(
        &mut self,
        thread: ThreadId,
        device: DeviceId,
        reason: &str,
    ) -> Result<Epoch, AdminError> {
        let commit = self
            .device
            .prepare_commit(thread, CommitAction::Remove { device })
            .await?;
        let epoch = commit.epoch;
        // Audited (fsync'd) before any member can learn of the commit.
        self.audit.record(
            now(),
            AuditEvent::Revoked {
                thread,
                device,
                epoch,
                reason: reason.to_owned(),
            },
        )?;
        self.device.post_commit(&commit).await?;
        Ok(epoch)
    }

    /// Lets the agent `name` into `thread` (`how`), audits the grant, grants it the earlier
    /// messages if `history`, and for a transfer audits the revocation of the previous holder.
    async fn admit(
        &mut self,
        thread: ThreadId,
        name: &str,
        how: Admission,
        reason: &str,
        history: bool,
    ) -> Result<Epoch, AdminError> {
        let member = Box::new(self.member(name).await?);
        let device = member.device();
        let (action, label) = match how {
            Admission::Assign => (CommitAction::Assign { agent: member }, "assign"),
            Admission::AddToGroup => (CommitAction::AddToGroup { agent: member }, "add_to_group"),
            Admission::Transfer { from } => {
                (CommitAction::Transfer { from, to: member }, "transfer")
            }
        };
        let commit = self.device.prepare_commit(thread, action).await?;
        let epoch = commit.epoch;
        // Every line this commit makes true is durable before any member can learn of it.
        self.granted(thread, name, device, epoch, label, reason)?;
        if let Admission::Transfer { from } = how {
            self.audit.record(
                now(),
                AuditEvent::Revoked {
                    thread,
                    device: from,
                    epoch,
                    reason: format!("transferred to {name}"),
                },
            )?;
        }
        self.device.post_commit(&commit).await?;
        if history {
            self.grant_history(thread, name, device, epoch).await?;
        }
        Ok(epoch)
    }

    fn granted(
        &mut self,
        thread: ThreadId,
        name: &str,
        device: DeviceId,
        epoch: Epoch,
        how: &str,
        reason: &str,
    ) -> Result<(), AdminError> {
        self.audit.record(
            now(),
            AuditEvent::Granted {
                thread,
                agent: name.to_owned(),
                device,
                epoch,
                how: how.to_owned(),
                reason: reason.to_owned(),
            },
        )
    }

    /// Grants `device` (just added in `epoch`) the logged messages of earlier epochs, if there
    /// are any, and audits it.
    async fn grant_history(
        &mut self,
        thread: ThreadId,
        name: &str,
        device: DeviceId,
        epoch: Epoch,
    ) -> Result<(), AdminError> {
        let messages = self
            .history
            .before(thread, epoch, self.config.history.max_messages)?;
        let count = messages.len();
        // Audited before the grant is posted (a failed post leaves a line for a grant that was
        // never delivered: the log may over-report, never under-report).
        self.audit.record(
            now(),
            AuditEvent::HistoryGranted {
                thread,
                agent: name.to_owned(),
                device,
                before: epoch,
                messages: count,
            },
        )?;
        self.device.grant_history(thread, device, messages).await?;
        Ok(())
    }

    /// The roster member for agent `name` with its current bundle (fetched from the relay, used
    /// if it is a newer bundle of the same identity key), with a fresh credential if its own
    /// expires within a day (the renewal is logged).
    async fn member(&mut self, name: &str) -> Result<Member, AdminError> {
        let mut record = self.agent(name)?.clone();
        // The agent's current bundle: it may have rotated its KEM key since it was added. Only a
        // newer bundle of the same identity key replaces the one on record.
        let current = self.device.relay().device_bundle(record.device).await?;
        if current.check_update_of(&record.bundle).is_ok() {
            record.bundle = current;
            if let Some(stored) = self.state.agents.iter_mut().find(|a| a.name == name) {
                stored.bundle = record.bundle.clone();
            }
            self.save()?;
        }
        let credential = if record.credential.expires_at.0 <= now().0.saturating_add(86_400) {
            let fresh = self.issue(&record.bundle, &record.name, record.kind)?;
            self.audit.record(
                now(),
                AuditEvent::CredentialIssued {
                    agent: record.name.clone(),
                    device: record.device,
                    expires_at: fresh.expires_at,
                },
            )?;
            if let Some(stored) = self.state.agents.iter_mut().find(|a| a.name == name) {
                stored.credential = fresh.clone();
            }
            self.save()?;
            fresh
        } else {
            record.credential
        };
        Ok(Member::agent(record.bundle, credential))
    }

    fn candidates(&self) -> Vec<Candidate> {
        self.state
            .agents
            .iter()
            .map(|a| Candidate {
                name: a.name.clone(),
                device: a.device,
                kind: a.kind,
                teams: a.teams.clone(),
                load: self
                    .device
                    .threads()
                    .filter(|t| t.roster().members.contains_key(&a.device))
                    .count(),
            })
            .collect()
    }

    /// Receives what is waiting (up to `wait`) and acts on it: new threads are routed at their
    /// first customer message, handoff requests are arbitrated. Returns what happened.
    ///
    /// # Errors
    /// Relay, keystore and audit errors.
    pub async fn step(&mut self, wait: Duration) -> Result<Vec<Outcome>, AdminError> {
        let events = self.device.receive(wait).await?;
        let mut outcomes = self.act(events).await?;
        outcomes.extend(self.sweep_keys_if_due().await?);
        Ok(outcomes)
    }

    /// Runs [`Admin::rekey_rotated_members`] when the sweep interval has passed.
    async fn sweep_keys_if_due(&mut self) -> Result<Vec<Outcome>, AdminError> {
        let at = now();
        if self.next_key_sweep.is_some_and(|next| at < next) {
            return Ok(Vec::new());
        }
        self.next_key_sweep = Some(at.plus(self.key_sweep.as_secs()));
        match self.rekey_rotated_members().await {
            Ok(rekeyed) => Ok(rekeyed
                .into_iter()
                .map(|(thread, epoch)| Outcome::Rekeyed { thread, epoch })
                .collect()),
            // A relay that is unreachable, busy or rate limiting now does not stop the admin:
            // the next sweep tries again (members keep their old keys for the grace period).
            Err(AdminError::Client(e)) if e.is_transient() => {
                tracing::warn!(error = %e, "key sweep interrupted; retrying at the next one");
                Ok(Vec::new())
            }
            Err(e) => Err(e),
        }
    }

    /// Runs [`Admin::step`] until `shutdown` resolves, retrying an unavailable relay with
    /// backoff; logs outcomes with `tracing`.
    ///
    /// # Errors
    /// The first non-transient error.
    pub async fn run_until(
        &mut self,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), AdminError> {
        tokio::pin!(shutdown);
        loop {
            let events = tokio::select! {
                () = &mut shutdown => {
                    self.device.flush_acks().await;
                    return Ok(());
                }
                events = self.device.receive_retrying(Duration::from_secs(25), Duration::from_secs(3600)) => events?,
            };
            let mut outcomes = self.act(events).await?;
            outcomes.extend(self.sweep_keys_if_due().await?);
            for outcome in outcomes {
                match outcome {
                    Outcome::Event(event) => tracing::debug!(?event, "event"),
                    other => tracing::info!(?other, "admin"),
                }
            }
        }
    }

    async fn act(&mut self, events: Vec<Event>) -> Result<Vec<Outcome>, AdminError> {
        let mut outcomes = Vec::new();
        for event in events {
            match event {
                Event::ThreadOpened { thread, customer } => {
                    self.audit
                        .record(now(), AuditEvent::ThreadOpened { thread, customer })?;
                    outcomes.push(Outcome::ThreadOpened { thread });
                }
                Event::Message {
                    thread,
                    message,
                    sealed,
                } => {
                    self.history.append(thread, &sealed)?;
                    outcomes.extend(self.on_message(thread, &message).await?);
                    outcomes.push(Outcome::Event(Event::Message {
                        thread,
                        message,
                        sealed,
                    }));
                }
                Event::Equivocation {
                    thread,
                    sender,
                    epoch,
                    generation,
                    first,
                    second,
                } => {
                    tracing::warn!(%thread, %sender, epoch = epoch.0, generation, "equivocation: two messages under one generation");
                    self.audit.record(
                        now(),
                        AuditEvent::Equivocation {
                            thread,
                            device: sender,
                            epoch,
                            generation,
                            first,
                            second,
                        },
                    )?;
                    outcomes.push(Outcome::Event(Event::Equivocation {
                        thread,
                        sender,
                        epoch,
                        generation,
                        first,
                        second,
                    }));
                }
                Event::LateMessage {
                    thread,
                    sender,
                    epoch,
                    next,
                    next_installed_at,
                } => {
                    tracing::warn!(%thread, %sender, epoch = epoch.0, "late message of an old epoch dropped");
                    self.audit.record(
                        now(),
                        AuditEvent::LateMessage {
                            thread,
                            device: sender,
                            epoch,
                            next,
                            next_installed_at,
                        },
                    )?;
                    outcomes.push(Outcome::Event(Event::LateMessage {
                        thread,
                        sender,
                        epoch,
                        next,
                        next_installed_at,
                    }));
                }
                other => outcomes.push(Outcome::Event(other)),
            }
        }
        Ok(outcomes)
    }

    async fn on_message(
        &mut self,
        thread: ThreadId,
        message: &ReceivedMessage,
    ) -> Result<Option<Outcome>, AdminError> {
        let Some(state) = self.device.thread(thread) else {
            return Ok(None);
        };
        let has_agents = state.roster().agents().next().is_some();
        let floor = state.roster().floor;
        match (&message.sender_info, &message.content) {
            (_, Content::HandoffRequest { target, .. }) => Ok(Some(
                self.on_handoff(thread, message.sender, &floor, target)
                    .await?,
            )),
            (Sender::Customer, content) if !has_agents => {
                let text = content.as_text().unwrap_or_default().to_owned();
                let mut turns = std::mem::take(&mut self.state.turns);
                let choice = policy::route(
                    &self.config.policy,
                    &self.candidates(),
                    &text,
                    now().0,
                    &mut turns,
                );
                self.state.turns = turns;
                let Some(choice) = choice else {
                    return Ok(Some(Outcome::Unrouted { thread }));
                };
                let history = self.config.history.on_route;
                self.assign(thread, &choice, history).await?;
                Ok(Some(Outcome::Routed {
                    thread,
                    agent: choice.name,
                    reason: choice.reason,
                }))
            }
            _ => Ok(None),
        }
    }

    /// Assigns `thread` to the chosen agent, granting it the earlier messages if `history`.
    async fn assign(
        &mut self,
        thread: ThreadId,
        choice: &Choice,
        history: bool,
    ) -> Result<(), AdminError> {
        self.admit(
            thread,
            &choice.name,
            Admission::Assign,
            &choice.reason,
            history,
        )
        .await?;
        self.save()
    }

    /// A handoff request from `from`. Agents may ask when they hold the floor (or in a group);
    /// the customer may ask too ("a human, please"). One floor holder stays: a transfer, or, in
    /// a group, an addition.
    async fn on_handoff(
        &mut self,
        thread: ThreadId,
        from: DeviceId,
        floor: &Floor,
        target: &HandoffTarget,
    ) -> Result<Outcome, AdminError> {
        let customer = self
            .device
            .thread(thread)
            .and_then(|t| t.roster().customer().map(Member::device));
        let holder = match floor {
            Floor::Agent(device) => Some(*device),
            Floor::Group | Floor::Admin => None,
        };
        let allowed = holder == Some(from) || customer == Some(from) || *floor == Floor::Group;
        if !allowed {
            return self
                .refuse_handoff(
                    thread,
                    from,
                    "only the agent holding the floor (or the customer) may ask",
                )
                .map(|()| Outcome::HandoffRefused {
                    thread,
                    from,
                    reason: "the requester does not hold the floor".to_owned(),
                });
        }
        let mut turns = std::mem::take(&mut self.state.turns);
        let requester = holder.unwrap_or(from);
        let choice = policy::handoff(
            &self.config.policy,
            &self.candidates(),
            target,
            requester,
            now().0,
            &mut turns,
        );
        self.state.turns = turns;
        let Some(choice) = choice else {
            let reason = format!("nobody available for {target:?}");
            self.refuse_handoff(thread, from, &reason)?;
            return Ok(Outcome::HandoffRefused {
                thread,
                from,
                reason,
            });
        };
        match (floor, holder) {
            (Floor::Group, _) => {
                let history = self.config.history.on_handoff;
                self.admit(
                    thread,
                    &choice.name,
                    Admission::AddToGroup,
                    &choice.reason,
                    history,
                )
                .await?;
            }
            (_, Some(holder)) => {
                let history = self.config.history.on_handoff;
                let how = Admission::Transfer { from: holder };
                self.admit(thread, &choice.name, how, &choice.reason, history)
                    .await?;
            }
            (_, None) => {
                let history = self.config.history.on_handoff;
                self.assign(thread, &choice, history).await?;
            }
        }
        self.save()?;
        Ok(Outcome::HandedOff {
            thread,
            from,
            to: choice.name,
            reason: choice.reason,
        })
    }

    fn refuse_handoff(
        &mut self,
        thread: ThreadId,
        device: DeviceId,
        reason: &str,
    ) -> Result<(), AdminError> {
        self.audit.record(
            now(),
            AuditEvent::HandoffRefused {
                thread,
                device,
                reason: reason.to_owned(),
            },
        )
    }
}
