//! The project's own deterministic test vectors, `framework/protocol/test_vectors/*.json`.
//!
//! Every value derives from fixed seeds. Two tests: the stored files equal what this build
//! produces from the same seeds (so any change to the wire format or the cryptography shows up
//! as a diff to review), and the stored values open and verify (so another implementation can
//! use the files alone). Regenerate after an intended change with
//! `SWITCHBOARD_REGENERATE_VECTORS=1 cargo test -p switchboard-protocol --test protocol vectors`.

mod commits;
mod negative;

use std::path::PathBuf;

use hkdf::Hkdf;
use serde_json::{Value, json};
use sha2::Sha256;
use switchboard_protocol::*;

use crate::support::{NOW, World, hex, spec_aad, spec_key_nonce, to_hex};

/// X25519 `DeriveKeyPair(ikmE)` of RFC 9180 §7.1.3 and the public key `pkE`, which is `enc`:
/// written from the RFC, independently of the crate, so the vectors also check docs/protocol.md.
fn spec_x25519_enc(ikm: &[u8]) -> [u8; 32] {
    let suite_id = b"KEM\x00\x20";
    let mut labeled_ikm = b"HPKE-v1".to_vec();
    labeled_ikm.extend_from_slice(suite_id);
    labeled_ikm.extend_from_slice(b"dkp_prk");
    labeled_ikm.extend_from_slice(ikm);
    let (_, dkp_prk) = Hkdf::<Sha256>::extract(Some(&[]), &labeled_ikm);
    let mut info = 32u16.to_be_bytes().to_vec();
    info.extend_from_slice(b"HPKE-v1");
    info.extend_from_slice(suite_id);
    info.extend_from_slice(b"sk");
    let mut sk = [0u8; 32];
    dkp_prk.expand(&info, &mut sk).unwrap();
    x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from(sk)).to_bytes()
}

/// The two draws one wrap makes (its wrap id, then its HPKE encapsulation randomness), checked
/// against the wrap and labelled for the vector. X25519: `ikmE`, 32 bytes, `skE =
/// DeriveKeyPair(ikmE)` and `enc = pkE`. X-Wing: 64 bytes, the first 32 the ML-KEM-768 message
/// `m`, the last 32 the X25519 ephemeral secret, whose public key is `enc`'s last 32 bytes.
fn wrap_draws(wrap: &KeyWrap, draws: &[Vec<u8>]) -> Vec<Value> {
    assert_eq!(draws.len(), 2, "a wrap draws twice");
    assert_eq!(
        draws[0],
        wrap.wrap_id.as_bytes(),
        "the wrap id is drawn first"
    );
    let to = wrap.recipient;
    let eph = match wrap.suite {
        CipherSuite::X25519Sha256ChaCha20Poly1305 => {
            assert_eq!(draws[1].len(), 32);
            assert_eq!(wrap.enc, spec_x25519_enc(&draws[1]), "enc = pkE of ikmE");
            format!("HPKE X25519 ikmE (skE = DeriveKeyPair(ikmE)) for {to}")
        }
        CipherSuite::XWingSha256ChaCha20Poly1305 => {
            assert_eq!(draws[1].len(), 64);
            let sk: [u8; 32] = draws[1][32..].try_into().unwrap();
            let ct_x = x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from(sk));
            assert_eq!(&wrap.enc[1088..], ct_x.as_bytes(), "enc ends with ct_X");
            format!("HPKE X-Wing encapsulation randomness (m || ek_X) for {to}")
        }
    };
    vec![
        json!({ "purpose": format!("wrap_id for {to}"), "bytes": to_hex(&draws[0]) }),
        json!({ "purpose": eph, "bytes": to_hex(&draws[1]) }),
    ]
}

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("test_vectors")
}

fn suite_seed(suite: CipherSuite) -> u8 {
    match suite {
        CipherSuite::X25519Sha256ChaCha20Poly1305 => 0x21,
        CipherSuite::XWingSha256ChaCha20Poly1305 => 0x41,
    }
}

fn device(seed: u8, suite: CipherSuite) -> DeviceKeys {
    DeviceKeys::from_seed(DeviceId::from_bytes([seed; 16]), suite, &[seed; 32])
}

fn key_bundles() -> Value {
    let cases: Vec<Value> = CipherSuite::ALL
        .iter()
        .map(|&suite| {
            let seed = suite_seed(suite);
            let keys = device(seed, suite);
            let bundle = keys.bundle(NOW);
            json!({
                "description": format!("device keys from a 32-byte seed, {suite}"),
                "suite": suite,
                "device": keys.device(),
                "seed": to_hex(&[seed; 32]),
                "created_at": NOW,
                "bundle": bundle,
                "fingerprint": bundle.fingerprint().to_string(),
            })
        })
        .collect();
    json!({ "description": "switchboard/1 key bundles", "cases": cases })
}

fn wraps() -> Value {
    // `rng_seed` fed `Csprng::from_seed`; `rng_draws` gives what it returned, in order.
    let cases: Vec<Value> = CipherSuite::ALL
        .iter()
        .map(|&suite| {
            let seed = suite_seed(suite);
            let (sender, recipient) = (device(seed, suite), device(seed + 1, suite));
            let rng_seed = [seed + 2; 32];
            let context = WrapContext {
                thread: ThreadId::from_bytes([seed + 3; 16]),
                epoch: Epoch(7),
                roster_hash: RosterHash([seed + 4; 32]),
                expires_at: NOW.plus(3600),
            };
            let secret = EpochSecret::from_bytes([seed + 5; 32]);
            let mut rng = Csprng::recording(rng_seed);
            let wrap = KeyWrap::seal(&sender, &recipient.bundle(NOW), &context, &secret, &mut rng)
                .unwrap();
            let rng_draws = wrap_draws(&wrap, &rng.take_draws());
            json!({
                "description": format!("epoch secret wrapped with {suite}"),
                "suite": suite,
                "sender": { "device": sender.device(), "seed": to_hex(&[seed; 32]) },
                "recipient": { "device": recipient.device(), "seed": to_hex(&[seed + 1; 32]) },
                "rng_seed": to_hex(&rng_seed),
                "rng_draws": rng_draws,
                "epoch_secret": to_hex(secret.as_bytes()),
                "now": NOW,
                "wrap": wrap,
            })
        })
        .collect();
    json!({ "description": "switchboard/1 key wraps", "cases": cases })
}

/// A whole thread: open, assign to a bot, a customer message, a bot reply quoting it, a typing
/// indicator and a handoff request.
fn thread_flow() -> Value {
    let mut w = World::new(CipherSuite::default(), 1);
    // The same stream as World::new's generator, recorded.
    w.rng = Csprng::recording([0x5b; 32]);
    let (mut customer_view, mut admin_view, open) = w.open_thread();
    let draws = w.rng.take_draws();
    let mut open_draws = vec![
        json!({ "purpose": "thread id", "bytes": to_hex(&draws[0]) }),
        json!({ "purpose": "epoch secret", "bytes": to_hex(&draws[1]) }),
    ];
    open_draws.extend(wrap_draws(&open.wrap, &draws[2..]));
    let hello = customer_view
        .seal_with(
            &w.customer,
            &Content::text("where is order 42?"),
            None,
            &mut w.rng,
        )
        .unwrap();
    admin_view.open_message(&hello, NOW).unwrap();
    let _reuse_guard = w.rng.take_draws();
    let assign = w.commit(
        &mut admin_view,
        CommitAction::Assign {
            agent: Box::new(w.member(0, AgentKind::Bot)),
        },
    );
    let draws = w.rng.take_draws();
    assert_eq!(draws.len(), 1 + 2 * assign.wraps.len());
    let mut assign_draws = vec![json!({ "purpose": "epoch secret", "bytes": to_hex(&draws[0]) })];
    for (wrap, pair) in assign.wraps.iter().zip(draws[1..].chunks(2)) {
        assign_draws.extend(wrap_draws(wrap, pair));
    }
    customer_view
        .apply_commit(&w.customer, &assign, NOW)
        .unwrap();
    let mut bot_view = w.join(0, &assign);
    let ask = customer_view
        .seal_with(&w.customer, &Content::text("any news?"), None, &mut w.rng)
        .unwrap();
    let reply = bot_view
        .seal_with(
            &w.agents[0],
            &Content::Reply {
                text: "Order 42 ships today".into(),
            },
            Some(ask.header.message_id()),
            &mut w.rng,
        )
        .unwrap();
    let typing = bot_view
        .seal_with(
            &w.agents[0],
            &Content::Typing { active: true },
            None,
            &mut w.rng,
        )
        .unwrap();
    let handoff = bot_view
        .seal_with(
            &w.agents[0],
            &Content::HandoffRequest {
                target: HandoffTarget::Team("billing".into()),
                note: "refund".into(),
            },
            None,
            &mut w.rng,
        )
        .unwrap();
    let messages: Vec<Value> = [
        (&hello, &customer_view, Epoch(0)),
        (&ask, &customer_view, Epoch(1)),
        (&reply, &bot_view, Epoch(1)),
        (&typing, &bot_view, Epoch(1)),
        (&handoff, &bot_view, Epoch(1)),
    ]
    .into_iter()
    .map(|(m, view, epoch)| {
        let secret = match epoch {
            Epoch(0) => admin_view.epoch_secret(epoch).unwrap().clone(),
            _ => view.epoch_secret(epoch).unwrap().clone(),
        };
        let okm = spec_key_nonce(&secret, &m.header);
        json!({
            "sealed": m,
            "message_id": m.header.message_id(),
            "rng_draws": [{ "purpose": "reuse_guard", "bytes": to_hex(&m.header.reuse_guard) }],
            "epoch_secret": to_hex(secret.as_bytes()),
            "aad": to_hex(&spec_aad(&m.header)),
            "key": to_hex(&okm[..32]),
            "nonce": to_hex(&okm[32..]),
        })
    })
    .collect();
    let expected: Vec<Value> = [
        json!({"sender": "customer", "content": Content::text("where is order 42?")}),
        json!({"sender": "customer", "content": Content::text("any news?")}),
        json!({"sender": "Agent0", "content": Content::Reply { text: "Order 42 ships today".into() }}),
        json!({"sender": "Agent0", "content": Content::Typing { active: true }}),
        json!({"sender": "Agent0", "content": Content::HandoffRequest { target: HandoffTarget::Team("billing".into()), note: "refund".into() }}),
    ]
    .into();
    json!({
        "description": "switchboard/1 thread: open, assign to a bot, messages; devices from World::new seeds (customer [1;32], admin [2;32], bot [10;32]); every random value drawn is in rng_draws (thread_open_rng_draws, assign_rng_draws, per message), in the order drawn",
        "entity": w.entity,
        "now": NOW,
        "devices": {
            "customer": { "device": w.customer.device(), "seed": to_hex(&[1; 32]) },
            "admin": { "device": w.admin.device(), "seed": to_hex(&[2; 32]) },
            "bot": { "device": w.agents[0].device(), "seed": to_hex(&[10; 32]) },
        },
        "thread_open": open,
        "thread_open_rng_draws": open_draws,
        "assign": assign,
        "assign_rng_draws": assign_draws,
        "messages": messages,
        "expected": expected,
    })
}

fn build() -> Vec<(&'static str, Value)> {
    vec![
        ("key_bundles.json", key_bundles()),
        ("wraps.json", wraps()),
        ("messages.json", thread_flow()),
        ("commits.json", commits::commits()),
        ("negative.json", negative::negatives()),
    ]
}

pub(super) fn load(name: &str) -> Value {
    let path = dir().join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

#[test]
fn stored_vectors_equal_what_this_build_produces() {
    let regenerate = std::env::var_os("SWITCHBOARD_REGENERATE_VECTORS").is_some();
    for (name, value) in build() {
        if regenerate {
            let text = format!("{}\n", serde_json::to_string_pretty(&value).unwrap());
            std::fs::write(dir().join(name), text).unwrap();
            eprintln!("regenerated {name}");
        } else {
            // Not assert_eq!: the values are large; say which file and regenerate to see the diff.
            assert!(
                load(name) == value,
                "{name} differs from this build's output; if the change is intended, regenerate"
            );
        }
    }
}

/// An agent of `commits.json`: from its seed, or, for the one that rotated, from its keystore
/// form (current and retired KEM keys).
pub(super) fn agent_keys(a: &Value, suite: CipherSuite) -> DeviceKeys {
    match a.get("kem_secrets_after_rotation") {
        Some(kem) => DeviceKeys::from_parts(
            serde_json::from_value(a["device"].clone()).unwrap(),
            suite,
            &hex(a["seed"].as_str().unwrap()).try_into().unwrap(),
            &serde_json::from_value(kem.clone()).unwrap(),
        ),
        None => keys_of(a, suite),
    }
}

pub(super) fn keys_of(v: &Value, suite: CipherSuite) -> DeviceKeys {
    let device: DeviceId = serde_json::from_value(v["device"].clone()).unwrap();
    let seed: [u8; 32] = hex(v["seed"].as_str().unwrap()).try_into().unwrap();
    DeviceKeys::from_seed(device, suite, &seed)
}

#[test]
fn stored_key_bundles_verify() {
    for case in load("key_bundles.json")["cases"].as_array().unwrap() {
        let suite: CipherSuite = serde_json::from_value(case["suite"].clone()).unwrap();
        let bundle: KeyBundle = decode(case["bundle"].to_string().as_bytes()).unwrap();
        bundle.verify().unwrap();
        let keys = keys_of(case, suite);
        assert_eq!(bundle.identity_key, keys.identity_public());
        assert_eq!(&bundle.kem_key, keys.kem_public());
        assert_eq!(
            bundle.fingerprint().to_string(),
            case["fingerprint"].as_str().unwrap()
        );
    }
}

#[test]
fn stored_wraps_open() {
    for case in load("wraps.json")["cases"].as_array().unwrap() {
        let suite: CipherSuite = serde_json::from_value(case["suite"].clone()).unwrap();
        let wrap: KeyWrap = decode(case["wrap"].to_string().as_bytes()).unwrap();
        let sender = keys_of(&case["sender"], suite);
        let recipient = keys_of(&case["recipient"], suite);
        let secret = wrap
            .open(
                &recipient,
                &ExpectedWrap {
                    sender: sender.device(),
                    sender_key: &sender.identity_public(),
                    thread: wrap.thread,
                    epoch: wrap.epoch,
                    roster_hash: wrap.roster_hash,
                },
                serde_json::from_value(case["now"].clone()).unwrap(),
                &mut SeenWraps::new(),
            )
            .unwrap();
        assert_eq!(
            to_hex(secret.as_bytes()),
            case["epoch_secret"].as_str().unwrap()
        );
    }
}

#[test]
fn stored_thread_opens_end_to_end() {
    let v = load("messages.json");
    let suite = CipherSuite::default();
    let (admin, bot) = (
        keys_of(&v["devices"]["admin"], suite),
        keys_of(&v["devices"]["bot"], suite),
    );
    let entity: EntityId = serde_json::from_value(v["entity"].clone()).unwrap();
    let now: Timestamp = serde_json::from_value(v["now"].clone()).unwrap();
    let open: ThreadOpen = decode(v["thread_open"].to_string().as_bytes()).unwrap();
    let assign: Commit = decode(v["assign"].to_string().as_bytes()).unwrap();
    let mut admin_view =
        ThreadState::accept(&admin, &entity, &open, now, &mut SeenWraps::new()).unwrap();
    let mut bot_view = ThreadState::join(
        &bot,
        &entity,
        admin.device(),
        admin.identity_public(),
        &assign,
        now,
        &mut DeviceMemory::new(),
    )
    .unwrap();
    let expected = v["expected"].as_array().unwrap();
    for (i, m) in v["messages"].as_array().unwrap().iter().enumerate() {
        let sealed: SealedMessage = decode(m["sealed"].to_string().as_bytes()).unwrap();
        assert_eq!(
            serde_json::to_value(sealed.header.message_id()).unwrap(),
            m["message_id"]
        );
        // Intermediate values per the spec.
        let secret =
            EpochSecret::from_bytes(hex(m["epoch_secret"].as_str().unwrap()).try_into().unwrap());
        let okm = spec_key_nonce(&secret, &sealed.header);
        assert_eq!(to_hex(&okm[..32]), m["key"].as_str().unwrap());
        assert_eq!(to_hex(&okm[32..]), m["nonce"].as_str().unwrap());
        assert_eq!(
            to_hex(&spec_aad(&sealed.header)),
            m["aad"].as_str().unwrap()
        );
        // Epoch 0 is read by the admin (from the thread open), epoch 1 by the bot (from the
        // assign commit): both views are rebuilt from the files alone.
        let got = match sealed.header.epoch {
            Epoch(0) => admin_view.open_message(&sealed, NOW),
            _ => bot_view.open_message(&sealed, NOW),
        }
        .unwrap();
        let sender = match got.sender_info {
            Sender::Customer => "customer".to_owned(),
            Sender::Admin => "admin".to_owned(),
            Sender::Agent { display_name, .. } => display_name,
        };
        assert_eq!(
            sender,
            expected[i]["sender"].as_str().unwrap(),
            "message {i}"
        );
        assert_eq!(
            serde_json::to_value(&got.content).unwrap(),
            expected[i]["content"],
            "message {i}"
        );
        // Opening the same message twice is a replay.
        let again = match sealed.header.epoch {
            Epoch(0) => admin_view.open_message(&sealed, NOW),
            _ => bot_view.open_message(&sealed, NOW),
        };
        assert!(
            matches!(again, Err(MessageError::Duplicate { .. })),
            "message {i}"
        );
    }
}

/// Each stored wrap, sealed again with its listed random values instead of a generator, equals
/// the stored wrap byte for byte (X25519 and X-Wing).
#[test]
fn stored_wraps_are_reproduced_from_their_rng_draws() {
    for case in load("wraps.json")["cases"].as_array().unwrap() {
        let suite: CipherSuite = serde_json::from_value(case["suite"].clone()).unwrap();
        let stored: KeyWrap = decode(case["wrap"].to_string().as_bytes()).unwrap();
        let now: Timestamp = serde_json::from_value(case["now"].clone()).unwrap();
        let (sender, recipient) = (
            keys_of(&case["sender"], suite),
            keys_of(&case["recipient"], suite),
        );
        let secret = EpochSecret::from_bytes(
            hex(case["epoch_secret"].as_str().unwrap())
                .try_into()
                .unwrap(),
        );
        let context = WrapContext {
            thread: stored.thread,
            epoch: stored.epoch,
            roster_hash: stored.roster_hash,
            expires_at: stored.expires_at,
        };
        let mut rng = commits::replay(&case["rng_draws"]);
        let wrap =
            KeyWrap::seal(&sender, &recipient.bundle(now), &context, &secret, &mut rng).unwrap();
        assert_eq!(rng.unused(), 0, "{suite}");
        assert_eq!(
            serde_json::to_value(&wrap).unwrap(),
            case["wrap"],
            "{suite}"
        );
    }
}
