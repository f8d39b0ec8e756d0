//! `switchboard-bot-faq`: runs the faq bot as an enrolled agent.
//!
//! ```text
//! switchboard-bot-faq --faq bots/faq/faq.toml --keystore faq.keystore
//!     --key-file faq.key [--relay URL] [--store URL] [--instance NAME] [--metrics ADDR]
//! ```

use std::process::ExitCode;

use switchboard_bot_faq::{Faq, FaqBot};

#[path = "../../common/cli.rs"]
mod cli;

use cli::{Args, Failure, Parsed};

/// The largest file read (the loader checks its own, smaller limit too).
const MAX_FILE: u64 = 4 << 20;

async fn run() -> Result<(), Failure> {
    let args = match Args::from_env(&[("--faq", "the FAQ file (TOML; see bots/faq/README.md)")])
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
    let path = args.required("--faq").map_err(Failure::usage)?;
    let size = std::fs::metadata(path)
        .map_err(|e| Failure::usage(format!("{path}: {e}")))?
        .len();
    if size > MAX_FILE {
        return Err(Failure::usage(format!(
            "{path}: larger than {MAX_FILE} bytes"
        )));
    }
    let text = std::fs::read_to_string(path).map_err(|e| Failure::usage(format!("{path}: {e}")))?;
    let logic = Faq::from_toml(&text).map_err(|e| Failure::usage(format!("{path}: {e}")))?;
    let builder = args
        .builder()
        .map_err(Failure::usage)?
        .bot(FaqBot::new(logic));
    cli::run(builder, "faq").await.map_err(Failure::run)
}

#[tokio::main]
async fn main() -> ExitCode {
    cli::init_logging();
    cli::exit(run().await)
}
