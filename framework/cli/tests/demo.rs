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
        "[customer sees] OrderBot (Bot, verified by Acme's credential): Hello, OrderBot here.",
        "handed off to Dana: handoff to team billing -> Dana",
        "Dana joined in epoch 2",
        "[customer sees] Dana (Human, verified by Acme's credential): Dana from billing",
        "OrderBot received 0 item(s) and holds 0 thread(s)",
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
