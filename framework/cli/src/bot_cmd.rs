//! `switchboard bot echo`: runs a ready bot of bots/ as an enrolled agent, in the SDK's runtime
//! (for a first try, and as a bot process for `switchboard conformance`).

use std::path::PathBuf;

use clap::{Args, Subcommand};
use switchboard::Runtime;
use switchboard_bot_echo::EchoBot;

use crate::{out, shutdown_signal};

/// `switchboard bot`.
#[derive(Debug, Args)]
pub(crate) struct BotArgs {
    #[command(subcommand)]
    kind: BotKind,
}

#[derive(Debug, Subcommand)]
enum BotKind {
    /// The echo bot: answers every text of the customer with the same text.
    Echo(RunArgs),
}

/// Where a bot runs: each flag also read from its environment variable (the variables
/// `switchboard conformance` sets).
#[derive(Debug, Args)]
struct RunArgs {
    /// The agent's keystore (made by `switchboard agent init`).
    #[arg(long, env = "SWITCHBOARD_KEYSTORE")]
    keystore: PathBuf,
    /// The key file that unlocks it.
    #[arg(long, env = "SWITCHBOARD_KEY_FILE")]
    key_file: PathBuf,
    /// The relay, http://HOST:PORT (default: the keystore's).
    #[arg(long, env = "SWITCHBOARD_RELAY")]
    relay: Option<String>,
    /// The state store: sqlite://PATH, postgres://..., memory (default: beside the keystore).
    #[arg(long, env = "SWITCHBOARD_STORE")]
    store: Option<String>,
    /// This process's name among the bot's instances.
    #[arg(long, env = "SWITCHBOARD_INSTANCE")]
    instance: Option<String>,
}

pub(crate) async fn run(args: BotArgs) -> Result<(), String> {
    let BotKind::Echo(args) = args.kind;
    let mut builder = Runtime::builder()
        .keystore(args.keystore)
        .key_file(args.key_file)
        .bot(EchoBot);
    if let Some(relay) = args.relay {
        builder = builder.relay(relay);
    }
    if let Some(store) = args.store {
        builder = builder.store(store);
    }
    if let Some(instance) = args.instance {
        builder = builder.instance(instance);
    }
    let runtime = builder.build().await.map_err(|e| e.to_string())?;
    tracing::info!(bot = "echo", "running");
    out("ready");
    runtime
        .run_until(shutdown_signal())
        .await
        .map_err(|e| e.to_string())
}
