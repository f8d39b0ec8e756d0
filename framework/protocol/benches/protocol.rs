//! Benchmarks of switchboard-protocol: wrap seal/open (both suites), message seal/open, a commit
//! for 10 members, and the crypto floor a message is compared with (one Ed25519 sign + one
//! verify + one ChaCha20Poly1305 seal of the same size).
//!
//! Run: `cargo bench -p switchboard-protocol`. After criterion's report it prints the ratios of
//! medians from this run (`ratio message/seal+open vs floor`), which is what the crate README
//! quotes.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::wildcard_imports,
    clippy::indexing_slicing,
    missing_docs
)]

use std::hint::black_box;
use std::path::PathBuf;
use std::time::Instant;

use chacha20poly1305::aead::{Aead as _, Payload};
use chacha20poly1305::{ChaCha20Poly1305, KeyInit as _};
use criterion::{BatchSize, Criterion};
use switchboard_protocol::*;

const NOW: Timestamp = Timestamp(1_800_000_000);
const TEXT: &str = "Your order 42 shipped today and arrives on Thursday.";

fn keys(n: u8, suite: CipherSuite) -> DeviceKeys {
    DeviceKeys::from_seed(DeviceId::from_bytes([n; 16]), suite, &[n; 32])
}

fn agent(admin: &DeviceKeys, entity: &EntityId, n: u8) -> (DeviceKeys, Member) {
    let k = keys(n, CipherSuite::default());
    let bundle = k.bundle(NOW);
    let credential = AgentCredential::issue(
        admin,
        &CredentialRequest {
            entity,
            agent: &bundle,
            display_name: "BenchBot",
            kind: AgentKind::Bot,
            issued_at: NOW,
            expires_at: NOW.plus(3600),
        },
    )
    .unwrap();
    (k, Member::agent(bundle, credential))
}

fn wraps(c: &mut Criterion) {
    for suite in CipherSuite::ALL {
        let (sender, recipient) = (keys(1, suite), keys(2, suite));
        let bundle = recipient.bundle(NOW);
        let context = WrapContext {
            thread: ThreadId::from_bytes([3; 16]),
            epoch: Epoch(1),
            roster_hash: RosterHash([4; 32]),
            expires_at: NOW.plus(3600),
        };
        let secret = EpochSecret::from_bytes([5; 32]);
        let mut rng = Csprng::from_seed([6; 32]);
        let short = match suite {
            CipherSuite::X25519Sha256ChaCha20Poly1305 => "x25519",
            CipherSuite::XWingSha256ChaCha20Poly1305 => "xwing",
        };
        let mut group = c.benchmark_group(format!("wrap-{short}"));
        group.bench_function("seal", |b| {
            b.iter(|| KeyWrap::seal(&sender, &bundle, &context, &secret, &mut rng).unwrap());
        });
        let wrap = KeyWrap::seal(&sender, &bundle, &context, &secret, &mut rng).unwrap();
        let expected = ExpectedWrap {
            sender: sender.device(),
            sender_key: &sender.identity_public(),
            thread: context.thread,
            epoch: context.epoch,
            roster_hash: context.roster_hash,
        };
        group.bench_function("open", |b| {
            b.iter_batched_ref(
                SeenWraps::new,
                |seen| wrap.open(&recipient, &expected, NOW, seen).unwrap(),
                BatchSize::SmallInput,
            );
        });
        group.finish();
    }
}

/// A fresh customer/admin thread: every message benchmark gets its own, so that generations
/// advance in step on both sides.
fn thread_pair(rng: &mut Csprng) -> (DeviceKeys, ThreadState, ThreadState) {
    let entity = EntityId::new("bench").unwrap();
    let (customer, admin) = (
        keys(1, CipherSuite::default()),
        keys(2, CipherSuite::default()),
    );
    let (customer_view, open) =
        ThreadState::open(&customer, entity.clone(), &admin.bundle(NOW), NOW, rng).unwrap();
    let admin_view =
        ThreadState::accept(&admin, &entity, &open, NOW, &mut SeenWraps::new()).unwrap();
    (customer, customer_view, admin_view)
}

fn messages(c: &mut Criterion) {
    let mut rng = Csprng::from_seed([7; 32]);
    let content = Content::text(TEXT);
    let mut group = c.benchmark_group("message");
    let (customer, mut customer_view, _) = thread_pair(&mut rng);
    group.bench_function("seal", |b| {
        b.iter(|| {
            customer_view
                .seal(&customer, black_box(&content), None)
                .unwrap()
        });
    });
    // Open each message once (a second open is a refused duplicate): seal in untimed setup.
    let (customer, mut customer_view, mut admin_view) = thread_pair(&mut rng);
    group.bench_function("open", |b| {
        b.iter_batched(
            || customer_view.seal(&customer, &content, None).unwrap(),
            |m| admin_view.open_message(&m, NOW).unwrap(),
            BatchSize::SmallInput,
        );
    });
    let (customer, mut customer_view, mut admin_view) = thread_pair(&mut rng);
    group.bench_function("seal+open", |b| {
        b.iter(|| {
            let m = customer_view
                .seal(&customer, black_box(&content), None)
                .unwrap();
            admin_view.open_message(&m, NOW).unwrap()
        });
    });
    let (customer, mut customer_view, mut admin_view) = thread_pair(&mut rng);
    group.bench_function("seal+open+json", |b| {
        b.iter(|| {
            let m = customer_view
                .seal(&customer, black_box(&content), None)
                .unwrap();
            let bytes = encode(&m).unwrap();
            let m: SealedMessage = decode(&bytes).unwrap();
            admin_view.open_message(&m, NOW).unwrap()
        });
    });
    group.finish();

    let floor = Floor::new(&content);
    let mut group = c.benchmark_group("floor");
    group.bench_function("sign+verify+aead", |b| b.iter(|| floor.run()));
    group.finish();
}

/// The crypto floor of a message: one ChaCha20Poly1305 seal of the same plaintext with an AAD
/// the size of our header, one Ed25519 sign and one (strict) verify of the ciphertext.
struct Floor {
    signer: IdentityKeyPair,
    verifier: IdentityPublicKey,
    aead: ChaCha20Poly1305,
    nonce: chacha20poly1305::Nonce,
    plaintext: Vec<u8>,
    aad: [u8; 130],
}

impl Floor {
    fn new(content: &Content) -> Self {
        let signer = IdentityKeyPair::from_seed(&[9; 32]);
        Self {
            verifier: signer.public(),
            signer,
            aead: ChaCha20Poly1305::new_from_slice(&[1; 32]).unwrap(),
            nonce: chacha20poly1305::Nonce::from([2; 12]),
            plaintext: serde_json::to_vec(content).unwrap(),
            aad: [0u8; 130],
        }
    }

    fn run(&self) -> Vec<u8> {
        let payload = Payload {
            msg: black_box(&self.plaintext),
            aad: &self.aad,
        };
        let ct = self.aead.encrypt(&self.nonce, payload).unwrap();
        let sig = self.signer.sign(&ct);
        assert!(self.verifier.verify(&ct, &sig));
        ct
    }
}

/// The target ratio, measured robustly on a noisy shared machine: floor and message seal+open
/// alternate within one loop (so both see the same load), each iteration timed on its own, and
/// the medians compared. Returns (median ours µs, median floor µs, ratio).
fn paired_ratio(iterations: usize) -> (f64, f64, f64) {
    let mut rng = Csprng::from_seed([10; 32]);
    let (customer, mut customer_view, mut admin_view) = thread_pair(&mut rng);
    let content = Content::text(TEXT);
    let floor = Floor::new(&content);
    let mut ours = Vec::with_capacity(iterations);
    let mut base = Vec::with_capacity(iterations);
    for i in 0..iterations {
        let mut time_ours = || {
            let start = Instant::now();
            let m = customer_view
                .seal(&customer, black_box(&content), None)
                .unwrap();
            black_box(admin_view.open_message(&m, NOW).unwrap());
            start.elapsed().as_secs_f64()
        };
        let time_floor = || {
            let start = Instant::now();
            black_box(floor.run());
            start.elapsed().as_secs_f64()
        };
        // Alternate the order so neither side always runs first.
        if i % 2 == 0 {
            ours.push(time_ours());
            base.push(time_floor());
        } else {
            base.push(time_floor());
            ours.push(time_ours());
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2] * 1e6
    };
    let (o, f) = (median(&mut ours), median(&mut base));
    (o, f, o / f)
}

/// A thread with 10 members (customer, admin, 8 agents in a group); both views keep only the
/// current epoch so that memory stays flat however many iterations criterion runs.
fn ten_member_thread(rng: &mut Csprng) -> (DeviceKeys, ThreadState, DeviceKeys, ThreadState) {
    let entity = EntityId::new("bench").unwrap();
    let (customer, admin) = (
        keys(1, CipherSuite::default()),
        keys(2, CipherSuite::default()),
    );
    let (customer_view, open) =
        ThreadState::open(&customer, entity.clone(), &admin.bundle(NOW), NOW, rng).unwrap();
    let mut customer_view = customer_view.with_retention(RetentionPolicy::current_only());
    let mut admin_view = ThreadState::accept(&admin, &entity, &open, NOW, &mut SeenWraps::new())
        .unwrap()
        .with_retention(RetentionPolicy::current_only());
    for n in 0..8 {
        let (_, member) = agent(&admin, &entity, 20 + n);
        let commit = admin_view
            .commit(
                &admin,
                CommitAction::AddToGroup {
                    agent: Box::new(member),
                },
                NOW,
                rng,
            )
            .unwrap();
        customer_view.apply_commit(&customer, &commit, NOW).unwrap();
    }
    assert_eq!(admin_view.roster().members.len(), 10);
    (customer, customer_view, admin, admin_view)
}

fn commits(c: &mut Criterion) {
    let mut rng = Csprng::from_seed([8; 32]);
    let (customer, mut customer_view, admin, mut admin_view) = ten_member_thread(&mut rng);
    let mut group = c.benchmark_group("commit-10-members");
    // Each iteration is a complete admin commit against the next epoch.
    let mut admin_only = ten_member_thread(&mut rng).3;
    group.bench_function("create", |b| {
        b.iter(|| {
            admin_only
                .commit(&admin, CommitAction::Rekey, NOW, &mut rng)
                .unwrap()
        });
    });
    // The customer applies each commit once: the commit is made in the untimed setup.
    group.bench_function("apply", |b| {
        b.iter_batched(
            || {
                admin_view
                    .commit(&admin, CommitAction::Rekey, NOW, &mut rng)
                    .unwrap()
            },
            |commit| customer_view.apply_commit(&customer, &commit, NOW).unwrap(),
            BatchSize::SmallInput,
        );
    });
    group.finish();
}

/// Where criterion writes its results (the same rules criterion uses, minus `cargo metadata`).
fn criterion_dir() -> PathBuf {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return PathBuf::from(home);
    }
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/criterion"),
        |t| PathBuf::from(t).join("criterion"),
    )
}

fn median_ns(group: &str, bench: &str) -> Option<f64> {
    let path = criterion_dir()
        .join(group)
        .join(bench)
        .join("new/estimates.json");
    let text = std::fs::read_to_string(path).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v.get("median")?.get("point_estimate")?.as_f64()
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    wraps(&mut c);
    messages(&mut c);
    commits(&mut c);
    c.final_summary();

    let floor = median_ns("floor", "sign+verify+aead");
    println!("\nmedians of this run (µs):");
    for (group, bench) in [
        ("wrap-x25519", "seal"),
        ("wrap-x25519", "open"),
        ("wrap-xwing", "seal"),
        ("wrap-xwing", "open"),
        ("message", "seal"),
        ("message", "open"),
        ("message", "seal+open"),
        ("message", "seal+open+json"),
        ("floor", "sign+verify+aead"),
        ("commit-10-members", "create"),
        ("commit-10-members", "apply"),
    ] {
        if let Some(ns) = median_ns(group, bench) {
            let ratio = floor
                .map(|f| format!("  ({:.2}x floor)", ns / f))
                .unwrap_or_default();
            println!("  {group}/{bench}: {:.1}{ratio}", ns / 1000.0);
        }
    }
    if let (Some(ours), Some(floor)) = (median_ns("message", "seal+open"), floor) {
        println!(
            "ratio of criterion medians, message/seal+open vs floor: {:.3}",
            ours / floor
        );
    }
    // Under `cargo bench` (criterion's --bench flag) measure properly; under `cargo test` smoke.
    let iterations = if std::env::args().any(|a| a == "--bench") {
        20_000
    } else {
        20
    };
    let (ours, floor, ratio) = paired_ratio(iterations);
    println!(
        "paired ({iterations} alternating iterations): message seal+open {ours:.1} µs, floor {floor:.1} µs, ratio {ratio:.3} (target <= 1.3)"
    );
}
