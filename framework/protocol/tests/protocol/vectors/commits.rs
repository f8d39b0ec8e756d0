//! `commits.json`: a thread open and one commit of every action (assign, add_to_group, three
//! set_floor encodings, remove, transfer, rekey, and a rekey carrying a member's rotated bundle in
//! `updates`), each with every random value the sealer drew, in order, and the customer's
//! snapshot after the open. The check rebuilds the customer from that snapshot and the agents
//! from their seeds, and applies every stored commit.

use serde_json::{Value, json};
use switchboard_protocol::*;

use super::{agent_keys, keys_of, load, wrap_draws};
use crate::support::{NOW, World, hex, spec_aad, spec_key_nonce, to_hex};

/// The seed of the recording generator the commits are sealed with.
const RNG_SEED: [u8; 32] = [0x5c; 32];

/// Seals `content` with `view`, drawing the reuse guard from `rng`; the message with its draw,
/// intermediate values (docs/protocol.md §5) and expected content.
fn seal(
    view: &mut ThreadState,
    keys: &DeviceKeys,
    rng: &mut Csprng,
    sender: &str,
    content: &Content,
    quoted: Option<MessageId>,
) -> (SealedMessage, Value) {
    let m = view.seal_with(keys, content, quoted, rng).unwrap();
    let draws = rng.take_draws();
    assert_eq!(
        draws,
        [m.header.reuse_guard.to_vec()],
        "one draw: the reuse guard"
    );
    let secret = view.epoch_secret(m.header.epoch).unwrap();
    let okm = spec_key_nonce(secret, &m.header);
    let value = json!({
        "sender": sender,
        "sealed": m,
        "message_id": m.header.message_id(),
        "rng_draws": [draw("reuse_guard", &draws[0])],
        "epoch_secret": to_hex(secret.as_bytes()),
        "aad": to_hex(&spec_aad(&m.header)),
        "key": to_hex(&okm[..32]),
        "nonce": to_hex(&okm[32..]),
        "content": content,
    });
    (m, value)
}

fn draw(purpose: &str, bytes: &[u8]) -> Value {
    json!({ "purpose": purpose, "bytes": to_hex(bytes) })
}

/// One commit by the admin, with the draws it made: the epoch secret, then per wrap (in the
/// `wraps` array's order) its wrap id and its HPKE encapsulation randomness.
fn step(
    w: &mut World,
    admin_view: &mut ThreadState,
    name: &str,
    action: CommitAction,
    updates: Vec<KeyBundle>,
    now: Timestamp,
) -> Value {
    let commit = admin_view
        .commit_with_updates(&w.admin, action, updates, now, &mut w.rng)
        .unwrap();
    let draws = w.rng.take_draws();
    let secret = admin_view.epoch_secret(commit.epoch).unwrap();
    assert_eq!(draws.len(), 1 + 2 * commit.wraps.len(), "{name}: draws");
    assert_eq!(
        draws[0],
        secret.as_bytes(),
        "{name}: the secret is drawn first"
    );
    let mut labelled = vec![draw("epoch secret", &draws[0])];
    for (wrap, pair) in commit.wraps.iter().zip(draws[1..].chunks(2)) {
        labelled.extend(wrap_draws(wrap, pair));
    }
    json!({
        "action": name,
        "now": now,
        "commit": commit,
        "epoch_secret": to_hex(secret.as_bytes()),
        "rng_draws": labelled,
    })
}

pub(super) fn commits() -> Value {
    let mut w = World::new(CipherSuite::default(), 3);
    w.rng = Csprng::recording(RNG_SEED);
    let (mut customer_view, mut admin_view, open) = w.open_thread();
    let draws = w.rng.take_draws();
    assert_eq!(draws.len(), 4, "thread id, secret, wrap id, encapsulation");
    assert_eq!(draws[0], open.thread.as_bytes());
    assert_eq!(
        draws[1],
        customer_view.epoch_secret(Epoch(0)).unwrap().as_bytes()
    );
    let mut open_draws = vec![
        draw("thread id", &draws[0]),
        draw("epoch secret", &draws[1]),
    ];
    open_draws.extend(wrap_draws(&open.wrap, &draws[2..]));
    // The customer writes in epoch 0 (the history grant below carries it); its snapshot is taken
    // after sealing, as a device persists it.
    let (hello, hello_json) = seal(
        &mut customer_view,
        &w.customer,
        &mut w.rng,
        "customer",
        &Content::text("where is order 42?"),
        None,
    );
    admin_view.open_message(&hello, NOW).unwrap();
    let snapshot = customer_view.snapshot();

    let (bot, human, other) = (
        w.member(0, AgentKind::Bot),
        w.member(1, AgentKind::Human),
        w.member(2, AgentKind::Human),
    );
    let (a0, a2) = (w.agents[0].device(), w.agents[2].device());
    let mut steps = Vec::new();
    let none = Vec::new;
    for (name, action) in [
        (
            "assign",
            CommitAction::Assign {
                agent: Box::new(bot),
            },
        ),
        (
            "add_to_group",
            CommitAction::AddToGroup {
                agent: Box::new(human),
            },
        ),
        (
            "set_floor agent",
            CommitAction::SetFloor {
                floor: Floor::Agent(a0),
            },
        ),
        (
            "set_floor admin",
            CommitAction::SetFloor {
                floor: Floor::Admin,
            },
        ),
        (
            "set_floor group",
            CommitAction::SetFloor {
                floor: Floor::Group,
            },
        ),
        (
            "remove",
            CommitAction::Remove {
                device: w.agents[1].device(),
            },
        ),
        (
            "transfer",
            CommitAction::Transfer {
                from: a0,
                to: Box::new(other),
            },
        ),
        ("rekey", CommitAction::Rekey),
    ] {
        steps.push(step(&mut w, &mut admin_view, name, action, none(), NOW));
    }
    // Agent 2 rotates its KEM key; the admin's next commit carries its newer bundle.
    let later = NOW.plus(60);
    w.agents[2].rotate_kem(later, &mut w.rng);
    let rotation = w.rng.take_draws();
    assert_eq!(rotation.len(), 1);
    let rotated = w.agents[2].bundle(later);
    assert_eq!(rotated.device, a2);
    steps.push(step(
        &mut w,
        &mut admin_view,
        "rekey with updates",
        CommitAction::Rekey,
        vec![rotated],
        later,
    ));

    // The members bring their views to the last epoch, then every content type is sealed.
    let mut agent2_view: Option<ThreadState> = None;
    for st in &steps {
        let c: Commit = decode(st["commit"].to_string().as_bytes()).unwrap();
        let at: Timestamp = serde_json::from_value(st["now"].clone()).unwrap();
        customer_view.apply_commit(&w.customer, &c, at).unwrap();
        match &mut agent2_view {
            Some(view) => view.apply_commit(&w.agents[2], &c, at).unwrap(),
            None if c.roster.contains(a2) => {
                agent2_view = Some(
                    ThreadState::join(
                        &w.agents[2],
                        &w.entity,
                        w.admin.device(),
                        w.admin.identity_public(),
                        &c,
                        at,
                        &mut DeviceMemory::new(),
                    )
                    .unwrap(),
                );
            }
            None => {}
        }
    }
    let mut agent2_view = agent2_view.unwrap();
    let (question, q_json) = seal(
        &mut customer_view,
        &w.customer,
        &mut w.rng,
        "customer",
        &Content::text("can I get a refund?"),
        None,
    );
    let q = question.header.message_id();
    let mut messages = vec![q_json];
    for (content, quoted) in [
        (
            Content::Receipt {
                kind: ReceiptKind::Delivered,
                messages: vec![q],
            },
            None,
        ),
        (
            Content::Receipt {
                kind: ReceiptKind::Read,
                messages: vec![q],
            },
            None,
        ),
        (Content::Typing { active: true }, None),
        (
            Content::Reply {
                text: "Yes, within 30 days".into(),
            },
            Some(q),
        ),
        (
            Content::HandoffRequest {
                target: HandoffTarget::Team("billing".into()),
                note: "refund".into(),
            },
            None,
        ),
        (
            Content::HandoffRequest {
                target: HandoffTarget::Agent(a0),
                note: "knows the order".into(),
            },
            None,
        ),
        (
            Content::HandoffRequest {
                target: HandoffTarget::AnyHuman,
                note: "".into(),
            },
            None,
        ),
    ] {
        messages.push(
            seal(
                &mut agent2_view,
                &w.agents[2],
                &mut w.rng,
                "Agent2",
                &content,
                quoted,
            )
            .1,
        );
    }
    messages.push(
        seal(
            &mut admin_view,
            &w.admin,
            &mut w.rng,
            "admin",
            &Content::SystemNotice {
                text: "Dana joined".into(),
            },
            None,
        )
        .1,
    );
    // The admin grants agent 2 the epochs before it joined, with the customer's first message.
    let grant = admin_view
        .grant_history(
            &w.admin,
            &w.agents[2].bundle(later),
            vec![hello],
            later,
            &mut w.rng,
        )
        .unwrap();
    let draws = w.rng.take_draws();
    assert_eq!(
        draws.len(),
        2 * grant.epochs.len(),
        "a wrap id and an encapsulation per epoch"
    );
    let grant_draws: Vec<Value> = grant
        .epochs
        .iter()
        .zip(draws.chunks(2))
        .flat_map(|(e, pair)| wrap_draws(&e.wrap, pair))
        .collect();

    let agents: Vec<Value> = w
        .agents
        .iter()
        .enumerate()
        .map(|(i, keys)| {
            let mut v = json!({ "device": keys.device(), "seed": to_hex(keys.seed()) });
            if i == 2 {
                v["kem_ikm_drawn_at_rotation"] = json!(to_hex(&rotation[0]));
                v["kem_secrets_after_rotation"] = serde_json::to_value(keys.kem_secrets()).unwrap();
            }
            v
        })
        .collect();
    json!({
        "description": "switchboard/1 commits: a thread open, then one commit of every action (x25519 suite); devices from World::new seeds; every random value drawn is listed in rng_draws in the order drawn (from Csprng::recording of rng_seed)",
        "suite": CipherSuite::default(),
        "entity": w.entity,
        "now": NOW,
        "rng_seed": to_hex(&RNG_SEED),
        "devices": {
            "customer": { "device": w.customer.device(), "seed": to_hex(&[1; 32]) },
            "admin": { "device": w.admin.device(), "seed": to_hex(&[2; 32]) },
            "agents": agents,
        },
        "thread_open": open,
        "thread_open_rng_draws": open_draws,
        "customer_snapshot": snapshot,
        "commits": steps,
        "epoch_0_message": hello_json,
        "messages": messages,
        "history_grant": {
            "now": later,
            "grant": grant,
            "rng_draws": grant_draws,
        },
    })
}

#[test]
fn stored_commits_apply_for_every_member() {
    let v = load("commits.json");
    let suite: CipherSuite = serde_json::from_value(v["suite"].clone()).unwrap();
    let entity: EntityId = serde_json::from_value(v["entity"].clone()).unwrap();
    let now: Timestamp = serde_json::from_value(v["now"].clone()).unwrap();
    let devices = &v["devices"];
    let (customer, admin) = (
        keys_of(&devices["customer"], suite),
        keys_of(&devices["admin"], suite),
    );
    let agents: Vec<DeviceKeys> = devices["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| agent_keys(a, suite))
        .collect();
    // The admin accepts the stored open; the customer is restored from its stored snapshot.
    let open: ThreadOpen = decode(v["thread_open"].to_string().as_bytes()).unwrap();
    let admin_view =
        ThreadState::accept(&admin, &entity, &open, now, &mut SeenWraps::new()).unwrap();
    let snapshot: ThreadSnapshot = decode(v["customer_snapshot"].to_string().as_bytes()).unwrap();
    let mut customer_view = ThreadState::restore(&customer, snapshot).unwrap();
    assert_eq!(
        admin_view.epoch_secret(Epoch(0)).unwrap().as_bytes(),
        customer_view.epoch_secret(Epoch(0)).unwrap().as_bytes()
    );
    let mut views: Vec<Option<ThreadState>> = agents.iter().map(|_| None).collect();
    let mut memories: Vec<DeviceMemory> = agents.iter().map(|_| DeviceMemory::new()).collect();
    let mut actions = Vec::new();
    for step in v["commits"].as_array().unwrap() {
        let name = step["action"].as_str().unwrap();
        actions.push(name.to_owned());
        let commit: Commit = decode(step["commit"].to_string().as_bytes()).unwrap();
        let at: Timestamp = serde_json::from_value(step["now"].clone()).unwrap();
        let secret = step["epoch_secret"].as_str().unwrap();
        customer_view.apply_commit(&customer, &commit, at).unwrap();
        let mut holders = vec![&customer_view];
        for (i, keys) in agents.iter().enumerate() {
            let member = commit.roster.contains(keys.device());
            match views[i].take() {
                None if member => {
                    views[i] = Some(
                        ThreadState::join(
                            keys,
                            &entity,
                            admin.device(),
                            admin.identity_public(),
                            &commit,
                            at,
                            &mut memories[i],
                        )
                        .unwrap(),
                    );
                }
                Some(mut view) => {
                    let applied = view.apply_commit(keys, &commit, at);
                    if member {
                        applied.unwrap();
                        views[i] = Some(view);
                    } else {
                        assert!(
                            matches!(applied, Err(CommitError::Removed { .. })),
                            "{name}: agent {i}"
                        );
                    }
                }
                None => {}
            }
        }
        holders.extend(views.iter().flatten());
        assert!(holders.len() >= 2, "{name}: an agent holds the epoch");
        for view in holders {
            assert_eq!(
                to_hex(view.epoch_secret(commit.epoch).unwrap().as_bytes()),
                secret,
                "{name}"
            );
        }
    }
    // Every content type: the customer's message read by agent 2, the others by the customer.
    let mut agent2_view = views[2].take().unwrap();
    let mut types = Vec::new();
    for m in v["messages"].as_array().unwrap() {
        let sealed: SealedMessage = decode(m["sealed"].to_string().as_bytes()).unwrap();
        assert_eq!(
            to_hex(&sealed.header.reuse_guard),
            m["rng_draws"][0]["bytes"].as_str().unwrap()
        );
        let secret =
            EpochSecret::from_bytes(hex(m["epoch_secret"].as_str().unwrap()).try_into().unwrap());
        let okm = spec_key_nonce(&secret, &sealed.header);
        assert_eq!(to_hex(&okm[..32]), m["key"].as_str().unwrap());
        assert_eq!(to_hex(&okm[32..]), m["nonce"].as_str().unwrap());
        assert_eq!(
            to_hex(&spec_aad(&sealed.header)),
            m["aad"].as_str().unwrap()
        );
        let at = NOW.plus(60);
        let got = match m["sender"].as_str().unwrap() {
            "customer" => agent2_view.open_message(&sealed, at),
            _ => customer_view.open_message(&sealed, at),
        }
        .unwrap();
        let sender = match got.sender_info {
            Sender::Customer => "customer".to_owned(),
            Sender::Admin => "admin".to_owned(),
            Sender::Agent { display_name, .. } => display_name,
        };
        assert_eq!(sender, m["sender"].as_str().unwrap());
        assert_eq!(serde_json::to_value(&got.content).unwrap(), m["content"]);
        types.push(got.content.content_type());
    }
    for t in [
        ContentType::Text,
        ContentType::Reply,
        ContentType::Receipt,
        ContentType::Typing,
        ContentType::HandoffRequest,
        ContentType::SystemNotice,
    ] {
        assert!(types.contains(&t), "{t:?}");
    }
    // The history grant opens for agent 2 and carries the customer's epoch-0 message.
    let g = &v["history_grant"];
    let grant: HistoryGrant = decode(g["grant"].to_string().as_bytes()).unwrap();
    let at: Timestamp = serde_json::from_value(g["now"].clone()).unwrap();
    let got = agent2_view.accept_history(&agents[2], &grant, at).unwrap();
    assert_eq!(
        grant.epochs.len(),
        7,
        "epochs 0 to 6, before agent 2 joined in epoch 7"
    );
    assert_eq!(got.len(), 1);
    assert_eq!(
        serde_json::to_value(&got[0].content).unwrap(),
        v["epoch_0_message"]["content"]
    );
    assert_eq!(
        actions,
        [
            "assign",
            "add_to_group",
            "set_floor agent",
            "set_floor admin",
            "set_floor group",
            "remove",
            "transfer",
            "rekey",
            "rekey with updates"
        ]
    );
}

/// The bytes of a vector's `rng_draws`, concatenated in order.
pub(super) fn replay(draws: &Value) -> Csprng {
    Csprng::replaying(
        draws
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|d| hex(d["bytes"].as_str().unwrap()))
            .collect(),
    )
}

/// The seal side from the files alone: the customer's open and first message, and the admin's
/// every commit, system notice and history grant, made again with the listed random values
/// instead of a generator, equal the stored values byte for byte.
#[test]
fn stored_commits_are_reproduced_from_their_rng_draws() {
    let v = load("commits.json");
    let suite: CipherSuite = serde_json::from_value(v["suite"].clone()).unwrap();
    let entity: EntityId = serde_json::from_value(v["entity"].clone()).unwrap();
    let now: Timestamp = serde_json::from_value(v["now"].clone()).unwrap();
    let (customer, admin) = (
        keys_of(&v["devices"]["customer"], suite),
        keys_of(&v["devices"]["admin"], suite),
    );
    let mut rng = replay(&v["thread_open_rng_draws"]);
    let (mut customer_view, open) =
        ThreadState::open(&customer, entity.clone(), &admin.bundle(now), now, &mut rng).unwrap();
    assert_eq!(rng.unused(), 0);
    assert_eq!(serde_json::to_value(&open).unwrap(), v["thread_open"]);
    let first = &v["epoch_0_message"];
    let content: Content = serde_json::from_value(first["content"].clone()).unwrap();
    let hello = customer_view
        .seal_with(&customer, &content, None, &mut replay(&first["rng_draws"]))
        .unwrap();
    assert_eq!(serde_json::to_value(&hello).unwrap(), first["sealed"]);
    let mut admin_view =
        ThreadState::accept(&admin, &entity, &open, now, &mut SeenWraps::new()).unwrap();
    admin_view.open_message(&hello, now).unwrap();
    for step in v["commits"].as_array().unwrap() {
        let stored: Commit = decode(step["commit"].to_string().as_bytes()).unwrap();
        let at: Timestamp = serde_json::from_value(step["now"].clone()).unwrap();
        let mut rng = replay(&step["rng_draws"]);
        let commit = admin_view
            .commit_with_updates(
                &admin,
                stored.action.clone(),
                stored.updates.clone(),
                at,
                &mut rng,
            )
            .unwrap();
        assert_eq!(rng.unused(), 0, "{}", step["action"]);
        assert_eq!(
            serde_json::to_value(&commit).unwrap(),
            step["commit"],
            "{}",
            step["action"]
        );
    }
    let notice = v["messages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["sender"] == "admin")
        .unwrap();
    let content: Content = serde_json::from_value(notice["content"].clone()).unwrap();
    let sealed = admin_view
        .seal_with(&admin, &content, None, &mut replay(&notice["rng_draws"]))
        .unwrap();
    assert_eq!(serde_json::to_value(&sealed).unwrap(), notice["sealed"]);
    let g = &v["history_grant"];
    let stored: HistoryGrant = decode(g["grant"].to_string().as_bytes()).unwrap();
    let at: Timestamp = serde_json::from_value(g["now"].clone()).unwrap();
    let to = stored.epochs[0].roster.get(stored.to);
    assert!(to.is_none(), "agent 2 was not in epoch 0");
    let agent2 = stored_commit_member(&v, stored.to);
    let mut rng = replay(&g["rng_draws"]);
    let grant = admin_view
        .grant_history(&admin, &agent2, stored.messages.clone(), at, &mut rng)
        .unwrap();
    assert_eq!(rng.unused(), 0);
    assert_eq!(serde_json::to_value(&grant).unwrap(), g["grant"]);
}

/// The bundle of `device` in the last stored commit's roster.
fn stored_commit_member(v: &Value, device: DeviceId) -> KeyBundle {
    let last = v["commits"].as_array().unwrap().last().unwrap();
    let commit: Commit = decode(last["commit"].to_string().as_bytes()).unwrap();
    commit.roster.get(device).unwrap().bundle.clone()
}
