//! The `switchboard` command.
//!
//! ```text
//! switchboard relay --db sqlite://relay.db --listen 127.0.0.1:8700
//! switchboard relay --db postgres://user@host/db --listen 0.0.0.0:8700 --config relay.toml
//! ```

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod admin_cmd;
mod agent_cmd;
mod bench_admin;
mod bench_echo;
mod bench_http;
mod bot_cmd;
mod chat;
mod conformance_cmd;
mod demo;
mod relay_cmd;
use tracing_subscriber::filter::LevelFilter;

/// Switchboard: end-to-end encrypted business messaging with bots and people.
#[derive(Debug, Parser)]
#[command(name = "switchboard", version)]
struct Cli {
    /// Log level: error, warn, info, debug or trace.
    #[arg(long, global = true, default_value = "info")]
    log_level: LevelFilter,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the relay server.
    Relay(relay_cmd::RelayArgs),
    /// The admin device of an entity: init, run, add-agent, revoke, agents.
    Admin(admin_cmd::AdminArgs),
    /// Agent devices (bots and people).
    Agent {
        #[command(subcommand)]
        action: AgentAction,
    },
    /// Chat with an entity as a customer, in the terminal.
    Chat(chat::ChatArgs),
    /// Run a ready bot of bots/ as an enrolled agent (`switchboard bot echo`).
    Bot(bot_cmd::BotArgs),
    /// Run the bot conformance suite against a bot process: `switchboard conformance [options]
    /// -- CMD ARGS` (docs/conformance.md). Exits non-zero if a check fails.
    Conformance(conformance_cmd::ConformanceArgs),
    /// The whole system in one process, every step printed (relay on SQLite, admin, a bot, a
    /// human, a customer).
    Demo(demo::DemoArgs),
    /// Measure durable posts per second and latency of the relay's store (`bench echo`: a
    /// bot's answered messages per second and reply latency).
    #[command(args_conflicts_with_subcommands = true)]
    Bench {
        /// What to measure instead of the relay's store.
        #[command(subcommand)]
        kind: Option<BenchKind>,
        /// Database, as for `relay`.
        #[arg(long, default_value = "sqlite://switchboard-bench.db")]
        db: String,
        /// Posts in total.
        #[arg(long, default_value_t = 20_000)]
        posts: usize,
        /// Posting tasks at once.
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        /// Threads the posts are spread over.
        #[arg(long, default_value_t = 64)]
        threads: usize,
        /// Payload bytes per post (with --http: the text sealed into each message).
        #[arg(long, default_value_t = 600)]
        payload_bytes: usize,
        /// Post real sealed messages through the HTTP API of a relay started in this process
        /// (signed requests, one thread per poster), instead of straight into the store.
        #[arg(long)]
        http: bool,
    },
}

#[derive(Debug, Subcommand)]
enum BenchKind {
    /// Answered messages per second and customer-to-reply latency through one echo bot (the
    /// SDK's Runtime on a SQLite store), from each number of customers at once, beside the
    /// crypto floor measured in the same run.
    Echo(bench_echo::EchoArgs),
    /// What one customer message costs the admin device as the entity's threads grow: its
    /// whole state in its keystore against its threads in a SQLite device store, in one run.
    Admin(bench_admin::AdminBenchArgs),
}

#[derive(Debug, Subcommand)]
enum AgentAction {
    /// Create an agent device: prints its id for `switchboard admin add-agent`.
    Init(agent_cmd::AgentInit),
}

/// Prints a line to stdout and flushes it (the chat and the tests read it line by line).
pub(crate) fn out(line: &str) {
    use std::io::Write as _;
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{line}");
    let _ = stdout.flush();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_max_level(cli.log_level)
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            tracing::error!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Relay(args) => relay_cmd::run(args).await,
            Command::Admin(args) => admin_cmd::run(args).await,
            Command::Agent {
                action: AgentAction::Init(args),
            } => agent_cmd::init(args).await,
            Command::Chat(args) => chat::run(args).await,
            Command::Bot(args) => bot_cmd::run(args).await,
            Command::Conformance(args) => conformance_cmd::run(args).await,
            Command::Demo(args) => demo::run(args).await,
            Command::Bench {
                kind: Some(BenchKind::Echo(args)),
                ..
            } => bench_echo::run(args).await,
            Command::Bench {
                kind: Some(BenchKind::Admin(args)),
                ..
            } => bench_admin::run(args).await,
            Command::Bench {
                kind: None,
                db,
                posts,
                concurrency,
                threads,
                payload_bytes,
                http,
            } => {
                let report = if http {
                    bench_http::run(&db, posts, concurrency, payload_bytes).await
                } else {
                    let config = switchboard_relay::bench::BenchConfig {
                        posts,
                        concurrency,
                        threads,
                        payload_bytes,
                    };
                    switchboard_relay::bench::run(&db, config)
                        .await
                        .map_err(|e| e.to_string())
                };
                report.map(|report| out(&report.to_string()))
            }
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// Resolves on SIGINT or SIGTERM.
pub(crate) async fn shutdown_signal() {
    let interrupt = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!("cannot listen for SIGTERM ({e}); stopping on Ctrl-C only");
                    let _ = interrupt.await;
                    return;
                }
            };
        tokio::select! {
            _ = interrupt => {}
            _ = terminate.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = interrupt.await;
    }
    tracing::info!("shutting down: finishing requests in flight");
}
