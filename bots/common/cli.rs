//! The command line of the bot binaries in bots/ (shared source: each bot's `main.rs` includes
//! it with `#[path = "../../common/cli.rs"] mod cli;`). No clap: a handful of `--flag VALUE`
//! options, each also read from an environment variable (`--key-file` from
//! `SWITCHBOARD_KEY_FILE`, ...); the command line wins.
//!
//! ```text
//! switchboard-bot-NAME --keystore K --key-file F [--relay URL] [--store URL]
//!                      [--instance NAME] [--metrics ADDR] [bot options]
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use switchboard::prelude::*;

/// The options every bot takes: (flag, what it is).
const COMMON: [(&str, &str); 6] = [
    (
        "--keystore",
        "the agent's keystore (made by `switchboard agent init`)",
    ),
    ("--key-file", "the key file that unlocks the keystore"),
    (
        "--relay",
        "the relay, http://HOST:PORT (default: the keystore's)",
    ),
    (
        "--store",
        "the state store: sqlite://PATH, postgres://..., memory (default: beside the keystore)",
    ),
    (
        "--instance",
        "this process's name among the bot's instances",
    ),
    (
        "--metrics",
        "serve /metrics, /healthz, /readyz at this address, e.g. 127.0.0.1:9100",
    ),
];

/// The longest value taken from the command line or the environment.
const MAX_VALUE: usize = 4096;

/// A parsed command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Args {
    values: BTreeMap<&'static str, String>,
}

/// What the command line asks for.
#[derive(Debug)]
pub(crate) enum Parsed {
    /// Run with these options.
    Run(Args),
    /// Print this help and exit.
    Help(String),
}

impl Args {
    /// Parses `args` (without the program name) against the common options and the bot's own
    /// `extra` ones; `env` looks an environment variable up.
    pub(crate) fn parse(
        program: &str,
        extra: &[(&'static str, &'static str)],
        args: impl IntoIterator<Item = String>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Parsed, String> {
        let known: Vec<(&'static str, &'static str)> =
            COMMON.iter().chain(extra.iter()).copied().collect();
        let mut values = BTreeMap::new();
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            if arg == "--help" || arg == "-h" {
                return Ok(Parsed::Help(help(program, &known)));
            }
            let (flag, inline) = match arg.split_once('=') {
                Some((flag, value)) => (flag.to_owned(), Some(value.to_owned())),
                None => (arg.clone(), None),
            };
            let Some(&(name, _)) = known.iter().find(|(name, _)| *name == flag) else {
                return Err(format!("unknown option {arg:?} (see --help)"));
            };
            let value = match inline {
                Some(value) => value,
                None => args.next().ok_or_else(|| format!("{name} needs a value"))?,
            };
            if value.is_empty() || value.len() > MAX_VALUE {
                return Err(format!("{name}: a value of 1 to {MAX_VALUE} bytes"));
            }
            if values.insert(name, value).is_some() {
                return Err(format!("{name} given twice"));
            }
        }
        for &(name, _) in &known {
            if values.contains_key(name) {
                continue;
            }
            if let Some(value) = env(&env_name(name)).filter(|v| !v.is_empty()) {
                if value.len() > MAX_VALUE {
                    return Err(format!("{}: at most {MAX_VALUE} bytes", env_name(name)));
                }
                values.insert(name, value);
            }
        }
        for required in ["--keystore", "--key-file"] {
            if !values.contains_key(required) {
                return Err(format!(
                    "{required} is required (or {}); see --help",
                    env_name(required)
                ));
            }
        }
        Ok(Parsed::Run(Self { values }))
    }

    /// Parses the process's own command line and environment.
    pub(crate) fn from_env(extra: &[(&'static str, &'static str)]) -> Result<Parsed, String> {
        let mut args = std::env::args();
        let program = args.next().unwrap_or_else(|| "bot".to_owned());
        Self::parse(&program, extra, args, |name| std::env::var(name).ok())
    }

    /// The value of `flag`, if given.
    pub(crate) fn get(&self, flag: &str) -> Option<&str> {
        self.values.get(flag).map(String::as_str)
    }

    /// The value of `flag`, which the bot needs.
    pub(crate) fn required(&self, flag: &str) -> Result<&str, String> {
        self.get(flag)
            .ok_or_else(|| format!("{flag} is required (or {})", env_name(flag)))
    }

    /// A runtime builder with the common options set (the bot still to be added).
    pub(crate) fn builder(&self) -> Result<RuntimeBuilder, String> {
        let mut builder = Runtime::builder()
            .keystore(PathBuf::from(self.required("--keystore")?))
            .key_file(PathBuf::from(self.required("--key-file")?));
        if let Some(relay) = self.get("--relay") {
            builder = builder.relay(relay);
        }
        if let Some(store) = self.get("--store") {
            builder = builder.store(store);
        }
        if let Some(instance) = self.get("--instance") {
            builder = builder.instance(instance);
        }
        if let Some(addr) = self.get("--metrics") {
            let addr: SocketAddr = addr
                .parse()
                .map_err(|e| format!("--metrics {addr:?}: {e} (want HOST:PORT)"))?;
            builder = builder.metrics_addr(addr);
        }
        Ok(builder)
    }
}

/// `--key-file` -> `SWITCHBOARD_KEY_FILE`.
fn env_name(flag: &str) -> String {
    format!(
        "SWITCHBOARD_{}",
        flag.trim_start_matches('-')
            .replace('-', "_")
            .to_uppercase()
    )
}

fn help(program: &str, known: &[(&str, &str)]) -> String {
    let mut text = format!("usage: {program} --keystore K --key-file F [options]\n\noptions:\n");
    for (name, what) in known {
        text.push_str(&format!("  {name:<12} {what} (env {})\n", env_name(name)));
    }
    text
}

/// Sets up logging to stderr (`SWITCHBOARD_LOG`: error, warn, info, debug, trace; default info).
pub(crate) fn init_logging() {
    let level = std::env::var("SWITCHBOARD_LOG")
        .ok()
        .and_then(|l| l.parse::<tracing::Level>().ok())
        .unwrap_or(tracing::Level::INFO);
    let _ = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Builds the runtime, says "ready" on stdout, runs until ctrl-c or SIGTERM.
pub(crate) async fn run(builder: RuntimeBuilder, name: &str) -> Result<(), String> {
    let runtime = builder.build().await.map_err(|e| e.to_string())?;
    if let Some(addr) = runtime.metrics_addr() {
        tracing::info!(%addr, "metrics and health");
    }
    tracing::info!(bot = name, "running");
    #[allow(clippy::print_stdout)]
    {
        println!("ready");
    }
    runtime
        .run_until_shutdown()
        .await
        .map_err(|e| e.to_string())
}

/// Runs `main` and turns its error into a message and exit code 1 (2 for a usage error).
pub(crate) fn exit(result: Result<(), Failure>) -> std::process::ExitCode {
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(failure) => {
            #[allow(clippy::print_stderr)]
            {
                eprintln!("error: {}", failure.message);
            }
            std::process::ExitCode::from(if failure.usage { 2 } else { 1 })
        }
    }
}

/// Why a bot binary stopped.
#[derive(Debug)]
pub(crate) struct Failure {
    message: String,
    usage: bool,
}

impl Failure {
    /// A usage error (exit code 2).
    pub(crate) fn usage(message: String) -> Self {
        Self {
            message,
            usage: true,
        }
    }

    /// A failure while running (exit code 1).
    pub(crate) fn run(message: String) -> Self {
        Self {
            message,
            usage: false,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]

    use super::*;

    fn parse(args: &[&str], env: &[(&str, &str)]) -> Result<Parsed, String> {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Args::parse(
            "bot",
            &[("--extra", "a bot option")],
            args.iter().map(|a| (*a).to_owned()),
            move |name| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()),
        )
    }

    fn run_args(parsed: Result<Parsed, String>) -> Args {
        match parsed.unwrap() {
            Parsed::Run(args) => args,
            Parsed::Help(_) => panic!("help"),
        }
    }

    #[test]
    fn flags_then_environment() {
        let args = run_args(parse(
            &["--keystore", "k", "--key-file=f", "--extra", "x"],
            &[
                ("SWITCHBOARD_RELAY", "http://127.0.0.1:1"),
                ("SWITCHBOARD_EXTRA", "env"),
            ],
        ));
        assert_eq!(args.get("--keystore"), Some("k"));
        assert_eq!(args.get("--key-file"), Some("f"));
        assert_eq!(args.get("--extra"), Some("x"), "the command line wins");
        assert_eq!(args.get("--relay"), Some("http://127.0.0.1:1"));
        assert_eq!(args.get("--store"), None);
        assert!(args.builder().is_ok());
        let from_env = run_args(parse(
            &[],
            &[("SWITCHBOARD_KEYSTORE", "k"), ("SWITCHBOARD_KEY_FILE", "f")],
        ));
        assert_eq!(from_env.get("--keystore"), Some("k"));
    }

    #[test]
    fn bad_command_lines_are_explained() {
        let err = |args: &[&str]| parse(args, &[]).unwrap_err();
        assert!(err(&["--key-file", "f"]).contains("--keystore is required"));
        assert!(err(&["--keystore", "k", "--key-file", "f", "--nope", "1"]).contains("unknown"));
        assert!(err(&["--keystore"]).contains("needs a value"));
        assert!(err(&["--keystore", "k", "--keystore", "k"]).contains("twice"));
        assert!(err(&["--keystore", ""]).contains("1 to"));
        let args = run_args(parse(
            &["--keystore", "k", "--key-file", "f", "--metrics", "x"],
            &[],
        ));
        assert!(args.builder().unwrap_err().contains("HOST:PORT"));
        assert!(
            args.required("--extra")
                .unwrap_err()
                .contains("SWITCHBOARD_EXTRA")
        );
        match parse(&["--help"], &[]).unwrap() {
            Parsed::Help(text) => assert!(text.contains("--extra") && text.contains("--metrics")),
            Parsed::Run(_) => panic!("not help"),
        }
    }
}
