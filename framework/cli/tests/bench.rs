//! `switchboard bench` runs and reports what it measured (small runs: the numbers themselves are
//! measured with release builds, see framework/relay/README.md).

#![allow(clippy::unwrap_used, missing_docs)]

use std::process::Command;

fn bench(extra: &[&str]) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args([
            "bench",
            "--db",
            "sqlite::memory:",
            "--posts",
            "40",
            "--concurrency",
            "4",
        ])
        .args(["--threads", "4", "--log-level", "warn"])
        .args(extra)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn store_and_http_benches_count_every_post() {
    for report in [bench(&[]), bench(&["--http"])] {
        assert!(report.starts_with("40 durable posts in "), "{report}");
        assert!(report.contains("posts/s; latency p50 "), "{report}");
    }
}
