//! Relay processes on loopback: two relays on one PostgreSQL database, a relay killed with
//! SIGKILL during a burst of posts, one killed after committing a nonce and an
//! acknowledgement without an fsync, and an inbox stream whose reader does not read.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::print_stderr,
    missing_docs,
    unreachable_pub
)]

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use serde_json::Value;
use support::{RelayProcess, now, request, request_with, signed_headers};
use switchboard_protocol::{
    CipherSuite, Content, Csprng, DeviceId, DeviceKeys, EntityId, ThreadState, encode,
};

fn register(addr: &str, keys: &DeviceKeys) {
    let body = encode(&keys.bundle(now())).unwrap();
    let (status, body) = request(addr, Some(keys), "POST", "/v1/devices", &body).unwrap();
    assert!(
        status == 201 || status == 200,
        "{status} {}",
        String::from_utf8_lossy(&body)
    );
}

fn device(rng: &mut Csprng) -> DeviceKeys {
    DeviceKeys::generate(DeviceId::random(rng), CipherSuite::default(), rng)
}

/// Registers customer and admin, creates an entity (random name), opens a thread. Returns
/// (customer, admin, customer's thread view, entity).
fn setup(addr_a: &str, addr_b: &str, rng: &mut Csprng) -> (DeviceKeys, DeviceKeys, ThreadState) {
    let (customer, admin) = (device(rng), device(rng));
    register(addr_a, &customer);
    register(addr_b, &admin);
    let name = format!("e{}", &DeviceId::random(rng).to_string()[..12]);
    let body = format!(r#"{{"v":1,"entity":"{name}","display_name":"Acme"}}"#);
    let (status, _) = request(
        addr_b,
        Some(&admin),
        "POST",
        "/v1/entities",
        body.as_bytes(),
    )
    .unwrap();
    assert_eq!(status, 201);
    let entity = EntityId::new(name).unwrap();
    let (view, open) =
        ThreadState::open(&customer, entity, &admin.bundle(now()), now(), rng).unwrap();
    let (status, _) = request(
        addr_a,
        Some(&customer),
        "POST",
        "/v1/threads",
        &encode(&open).unwrap(),
    )
    .unwrap();
    assert_eq!(status, 201);
    (customer, admin, view)
}

fn inbox(addr: &str, keys: &DeviceKeys, query: &str) -> Vec<Value> {
    let (status, body) =
        request(addr, Some(keys), "GET", &format!("/v1/inbox?{query}"), b"").unwrap();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let json: Value = serde_json::from_slice(&body).unwrap();
    json["items"].as_array().unwrap().clone()
}

#[test]
fn two_relays_on_one_postgres_database_deliver_each_others_posts() {
    let Ok(url) = std::env::var("SWITCHBOARD_TEST_PG") else {
        let _ = std::io::Write::write_all(
            &mut std::io::stderr(),
            b"SKIPPED: two relays on PostgreSQL (set SWITCHBOARD_TEST_PG=postgres://... to run it)\n",
        );
        return;
    };
    let (a, b) = (RelayProcess::start(&url), RelayProcess::start(&url));
    let mut rng = Csprng::from_os().unwrap();
    let (customer, admin, mut view) = setup(&a.addr, &b.addr, &mut rng);
    // The thread opened through A reaches the admin through B.
    let items = inbox(&b.addr, &admin, "after=0");
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["kind"], "thread_open");
    let cursor = items[0]["seq"].as_u64().unwrap();
    // A message posted to A wakes a long-poll waiting on B (B re-reads the shared store).
    let message = view
        .seal(&customer, &Content::text("hello through A"), None)
        .unwrap();
    let path = format!("/v1/threads/{}/messages", message.header.thread);
    let body = encode(&message).unwrap();
    let poller = {
        let (addr, admin) = (b.addr.clone(), admin.clone());
        std::thread::spawn(move || inbox(&addr, &admin, &format!("after={cursor}&wait=20")))
    };
    std::thread::sleep(Duration::from_millis(300));
    let (status, _) = request(&a.addr, Some(&customer), "POST", &path, &body).unwrap();
    assert_eq!(status, 201);
    let items = poller.join().unwrap();
    assert_eq!(
        items.len(),
        1,
        "the long-poll on B returned the post made to A"
    );
    assert_eq!(
        items[0]["payload"]["header"]["sender"],
        customer.device().to_string()
    );
}

#[test]
fn relay_killed_during_a_burst_loses_no_answered_post() {
    let dir = std::env::temp_dir().join(format!("switchboard-kill-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let db = format!("sqlite://{}", dir.join("relay.db").display());
    let mut relay = RelayProcess::start(&db);
    let mut rng = Csprng::from_os().unwrap();
    let (customer, admin, mut view) = setup(&relay.addr, &relay.addr, &mut rng);
    let messages: Vec<(u64, Vec<u8>)> = (0..1000)
        .map(|i| {
            let m = view
                .seal(&customer, &Content::text(format!("burst {i}")), None)
                .unwrap();
            (m.header.generation, encode(&m).unwrap())
        })
        .collect();
    let thread = view.thread();
    let path = format!("/v1/threads/{thread}/messages");

    // Post from a background thread; kill the relay once some posts were answered.
    let (addr, poster) = (relay.addr.clone(), customer.clone());
    let (tx, rx) = std::sync::mpsc::channel();
    let burst = std::thread::spawn(move || {
        let mut answered = Vec::new();
        for (generation, body) in messages {
            match request(&addr, Some(&poster), "POST", &path, &body) {
                Some((201, _)) => {
                    answered.push(generation);
                    let _ = tx.send(());
                }
                Some((status, body)) => {
                    panic!("post refused: {status} {}", String::from_utf8_lossy(&body))
                }
                None => break, // the relay is gone
            }
        }
        answered
    });
    for _ in 0..50 {
        rx.recv_timeout(Duration::from_secs(30))
            .expect("posts are being answered");
    }
    relay.signal("-KILL");
    relay.wait(Duration::from_secs(30));
    let answered = burst.join().unwrap();
    assert!(
        answered.len() >= 50 && answered.len() < 1000,
        "killed mid-burst: {} answered",
        answered.len()
    );

    // Restart on the same database: every answered post is there, once.
    let relay = RelayProcess::start(&db);
    let mut seen = Vec::new();
    let mut cursor = 0;
    loop {
        let items = inbox(&relay.addr, &admin, &format!("after={cursor}&limit=500"));
        if items.is_empty() {
            break;
        }
        for item in &items {
            if item["kind"] == "message" {
                seen.push(item["payload"]["header"]["generation"].as_u64().unwrap());
            }
            cursor = item["seq"].as_u64().unwrap();
        }
    }
    let unique: BTreeSet<u64> = seen.iter().copied().collect();
    assert_eq!(unique.len(), seen.len(), "no post delivered twice");
    for generation in &answered {
        assert!(
            unique.contains(generation),
            "answered post {generation} lost"
        );
    }
    // After an ack nothing is delivered again.
    let (status, _) = request(
        &relay.addr,
        Some(&admin),
        "POST",
        "/v1/inbox/ack",
        format!(r#"{{"v":1,"up_to":{cursor}}}"#).as_bytes(),
    )
    .unwrap();
    assert_eq!(status, 200);
    assert!(inbox(&relay.addr, &admin, "after=0").is_empty());
    drop(relay);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A request's nonce and an acknowledgement are committed without waiting for the disk (only
/// posts and opens wait for their fsync): killed right after, the relay still has both. The
/// same signed request sent again to the restarted relay is refused as a replay, and the
/// acknowledged items are not delivered again.
#[test]
fn relay_killed_after_a_lazy_commit_keeps_the_nonce_and_the_ack() {
    let dir = std::env::temp_dir().join(format!("switchboard-lazy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let db = format!("sqlite://{}", dir.join("relay.db").display());
    let mut relay = RelayProcess::start(&db);
    let mut rng = Csprng::from_os().unwrap();
    let (customer, admin, mut view) = setup(&relay.addr, &relay.addr, &mut rng);
    let path = format!("/v1/threads/{}/messages", view.thread());
    for text in ["one", "two"] {
        let message = view.seal(&customer, &Content::text(text), None).unwrap();
        let body = encode(&message).unwrap();
        let (status, _) = request(&relay.addr, Some(&customer), "POST", &path, &body).unwrap();
        assert_eq!(status, 201);
    }
    let items = inbox(&relay.addr, &admin, "after=0");
    assert_eq!(items.len(), 3, "open and two messages");
    let second = items[1]["seq"].as_u64().unwrap();

    // One signed fetch that acknowledges the first two items; then SIGKILL at once.
    let fetch = format!("/v1/inbox?after={second}&ack={second}");
    let headers = signed_headers(&admin, "GET", &fetch, b"");
    let (status, body) = request_with(&relay.addr, &headers, "GET", &fetch, b"").unwrap();
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    relay.signal("-KILL");
    relay.wait(Duration::from_secs(30));

    let relay = RelayProcess::start(&db);
    let (status, body) = request_with(&relay.addr, &headers, "GET", &fetch, b"").unwrap();
    let json: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(
        (status, json["error"]["code"].as_str()),
        (401, Some("replayed_request")),
        "the nonce is still spent: {json}"
    );
    let left = inbox(&relay.addr, &admin, "after=0");
    assert_eq!(left, items[2..].to_vec(), "the acknowledgement holds");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The resident memory of a process, in KiB (Linux).
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// A device opens its inbox stream and reads nothing while about 40 MB of items are queued for
/// it: the relay stops reading the store once the connection's buffers are full, so its memory
/// grows by far less than what is queued; read at last, the stream delivers every item.
#[cfg(target_os = "linux")]
#[test]
fn a_stream_nobody_reads_does_not_grow_the_relay() {
    use std::io::{Read as _, Write as _};

    let dir = std::env::temp_dir().join(format!("switchboard-slow-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let db = format!("sqlite://{}", dir.join("relay.db").display());
    // The customer posts faster than a customer may by default.
    let relay = RelayProcess::start_with(&db, &["--customer-rate", "100000/100000"]);
    let mut rng = Csprng::from_os().unwrap();
    let (customer, admin, mut view) = setup(&relay.addr, &relay.addr, &mut rng);

    // The admin's stream, opened and then not read.
    let path = "/v1/inbox/stream?after=0";
    let mut stream = std::net::TcpStream::connect(&relay.addr).unwrap();
    let mut head = format!("GET {path} HTTP/1.1\r\nHost: {}\r\n", relay.addr);
    for (name, value) in signed_headers(&admin, "GET", path, b"") {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let before = rss_kib(relay.child.id());

    // 600 messages of 64 KiB of text (about 88 KB each on the wire, 50 MB in all).
    let text = "x".repeat(switchboard_protocol::MAX_TEXT_BYTES);
    let posts = 600;
    let thread = view.thread();
    let messages = format!("/v1/threads/{thread}/messages");
    for _ in 0..posts {
        let sealed = view.seal(&customer, &Content::text(&text), None).unwrap();
        let body = encode(&sealed).unwrap();
        let (status, _) = request(&relay.addr, Some(&customer), "POST", &messages, &body).unwrap();
        assert_eq!(status, 201);
    }
    std::thread::sleep(Duration::from_millis(500));
    let after = rss_kib(relay.child.id());
    let grown_mb = after.saturating_sub(before) / 1024;
    eprintln!("relay RSS {before} -> {after} KiB");
    assert!(
        grown_mb < 24,
        "the relay grew by {grown_mb} MB for a reader that reads nothing ({before} -> {after} KiB)"
    );

    // Read at last: every item comes (the open and the messages), in order.
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut received = Vec::new();
    let mut buffer = [0u8; 64 * 1024];
    let mut seen = 0;
    while seen < posts + 1 {
        let n = stream.read(&mut buffer).expect("the stream goes on");
        assert!(n > 0, "the relay closed the stream after {seen} items");
        received.extend_from_slice(&buffer[..n]);
        // Count whole item events, dropping what was counted.
        while let Some(end) = received.windows(2).position(|w| w == b"\n\n") {
            if received[..end].windows(11).any(|w| w == b"event: item") {
                seen += 1;
            }
            received.drain(..end + 2);
        }
    }
    assert_eq!(seen, posts + 1);
    let _ = std::fs::remove_dir_all(&dir);
}
