//! The `switchboard relay` command as a real process on loopback: it starts, serves /metrics and
//! stops cleanly on SIGTERM.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs,
    unreachable_pub,
    dead_code
)]

mod support;

use std::process::Command;
use std::time::Duration;

use support::{RelayProcess, request};

#[test]
fn relay_starts_serves_metrics_and_stops_on_sigterm() {
    let dir = std::env::temp_dir().join(format!("switchboard-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut relay = RelayProcess::start(&format!("sqlite://{}", dir.join("relay.db").display()));

    let (status, body) = request(&relay.addr, None, "GET", "/v1/entities/acme", b"").unwrap();
    assert_eq!(status, 401);
    assert!(String::from_utf8_lossy(&body).contains("\"unauthenticated\""));
    let (status, body) = request(&relay.addr, None, "GET", "/metrics", b"").unwrap();
    let metrics = String::from_utf8_lossy(&body);
    assert_eq!(status, 200, "{metrics}");
    assert!(
        metrics.contains(r#"switchboard_http_requests_total{method="GET",route="/v1/entities/{entity}",status="401"} 1"#),
        "{metrics}"
    );

    relay.signal("-TERM");
    let exit = relay.wait(Duration::from_secs(30));
    assert!(exit.success(), "relay exited with {exit}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_database_url_is_a_clear_error() {
    let output = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["relay", "--db", "mysql://x", "--listen", "127.0.0.1:0"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("unsupported database URL"), "{stderr}");
}
