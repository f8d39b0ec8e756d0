//! `switchboard-test-bot`: an SDK echo bot run as a process by the end-to-end scenarios, which
//! kill it, restart it and run several of it at once.
//!
//! ```text
//! switchboard-test-bot --keystore PATH --key-file PATH --relay URL --store URL --instance NAME
//! ```
//!
//! It answers every customer message with `echo: <text>` (the text as
//! [`switchboard_bot_echo::echo_reply`] gives it back), and the messages a thread was forwarded
//! with likewise. It prints `ready` on stdout once the runtime is built and running; SIGTERM or
//! ctrl-c shut it down gracefully. Logs go to stderr, at the level `SWITCHBOARD_TEST_BOT_LOG`
//! names (`error`, `warn` (the default), `info`, `debug`, `trace`).

use std::io::Write as _;
use std::process::ExitCode;

use switchboard::prelude::*;
use switchboard_bot_echo::echo_reply;

/// The echo bot.
struct Echo;

impl Echo {
    async fn answer(cx: &mut Ctx, msg: &Message) -> Result<(), BotError> {
        if msg.is_from_customer()
            && let Some(text) = echo_reply(msg.text())
        {
            cx.reply(Content::text(format!("echo: {text}"))).await?;
        }
        Ok(())
    }
}

#[async_trait]
impl Bot for Echo {
    async fn on_thread(
        &self,
        cx: &mut Ctx,
        _: &ThreadInfo,
        history: &[Message],
    ) -> Result<(), BotError> {
        for msg in history {
            Self::answer(cx, msg).await?;
        }
        Ok(())
    }

    async fn on_message(&self, cx: &mut Ctx, msg: &Message) -> Result<(), BotError> {
        Self::answer(cx, msg).await
    }
}

/// The command line.
#[derive(Debug, Default)]
struct Args {
    keystore: String,
    key_file: String,
    relay: String,
    store: String,
    instance: String,
}

const USAGE: &str = "usage: switchboard-test-bot --keystore PATH --key-file PATH --relay URL \
                     --store URL --instance NAME";

fn parse(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut parsed = Args::default();
    while let Some(flag) = args.next() {
        let slot = match flag.as_str() {
            "--keystore" => &mut parsed.keystore,
            "--key-file" => &mut parsed.key_file,
            "--relay" => &mut parsed.relay,
            "--store" => &mut parsed.store,
            "--instance" => &mut parsed.instance,
            other => return Err(format!("unknown argument {other:?}")),
        };
        *slot = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
    }
    for (name, value) in [
        ("--keystore", &parsed.keystore),
        ("--key-file", &parsed.key_file),
        ("--relay", &parsed.relay),
        ("--store", &parsed.store),
        ("--instance", &parsed.instance),
    ] {
        if value.is_empty() {
            return Err(format!("{name} is required"));
        }
    }
    Ok(parsed)
}

fn log_level() -> tracing::Level {
    match std::env::var("SWITCHBOARD_TEST_BOT_LOG").as_deref() {
        Ok("error") => tracing::Level::ERROR,
        Ok("info") => tracing::Level::INFO,
        Ok("debug") => tracing::Level::DEBUG,
        Ok("trace") => tracing::Level::TRACE,
        _ => tracing::Level::WARN,
    }
}

async fn run(args: Args) -> Result<(), BotError> {
    let runtime = Runtime::builder()
        .keystore(&args.keystore)
        .key_file(&args.key_file)
        .relay(args.relay)
        .store(args.store)
        .instance(args.instance)
        .bot(Echo)
        .build()
        .await?;
    {
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "ready")
            .and_then(|()| stdout.flush())
            .map_err(BotError::other)?;
    }
    runtime.run_until_shutdown().await
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_max_level(log_level())
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    let args = match parse(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "{e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "the bot stopped");
            let _ = writeln!(std::io::stderr(), "switchboard-test-bot: {e}");
            ExitCode::FAILURE
        }
    }
}
