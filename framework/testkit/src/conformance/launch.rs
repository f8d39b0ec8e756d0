//! How the suite starts, kills and stops the bot under test: in this process
//! ([`RustBot`], a bot of the SDK run by its `Runtime`), or as a process of its own
//! ([`ProcessBot`], a bot in any language, given its world through environment variables).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use switchboard::{Bot, RuntimeBuilder};
use tokio::io::AsyncReadExt as _;
use tokio::sync::oneshot;

/// How long a bot may take to start (build its runtime, open its keystore and store).
pub const START_WAIT: Duration = Duration::from_secs(30);

/// How long a graceful stop may take.
pub const STOP_WAIT: Duration = Duration::from_secs(30);

/// The environment variable with the relay's URL (`http://HOST:PORT`).
pub const ENV_RELAY: &str = "SWITCHBOARD_RELAY";
/// The entity the bot works for.
pub const ENV_ENTITY: &str = "SWITCHBOARD_ENTITY";
/// The bot's name at the entity (in its credential).
pub const ENV_BOT_NAME: &str = "SWITCHBOARD_BOT_NAME";
/// The path of the bot's agent keystore, created and enrolled by the suite.
pub const ENV_KEYSTORE: &str = "SWITCHBOARD_KEYSTORE";
/// The path of the key file that unlocks it.
pub const ENV_KEY_FILE: &str = "SWITCHBOARD_KEY_FILE";
/// The state store URL the bot keeps its state in (`sqlite://PATH`), the same across restarts.
pub const ENV_STORE: &str = "SWITCHBOARD_STORE";
/// The bot's instance name (the same across restarts).
pub const ENV_INSTANCE: &str = "SWITCHBOARD_INSTANCE";
/// The admin device's fingerprint (what the keystore pinned).
pub const ENV_ADMIN_FINGERPRINT: &str = "SWITCHBOARD_ADMIN_FINGERPRINT";

/// What the bot under test is given to start: its relay, its enrolled agent keystore, where to
/// keep its state.
#[derive(Clone, Debug)]
pub struct BotEnv {
    /// The relay's URL (the suite's fault-injecting proxy in front of it).
    pub relay: String,
    /// The entity.
    pub entity: String,
    /// The bot's name at the entity.
    pub name: String,
    /// Its agent keystore (closed; enrolled at the admin).
    pub keystore: PathBuf,
    /// The key file unlocking the keystore.
    pub key_file: PathBuf,
    /// Its state store URL.
    pub store: String,
    /// Its instance name.
    pub instance: String,
    /// The admin's fingerprint.
    pub admin_fingerprint: String,
}

impl BotEnv {
    /// The environment variables a bot process is given (names in the `ENV_*` constants).
    #[must_use]
    pub fn vars(&self) -> Vec<(&'static str, String)> {
        vec![
            (ENV_RELAY, self.relay.clone()),
            (ENV_ENTITY, self.entity.clone()),
            (ENV_BOT_NAME, self.name.clone()),
            (ENV_KEYSTORE, self.keystore.display().to_string()),
            (ENV_KEY_FILE, self.key_file.display().to_string()),
            (ENV_STORE, self.store.clone()),
            (ENV_INSTANCE, self.instance.clone()),
            (ENV_ADMIN_FINGERPRINT, self.admin_fingerprint.clone()),
        ]
    }
}

/// Starts the bot under test. Each start of one check gets the same [`BotEnv`] (a restart is a
/// new start on the same keystore and store).
#[async_trait]
pub trait Launcher: Send + Sync + 'static {
    /// Starts the bot; returns once it runs.
    ///
    /// # Errors
    /// Why it could not start (the check fails with it).
    async fn launch(&self, env: &BotEnv) -> Result<Box<dyn Launched>, String>;
}

/// A started bot.
#[async_trait]
pub trait Launched: Send + Sync {
    /// Ends it at once, as a crash would: no graceful shutdown, nothing flushed.
    async fn kill(self: Box<Self>);

    /// Shuts it down gracefully (bounded by [`STOP_WAIT`]).
    ///
    /// # Errors
    /// How it failed to stop, or ended with an error.
    async fn stop(self: Box<Self>) -> Result<(), String>;

    /// What it logged last, for a failed check's report (empty if nothing is known).
    fn log_tail(&self) -> String {
        String::new()
    }
}

/// Changes a runtime builder before it builds (layers, concurrency, ...).
type Configure = dyn Fn(RuntimeBuilder) -> RuntimeBuilder + Send + Sync;

/// A bot of the SDK, run by its `Runtime` in this process on a tokio runtime of its own (so
/// that [`Launched::kill`] drops every task it has, as a crash would).
pub struct RustBot {
    bot: Arc<dyn Bot>,
    configure: Option<Arc<Configure>>,
}

impl std::fmt::Debug for RustBot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RustBot").finish_non_exhaustive()
    }
}

impl RustBot {
    /// Runs `bot` (one instance, shared by its restarts).
    pub fn new(bot: impl Bot) -> Self {
        Self {
            bot: Arc::new(bot),
            configure: None,
        }
    }

    /// Changes the runtime builder before each start (after the suite set relay, keystore,
    /// store and instance): layers, concurrency.
    #[must_use]
    pub fn configure(
        mut self,
        f: impl Fn(RuntimeBuilder) -> RuntimeBuilder + Send + Sync + 'static,
    ) -> Self {
        self.configure = Some(Arc::new(f));
        self
    }
}

/// What the thread of an in-process bot is told.
enum Control {
    Kill,
    Stop,
}

struct InProcess {
    control: Option<oneshot::Sender<Control>>,
    done: Option<oneshot::Receiver<Result<(), String>>>,
}

#[async_trait]
impl Launcher for RustBot {
    async fn launch(&self, env: &BotEnv) -> Result<Box<dyn Launched>, String> {
        let mut builder = switchboard::Runtime::builder()
            .relay(env.relay.clone())
            .keystore(env.keystore.clone())
            .key_file(env.key_file.clone())
            .store(env.store.clone())
            .instance(env.instance.clone())
            .shutdown_timeout(Duration::from_secs(10))
            .bot(Arc::clone(&self.bot));
        if let Some(configure) = &self.configure {
            builder = configure(builder);
        }
        let (ready_tx, ready_rx) = oneshot::channel();
        let (control_tx, control_rx) = oneshot::channel();
        let (done_tx, done_rx) = oneshot::channel();
        std::thread::Builder::new()
            .name(format!("bot-{}", env.instance))
            .spawn(move || run_in_thread(builder, ready_tx, control_rx, done_tx))
            .map_err(|e| format!("a thread for the bot: {e}"))?;
        match tokio::time::timeout(START_WAIT, ready_rx).await {
            Ok(Ok(Ok(()))) => Ok(Box::new(InProcess {
                control: Some(control_tx),
                done: Some(done_rx),
            })),
            Ok(Ok(Err(e))) => Err(format!("the bot's runtime did not start: {e}")),
            Ok(Err(_)) => Err("the bot's runtime thread ended before it started".to_owned()),
            Err(_) => Err(format!(
                "the bot's runtime did not start within {START_WAIT:?}"
            )),
        }
    }
}

/// The body of an in-process bot's thread: builds the runtime, runs it until told to stop
/// (gracefully) or to die (its tokio runtime dropped with every task in it).
fn run_in_thread(
    builder: RuntimeBuilder,
    ready: oneshot::Sender<Result<(), String>>,
    control: oneshot::Receiver<Control>,
    done: oneshot::Sender<Result<(), String>>,
) {
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            let _ = ready.send(Err(format!("a tokio runtime: {e}")));
            return;
        }
    };
    let result = rt.block_on(async move {
        let runtime = match builder.build().await {
            Ok(runtime) => runtime,
            Err(e) => {
                let _ = ready.send(Err(e.to_string()));
                return None;
            }
        };
        let handle = runtime.handle();
        let _ = ready.send(Ok(()));
        let run = runtime.run_until(std::future::pending());
        tokio::pin!(run);
        tokio::select! {
            ended = &mut run => Some(ended.map_err(|e| format!("the runtime ended: {e}"))),
            control = control => match control {
                Ok(Control::Stop) => {
                    handle.shutdown();
                    Some(match tokio::time::timeout(STOP_WAIT, run).await {
                        Ok(ended) => ended.map_err(|e| format!("the runtime's shutdown: {e}")),
                        Err(_) => Err(format!("the runtime did not shut down within {STOP_WAIT:?}")),
                    })
                }
                // Killed (or the suite is gone): drop everything in flight.
                Ok(Control::Kill) | Err(_) => None,
            },
        }
    });
    rt.shutdown_background();
    let _ = done.send(result.unwrap_or(Ok(())));
}

#[async_trait]
impl Launched for InProcess {
    async fn kill(mut self: Box<Self>) {
        if let Some(control) = self.control.take() {
            let _ = control.send(Control::Kill);
        }
        if let Some(done) = self.done.take() {
            let _ = tokio::time::timeout(STOP_WAIT, done).await;
        }
    }

    async fn stop(mut self: Box<Self>) -> Result<(), String> {
        if let Some(control) = self.control.take() {
            let _ = control.send(Control::Stop);
        }
        match self.done.take() {
            None => Ok(()),
            Some(done) => {
                match tokio::time::timeout(STOP_WAIT + Duration::from_secs(5), done).await {
                    Ok(Ok(result)) => result,
                    Ok(Err(_)) => Err("the bot's runtime thread died".to_owned()),
                    Err(_) => Err(format!("the bot did not stop within {STOP_WAIT:?}")),
                }
            }
        }
    }
}

/// A bot run as a process of its own, in any language: started with the `ENV_*` variables of
/// its [`BotEnv`] set (the relay, the entity, its enrolled keystore and key file, its store and
/// instance), it prints a line `ready` on its standard output once it runs (within
/// [`START_WAIT`]); its standard error goes to a log file beside its keystore. Killed with
/// SIGKILL, stopped with SIGTERM (it should exit with status 0 within [`STOP_WAIT`]).
#[derive(Clone, Debug)]
pub struct ProcessBot {
    program: PathBuf,
    args: Vec<String>,
}

impl ProcessBot {
    /// Runs `program` with `args`.
    pub fn new(
        program: impl Into<PathBuf>,
        args: impl IntoIterator<Item = impl Into<String>>,
    ) -> Self {
        Self {
            program: program.into(),
            args: args.into_iter().map(Into::into).collect(),
        }
    }
}

/// Bot processes started by this process (numbers their logs).
static STARTED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// The most of a bot process's log a report quotes, in lines.
const LOG_TAIL_LINES: usize = 40;

/// The longest `ready` line read (a process that writes without newlines is not read
/// without bound).
const MAX_LINE: usize = 4096;

struct Process {
    child: tokio::process::Child,
    log: PathBuf,
    /// Drains the rest of the process's standard output.
    drain: tokio::task::JoinHandle<()>,
}

#[async_trait]
impl Launcher for ProcessBot {
    async fn launch(&self, env: &BotEnv) -> Result<Box<dyn Launched>, String> {
        let n = STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = env
            .keystore
            .parent()
            .map_or_else(std::env::temp_dir, std::path::Path::to_path_buf);
        let log = dir.join(format!("bot-{}-{n}.log", env.instance));
        let stderr =
            std::fs::File::create(&log).map_err(|e| format!("the log {}: {e}", log.display()))?;
        let mut child = tokio::process::Command::new(&self.program)
            .args(&self.args)
            .envs(env.vars())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("starting {}: {e}", self.program.display()))?;
        let Some(stdout) = child.stdout.take() else {
            return Err("the bot process has no standard output".to_owned());
        };
        let mut lines = tokio::io::BufReader::with_capacity(MAX_LINE, stdout);
        let ready = tokio::time::timeout(START_WAIT, async {
            let mut line = Vec::new();
            loop {
                line.clear();
                let mut limited = (&mut lines).take(MAX_LINE as u64);
                match tokio::io::AsyncBufReadExt::read_until(&mut limited, b'\n', &mut line).await {
                    Ok(0) | Err(_) => return false,
                    Ok(_) if String::from_utf8_lossy(&line).trim() == "ready" => return true,
                    Ok(_) => {}
                }
            }
        })
        .await;
        if ready != Ok(true) {
            let _ = child.start_kill();
            let _ = child.wait().await;
            return Err(format!(
                "the bot process did not print `ready` within {START_WAIT:?}{}; its log:\n{}",
                if ready.is_ok() {
                    " (its output ended)"
                } else {
                    ""
                },
                tail(&log, LOG_TAIL_LINES)
            ));
        }
        // The rest of its output is read and dropped, through a fixed buffer (a process that
        // writes without newlines is not kept in memory).
        let drain = tokio::spawn(async move {
            let _ = tokio::io::copy(&mut lines, &mut tokio::io::sink()).await;
        });
        Ok(Box::new(Process { child, log, drain }))
    }
}

#[async_trait]
impl Launched for Process {
    async fn kill(mut self: Box<Self>) {
        let _ = self.child.start_kill();
        let _ = tokio::time::timeout(STOP_WAIT, self.child.wait()).await;
        self.drain.abort();
    }

    async fn stop(mut self: Box<Self>) -> Result<(), String> {
        let Some(pid) = self.child.id() else {
            return Err("the bot process had already ended".to_owned());
        };
        let sent = tokio::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await
            .map_err(|e| format!("kill -TERM {pid}: {e}"))?;
        if !sent.success() {
            return Err(format!("kill -TERM {pid} failed: {sent}"));
        }
        let waited = tokio::time::timeout(STOP_WAIT, self.child.wait()).await;
        self.drain.abort();
        match waited {
            Ok(Ok(status)) if status.success() => Ok(()),
            Ok(Ok(status)) => Err(format!("the bot process ended with {status} after SIGTERM")),
            Ok(Err(e)) => Err(format!("waiting for the bot process: {e}")),
            Err(_) => {
                let _ = self.child.start_kill();
                Err(format!(
                    "the bot process did not exit within {STOP_WAIT:?} of SIGTERM"
                ))
            }
        }
    }

    fn log_tail(&self) -> String {
        tail(&self.log, LOG_TAIL_LINES)
    }
}

/// The last `n` lines of the file at `path` (empty if it cannot be read).
fn tail(path: &std::path::Path, n: usize) -> String {
    let Ok(text) = std::fs::read(path) else {
        return String::new();
    };
    let text = String::from_utf8_lossy(&text);
    let lines: Vec<&str> = text.lines().collect();
    lines
        .get(lines.len().saturating_sub(n)..)
        .unwrap_or_default()
        .join("\n")
}
