//! `negative.json`: for every row of the validation table (docs/protocol.md §8) that a value can
//! break, a value a receiver must refuse, labelled with the row and the error. The receivers are
//! rebuilt from the other vector files: the recipient of `wraps.json` case 0, and the devices of
//! `commits.json` (the customer restored from its snapshot and brought to an epoch by applying
//! the stored commits; the admin; agent 0). `first` lists values the receiver accepts before
//! the refused one (rows that refuse a repetition).

use serde_json::{Value, json};
use switchboard_protocol::*;

mod receive;
mod threads;

use super::{commits, keys_of, wraps};
use crate::support::{NOW, World, to_hex};

pub(super) fn case(
    row: &str,
    error: &str,
    kind: &str,
    receiver: Value,
    value: Value,
    what: &str,
) -> Value {
    let mut case = json!({
        "row": row,
        "expected_error": error,
        "value_type": kind,
        "now": NOW,
        "first": [],
        "description": what,
    });
    case["receiver"] = receiver;
    case["value"] = value;
    case
}

pub(super) fn val<T: serde::Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap()
}

/// The devices of `commits.json` (World::new seeds): customer 1, admin 2, agents 10, 11, 12.
pub(super) fn world() -> World {
    World::new(CipherSuite::default(), 3)
}

pub(super) fn customer_at(epoch: u64) -> Value {
    json!({ "device": "customer", "at_epoch": epoch })
}

fn wrap_cases(out: &mut Vec<Value>) {
    let case0 = &wraps()["cases"][0];
    let wrap: KeyWrap = decode(case0["wrap"].to_string().as_bytes()).unwrap();
    let sender = keys_of(&case0["sender"], CipherSuite::default());
    let changed = |f: &dyn Fn(&mut KeyWrap), resign: bool| {
        let mut x = wrap.clone();
        f(&mut x);
        if resign {
            x.sign_as(sender.identity());
        }
        val(&x)
    };
    let r = json!({ "wraps.json case": 0 });
    let mut c = |row: &str, error: &str, value: Value, what: &str| {
        out.push(case(row, error, "wrap", r.clone(), value, what));
    };
    c(
        "W1",
        "WrapError::SuiteMismatch",
        changed(
            &|x| x.suite = CipherSuite::XWingSha256ChaCha20Poly1305,
            true,
        ),
        "a wrap naming the X-Wing suite to an X25519 device, signed by the sender",
    );
    c(
        "W2",
        "WrapError::WrongRecipient",
        changed(&|x| x.recipient = DeviceId::from_bytes([0x99; 16]), true),
        "a wrap addressed to another device, signed by the sender",
    );
    c(
        "W3",
        "WrapError::UnexpectedSender",
        changed(&|x| x.sender = DeviceId::from_bytes([0x99; 16]), true),
        "a wrap from another sender",
    );
    c(
        "W4",
        "WrapError::ContextMismatch",
        changed(&|x| x.thread = ThreadId::from_bytes([0x99; 16]), true),
        "a wrap for another thread, signed by the sender",
    );
    c(
        "W5",
        "WrapError::Expired",
        changed(&|x| x.expires_at = NOW, true),
        "a wrap that expires at now, signed by the sender",
    );
    c(
        "W6",
        "WrapError::BadSignature",
        changed(&|x| x.ciphertext[0] ^= 1, false),
        "a wrap with a flipped ciphertext bit, not signed again",
    );
    c(
        "W7a",
        "WrapError::UnknownKemKey",
        changed(&|x| x.recipient_key = KemKeyId([0x99; 32]), true),
        "a wrap naming a KEM key the recipient never held, signed by the sender",
    );
    c(
        "W8",
        "WrapError::Decrypt",
        changed(&|x| x.ciphertext[0] ^= 1, true),
        "a wrap with a flipped ciphertext bit, signed again by the sender",
    );
    let mut again = case(
        "W7",
        "WrapError::Replayed",
        "wrap",
        r.clone(),
        val(&wrap),
        "the same wrap twice",
    );
    again["first"] = json!([val(&wrap)]);
    out.push(again);
    // Wire rows on the same wrap.
    let mut v2 = val(&wrap);
    v2["v"] = json!(2);
    out.push(case(
        "V1",
        "WireError::UnsupportedVersion",
        "wrap",
        r.clone(),
        v2,
        "a wrap of protocol version 2",
    ));
    let mut extra = val(&wrap);
    extra["extra"] = json!(1);
    out.push(case(
        "V2",
        "WireError::Malformed",
        "wrap",
        r.clone(),
        extra,
        "a wrap with an unknown field",
    ));
    let mut upper = val(&wrap);
    let id = to_hex(wrap.wrap_id.as_bytes());
    assert_ne!(id, id.to_uppercase(), "the wrap id has hex letters");
    upper["wrap_id"] = json!(id.to_uppercase());
    out.push(case(
        "V4",
        "WireError::Malformed",
        "wrap",
        r,
        upper,
        "a wrap whose wrap id is uppercase hex",
    ));
    // Too large to store: the value is given by a rule, `pad` spaces after the stored wrap.
    out.push(case(
        "V3",
        "WireError::Malformed",
        "oversized_wrap",
        json!({}),
        json!({ "wrap": val(&wrap), "pad": 4 * 1024 * 1024 }),
        "the wrap of wraps.json case 0 followed by 4 MiB of spaces (4 MiB + the wrap's length in all)",
    ));
}

fn open_cases(base: &Value, other_open: &ThreadOpen, out: &mut Vec<Value>) {
    let mut w = world();
    w.rng = Csprng::from_seed([0x5e; 32]);
    let open: ThreadOpen = decode(base["thread_open"].to_string().as_bytes()).unwrap();
    let r = json!({ "device": "admin", "entity": "acme" });
    out.push(case(
        "O1",
        "Error::WrongEntity",
        "thread_open",
        r.clone(),
        val(other_open),
        "a thread open for entity globex",
    ));
    let (_, to_agent) = ThreadState::open(
        &w.customer,
        w.entity.clone(),
        &w.agents[0].bundle(NOW),
        NOW,
        &mut w.rng,
    )
    .unwrap();
    out.push(case(
        "O2",
        "KeyError::WrongDevice",
        "thread_open",
        r.clone(),
        val(&to_agent),
        "a thread open wrapped to agent 0's bundle instead of the admin's",
    ));
    let mut flipped = open.clone();
    flipped.wrap.ciphertext[0] ^= 1;
    out.push(case(
        "O3",
        "WrapError::BadSignature",
        "thread_open",
        r.clone(),
        val(&flipped),
        "a thread open whose wrap has a flipped ciphertext bit",
    ));
    let mut again = case(
        "O4",
        "WrapError::Replayed",
        "thread_open",
        r,
        val(&open),
        "the same thread open twice",
    );
    again["first"] = json!([val(&open)]);
    out.push(again);
}

fn key_cases(out: &mut Vec<Value>) {
    let w = world();
    let none = json!({});
    out.push(case(
        "K1",
        "KeyError::WeakIdentityKey",
        "identity_key",
        none.clone(),
        json!(to_hex(&[0; 32])),
        "an all-zero identity key (small order)",
    ));
    out.push(case(
        "K2",
        "KeyError::InvalidKemKey",
        "kem_key",
        none.clone(),
        json!({ "suite": CipherSuite::default(), "key": to_hex(&[9; 31]) }),
        "an X25519 KEM key of 31 bytes",
    ));
    out.push(case(
        "K3",
        "KeyError::WeakKemKey",
        "kem_key",
        none.clone(),
        json!({ "suite": CipherSuite::default(), "key": to_hex(&[0; 32]) }),
        "an all-zero X25519 KEM key",
    ));
    let mut bundle = w.agents[0].bundle(NOW);
    bundle.kem_key = w.agents[1].kem_public().clone();
    out.push(case(
        "K4",
        "KeyError::BadBundleSignature",
        "key_bundle",
        none,
        val(&bundle),
        "agent 0's bundle carrying agent 1's KEM key",
    ));
    let current = w.agents[0].bundle(NOW);
    out.push(case(
        "K5",
        "KeyError::NotNewer",
        "key_bundle_update",
        json!({ "current": current }),
        val(&w.agents[0].bundle(NOW.plus(0))),
        "a bundle as old as the one it would replace",
    ));
    // Credentials, verified for acme's admin at now, against the bundle of agent `bundle_of`.
    let issue = |entity: &EntityId, expires_at: Timestamp| {
        AgentCredential::issue(
            &w.admin,
            &CredentialRequest {
                entity,
                agent: &w.agents[0].bundle(NOW),
                display_name: "Agent0",
                kind: AgentKind::Bot,
                issued_at: NOW,
                expires_at,
            },
        )
        .unwrap()
    };
    let good = issue(&w.entity, NOW.plus(86_400));
    let cr = |agent: usize| json!({ "entity": "acme", "admin": "admin", "bundle_of_agent": agent });
    out.push(case(
        "C1",
        "CredentialError::WrongIssuer",
        "credential",
        cr(0),
        val(&issue(&EntityId::new("globex").unwrap(), NOW.plus(86_400))),
        "a credential for entity globex",
    ));
    let mut renamed = good.clone();
    renamed.display_name = "Admin".into();
    out.push(case(
        "C2",
        "CredentialError::BadSignature",
        "credential",
        cr(0),
        val(&renamed),
        "a credential renamed after signing",
    ));
    let mut blank = good.clone();
    blank.display_name = " ".into();
    blank.sign_as(w.admin.identity());
    out.push(case(
        "C3",
        "CredentialError::InvalidDisplayName",
        "credential",
        cr(0),
        val(&blank),
        "a credential whose display name is only whitespace, signed by the admin",
    ));
    out.push(case(
        "C4",
        "CredentialError::Expired",
        "credential",
        cr(0),
        val(&issue(&w.entity, NOW)),
        "a credential that expires at now",
    ));
    out.push(case(
        "C5",
        "CredentialError::KeyMismatch",
        "credential",
        cr(1),
        val(&good),
        "agent 0's credential presented with agent 1's bundle",
    ));
}

pub(super) fn negatives() -> Value {
    let base = commits::commits();
    // Another thread of the same devices, for entity globex.
    let mut w = world();
    w.rng = Csprng::from_seed([0x5d; 32]);
    w.entity = EntityId::new("globex").unwrap();
    let (_, mut admin_view, other_open) = w.open_thread();
    let other = w.commit(
        &mut admin_view,
        CommitAction::Assign {
            agent: Box::new(w.member(0, AgentKind::Bot)),
        },
    );
    let mut out = Vec::new();
    wrap_cases(&mut out);
    key_cases(&mut out);
    open_cases(&base, &other_open, &mut out);
    threads::commit_cases(&base, &other, &mut out);
    threads::message_cases(&base, &mut out);
    threads::grant_cases(&base, &mut out);
    let mut snap = case(
        "S1",
        "Error::Snapshot",
        "snapshot",
        json!({ "device": "agent0" }),
        base["customer_snapshot"].clone(),
        "the customer's snapshot restored by agent 0",
    );
    snap["first"] = json!([]);
    out.push(snap);
    // The admin's snapshot after reading the customer's first message, with the recorded digest
    // moved to a generation the window has not seen.
    let mut w = world();
    let (mut customer_view, mut admin_view, _) = w.open_thread();
    let hello = customer_view
        .seal_with(&w.customer, &Content::text("hi"), None, &mut w.rng)
        .unwrap();
    admin_view.open_message(&hello, NOW).unwrap();
    let mut window = val(&admin_view.snapshot());
    let customer = to_hex(w.customer.device().as_bytes());
    let digests = &mut window["epochs"][0]["windows"][&customer]["digests"];
    assert_eq!(digests.as_array().unwrap().len(), 1, "{window}");
    digests[0]["generation"] = json!(5);
    out.push(case(
        "S4",
        "Error::Snapshot",
        "snapshot",
        json!({ "device": "admin" }),
        window,
        "the admin's snapshot whose receive window keeps a digest for generation 5, which it has not seen",
    ));
    let mut ahead = base["customer_snapshot"].clone();
    ahead["current"] = json!(3);
    out.push(case(
        "S2",
        "Error::Snapshot",
        "snapshot",
        json!({ "device": "customer" }),
        ahead,
        "the customer's snapshot claiming current epoch 3, which it does not hold",
    ));
    json!({
        "description": "switchboard/1 negative vectors: each a value a receiver must refuse, with the validation-table row (docs/protocol.md §8) it breaks and the error; receivers as docs/protocol.md §11 describes",
        "cases": out,
    })
}
