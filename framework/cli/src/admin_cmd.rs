//! `switchboard admin ...`: the admin device of an entity.

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use switchboard_admin::config::Unlock;
use switchboard_admin::{Admin, Config};
use switchboard_client::{ExpectedKey, KeystoreSecret};
use switchboard_protocol::{AgentKind, DeviceId, Fingerprint};

use crate::out;

/// `switchboard admin`.
#[derive(Debug, Args)]
pub(crate) struct AdminArgs {
    /// The entity's config file.
    #[arg(long, global = true, default_value = "entity.toml")]
    config: PathBuf,
    /// Where the admin device keeps its threads, a row each (`sqlite://PATH` or
    /// `postgres://...`); overrides `store` in the config file. An admin whose keystore holds
    /// its whole state moves into the store the first time it is opened with one.
    #[arg(long, global = true, value_name = "URL")]
    store: Option<String>,
    #[command(subcommand)]
    action: Option<AdminAction>,
}

#[derive(Debug, Subcommand)]
enum AdminAction {
    /// Create the admin device (keystore, key file if configured and missing) and the entity.
    Init,
    /// Run the admin: route new threads, arbitrate handoffs (the default).
    Run,
    /// Register an agent and issue its credential (stop the running admin first: the keystore
    /// is in use while it runs).
    AddAgent {
        /// A bot with this name.
        #[arg(long, conflicts_with = "human", required_unless_present = "human")]
        bot: Option<String>,
        /// A human with this name.
        #[arg(long)]
        human: Option<String>,
        /// The agent's device id (printed by `switchboard agent init`).
        #[arg(long)]
        device: String,
        /// The agent's fingerprint, as `switchboard agent init` printed it on the agent's
        /// machine (30 digits; compare it over a channel the relay does not control). The
        /// command refuses a key bundle with another fingerprint.
        #[arg(
            long,
            required_unless_present = "insecure_trust_relay",
            conflicts_with = "insecure_trust_relay"
        )]
        fingerprint: Option<String>,
        /// Sign a credential for whatever key the relay serves for the device, unchecked.
        /// Insecure: a hostile relay, or anyone on the path of plain http, becomes the agent.
        #[arg(long)]
        insecure_trust_relay: bool,
        /// A team of the agent (repeat for several).
        #[arg(long = "team")]
        teams: Vec<String>,
    },
    /// Revoke an agent: remove it from every thread and unregister it.
    Revoke {
        /// The agent's name.
        name: String,
    },
    /// List the registered agents.
    Agents,
}

pub(crate) async fn run(args: AdminArgs) -> Result<(), String> {
    let mut config = Config::load(&args.config).map_err(|e| e.to_string())?;
    if let Some(store) = args.store {
        config.store = Some(store);
    }
    match args.action.unwrap_or(AdminAction::Run) {
        AdminAction::Init => {
            if let Unlock::KeyFile(path) = &config.unlock
                && !path.exists()
            {
                KeystoreSecret::create_key_file(path).map_err(|e| e.to_string())?;
                out(&format!("created key file {}", path.display()));
            }
            let admin = init_admin(config).await?;
            let device = admin.device();
            out(&format!(
                "admin of {} created: device {} fingerprint {}",
                admin.config().entity,
                device.id(),
                device.fingerprint()
            ));
            out(&format!(
                "set agents up with: switchboard agent init --entity {} --admin-fingerprint '{}' ...",
                admin.config().entity,
                device.fingerprint()
            ));
            Ok(())
        }
        AdminAction::Run => {
            let mut admin = open_admin(config).await?;
            out(&format!(
                "admin of {} running as device {}",
                admin.config().entity,
                admin.device().id()
            ));
            admin
                .run_until(crate::shutdown_signal())
                .await
                .map_err(|e| e.to_string())
        }
        AdminAction::AddAgent {
            bot,
            human,
            device,
            teams,
            fingerprint,
            insecure_trust_relay,
        } => {
            let (name, kind) = match (bot, human) {
                (Some(name), None) => (name, AgentKind::Bot),
                (None, Some(name)) => (name, AgentKind::Human),
                _ => return Err("give exactly one of --bot NAME and --human NAME".to_owned()),
            };
            let device: DeviceId = device.parse().map_err(|e| format!("--device: {e}"))?;
            let expected = expected_key(fingerprint.as_deref(), insecure_trust_relay, "agent")?;
            let mut admin = open_admin(config).await?;
            let record = admin
                .add_agent(&name, kind, device, teams, &expected)
                .await
                .map_err(|e| e.to_string())?;
            out(&format!(
                "agent {} ({:?}) registered: device {} teams {:?}, credential valid until {}",
                record.name,
                record.kind,
                record.device,
                record.teams,
                record.credential.expires_at.0
            ));
            Ok(())
        }
        AdminAction::Revoke { name } => {
            let mut admin = open_admin(config).await?;
            let threads = admin.revoke_agent(&name).await.map_err(|e| e.to_string())?;
            out(&format!(
                "agent {name} revoked; removed from {} thread(s)",
                threads.len()
            ));
            Ok(())
        }
        AdminAction::Agents => {
            let admin = open_admin(config).await?;
            for a in admin.agents() {
                out(&format!(
                    "{}\t{:?}\t{}\tteams {:?}\tvalid until {}",
                    a.name, a.kind, a.device, a.teams, a.credential.expires_at.0
                ));
            }
            Ok(())
        }
    }
}

/// Creates the admin `config` describes, in its store if it names one.
pub(crate) async fn init_admin(config: Config) -> Result<Admin, String> {
    match config.store.clone() {
        None => Admin::init(config).await,
        Some(url) => Admin::init_in(config, device_store(&url).await?).await,
    }
    .map_err(|e| e.to_string())
}

/// Opens the admin `config` describes, from its store if it names one.
pub(crate) async fn open_admin(config: Config) -> Result<Admin, String> {
    match config.store.clone() {
        None => Admin::open(config).await.map_err(|e| {
            let why = e.to_string();
            if why.contains("device store") {
                format!("{why} (set `store` in the config file or pass --store URL)")
            } else {
                why
            }
        }),
        Some(url) => Admin::open_in(config, device_store(&url).await?)
            .await
            .map_err(|e| e.to_string()),
    }
}

async fn device_store(
    url: &str,
) -> Result<std::sync::Arc<dyn switchboard_client::store::DeviceStore>, String> {
    switchboard::store::open_device_store(url)
        .await
        .map_err(|e| format!("the admin's store: {e}"))
}

/// What an enrolment command expects of the key the relay serves for `whose` device: the
/// fingerprint given, or (with the insecure flag) anything, after a loud warning.
pub(crate) fn expected_key(
    fingerprint: Option<&str>,
    insecure_trust_relay: bool,
    whose: &str,
) -> Result<ExpectedKey, String> {
    match (fingerprint, insecure_trust_relay) {
        (Some(text), false) => Fingerprint::parse(text)
            .map(ExpectedKey::Fingerprint)
            .map_err(|e| format!("the {whose}'s fingerprint: {e}")),
        (None, true) => {
            tracing::warn!(
                "--insecure-trust-relay: the {whose}'s key is taken from the relay unchecked; \
                 a hostile relay (or anyone on the path of plain http) could substitute its own. \
                 Compare fingerprints out of band and give the fingerprint instead."
            );
            Ok(ExpectedKey::TrustRelay)
        }
        _ => Err(format!(
            "give the {whose}'s fingerprint (compared out of band), or --insecure-trust-relay"
        )),
    }
}

/// The keystore secret of a device command: a key file (created if missing), else
/// `SWITCHBOARD_PASSPHRASE`.
pub(crate) fn device_secret(key_file: Option<&Path>) -> Result<KeystoreSecret, String> {
    match key_file {
        Some(path) if !path.exists() => {
            KeystoreSecret::create_key_file(path).map_err(|e| e.to_string())
        }
        Some(path) => Ok(KeystoreSecret::KeyFile(path.to_owned())),
        None => std::env::var("SWITCHBOARD_PASSPHRASE")
            .map(KeystoreSecret::passphrase)
            .map_err(|_| {
                "set SWITCHBOARD_PASSPHRASE or pass --key-file to unlock the keystore".to_owned()
            }),
    }
}
