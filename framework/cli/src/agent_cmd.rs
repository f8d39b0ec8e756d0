//! `switchboard agent init`: creates an agent device (for a bot or a person).

use std::path::PathBuf;

use clap::Args;
use switchboard_client::{Device, NewDevice, NewRole};
use switchboard_protocol::EntityId;

use crate::admin_cmd::device_secret;
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
}

pub(crate) async fn init(args: AgentInit) -> Result<(), String> {
    let secret = device_secret(args.key_file.as_deref())?;
    let entity = EntityId::new(args.entity).map_err(|e| e.to_string())?;
    let device = Device::create(
        &args.keystore,
        &secret,
        NewDevice::new(&args.relay, NewRole::Agent { entity }),
    )
    .await
    .map_err(|e| e.to_string())?;
    out(&format!(
        "agent device {} fingerprint {}",
        device.id(),
        device.fingerprint()
    ));
    out(&format!(
        "register it with: switchboard admin add-agent --bot NAME --device {}",
        device.id()
    ));
    Ok(())
}
