//! What the process scenarios share: a relay with an admin that routes every thread to the
//! echo bot, the bot run as a process (`switchboard-test-bot`, killed when its guard drops),
//! and customers that count the replies they get.

use std::collections::HashMap;
use std::io::{BufRead as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use switchboard_admin::{Admin, Config, Outcome};
use switchboard_client::{Device, Event, ExpectedKey, KeystoreSecret, NewDevice, NewRole};
use switchboard_protocol::{AgentKind, Content, DeviceId, EntityId, Epoch, Sender, ThreadId};
use switchboard_relay::http::Limits;
use switchboard_relay::server::Running;
use switchboard_testkit::{new_agent, scratch_dir};
use tokio::io::AsyncBufReadExt as _;
use tokio::time::{Instant, timeout};

/// The bot's name at the admin (and so in its credential).
pub const BOT_NAME: &str = "EchoBot";
/// How long a bot process may take to say `ready`.
const READY_WAIT: Duration = Duration::from_secs(30);
/// How long a killed or terminated bot process may take to exit.
const EXIT_WAIT: Duration = Duration::from_secs(20);

/// The reply the echo bot gives to `text`.
pub fn echo(text: &str) -> String {
    format!("echo: {text}")
}

/// A relay on loopback (SQLite file in `dir`), the entity's admin stepping in a task, and the
/// echo bot's agent device, enrolled, its keystore closed so that bot processes can open it.
pub struct Scene {
    pub dir: PathBuf,
    pub relay: Running,
    pub admin: AdminTask,
    pub bot: DeviceId,
    pub keystore: PathBuf,
    pub key_file: PathBuf,
}

impl Scene {
    /// Sets the scene up in a fresh scratch directory.
    pub async fn new(name: &str) -> Self {
        let dir = scratch_dir(name);
        let db = format!("sqlite://{}", dir.join("relay.db").display());
        // Lifted limits: the scenarios send faster than a person would, from one address.
        let relay =
            switchboard_relay::server::start_with_limits(&db, "127.0.0.1:0", Limits::lifted())
                .await
                .unwrap();
        let url = relay.url();
        let mut admin = Admin::init(config(&dir, &url)).await.unwrap();
        let key_file = dir.join("bot.key");
        let secret = KeystoreSecret::create_key_file(&key_file).unwrap();
        let keystore = dir.join("bot.keystore");
        let device = new_agent(
            &keystore,
            &secret,
            &url,
            "acme",
            ExpectedKey::Fingerprint(admin.device().fingerprint()),
        )
        .await;
        admin
            .add_agent(
                BOT_NAME,
                AgentKind::Bot,
                device.id(),
                vec!["support".into()],
                &ExpectedKey::Fingerprint(device.fingerprint()),
            )
            .await
            .unwrap();
        let bot = device.id();
        // Closes the keystore (and releases its lock) for the bot processes.
        drop(device);
        Self {
            dir,
            relay,
            admin: AdminTask::spawn(admin),
            bot,
            keystore,
            key_file,
        }
    }

    /// The arguments of a bot process of this scene's bot.
    pub fn bot_args(&self, relay: &str, store: &str, instance: &str) -> BotArgs {
        BotArgs {
            keystore: self.keystore.clone(),
            key_file: self.key_file.clone(),
            relay: relay.to_owned(),
            store: store.to_owned(),
            instance: instance.to_owned(),
            log_dir: self.dir.clone(),
        }
    }

    /// A copy of the bot's keystore and key file (the same device) for another process.
    pub fn keystore_copy(&self, name: &str) -> (PathBuf, PathBuf) {
        let keystore = self.dir.join(format!("{name}.keystore"));
        let key_file = self.dir.join(format!("{name}.key"));
        copy_private(&self.keystore, &keystore);
        copy_private(&self.key_file, &key_file);
        (keystore, key_file)
    }

    /// A new customer who opened a thread with the entity.
    pub async fn customer(&self, name: &str) -> Customer {
        let secret =
            KeystoreSecret::create_key_file(&self.dir.join(format!("{name}.key"))).unwrap();
        let mut device = Device::create(
            &self.dir.join(format!("{name}.keystore")),
            &secret,
            NewDevice::new(self.relay.url(), NewRole::Customer),
        )
        .await
        .unwrap();
        let thread = device
            .open_thread(&EntityId::new("acme").unwrap())
            .await
            .unwrap();
        Customer {
            name: name.to_owned(),
            device,
            thread,
            sent: Vec::new(),
            received: Vec::new(),
            equivocations: Vec::new(),
            errors: Vec::new(),
            hiccups: Vec::new(),
        }
    }
}

fn copy_private(from: &Path, to: &Path) {
    use std::os::unix::fs::OpenOptionsExt as _;
    let bytes = std::fs::read(from).unwrap();
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(to)
        .unwrap();
    file.write_all(&bytes).unwrap();
}

/// The admin's configuration: every thread goes to the bot (team "support"), which reads what
/// the customer wrote first (history on route).
fn config(dir: &Path, relay: &str) -> Config {
    KeystoreSecret::create_key_file(&dir.join("admin.key")).unwrap();
    let text = format!(
        r#"
        entity = "acme"
        display_name = "Acme"
        relay = "{relay}"
        keystore = "admin.keystore"
        key_file = "admin.key"
        audit_log = "audit.jsonl"

        [routing]
        bot_first = true
        fallback_team = "support"
        handoff_team = "humans"

        [history]
        on_route = true
        "#
    );
    std::fs::write(dir.join("entity.toml"), text).unwrap();
    Config::load(&dir.join("entity.toml")).unwrap()
}

/// What the admin saw while it stepped.
#[derive(Debug, Default)]
pub struct AdminSeen {
    /// Threads routed.
    pub routed: usize,
    /// Equivocations reported (by anyone in the entity's threads).
    pub equivocations: Vec<String>,
    /// Step errors.
    pub errors: Vec<String>,
}

/// The admin stepping in a task until stopped.
pub struct AdminTask {
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<AdminSeen>>,
    task: Option<tokio::task::JoinHandle<Admin>>,
}

impl AdminTask {
    fn spawn(mut admin: Admin) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(AdminSeen::default()));
        let task = tokio::spawn({
            let stop = Arc::clone(&stop);
            let seen = Arc::clone(&seen);
            async move {
                while !stop.load(Ordering::Relaxed) {
                    match admin.step(Duration::from_millis(500)).await {
                        Ok(outcomes) => {
                            let mut seen = seen.lock().unwrap();
                            for outcome in outcomes {
                                match outcome {
                                    Outcome::Routed { .. } => seen.routed += 1,
                                    Outcome::Event(e @ Event::Equivocation { .. }) => {
                                        seen.equivocations.push(format!("{e:?}"));
                                    }
                                    _ => {}
                                }
                            }
                        }
                        Err(e) => {
                            seen.lock().unwrap().errors.push(e.to_string());
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                    }
                }
                admin.flush_acks().await;
                admin
            }
        });
        Self {
            stop,
            seen,
            task: Some(task),
        }
    }

    /// Stops the admin (bounded) and returns what it saw.
    pub async fn stop(mut self) -> AdminSeen {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(task) = self.task.take() {
            let _ = timeout(Duration::from_secs(10), task).await;
        }
        std::mem::take(&mut *self.seen.lock().unwrap())
    }
}

impl Drop for AdminTask {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Arguments of a bot process.
#[derive(Clone, Debug)]
pub struct BotArgs {
    pub keystore: PathBuf,
    pub key_file: PathBuf,
    pub relay: String,
    pub store: String,
    pub instance: String,
    /// Where its stderr goes (`bot-<instance>-<n>.log`).
    pub log_dir: PathBuf,
}

/// Bot processes started in this test binary (numbers their logs).
static STARTED: AtomicUsize = AtomicUsize::new(0);

/// A running `switchboard-test-bot`; SIGKILLed when dropped. If the test is failing then, the
/// tail of its log is printed.
pub struct BotProcess {
    child: tokio::process::Child,
    pub instance: String,
    log: PathBuf,
    _stdout: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
}

impl BotProcess {
    /// Starts a bot process and waits (bounded) until it says `ready`.
    pub async fn start(args: &BotArgs) -> Self {
        let n = STARTED.fetch_add(1, Ordering::Relaxed);
        let log = args.log_dir.join(format!("bot-{}-{n}.log", args.instance));
        let stderr = std::fs::File::create(&log).unwrap();
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_switchboard-test-bot"))
            .arg("--keystore")
            .arg(&args.keystore)
            .arg("--key-file")
            .arg(&args.key_file)
            .args(["--relay", &args.relay])
            .args(["--store", &args.store])
            .args(["--instance", &args.instance])
            .env(
                "SWITCHBOARD_TEST_BOT_LOG",
                std::env::var("SWITCHBOARD_TEST_BOT_LOG").unwrap_or_else(|_| "info".to_owned()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let ready = timeout(READY_WAIT, async {
            loop {
                match lines.next_line().await {
                    Ok(Some(line)) if line.trim() == "ready" => return true,
                    Ok(Some(_)) => {}
                    Ok(None) | Err(_) => return false,
                }
            }
        })
        .await;
        if ready != Ok(true) {
            let _ = child.start_kill();
            panic!(
                "bot process {} did not get ready (waited {READY_WAIT:?}); its log:\n{}",
                args.instance,
                tail(&log, 60)
            );
        }
        Self {
            child,
            instance: args.instance.clone(),
            log,
            _stdout: lines,
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id().unwrap()
    }

    /// SIGKILL, and waits (bounded) for the process to be gone.
    pub async fn kill(mut self) {
        self.child.start_kill().unwrap();
        let status = timeout(EXIT_WAIT, self.child.wait())
            .await
            .expect("a SIGKILLed bot exits")
            .unwrap();
        assert!(!status.success(), "a SIGKILLed bot does not exit cleanly");
    }

    /// SIGTERM, and waits (bounded) for the process to exit; returns its status.
    pub async fn terminate(mut self) -> ExitStatus {
        let pid = self.pid().to_string();
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap();
        assert!(sent.success(), "kill -TERM {pid}");
        match timeout(EXIT_WAIT, self.child.wait()).await {
            Ok(status) => status.unwrap(),
            Err(_) => panic!(
                "bot process {} did not exit within {EXIT_WAIT:?} of SIGTERM; its log:\n{}",
                self.instance,
                tail(&self.log, 60)
            ),
        }
    }

    /// The tail of the process's log.
    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.log, lines)
    }
}

impl Drop for BotProcess {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
        if std::thread::panicking() {
            eprintln!(
                "--- log of bot process {} ({}) ---\n{}",
                self.instance,
                self.log.display(),
                tail(&self.log, 40)
            );
        }
    }
}

/// The last `n` lines of a file.
fn tail(path: &Path, n: usize) -> String {
    let Ok(file) = std::fs::File::open(path) else {
        return String::new();
    };
    let lines: Vec<String> = std::io::BufReader::new(file)
        .lines()
        .map_while(Result::ok)
        .collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A message from the bot as one customer received it.
#[derive(Clone, Debug)]
pub struct Received {
    pub text: String,
    pub sender: DeviceId,
    pub epoch: Epoch,
    pub generation: u64,
}

/// A customer in its own thread: what it sent, what the bot answered.
pub struct Customer {
    pub name: String,
    pub device: Device,
    pub thread: ThreadId,
    /// The texts sent, in order.
    pub sent: Vec<String>,
    /// Every text message from an agent, in the order received (duplicates included).
    pub received: Vec<Received>,
    pub equivocations: Vec<String>,
    /// What went wrong in the conversation (a reply that never came).
    pub errors: Vec<String>,
    /// Receive errors (retried; shown when the test fails).
    pub hiccups: Vec<String>,
}

impl Customer {
    /// Sends `text` in the customer's thread.
    pub async fn send(&mut self, text: &str) {
        self.device
            .send(self.thread, &Content::text(text), None)
            .await
            .unwrap();
        self.sent.push(text.to_owned());
    }

    /// Receives for up to `wait`, keeping the bot's messages; returns how many came.
    pub async fn pump(&mut self, wait: Duration) -> usize {
        let events = match self.device.receive(wait).await {
            Ok(events) => events,
            Err(e) => {
                // A relay hiccup: noted, and the next call tries again.
                self.hiccups.push(e.to_string());
                tokio::time::sleep(Duration::from_millis(100)).await;
                return 0;
            }
        };
        let mut count = 0;
        for event in events {
            match event {
                Event::Message {
                    thread, message, ..
                } if thread == self.thread => {
                    if let (Sender::Agent { .. }, Content::Text { text }) =
                        (&message.sender_info, &message.content)
                    {
                        self.received.push(Received {
                            text: text.clone(),
                            sender: message.sender,
                            epoch: message.epoch,
                            generation: message.generation,
                        });
                        count += 1;
                    }
                }
                e @ Event::Equivocation { .. } => self.equivocations.push(format!("{e:?}")),
                _ => {}
            }
        }
        count
    }

    /// Whether the echo of `text` came.
    pub fn has_reply_to(&self, text: &str) -> bool {
        let want = echo(text);
        self.received.iter().any(|r| r.text == want)
    }

    /// Receives until the echo of `text` came or `deadline` passed; counts what arrives into
    /// `replies`. Returns whether it came.
    pub async fn wait_for_reply(
        &mut self,
        text: &str,
        deadline: Instant,
        replies: &AtomicUsize,
    ) -> bool {
        while !self.has_reply_to(text) {
            if Instant::now() >= deadline {
                return false;
            }
            let got = self.pump(Duration::from_millis(500)).await;
            replies.fetch_add(got, Ordering::Relaxed);
        }
        true
    }

    /// Replies per sent text (0 = missing, 2+ = duplicated), and the texts from agents that
    /// answer nothing this customer sent.
    pub fn tally(&self) -> (Vec<(String, usize)>, Vec<String>) {
        let mut counts: HashMap<String, usize> = HashMap::new();
        for r in &self.received {
            *counts.entry(r.text.clone()).or_default() += 1;
        }
        let per_sent = self
            .sent
            .iter()
            .map(|s| (s.clone(), counts.remove(&echo(s)).unwrap_or(0)))
            .collect();
        (per_sent, counts.into_keys().collect())
    }
}

/// Checks that every customer got exactly one reply per message, nothing else, no equivocation
/// and no error; panics with every discrepancy otherwise.
pub fn assert_exactly_once(customers: &[Customer]) {
    let mut problems = Vec::new();
    for c in customers {
        let (per_sent, unexpected) = c.tally();
        for (text, n) in per_sent {
            if n != 1 {
                problems.push(format!("{}: {n} replies to {text:?}", c.name));
            }
        }
        for text in unexpected {
            problems.push(format!("{}: unexpected message {text:?}", c.name));
        }
        for e in c.equivocations.iter().chain(&c.errors) {
            problems.push(format!("{}: {e}", c.name));
        }
        if !c.hiccups.is_empty() {
            problems.push(format!("{}: (receive errors: {:?})", c.name, c.hiccups));
        }
    }
    assert!(
        problems.iter().all(|p| p.contains("(receive errors")),
        "exactly one reply per customer message failed:\n{}",
        problems.join("\n")
    );
}
