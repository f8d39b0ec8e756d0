//! `switchboard-bot-order-status`: runs the order-status bot as an enrolled agent.
//!
//! ```text
//! switchboard-bot-order-status --api http://127.0.0.1:8080 --keystore orderbot.keystore
//!     --key-file orderbot.key [--handoff-team billing] [--relay URL] [--store URL]
//!     [--instance NAME] [--metrics ADDR]
//! ```

use std::process::ExitCode;

use switchboard_bot_order_status::{OrderApi, OrderBot};

#[path = "../../common/cli.rs"]
mod cli;

use cli::{Args, Failure, Parsed};

const OPTIONS: [(&str, &str); 2] = [
    (
        "--api",
        "the order API's base URL, e.g. http://127.0.0.1:8080",
    ),
    (
        "--handoff-team",
        "the team other questions go to (default billing)",
    ),
];

async fn run() -> Result<(), Failure> {
    let args = match Args::from_env(&OPTIONS).map_err(Failure::usage)? {
        Parsed::Run(args) => args,
        Parsed::Help(text) => {
            #[allow(clippy::print_stdout)]
            {
                print!("{text}");
            }
            return Ok(());
        }
    };
    let base = args.required("--api").map_err(Failure::usage)?;
    let http = reqwest::Client::builder()
        .build()
        .map_err(|e| Failure::run(e.to_string()))?;
    let api = OrderApi::new(base, http).map_err(|e| Failure::usage(e.to_string()))?;
    let mut bot = OrderBot::new(api);
    if let Some(team) = args.get("--handoff-team") {
        bot = bot.handoff_team(team);
    }
    let builder = args.builder().map_err(Failure::usage)?.bot(bot);
    cli::run(builder, "order-status")
        .await
        .map_err(Failure::run)
}

#[tokio::main]
async fn main() -> ExitCode {
    cli::init_logging();
    cli::exit(run().await)
}
