//! `switchboard chat` in a real terminal (a tmux pane), driven by keystrokes: the customer
//! writes, the bot the admin routed the thread to answers, and the screen shows who spoke
//! (verified), receipts and fingerprints. Skipped, with a notice, where tmux is not installed.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr,
    missing_docs,
    unreachable_pub
)]

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use switchboard_admin::{Admin, Config};
use switchboard_client::{Event, ExpectedKey, KeystoreSecret};
use switchboard_protocol::{AgentKind, Content, ReceiptKind, Sender};
use switchboard_testkit::{new_agent, scratch_dir};

/// A tmux server of its own, killed when dropped.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn run(&self, args: &[&str]) -> String {
        let output = Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    /// Starts `command` in a new 160x50 session "chat".
    fn start(&self, command: &str) {
        self.run(&[
            "new-session",
            "-d",
            "-s",
            "chat",
            "-x",
            "160",
            "-y",
            "50",
            command,
        ]);
    }

    fn screen(&self) -> String {
        self.run(&["capture-pane", "-p", "-J", "-t", "chat", "-S", "-200"])
    }

    fn type_line(&self, line: &str) {
        self.run(&["send-keys", "-t", "chat", "-l", line]);
        self.run(&["send-keys", "-t", "chat", "Enter"]);
    }

    /// Waits (bounded) until the screen shows `text`; returns the screen.
    async fn wait_for(&self, text: &str) -> String {
        for _ in 0..150 {
            let screen = self.screen();
            if screen.contains(text) {
                return screen;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the chat never showed {text:?}; screen:\n{}", self.screen());
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .output();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_session_in_a_terminal_shows_who_speaks() {
    if Command::new("tmux").arg("-V").output().is_err() {
        eprintln!("SKIPPED: chat terminal test (tmux is not installed)");
        return;
    }
    let relay = switchboard_relay::server::start("sqlite::memory:", "127.0.0.1:0")
        .await
        .unwrap();
    let url = relay.url();
    let dir = scratch_dir("chat");
    KeystoreSecret::create_key_file(&dir.join("admin.key")).unwrap();
    let config = Config::parse(
        &format!(
            r#"
            entity = "acme"
            display_name = "Acme"
            relay = "{url}"
            keystore = "admin.keystore"
            key_file = "admin.key"
            audit_log = "audit.jsonl"
            "#
        ),
        &dir,
    )
    .unwrap();
    let mut admin = Admin::init(config).await.unwrap();
    let secret = KeystoreSecret::passphrase("bot passphrase");
    let mut bot = new_agent(
        &dir.join("bot.keystore"),
        &secret,
        &url,
        "acme",
        ExpectedKey::Fingerprint(admin.device().fingerprint()),
    )
    .await;
    admin
        .add_agent(
            "OrderBot",
            AgentKind::Bot,
            bot.id(),
            vec![],
            &ExpectedKey::Fingerprint(bot.fingerprint()),
        )
        .await
        .unwrap();
    let admin_fingerprint = admin.device().fingerprint().to_string();

    // The admin and the bot run in this process until the test ends.
    let done = Arc::new(AtomicBool::new(false));
    let admin_done = Arc::clone(&done);
    let admin_task = tokio::spawn(async move {
        while !admin_done.load(Ordering::Relaxed) {
            admin.step(Duration::from_millis(500)).await.unwrap();
        }
    });
    let bot_done = Arc::clone(&done);
    let bot_task = tokio::spawn(async move {
        while !bot_done.load(Ordering::Relaxed) {
            for event in bot.receive(Duration::from_millis(500)).await.unwrap() {
                if let Event::Message {
                    thread, message, ..
                } = event
                    && message.sender_info == Sender::Customer
                    && let Some(text) = message.content.as_text()
                {
                    let read = Content::Receipt {
                        kind: ReceiptKind::Read,
                        messages: vec![message.id],
                    };
                    bot.send(thread, &read, None).await.unwrap();
                    bot.send(thread, &Content::Typing { active: true }, None)
                        .await
                        .unwrap();
                    let answer = Content::Reply {
                        text: format!("Order 42 ships today (you said: {text})"),
                    };
                    bot.send(thread, &answer, Some(message.id)).await.unwrap();
                }
            }
        }
    });

    let tmux = Tmux {
        socket: format!("switchboard-test-{}", std::process::id()),
    };
    let command = format!(
        "SWITCHBOARD_PASSPHRASE='customer passphrase' {} chat --relay {url} acme --keystore {} --log-level warn",
        env!("CARGO_BIN_EXE_switchboard"),
        dir.join("customer.keystore").display()
    );
    tmux.start(&command);
    let greeting = tmux.wait_for("Type a message").await;
    assert!(
        greeting.contains(&format!("admin key fingerprint {admin_fingerprint}")),
        "{greeting}"
    );

    // The first message opens the thread; the admin routes it to the bot (it carried the first
    // words in epoch 0, so the bot answers the next one).
    tmux.type_line("Hello Acme");
    tmux.wait_for("now with you: OrderBot (bot)").await;
    tmux.type_line("Where is my order 42?");
    let screen = tmux
        .wait_for("OrderBot (bot, for Acme) (replying to your message 2)")
        .await;
    assert!(
        screen.contains("you said: Where is my order 42?"),
        "{screen}"
    );
    assert!(
        screen.contains("✓ your message 2 read by OrderBot (bot, for Acme)"),
        "{screen}"
    );
    assert!(
        screen.contains("… OrderBot (bot, for Acme) is typing"),
        "{screen}"
    );
    // Fingerprints list the admin as pinned and the bot by its verified name.
    tmux.type_line("/fp");
    let screen = tmux.wait_for("OrderBot (bot): ").await;
    assert!(
        screen.contains(&format!("Acme (admin): {admin_fingerprint}")),
        "{screen}"
    );
    assert!(!screen.contains("not sent"), "{screen}");
    tmux.type_line("/quit");
    done.store(true, Ordering::Relaxed);
    admin_task.await.unwrap();
    bot_task.await.unwrap();

    // Another relay serves "acme" with another admin key: the chat warns loudly and will not
    // send until the customer, having compared fingerprints, trusts the new key.
    let other = switchboard_relay::server::start("sqlite::memory:", "127.0.0.1:0")
        .await
        .unwrap();
    let other_dir = scratch_dir("chat-impostor");
    KeystoreSecret::create_key_file(&other_dir.join("admin.key")).unwrap();
    let impostor_config = Config::parse(
        &format!(
            r#"
            entity = "acme"
            display_name = "Acme"
            relay = "{}"
            keystore = "admin.keystore"
            key_file = "admin.key"
            audit_log = "audit.jsonl"
            "#,
            other.url()
        ),
        &other_dir,
    )
    .unwrap();
    let impostor = Admin::init(impostor_config).await.unwrap();
    let impostor_fingerprint = impostor.device().fingerprint().to_string();
    tmux.run(&["kill-session", "-t", "chat"]);
    let command = command.replace(&url, &other.url());
    tmux.start(&command);
    let screen = tmux.wait_for("Type a message").await;
    assert!(
        screen.contains("WARNING: the admin key of acme CHANGED"),
        "{screen}"
    );
    assert!(
        screen.contains(&format!(
            "Pinned: {admin_fingerprint}. Now: {impostor_fingerprint}"
        )),
        "{screen}"
    );
    tmux.type_line("are you really Acme?");
    tmux.wait_for("! not sent: the admin key changed").await;
    tmux.type_line("/trust");
    tmux.wait_for("the new admin key will be pinned").await;
    tmux.type_line("hello again");
    tmux.wait_for("(sent, your message 1)").await;
    tmux.type_line("/quit");
}
