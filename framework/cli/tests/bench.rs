//! `switchboard bench` runs and reports what it measured (small runs: the numbers themselves are
//! measured with release builds, see framework/relay/README.md).

#![allow(
    clippy::unwrap_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs
)]

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

/// Runs `switchboard bench echo` with tiny counts, killed if it takes longer than `limit`.
fn bench_echo(args: &[&str], limit: std::time::Duration) -> std::process::Output {
    bench_of("echo", args, limit)
}

/// The table of a bench's output: its header (the first line starting with `first`), its rows
/// (split into cells, up to the first empty line), and the lines after.
fn table<'a>(stdout: &'a str, first: &str) -> (Vec<&'a str>, Vec<Vec<&'a str>>, Vec<&'a str>) {
    let mut lines = stdout
        .lines()
        .skip_while(|l| !l.trim_start().starts_with(first));
    let header = lines.next().unwrap().split_whitespace().collect();
    let rows = lines
        .by_ref()
        .take_while(|l| !l.trim().is_empty())
        .map(|l| l.split_whitespace().collect())
        .collect();
    (header, rows, lines.collect())
}

/// Runs `switchboard bench KIND`, killed if it takes longer than `limit`.
fn bench_of(kind: &str, args: &[&str], limit: std::time::Duration) -> std::process::Output {
    use std::process::Stdio;
    let mut child = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["bench", kind, "--log-level", "warn"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > limit {
            child.kill().unwrap();
            let output = child.wait_with_output().unwrap();
            panic!(
                "bench {kind} did not finish within {limit:?}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn bench_echo_prints_one_row_per_customer_count() {
    let output = bench_echo(
        &[
            "--customers",
            "1,2",
            "--messages",
            "5",
            "--warmup",
            "1",
            "--floor-iterations",
            "10",
            "--max-secs",
            "60",
        ],
        std::time::Duration::from_secs(240),
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("relay: http://127.0.0.1:"), "{stdout}");
    assert!(stdout.contains("bot: EchoBot"), "{stdout}");
    assert!(stdout.contains("crypto floor: "), "{stdout}");
    let (header, rows, rest) = table(&stdout, "customers");
    assert_eq!(
        header,
        [
            "customers",
            "answered",
            "answered/s",
            "p50_ms",
            "p99_ms",
            "floor_us/msg",
            "x_floor"
        ]
    );
    assert_eq!(rows.len(), 2, "{stdout}");
    for (row, customers) in rows.iter().zip(["1", "2"]) {
        assert_eq!(row.len(), header.len(), "{stdout}");
        assert_eq!(row[0], customers);
        // Every message is answered: the loop is closed, and the time cap is far away.
        assert_eq!(row[1], "5", "{stdout}");
        for cell in &row[2..] {
            let value: f64 = cell.parse().unwrap();
            assert!(value.is_finite() && value >= 0.0, "{stdout}");
        }
    }
    // Then where the time goes: one line per row after its header.
    assert!(rest[0].starts_with("where the time goes"), "{stdout}");
    let header: Vec<&str> = rest[1].split_whitespace().collect();
    assert_eq!(
        header,
        [
            "customers",
            "mean_ms",
            "customer_send",
            "bot_handle",
            "rest"
        ]
    );
    assert_eq!(rest.len(), 4, "{stdout}");
    for (line, customers) in rest[2..].iter().zip(["1", "2"]) {
        let cells: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(cells.len(), header.len(), "{stdout}");
        assert_eq!(cells[0], customers);
    }
}

#[test]
fn bench_echo_refuses_bad_counts() {
    for args in [
        &["--customers", "0"][..],
        &["--customers", "1,5000"],
        &["--messages", "0"],
    ] {
        let output = bench_echo(args, std::time::Duration::from_secs(60));
        assert!(!output.status.success(), "{args:?} was accepted");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("must be"), "{args:?}: {stderr}");
    }
}

#[test]
fn bench_admin_prints_a_keystore_and_a_store_row_per_thread_count() {
    let output = bench_of(
        "admin",
        &["--threads", "1,3", "--messages", "4"],
        std::time::Duration::from_secs(240),
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let (header, rows, rest) = table(&stdout, "threads ");
    assert_eq!(
        header,
        [
            "threads",
            "admin",
            "messages",
            "p50_ms",
            "p99_ms",
            "max_ms",
            "messages/s",
            "keystore_kib",
            "store_kib"
        ]
    );
    let shape: Vec<(&str, &str, &str)> = rows.iter().map(|r| (r[0], r[1], r[2])).collect();
    assert_eq!(
        shape,
        [
            ("1", "keystore", "4"),
            ("1", "store", "4"),
            ("3", "keystore", "4"),
            ("3", "store", "4")
        ],
        "{stdout}"
    );
    for row in &rows {
        assert_eq!(row.len(), header.len(), "{stdout}");
        for cell in &row[3..] {
            let value: f64 = cell.parse().unwrap();
            assert!(value.is_finite() && value >= 0.0, "{stdout}");
        }
    }
    // The store rows have a store, the keystore rows none.
    assert_eq!(rows[0][8], "0.0", "{stdout}");
    assert_ne!(rows[1][8], "0.0", "{stdout}");
    let ratios: Vec<&&str> = rest.iter().filter(|l| l.contains(" threads: ")).collect();
    assert_eq!(ratios.len(), 2, "{stdout}");
}

#[test]
fn bench_admin_refuses_bad_counts() {
    for args in [
        &["--threads", "0"][..],
        &["--threads", "1,50000"],
        &["--messages", "0"],
    ] {
        let output = bench_of("admin", args, std::time::Duration::from_secs(60));
        assert!(!output.status.success(), "{args:?} was accepted");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("must be"), "{args:?}: {stderr}");
    }
}
