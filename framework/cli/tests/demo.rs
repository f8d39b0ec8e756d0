//! `switchboard demo`, the project's main job, run as a process.

#![allow(clippy::unwrap_used, clippy::panic, missing_docs)]

use std::process::Command;

#[test]
fn the_demo_runs_the_whole_flow_and_says_so() {
    let dir = switchboard_testkit::scratch_dir("demo");
    let output = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["demo", "--log-level", "warn", "--dir"])
        .arg(&dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    for expected in [
        "routed to OrderBot: keyword \"order\" -> team orders -> OrderBot",
        "OrderBot joined in epoch 1",
        // OrderBot of bots/order-status, answering from the order API.
        "[customer sees] OrderBot (Bot, verified by Acme's credential): Order 42 is on its way; expected tomorrow.",
        "[customer sees] OrderBot (Bot, verified by Acme's credential): Let me get a colleague who can help with that.",
        "handed off to Dana: handoff to team billing -> Dana",
        "Dana joined in epoch 2",
        "[customer sees] Dana (Human, verified by Acme's credential): Dana from billing",
        "OrderBot lost the floor and was removed",
        "OrderBot was told of 0 event(s) of the thread after its removal",
        "[Dana sees] the customer: Thanks Dana!",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in:\n{stdout}"
        );
    }
    assert!(
        !stderr.contains("WARN") && !stderr.contains("ERROR"),
        "{stderr}"
    );

    // It starts from nothing: a used directory is refused, clearly.
    let again = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["demo", "--dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("is not empty"));
}
