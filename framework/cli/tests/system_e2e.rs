//! The whole system across real processes on loopback: a relay process, an admin process
//! (`switchboard admin`), a scripted bot in its own process, a human agent and a customer
//! (devices in this test process). The customer opens a thread; the admin routes it to the bot
//! by rule; the bot's reply verifies on the customer's side with the bot's name; the bot hands
//! off; the admin transfers the thread to the human in a new epoch; the bot cannot decrypt it.
//! The admin keeps its threads in a SQLite device store (`store` in entity.toml), a row each.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::print_stdout,
    missing_docs,
    unreachable_pub
)]

mod support;

use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use support::RelayProcess;
use switchboard_client::{Device, Event, ExpectedKey, KeystoreSecret, NewDevice, NewRole};
use switchboard_protocol::{
    AgentKind, Content, EntityId, Fingerprint, HandoffTarget, MessageError, Sender, ThreadState,
};
use switchboard_testkit::{agent_said, new_agent, said_by, scratch_dir, until};

const PASSPHRASE: &str = "e2e passphrase";

fn switchboard(args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(args)
        .args(["--log-level", "warn"])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "switchboard {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

/// Runs `switchboard args` expecting it to fail; returns its stderr.
fn switchboard_fails(args: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(args)
        .args(["--log-level", "warn"])
        .output()
        .unwrap();
    assert!(!output.status.success(), "switchboard {args:?} succeeded");
    String::from_utf8(output.stderr).unwrap()
}

/// Writes `dir/entity.toml` for acme on `relay`: keystore, key file and audit log in `dir`,
/// then `rest` (more keys and tables).
fn entity_toml(dir: &Path, relay: &str, rest: &str) -> std::path::PathBuf {
    let config = dir.join("entity.toml");
    std::fs::write(
        &config,
        format!(
            r#"
            entity = "acme"
            display_name = "Acme"
            relay = "{relay}"
            keystore = "admin.keystore"
            key_file = "admin.key"
            audit_log = "audit.jsonl"
            {rest}
            "#
        ),
    )
    .unwrap();
    config
}

/// A child process whose stdout lines arrive on a channel.
struct Proc {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Proc {
    fn spawn(mut command: Command) -> Self {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout: ChildStdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self { child, lines }
    }

    /// The rest of the next line holding `marker`, from the marker on (bounded wait). (The
    /// test harness prints `test NAME ... ` before the child's first line, so a marker need not
    /// start its line.)
    fn expect(&self, marker: &str) -> String {
        loop {
            match self.lines.recv_timeout(Duration::from_secs(60)) {
                Ok(line) => {
                    if let Some(at) = line.find(marker) {
                        return line[at..].to_owned();
                    }
                }
                Err(e) => panic!("no line with {marker:?}: {e}"),
            }
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn customer_admin_bot_human_across_processes() {
    let dir = scratch_dir("e2e");
    let relay = RelayProcess::start(&format!("sqlite://{}", dir.join("relay.db").display()));
    let url = format!("http://{}", relay.addr);
    let config = entity_toml(
        &dir,
        &url,
        r#"
        store = "sqlite://admin.db"

        [routing]
        fallback_team = "humans"

        [[rules]]
        keywords = ["order"]
        team = "orders"
        "#,
    );
    let config = config.to_str().unwrap();
    let created = switchboard(&["admin", "init", "--config", config]);
    assert!(created.contains("admin of acme created"), "{created}");
    assert!(
        dir.join("admin.db").exists(),
        "the admin's store is beside its config"
    );
    let admin_id: switchboard_protocol::DeviceId = created
        .split_once("device ")
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .unwrap()
        .parse()
        .unwrap();
    // The admin's fingerprint, as a person would read it off the admin's screen.
    let admin_fingerprint = created
        .lines()
        .find_map(|l| {
            l.split_once(" fingerprint ")
                .map(|(_, f)| f.trim().to_owned())
        })
        .unwrap();

    // `agent init` needs the admin's fingerprint, refuses another one, and creates nothing then.
    let (stray, stray_key) = (dir.join("stray.keystore"), dir.join("stray.key"));
    let agent_init = [
        "agent",
        "init",
        "--relay",
        &url,
        "--entity",
        "acme",
        "--keystore",
        stray.to_str().unwrap(),
        "--key-file",
        stray_key.to_str().unwrap(),
    ];
    let missing = switchboard_fails(&agent_init);
    assert!(missing.contains("--admin-fingerprint"), "{missing}");
    let other = "00000 11111 22222 33333 44444 55555";
    let wrong = switchboard_fails(&[&agent_init[..], &["--admin-fingerprint", other]].concat());
    assert!(wrong.contains("do not proceed"), "{wrong}");
    assert!(!stray.exists());

    // The bot: its own process, running the scripted agent below.
    let bot_keystore = dir.join("bot.keystore");
    let bot = Proc::spawn(scripted_agent_command(
        &url,
        &bot_keystore,
        "OrderBot",
        &admin_fingerprint,
    ));
    let bot_line = bot.expect("device ");
    let (bot_id, bot_fingerprint) = bot_line
        .trim_start_matches("device ")
        .split_once(" fingerprint ")
        .unwrap();
    // The human: a device in this process.
    let secret = KeystoreSecret::passphrase(PASSPHRASE);
    let mut dana = new_agent(
        &dir.join("dana.keystore"),
        &secret,
        &url,
        "acme",
        ExpectedKey::Fingerprint(Fingerprint::parse(&admin_fingerprint).unwrap()),
    )
    .await;
    // Enrolment needs the fingerprint (or an explicit, insecure opt-out), and a wrong one is
    // refused before anything is issued.
    let add_bot = [
        "admin",
        "add-agent",
        "--config",
        config,
        "--bot",
        "OrderBot",
        "--device",
        bot_id,
        "--team",
        "orders",
    ];
    let missing = switchboard_fails(&add_bot);
    assert!(missing.contains("--fingerprint"), "{missing}");
    let wrong = switchboard_fails(
        &[
            &add_bot[..],
            &["--fingerprint", &dana.fingerprint().to_string()],
        ]
        .concat(),
    );
    assert!(wrong.contains("do not proceed"), "{wrong}");
    let added = switchboard(&[&add_bot[..], &["--fingerprint", bot_fingerprint]].concat());
    assert!(added.contains("agent OrderBot"), "{added}");
    switchboard(&[
        "admin",
        "add-agent",
        "--config",
        config,
        "--human",
        "Dana",
        "--device",
        &dana.id().to_string(),
        "--team",
        "billing",
        "--fingerprint",
        &dana.fingerprint().to_string(),
    ]);
    let agents = switchboard(&["admin", "agents", "--config", config]);
    assert!(
        agents.contains("OrderBot") && agents.contains("Dana"),
        "{agents}"
    );

    let mut admin_command = Command::new(env!("CARGO_BIN_EXE_switchboard"));
    admin_command.args(["admin", "run", "--config", config, "--log-level", "warn"]);
    let admin = Proc::spawn(admin_command);
    admin.expect("admin of acme running");

    // The customer opens a thread about an order.
    let mut customer = Device::create(
        &dir.join("customer.keystore"),
        &KeystoreSecret::passphrase(PASSPHRASE),
        NewDevice::new(&url, NewRole::Customer),
    )
    .await
    .unwrap();
    let acme = EntityId::new("acme").unwrap();
    let thread = customer.open_thread(&acme).await.unwrap();
    customer
        .send(thread, &Content::text("Where is my order 42?"), None)
        .await
        .unwrap();

    // The admin routes it to the bot by the keyword rule; the bot greets; the customer sees who
    // spoke, verified by the admin's credential.
    bot.expect("joined ");
    let greeting = until(&mut customer, |e| said_by(e).is_some()).await;
    assert_eq!(
        said_by(&greeting).unwrap().0,
        &Sender::Agent {
            display_name: "OrderBot".into(),
            kind: AgentKind::Bot
        }
    );
    customer
        .send(thread, &Content::text("It has not arrived"), None)
        .await
        .unwrap();
    let reply = until(&mut customer, |e| {
        said_by(e).is_some_and(|(_, c)| matches!(c, Content::Reply { .. }))
    })
    .await;
    assert!(matches!(
        said_by(&reply).unwrap().1,
        Content::Reply { text } if text.contains("It has not arrived")
    ));

    // Keep what the bot's keystore holds now (epoch 1), to try it on the next epoch below.
    let bot_copy = dir.join("bot-copy.keystore");
    std::fs::copy(&bot_keystore, &bot_copy).unwrap();

    // The customer wants a refund: the bot hands off; the admin transfers to Dana.
    customer
        .send(thread, &Content::text("I want a refund"), None)
        .await
        .unwrap();
    bot.expect("handoff ");
    until(&mut dana, |e| matches!(e, Event::Joined { .. })).await;
    bot.expect("removed ");
    let roster = until(&mut customer, |e| matches!(e, Event::RosterChanged { .. })).await;
    let Event::RosterChanged { epoch, .. } = roster else {
        unreachable!()
    };
    dana.send(thread, &Content::text("Dana here: refund approved."), None)
        .await
        .unwrap();
    let from_dana = until(&mut customer, |e| agent_said(e, "Dana")).await;
    assert!(matches!(
        said_by(&from_dana).unwrap().0,
        Sender::Agent {
            kind: AgentKind::Human,
            ..
        }
    ));

    // The bot's keys of epoch 1 cannot read the new epoch.
    let secret_message = customer
        .send(thread, &Content::text("my new address is 1 Main St"), None)
        .await
        .unwrap();
    assert_eq!(secret_message.header.epoch, epoch);
    let old_bot = Device::open(&bot_copy, &KeystoreSecret::passphrase(PASSPHRASE), None)
        .await
        .unwrap();
    let held = old_bot.thread(thread).unwrap();
    let mut held = ThreadState::restore(old_bot.keys(), held.snapshot()).unwrap();
    assert!(held.epoch() < epoch);
    assert!(matches!(
        held.open_message(&secret_message, switchboard_client::now()),
        Err(MessageError::UnknownEpoch { .. })
    ));
    // And the bot's live keystore holds nothing of the thread any more.
    let mut bot = bot;
    let status = bot.child.wait().unwrap();
    assert!(status.success(), "the bot exits cleanly once removed");
    let live_bot = Device::open(&bot_keystore, &KeystoreSecret::passphrase(PASSPHRASE), None)
        .await
        .unwrap();
    assert!(live_bot.thread(thread).is_none());

    // The admin's thread is a row of its store (sealed: no plaintext of the conversation).
    let store = switchboard::store::SqlDeviceStore::open(&format!(
        "sqlite://{}",
        dir.join("admin.db").display()
    ))
    .await
    .unwrap();
    let stored = switchboard_client::store::DeviceStore::load(&store, admin_id).unwrap();
    assert!(stored.state.is_some());
    assert_eq!(
        stored.threads.iter().map(|(t, _)| *t).collect::<Vec<_>>(),
        [thread]
    );
    for file in ["admin.db", "admin.db-wal"] {
        let bytes = std::fs::read(dir.join(file)).unwrap_or_default();
        assert!(
            !bytes.windows(b"refund".len()).any(|w| w == b"refund"),
            "{file}"
        );
    }
    drop(admin);
    drop(relay);
}

#[test]
fn an_admin_without_a_store_moves_into_one_and_then_opens_only_with_it() {
    let dir = scratch_dir("admin-moves-in");
    let relay = RelayProcess::start(&format!("sqlite://{}", dir.join("relay.db").display()));
    let config = entity_toml(&dir, &format!("http://{}", relay.addr), "");
    let config = config.to_str().unwrap();
    switchboard(&["admin", "init", "--config", config]);
    assert!(
        !dir.join("admin.db").exists(),
        "no store unless one is named"
    );

    // Opened with --store, its state moves into the store.
    let store = format!("sqlite://{}", dir.join("admin.db").display());
    switchboard(&["admin", "agents", "--config", config, "--store", &store]);
    assert!(dir.join("admin.db").exists());
    // From then on it opens with its store only, and says how.
    let without = switchboard_fails(&["admin", "agents", "--config", config]);
    assert!(without.contains("--store"), "{without}");
    switchboard(&["admin", "agents", "--config", config, "--store", &store]);
    // A store it is not in, or a URL no store has: refused clearly.
    let other = format!("sqlite://{}", dir.join("other.db").display());
    let elsewhere = switchboard_fails(&["admin", "agents", "--config", config, "--store", &other]);
    assert!(elsewhere.contains("store"), "{elsewhere}");
    let bad = switchboard_fails(&[
        "admin",
        "agents",
        "--config",
        config,
        "--store",
        "mysql://x",
    ]);
    assert!(
        bad.contains("the admin's store") && bad.contains("sqlite://PATH"),
        "{bad}"
    );
    drop(relay);
}

/// Runs this test binary as the scripted agent process.
fn scripted_agent_command(
    relay: &str,
    keystore: &Path,
    name: &str,
    admin_fingerprint: &str,
) -> Command {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args([
            "--ignored",
            "--exact",
            "scripted_agent",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("SB_AGENT_RELAY", relay)
        .env("SB_AGENT_KEYSTORE", keystore)
        .env("SB_AGENT_NAME", name)
        .env("SB_AGENT_ADMIN_FINGERPRINT", admin_fingerprint);
    command
}

/// Not a test: the entry point of the scripted bot process that
/// `customer_admin_bot_human_across_processes` starts (ignored unless run by it). It greets when
/// it joins a thread, quotes back what the customer says, hands off to billing when the
/// customer mentions a refund, and exits once it is removed. It prints `device ID`,
/// `joined THREAD`, `handoff THREAD` and `removed THREAD` on stdout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "entry point of the scripted agent process of the end-to-end test"]
async fn scripted_agent() {
    let (Ok(relay), Ok(keystore), Ok(name), Ok(admin_fingerprint)) = (
        std::env::var("SB_AGENT_RELAY"),
        std::env::var("SB_AGENT_KEYSTORE"),
        std::env::var("SB_AGENT_NAME"),
        std::env::var("SB_AGENT_ADMIN_FINGERPRINT"),
    ) else {
        println!("scripted_agent runs only as the end-to-end test's child process");
        return;
    };
    let secret = KeystoreSecret::passphrase(PASSPHRASE);
    let mut me = new_agent(
        Path::new(&keystore),
        &secret,
        &relay,
        "acme",
        ExpectedKey::Fingerprint(Fingerprint::parse(&admin_fingerprint).unwrap()),
    )
    .await;
    println!("device {} fingerprint {}", me.id(), me.fingerprint());
    // Bounded: a test bot never outlives its test by much.
    for _ in 0..120 {
        for event in me.receive(Duration::from_secs(1)).await.unwrap() {
            match event {
                Event::Joined { thread, .. } => {
                    println!("joined {thread}");
                    me.send(
                        thread,
                        &Content::text(format!("Hello, this is {name}. How can I help?")),
                        None,
                    )
                    .await
                    .unwrap();
                }
                Event::Message {
                    thread, message, ..
                } if message.sender_info == Sender::Customer => {
                    let Some(text) = message.content.as_text() else {
                        continue;
                    };
                    if text.to_lowercase().contains("refund") {
                        me.send(
                            thread,
                            &Content::HandoffRequest {
                                target: HandoffTarget::Team("billing".into()),
                                note: "refund request".into(),
                            },
                            None,
                        )
                        .await
                        .unwrap();
                        println!("handoff {thread}");
                    } else {
                        let reply = Content::Reply {
                            text: format!("{name} got: {text}"),
                        };
                        me.send(thread, &reply, Some(message.id)).await.unwrap();
                    }
                }
                Event::Removed { thread } => {
                    println!("removed {thread}");
                    return;
                }
                _ => {}
            }
        }
    }
    panic!("the scripted agent was never removed");
}
