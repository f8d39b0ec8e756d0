//! `switchboard conformance -- CMD`, run as a process against bot processes: the echo bot of
//! `switchboard bot echo` passes and its JUnit XML parses; a bot that never answers makes the
//! command fail; bad command lines are refused clearly.

#![allow(
    clippy::unwrap_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// How long one run of the command may take (the suite bounds its own waits).
const RUN_WAIT: Duration = Duration::from_secs(400);

fn switchboard() -> &'static str {
    env!("CARGO_BIN_EXE_switchboard")
}

/// Runs `switchboard ARGS`, bounded: killed (and the test failed) past [`RUN_WAIT`].
fn run(args: &[&str]) -> Output {
    let mut child = Command::new(switchboard())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > RUN_WAIT {
            let _ = child.kill();
            panic!("switchboard {args:?} did not end within {RUN_WAIT:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    child.wait_with_output().unwrap()
}

/// The testcases of a JUnit report: (name, failure message, skipped).
fn testcases(xml: &str) -> Vec<(String, Option<String>, bool)> {
    let doc = roxmltree::Document::parse(xml).unwrap();
    doc.descendants()
        .filter(|n| n.has_tag_name("testcase"))
        .map(|case| {
            assert_eq!(case.attribute("classname"), Some("switchboard.conformance"));
            let failure = case
                .children()
                .find(|c| c.has_tag_name("failure"))
                .map(|f| f.attribute("message").unwrap_or_default().to_owned());
            let skipped = case.children().any(|c| c.has_tag_name("skipped"));
            (case.attribute("name").unwrap().to_owned(), failure, skipped)
        })
        .collect()
}

#[test]
fn the_echo_bot_process_passes_and_its_junit_report_parses() {
    let dir = switchboard_testkit::scratch_dir("conformance-cli");
    let junit = dir.join("report.xml");
    let out = run(&[
        "--log-level",
        "warn",
        "conformance",
        "--junit",
        junit.to_str().unwrap(),
        "--ask",
        "hello there",
        "--expect",
        "hello there",
        "--ask",
        "one",
        "--expect",
        "one",
        "--ask",
        "two",
        "--expect",
        "two",
        "--never-hands-off",
        "the echo bot echoes every text",
        "--",
        switchboard(),
        "--log-level",
        "warn",
        "bot",
        "echo",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("10 passed, 0 failed, 1 skipped"),
        "{stdout}"
    );

    let xml = std::fs::read_to_string(&junit).unwrap();
    let doc = roxmltree::Document::parse(&xml).unwrap();
    let suite = doc
        .descendants()
        .find(|n| n.has_tag_name("testsuite"))
        .unwrap();
    assert_eq!(suite.attribute("name"), Some("switchboard"));
    assert_eq!(suite.attribute("tests"), Some("11"));
    assert_eq!(suite.attribute("failures"), Some("0"));
    assert_eq!(suite.attribute("skipped"), Some("1"));
    let cases = testcases(&xml);
    let names: Vec<&str> = cases.iter().map(|(n, _, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "answers_forwarded_thread",
            "reads_routing_message",
            "exactly_once_under_redelivery_and_restart",
            "ignores_foreign_and_tampered_items",
            "stops_posting_after_floor_loss_or_removal",
            "answers_in_time",
            "hands_off_when_asked",
            "no_bot_loop",
            "honours_retry_after",
            "recovers_after_relay_restart",
            "keeps_order_per_thread"
        ]
    );
    for (name, failure, skipped) in &cases {
        assert!(failure.is_none(), "{name}: {failure:?}");
        assert_eq!(*skipped, name == "hands_off_when_asked", "{name}");
    }
}

#[test]
fn a_bot_that_never_answers_fails_the_command_and_the_report_says_why() {
    let dir = switchboard_testkit::scratch_dir("conformance-cli-fail");
    let junit = dir.join("report.xml");
    let out = run(&[
        "conformance",
        "--junit",
        junit.to_str().unwrap(),
        "--name",
        "mute",
        "--only",
        "answers_forwarded_thread",
        "--only",
        "answers_in_time",
        "--answer-wait",
        "3",
        "--reply-within",
        "2",
        "--",
        "sh",
        "-c",
        "echo ready; exec sleep 600",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("0 passed, 2 failed, 0 skipped"), "{stdout}");
    assert!(
        stderr.contains(
            "2 of 2 conformance checks failed: answers_forwarded_thread, answers_in_time"
        ),
        "{stderr}"
    );
    let xml = std::fs::read_to_string(&junit).unwrap();
    let cases = testcases(&xml);
    assert_eq!(cases.len(), 2, "{xml}");
    for (name, failure, _) in &cases {
        let message = failure
            .as_deref()
            .unwrap_or_else(|| panic!("{name} failed: {xml}"));
        assert!(
            message.contains("no answer from BotUnderTest"),
            "{name}: {message}"
        );
    }
}

#[test]
fn bad_command_lines_are_refused_clearly() {
    let out = run(&["conformance", "--only", "answers_quickly", "--", "true"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no check named \"answers_quickly\""),
        "{stderr}"
    );
    assert!(
        stderr.contains("no_bot_loop"),
        "the checks are named: {stderr}"
    );

    let out = run(&["conformance", "--expect", "x", "--", "true"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("1 --expect for 0 --ask"));

    let out = run(&["conformance", "--reply-within", "0", "--", "true"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--reply-within must be 1 to 3600"));

    let out = run(&["conformance"]);
    assert_eq!(out.status.code(), Some(2), "a usage error");

    let out = run(&["conformance", "--list"]);
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    for name in [
        "answers_forwarded_thread",
        "exactly_once_under_redelivery_and_restart",
        "no_bot_loop",
    ] {
        assert!(stdout.contains(name), "{stdout}");
    }
}
