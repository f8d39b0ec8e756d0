//! The 20-line bot: the same text in README.md, the `switchboard` crate docs and
//! examples/twenty_line_bot.rs; and the example binary itself, run in a directory holding an
//! enrolled agent's `echo.keystore` and `echo.key`, answers a customer on loopback.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

#[path = "../../bots/common/world.rs"]
mod world;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use switchboard::prelude::*;
use switchboard_admin::Outcome;
use world::{Routing, World, bot, receive_replies, said, spoke_as};

const ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/..");

fn read(path: &str) -> String {
    std::fs::read_to_string(format!("{ROOT}/{path}")).unwrap()
}

/// The first fenced block after `after` in `text`, opened by `fence`.
fn block(text: &str, after: &str, fence: &str, prefix: &str) -> String {
    let start = text.find(after).expect("the marker") + after.len();
    let mut lines = text[start..]
        .lines()
        .map(|l| {
            l.strip_prefix(prefix)
                .unwrap_or(l.trim_start_matches(prefix.trim_end()))
        })
        .skip_while(|l| *l != fence)
        .skip(1);
    let mut out = String::new();
    for line in lines.by_ref() {
        if line == "```" {
            return out;
        }
        out.push_str(line);
        out.push('\n');
    }
    panic!("no end of the block after {after:?}");
}

#[test]
fn readme_crate_docs_and_example_hold_the_same_bot() {
    let example = read("examples/twenty_line_bot.rs");
    let body: String = example
        .lines()
        .skip_while(|l| l.starts_with("//!"))
        .skip(1)
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(body.starts_with("use switchboard::prelude::*;"), "{body}");
    let readme = block(&read("README.md"), "## A bot in 20 lines", "```rust", "");
    let docs = block(
        &read("framework/bot/src/lib.rs"),
        "The 20-line bot",
        "```no_run",
        "//! ",
    );
    assert_eq!(
        readme, body,
        "README.md and examples/twenty_line_bot.rs differ"
    );
    assert_eq!(
        docs, body,
        "the crate docs and examples/twenty_line_bot.rs differ"
    );
    assert!(body.lines().count() <= 25);
}

/// The example binary, built by `cargo test` (or `cargo build --examples`).
fn example_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(|deps| deps.parent()).unwrap();
    let path = dir.join("examples").join("twenty_line_bot");
    assert!(
        path.exists(),
        "{} is missing: run `cargo build -p switchboard-examples --examples` first",
        path.display()
    );
    path
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
async fn the_twenty_line_bot_answers_the_routing_question_and_later_ones() {
    let routing = Routing {
        rules: vec![],
        fallback: "support",
        handoff_team: "support",
    };
    let mut world = World::new(
        "twenty-line",
        &routing,
        &[bot("Echo", "support").with_key_file("echo")],
    )
    .await;
    let process = Process(
        Command::new(example_binary())
            .current_dir(&world.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    );

    let (mut customer, thread) = world.customer("customer", "is anyone there?").await;
    world
        .outcome(|o| matches!(o, Outcome::Routed { agent, .. } if agent == "Echo"))
        .await;
    let events = receive_replies(&mut customer, thread, "Echo", 1).await;
    assert_eq!(
        said(&events, thread, "Echo"),
        ["You said: is anyone there?"]
    );
    assert!(spoke_as(&events, thread, "Echo", AgentKind::Bot));
    customer
        .send(thread, &Content::text("hello"), None)
        .await
        .unwrap();
    let events = receive_replies(&mut customer, thread, "Echo", 1).await;
    assert_eq!(said(&events, thread, "Echo"), ["You said: hello"]);

    drop(process);
    world.stop_admin().await;
}
