//! `switchboard-bot-triage`: runs the triage bot as an enrolled agent.
//!
//! ```text
//! switchboard-bot-triage --rules bots/triage/triage.toml --keystore triage.keystore
//!     --key-file triage.key [--relay URL] [--store URL] [--instance NAME] [--metrics ADDR]
//! ```

use std::process::ExitCode;

use switchboard_bot_triage::{Triage, TriageBot};

#[path = "../../common/cli.rs"]
mod cli;

use cli::{Args, Failure, Parsed};

/// The largest file read (the loader checks its own, smaller limit too).
const MAX_FILE: u64 = 4 << 20;

async fn run() -> Result<(), Failure> {
    let args = match Args::from_env(&[(
        "--rules",
        "the triage rules file (TOML; see bots/triage/README.md)",
    )])
    .map_err(Failure::usage)?
    {
        Parsed::Run(args) => args,
        Parsed::Help(text) => {
            #[allow(clippy::print_stdout)]
            {
                print!("{text}");
            }
            return Ok(());
        }
    };
    let path = args.required("--rules").map_err(Failure::usage)?;
    let size = std::fs::metadata(path)
        .map_err(|e| Failure::usage(format!("{path}: {e}")))?
        .len();
    if size > MAX_FILE {
        return Err(Failure::usage(format!(
            "{path}: larger than {MAX_FILE} bytes"
        )));
    }
    let text = std::fs::read_to_string(path).map_err(|e| Failure::usage(format!("{path}: {e}")))?;
    let logic = Triage::from_toml(&text).map_err(|e| Failure::usage(format!("{path}: {e}")))?;
    let builder = args
        .builder()
        .map_err(Failure::usage)?
        .bot(TriageBot::new(logic));
    cli::run(builder, "triage").await.map_err(Failure::run)
}

#[tokio::main]
async fn main() -> ExitCode {
    cli::init_logging();
    cli::exit(run().await)
}
