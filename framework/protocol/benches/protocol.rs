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
    let admin_view = ThreadState::accept(&admin, &entity, &open, NOW).unwrap();
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
            |m| admin_view.open_message(&m).unwrap(),
            BatchSize::SmallInput,
        );
    });
    let (customer, mut customer_view, mut admin_view) = thread_pair(&mut rng);
    group.bench_function("seal+open", |b| {
        b.iter(|| {
            let m = customer_view
                .seal(&customer, black_box(&content), None)
                .unwrap();
            admin_view.open_message(&m).unwrap()
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
            admin_view.open_message(&m).unwrap()
        });
    });
    group.finish();

    // The floor: what any signed AEAD message must cost at least.
    let signer = IdentityKeyPair::from_seed(&[9; 32]);
    let verifier = signer.public();
    let aead = ChaCha20Poly1305::new_from_slice(&[1; 32]).unwrap();
    let nonce = chacha20poly1305::Nonce::from([2; 12]);
    let plaintext = serde_json::to_vec(&content).unwrap();
    let aad = [0u8; 130];
    let mut group = c.benchmark_group("floor");
    group.bench_function("sign+verify+aead", |b| {
        b.iter(|| {
            let ct = aead
                .encrypt(
                    &nonce,
                    Payload {
                        msg: black_box(&plaintext),
                        aad: &aad,
                    },
                )
                .unwrap();
            let sig = signer.sign(&ct);
            assert!(verifier.verify(&ct, &sig));
            ct
        });
    });
    group.finish();
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
    let mut admin_view = ThreadState::accept(&admin, &entity, &open, NOW)
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
            "ratio message/seal+open vs floor: {:.3} (target <= 1.3)",
            ours / floor
        );
    }
}
