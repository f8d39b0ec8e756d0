//! The `switchboard-test-bot` process itself: bad command lines are refused with the usage, and
//! a keystore that cannot be opened ends it with an error (never a hang).

use std::time::Duration;

use tokio::time::timeout;

async fn run(args: &[&str]) -> std::process::Output {
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_switchboard-test-bot"))
        .args(args)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    timeout(Duration::from_secs(20), child)
        .await
        .expect("the bot exits")
        .unwrap()
}

#[tokio::test]
async fn refuses_a_bad_command_line_with_the_usage() {
    for args in [
        &[][..],
        &["--keystore"][..],
        &[
            "--keystore",
            "k",
            "--key-file",
            "f",
            "--relay",
            "r",
            "--store",
            "memory",
        ][..],
        &["--frobnicate", "x"][..],
    ] {
        let out = run(args).await;
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("usage: switchboard-test-bot"),
            "{args:?}: {stderr}"
        );
        assert!(out.stdout.is_empty(), "not ready: {args:?}");
    }
}

#[tokio::test]
async fn fails_without_a_keystore() {
    let dir = switchboard_testkit::scratch_dir("test-bot");
    let keystore = dir.join("missing.keystore");
    let key_file = dir.join("missing.key");
    let out = run(&[
        "--keystore",
        keystore.to_str().unwrap(),
        "--key-file",
        key_file.to_str().unwrap(),
        "--relay",
        "http://127.0.0.1:9",
        "--store",
        "memory",
        "--instance",
        "a",
    ])
    .await;
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty(), "never ready");
    assert!(String::from_utf8_lossy(&out.stderr).contains("switchboard-test-bot:"));
}
