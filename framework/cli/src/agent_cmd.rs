//! `switchboard agent init`: creates an agent device (for a bot or a person).

use std::path::PathBuf;

use clap::Args;
use switchboard_client::{Device, NewDevice, NewRole};
use switchboard_protocol::EntityId;

use crate::admin_cmd::{device_secret, expected_key};
use crate::out;

/// `switchboard agent init`.
#[derive(Debug, Args)]
pub(crate) struct AgentInit {
    /// The relay.
    #[arg(long)]
    relay: String,
    /// The entity the agent works for (its admin key is fetched and pinned).
    #[arg(long)]
    entity: String,
    /// Where to create the agent's keystore.
    #[arg(long)]
    keystore: PathBuf,
    /// Unlock with this key file (created if missing) instead of `SWITCHBOARD_PASSPHRASE`.
    #[arg(long)]
    key_file: Option<PathBuf>,
    /// The entity admin's fingerprint, as `switchboard admin init` printed it on the admin's
    /// machine (30 digits; compare it over a channel the relay does not control). The command
    /// refuses an admin key with another fingerprint.
    #[arg(
        long,
        required_unless_present = "insecure_trust_relay",
        conflicts_with = "insecure_trust_relay"
    )]
    admin_fingerprint: Option<String>,
    /// Pin whatever admin key the relay serves, unchecked. Insecure: a hostile relay, or anyone
    /// on the path of plain http, becomes this agent's admin.
    #[arg(long)]
    insecure_trust_relay: bool,
}

pub(crate) async fn init(args: AgentInit) -> Result<(), String> {
    let secret = device_secret(args.key_file.as_deref())?;
    let entity = EntityId::new(args.entity).map_err(|e| e.to_string())?;
    let admin = expected_key(
        args.admin_fingerprint.as_deref(),
        args.insecure_trust_relay,
        "admin",
    )?;
    let device = Device::create(
        &args.keystore,
        &secret,
        NewDevice::new(&args.relay, NewRole::Agent { entity, admin }),
    )
    .await
    .map_err(|e| e.to_string())?;
    out(&format!(
        "agent device {} fingerprint {}",
        device.id(),
        device.fingerprint()
    ));
    out(&format!(
        "register it with: switchboard admin add-agent --bot NAME --device {} --fingerprint '{}'",
        device.id(),
        device.fingerprint()
    ));
    Ok(())
}
