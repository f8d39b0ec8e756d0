//! `switchboard-bot-echo`: runs the echo bot as an enrolled agent.
//!
//! ```text
//! switchboard-bot-echo --keystore echo.keystore --key-file echo.key [--relay URL]
//!     [--store URL] [--instance NAME] [--metrics ADDR]
//! ```

use std::process::ExitCode;

use switchboard_bot_echo::EchoBot;

#[path = "../../common/cli.rs"]
mod cli;

use cli::{Args, Failure, Parsed};

async fn run() -> Result<(), Failure> {
    let args = match Args::from_env(&[]).map_err(Failure::usage)? {
        Parsed::Run(args) => args,
        Parsed::Help(text) => {
            #[allow(clippy::print_stdout)]
            {
                print!("{text}");
            }
            return Ok(());
        }
    };
    let builder = args.builder().map_err(Failure::usage)?.bot(EchoBot);
    cli::run(builder, "echo").await.map_err(Failure::run)
}

#[tokio::main]
async fn main() -> ExitCode {
    cli::init_logging();
    cli::exit(run().await)
}
