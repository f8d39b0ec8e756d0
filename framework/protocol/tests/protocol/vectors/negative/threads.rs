//! Negative vectors of commits, joins and messages, against the devices of `commits.json`.

use serde_json::{Value, json};
use switchboard_protocol::*;

use super::{case, customer_at, val, world};
use crate::support::{NOW, hex, spec_seal, spec_sign_grant};

pub(super) fn message_cases(base: &Value, out: &mut Vec<Value>) {
    let w = world();
    let commit = |i: usize| -> (Commit, EpochSecret) {
        let step = &base["commits"][i];
        (
            decode(step["commit"].to_string().as_bytes()).unwrap(),
            EpochSecret::from_bytes(
                hex(step["epoch_secret"].as_str().unwrap())
                    .try_into()
                    .unwrap(),
            ),
        )
    };
    // Epoch 3: agent 0 holds the floor, agent 1 is a member without it.
    let (c3, s3) = commit(2);
    let header = |sender: &DeviceKeys, generation: u64| MessageHeader {
        thread: c3.thread,
        epoch: c3.epoch,
        sender: sender.device(),
        generation,
        reuse_guard: [0x5a; 16],
        content_type: ContentType::Text,
        quoted: None,
        roster_hash: c3.roster.hash(),
    };
    let (a0, a1, a2) = (&w.agents[0], &w.agents[1], &w.agents[2]);
    let text = |t: &str| Content::text(t);
    let seal =
        |h: MessageHeader, c: &Content, k: &DeviceKeys| val(&spec_seal(&s3, h, c, k.identity()));
    let good = seal(header(a0, 0), &text("hello"), a0);
    let r = || customer_at(3);
    let mut m = |row: &str, error: &str, value: Value, what: &str| {
        out.push(case(row, error, "message", r(), value, what));
    };
    let mut h = header(a0, 0);
    h.thread = ThreadId::from_bytes([0x99; 16]);
    m(
        "M1",
        "MessageError::WrongThread",
        seal(h, &text("x"), a0),
        "a message of another thread",
    );
    let mut h = header(a0, 0);
    h.epoch = Epoch(9);
    m(
        "M3",
        "MessageError::UnknownEpoch",
        seal(h, &text("x"), a0),
        "a message of an epoch the receiver does not hold",
    );
    let mut h = header(a0, 0);
    h.roster_hash = RosterHash([0x99; 32]);
    m(
        "M4",
        "MessageError::RosterMismatch",
        seal(h, &text("x"), a0),
        "a message under another roster hash",
    );
    m(
        "M5",
        "MessageError::UnknownSender",
        seal(header(a2, 0), &text("x"), a2),
        "a message from a device that is not a member of the epoch (agent 2), sealed with the epoch secret",
    );
    m(
        "M6",
        "MessageError::BadSignature",
        seal(header(a0, 0), &text("x"), a1),
        "agent 0's message signed by agent 1",
    );
    m(
        "M8",
        "MessageError::GenerationOutOfWindow",
        seal(header(a0, 2000), &text("x"), a0),
        "a first generation more than 1024 ahead",
    );
    m(
        "M9",
        "MessageError::NoFloor",
        seal(header(a1, 0), &text("x"), a1),
        "a text from agent 1, which does not hold the floor",
    );
    let mut h = header(a0, 0);
    h.content_type = ContentType::SystemNotice;
    m(
        "M9a",
        "MessageError::AdminOnly",
        seal(h, &Content::SystemNotice { text: "x".into() }, a0),
        "a system notice from an agent",
    );
    let wrong = EpochSecret::from_bytes([0x77; 32]);
    m(
        "M10",
        "MessageError::Decrypt",
        val(&spec_seal(&wrong, header(a0, 0), &text("x"), a0.identity())),
        "a message sealed under another epoch secret, signed by its sender",
    );
    m(
        "M11",
        "MessageError::InvalidContent",
        seal(header(a0, 0), &Content::Typing { active: true }, a0),
        "a header saying text over a typing content",
    );
    // Repetitions.
    let mut dup = case(
        "M7",
        "MessageError::Duplicate",
        "message",
        r(),
        good.clone(),
        "the same message twice",
    );
    dup["first"] = json!([good.clone()]);
    out.push(dup);
    let mut eq = case(
        "M7a",
        "MessageError::Equivocation",
        "message",
        r(),
        seal(header(a0, 0), &text("another"), a0),
        "a second message under generation 0 of agent 0",
    );
    eq["first"] = json!([good.clone()]);
    out.push(eq);
    // Time: the credential of agent 0 expires at NOW + 86400.
    let mut late = case(
        "M9b",
        "MessageError::SenderExpired",
        "message",
        r(),
        good,
        "agent 0's message read after its credential expired",
    );
    late["now"] = json!(NOW.plus(86_400));
    out.push(late);
    // An old epoch: epoch 2's message read at epoch 3, 601 s after epoch 3 was installed.
    let (c2, s2) = commit(1);
    let h2 = MessageHeader {
        epoch: c2.epoch,
        roster_hash: c2.roster.hash(),
        ..header(a0, 0)
    };
    let mut stale = case(
        "M8a",
        "MessageError::StaleEpoch",
        "message",
        r(),
        val(&spec_seal(&s2, h2, &text("late"), a0.identity())),
        "a message of the previous epoch after the 600 s grace",
    );
    stale["now"] = json!(NOW.plus(601));
    out.push(stale);
    // Epoch 6 (agent 1 removed): agent 1's message of epoch 5, which it still holds.
    let (c5, s5) = commit(4);
    let h5 = MessageHeader {
        epoch: c5.epoch,
        roster_hash: c5.roster.hash(),
        ..header(a1, 0)
    };
    out.push(case(
        "M2",
        "MessageError::SenderRemoved",
        "message",
        customer_at(6),
        val(&spec_seal(&s5, h5, &text("still here"), a1.identity())),
        "a removed agent's message in an epoch it was a member of",
    ));
}

pub(super) fn commit_cases(base: &Value, other: &Commit, out: &mut Vec<Value>) {
    let w = world();
    let c0: Commit = decode(base["commits"][0]["commit"].to_string().as_bytes()).unwrap();
    let c1 = base["commits"][1]["commit"].clone();
    let admin = w.admin.identity();
    let changed = |f: &dyn Fn(&mut Commit), resign: bool| {
        let mut c = c0.clone();
        f(&mut c);
        if resign {
            c.sign_as(admin);
        }
        val(&c)
    };
    let mut c = |row: &str, error: &str, value: Value, what: &str| {
        out.push(case(row, error, "commit", customer_at(0), value, what));
    };
    c(
        "R1",
        "CommitError::WrongThread",
        val(other),
        "a commit of another thread (entity globex, same devices)",
    );
    c(
        "R2",
        "CommitError::EpochMismatch",
        c1,
        "the commit of epoch 2 applied at epoch 0",
    );
    c(
        "R3",
        "CommitError::BadSignature",
        changed(&|c| c.sign_as(w.customer.identity()), false),
        "the assign commit signed by the customer",
    );
    c(
        "R4",
        "CommitError::RosterMismatch",
        changed(&|c| c.prev_roster_hash = RosterHash([0x99; 32]), true),
        "a commit on another previous roster, signed by the admin",
    );
    c(
        "R5",
        "CommitError::InvalidAction",
        changed(&|c| c.roster.floor = Floor::Group, true),
        "an assign whose roster gives the floor to the group, signed by the admin",
    );
    let stale_update = w.customer.bundle(NOW);
    c(
        "R5a",
        "CommitError::KeyUpdate",
        changed(&|c| c.updates = vec![stale_update.clone()], true),
        "an update that is not newer than the member's bundle, signed by the admin",
    );
    let member = w.member(0, AgentKind::Bot);
    let bundle = member.bundle.clone();
    let expired = AgentCredential::issue(
        &w.admin,
        &CredentialRequest {
            entity: &w.entity,
            agent: &bundle,
            display_name: "Agent0",
            kind: AgentKind::Bot,
            issued_at: NOW.plus(0),
            expires_at: NOW,
        },
    )
    .unwrap();
    let with_expired = Member::agent(bundle, expired);
    c(
        "R6",
        "CommitError::Credential(CredentialError::Expired)",
        changed(
            &|c| {
                c.action = CommitAction::Assign {
                    agent: Box::new(with_expired.clone()),
                };
                c.roster
                    .members
                    .insert(with_expired.device(), with_expired.clone());
            },
            true,
        ),
        "an assign of an agent whose credential has expired, signed by the admin",
    );
    let customer = w.customer.device();
    c(
        "R7",
        "CommitError::MissingWrap",
        changed(&|c| c.wraps.retain(|x| x.recipient != customer), true),
        "a commit without a wrap for the customer, signed by the admin",
    );
    c(
        "R8",
        "CommitError::Wrap(WrapError::BadSignature)",
        changed(
            &|c| {
                for x in &mut c.wraps {
                    if x.recipient == customer {
                        x.ciphertext[0] ^= 1;
                    }
                }
            },
            false,
        ),
        "a commit whose wrap to the customer has a flipped ciphertext bit",
    );
    c(
        "R9",
        "CommitError::ConfirmationMismatch",
        changed(&|c| c.confirmation[0] ^= 1, true),
        "a commit whose confirmation is not of the wrapped secret, signed by the admin",
    );
    let agent0 = json!({ "device": "agent0", "entity": "acme" });
    out.push(case(
        "R10",
        "CommitError::WrongEntity",
        "join",
        agent0.clone(),
        val(other),
        "agent 0 of acme joins through a commit of entity globex",
    ));
    let mut again = case(
        "R11",
        "CommitError::StaleJoin",
        "join",
        agent0.clone(),
        val(&c0),
        "agent 0 joins twice through the same commit",
    );
    again["first"] = json!([val(&c0)]);
    out.push(again);
    // Another acme thread whose wrap to agent 0 reuses the wrap id agent 0 opened in c0.
    let mut y = world();
    y.rng = Csprng::from_seed([0x5f; 32]);
    let (_, mut admin_y, _) = y.open_thread();
    let mut reused = y.commit(
        &mut admin_y,
        CommitAction::Assign {
            agent: Box::new(y.member(0, AgentKind::Bot)),
        },
    );
    let a0 = w.agents[0].device();
    let opened = c0.wrap_for(a0).unwrap().wrap_id;
    for x in &mut reused.wraps {
        if x.recipient == a0 {
            x.wrap_id = opened;
            x.sign_as(w.admin.identity());
        }
    }
    reused.sign_as(w.admin.identity());
    let mut replay = case(
        "R12",
        "CommitError::Wrap(WrapError::Replayed)",
        "join",
        agent0,
        val(&reused),
        "after joining through the assign commit, agent 0 joins another thread through a commit whose wrap reuses that wrap id, signed by the admin",
    );
    replay["first"] = json!([val(&c0)]);
    out.push(replay);
}

/// History grants to agent 2 (which joined in epoch 7) at its last epoch, each signed again by
/// the admin unless said otherwise.
pub(super) fn grant_cases(base: &Value, out: &mut Vec<Value>) {
    let w = world();
    let g = &base["history_grant"];
    let grant: HistoryGrant = decode(g["grant"].to_string().as_bytes()).unwrap();
    let now: Timestamp = serde_json::from_value(g["now"].clone()).unwrap();
    let admin = w.admin.identity();
    let changed = |f: &dyn Fn(&mut HistoryGrant), signer: &IdentityKeyPair| {
        let mut x = grant.clone();
        f(&mut x);
        spec_sign_grant(&mut x, signer);
        val(&x)
    };
    let r = json!({ "device": "agent2", "at_epoch": 9 });
    let mut c = |row: &str, error: &str, value: Value, what: &str| {
        let mut case = case(row, error, "history_grant", r.clone(), value, what);
        case["now"] = json!(now);
        out.push(case);
    };
    c(
        "H1",
        "HistoryError::WrongThread",
        changed(&|x| x.thread = ThreadId::from_bytes([0x99; 16]), admin),
        "a grant for another thread",
    );
    c(
        "H2",
        "HistoryError::NotForMe",
        changed(&|x| x.to = w.agents[0].device(), admin),
        "a grant addressed to agent 0",
    );
    c(
        "H3",
        "HistoryError::BadSignature",
        changed(&|_| {}, w.customer.identity()),
        "a grant signed by the customer",
    );
    c(
        "H4",
        "HistoryError::NotEarlier",
        changed(
            &|x| {
                let last = x.epochs[x.epochs.len() - 1].clone();
                x.epochs.push(last);
            },
            admin,
        ),
        "a grant giving epoch 6 twice",
    );
    c(
        "H5",
        "HistoryError::Message",
        changed(&|x| x.messages[0].ciphertext[0] ^= 1, admin),
        "a grant whose message has a flipped ciphertext bit",
    );
    c(
        "H6",
        "HistoryError::InvalidRoster",
        changed(
            &|x| {
                let customer = w.customer.device();
                let other = w.agents[1].bundle(NOW);
                let roster = &mut x.epochs[0].roster;
                let mut member = roster.members.remove(&customer).unwrap();
                member.bundle = other;
                roster.members.insert(member.bundle.device, member);
            },
            admin,
        ),
        "a grant whose epoch-0 roster has agent 1 as its customer",
    );
    c(
        "H7",
        "HistoryError::BrokenChain",
        changed(
            &|x| {
                x.epochs.pop();
            },
            admin,
        ),
        "a grant without epoch 6, so that its epochs do not reach the join",
    );
}
