//! The `switchboard-bot-order-status` binary: its command line, and the bot it runs answering a
//! customer on loopback (relay, admin and the fake order API in this test process).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

#[path = "../../common/world.rs"]
mod world;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use switchboard::prelude::*;
use switchboard_admin::Outcome;
use switchboard_bot_order_status::fake_api;
use world::{Routing, World, bot, receive_replies, said, spoke_as};

const BIN: &str = env!("CARGO_BIN_EXE_switchboard-bot-order-status");

#[test]
fn usage_errors_are_explained_with_exit_code_2() {
    let help = Command::new(BIN).arg("--help").output().unwrap();
    assert!(help.status.success());
    let text = String::from_utf8_lossy(&help.stdout);
    assert!(
        text.contains("--api") && text.contains("--keystore"),
        "{text}"
    );

    let missing = Command::new(BIN)
        .args(["--keystore", "k", "--key-file", "f"])
        .env_remove("SWITCHBOARD_API")
        .output()
        .unwrap();
    assert_eq!(missing.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("--api is required"));

    let bad = Command::new(BIN)
        .args(["--keystore", "k", "--key-file", "f", "--api", "not a url"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
}

/// Kills the bot process when the test ends, however it ends.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_runs_the_bot_and_says_ready() {
    let routing = Routing {
        rules: vec![(vec!["order"], "orders")],
        fallback: "orders",
        handoff_team: "billing",
    };
    let mut world = World::new(
        "order-bin",
        &routing,
        &[bot("OrderBot", "orders").with_key_file("orderbot")],
    )
    .await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api = format!("http://{}", listener.local_addr().unwrap());
    let server = fake_api::serve(listener, fake_api::demo_orders());
    let mut child = Command::new(BIN)
        .current_dir(&world.dir)
        .args([
            "--keystore",
            "orderbot.keystore",
            "--key-file",
            "orderbot.key",
        ])
        .args(["--api", &api, "--store", "memory", "--relay", &world.url])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let process = Process(child);
    let ready = tokio::task::spawn_blocking(move || {
        BufReader::new(stdout).lines().next().and_then(Result::ok)
    });
    let line = tokio::time::timeout(Duration::from_secs(30), ready)
        .await
        .expect("the bot says ready in time")
        .unwrap();
    assert_eq!(line.as_deref(), Some("ready"));

    let (mut customer, thread) = world.customer("customer", "where is order A-1234?").await;
    world
        .outcome(|o| matches!(o, Outcome::Routed { agent, .. } if agent == "OrderBot"))
        .await;
    let events = receive_replies(&mut customer, thread, "OrderBot", 1).await;
    assert_eq!(
        said(&events, thread, "OrderBot"),
        ["Order A-1234 has been delivered."]
    );
    assert!(spoke_as(&events, thread, "OrderBot", AgentKind::Bot));

    drop(process);
    world.stop_admin().await;
    server.abort();
}
