//! Whole flows across devices: groups, transfers, retention, mixed suites, wire round trips.

use switchboard_protocol::*;

use crate::support::{NOW, World};

fn round_trip<T: WireType + PartialEq + std::fmt::Debug>(value: &T) -> T {
    let back: T = decode(&encode(value).unwrap()).unwrap();
    assert_eq!(&back, value);
    back
}

#[test]
fn every_wire_type_round_trips_through_json() {
    for suite in CipherSuite::ALL {
        let mut w = World::new(suite, 1);
        let (mut customer_view, _, mut agent_view, commit) = w.assigned_thread();
        round_trip(&w.admin.bundle(NOW));
        round_trip(commit.roster.agents().next().unwrap().credential().unwrap());
        round_trip(&commit.wraps[0]);
        let commit = round_trip(&commit);
        let msg = agent_view
            .seal(&w.agents[0], &Content::text("hi"), None)
            .unwrap();
        let msg = round_trip(&msg);
        customer_view.open_message(&msg, NOW).unwrap();
        let (_, open) = ThreadState::open(
            &w.customer,
            w.entity.clone(),
            &w.admin.bundle(NOW),
            NOW,
            &mut w.rng,
        )
        .unwrap();
        round_trip(&open);
        assert_eq!(commit.epoch, Epoch(1));
    }
}

#[test]
fn group_members_read_each_other_and_removed_member_cannot_read_on() {
    let mut w = World::new(CipherSuite::default(), 3);
    let (mut customer_view, mut admin_view, mut a0, _) = w.assigned_thread();
    let add1 = w.commit(
        &mut admin_view,
        CommitAction::AddToGroup {
            agent: Box::new(w.member(1, AgentKind::Human)),
        },
    );
    customer_view.apply_commit(&w.customer, &add1, NOW).unwrap();
    a0.apply_commit(&w.agents[0], &add1, NOW).unwrap();
    let mut a1 = w.join(1, &add1);
    let add2 = w.commit(
        &mut admin_view,
        CommitAction::AddToGroup {
            agent: Box::new(w.member(2, AgentKind::Human)),
        },
    );
    for (view, keys) in [
        (&mut customer_view, &w.customer),
        (&mut a0, &w.agents[0]),
        (&mut a1, &w.agents[1]),
    ] {
        view.apply_commit(keys, &add2, NOW).unwrap();
    }
    let mut a2 = w.join(2, &add2);
    assert_eq!(customer_view.roster().floor, Floor::Group);

    // Everyone reads everyone.
    let from0 = a0
        .seal(&w.agents[0], &Content::text("from 0"), None)
        .unwrap();
    let from1 = a1
        .seal(&w.agents[1], &Content::text("from 1"), None)
        .unwrap();
    let from2 = a2
        .seal(&w.agents[2], &Content::text("from 2"), None)
        .unwrap();
    for m in [&from1, &from2] {
        assert!(a0.open_message(m, NOW).is_ok());
    }
    for m in [&from0, &from2] {
        assert!(a1.open_message(m, NOW).is_ok());
    }
    for m in [&from0, &from1] {
        assert!(a2.open_message(m, NOW).is_ok());
    }
    for m in [&from0, &from1, &from2] {
        let got = customer_view.open_message(m, NOW).unwrap();
        assert!(matches!(got.sender_info, Sender::Agent { .. }));
    }

    // Remove agent 1: epoch 4, not wrapped to it.
    let remove = w.commit(
        &mut admin_view,
        CommitAction::Remove {
            device: w.agents[1].device(),
        },
    );
    assert_eq!(remove.wraps.len(), 3, "customer, agent 0 and agent 2");
    for (view, keys) in [
        (&mut customer_view, &w.customer),
        (&mut a0, &w.agents[0]),
        (&mut a2, &w.agents[2]),
    ] {
        view.apply_commit(keys, &remove, NOW).unwrap();
    }
    assert!(matches!(
        a1.apply_commit(&w.agents[1], &remove, NOW),
        Err(CommitError::Removed { .. })
    ));
    let after = a0
        .seal(&w.agents[0], &Content::text("after removal"), None)
        .unwrap();
    assert!(a2.open_message(&after, NOW).is_ok());
    assert!(customer_view.open_message(&after, NOW).is_ok());
    assert!(matches!(
        a1.open_message(&after, NOW),
        Err(MessageError::UnknownEpoch { .. })
    ));
}

#[test]
fn retention_policy_deletes_old_epoch_secrets() {
    let mut w = World::new(CipherSuite::default(), 1);
    let (mut customer_view, mut admin_view, mut bot_view, _) = w.assigned_thread();
    let from_epoch_3 = |bot_view: &mut ThreadState, w: &World| {
        bot_view
            .seal(&w.agents[0], &Content::text("x"), None)
            .unwrap()
    };
    let mut late = None;
    for _ in 0..3 {
        let rekey = w.commit(&mut admin_view, CommitAction::Rekey);
        customer_view
            .apply_commit(&w.customer, &rekey, NOW)
            .unwrap();
        bot_view.apply_commit(&w.agents[0], &rekey, NOW).unwrap();
        if bot_view.epoch() == Epoch(3) {
            late = Some(from_epoch_3(&mut bot_view, &w));
        }
    }
    // Default: current + 1 previous. The admin's repository keeps all.
    assert_eq!(customer_view.epochs_held(), [Epoch(3), Epoch(4)]);
    assert_eq!(
        admin_view.epochs_held(),
        (0..=4).map(Epoch).collect::<Vec<_>>()
    );
    assert!(customer_view.epoch_secret(Epoch(2)).is_none());
    let mut customer_view = customer_view.with_retention(RetentionPolicy::current_only());
    assert_eq!(customer_view.epochs_held(), [Epoch(4)]);
    // A late message from epoch 3 is now unreadable for the customer, readable for the admin.
    let late = late.unwrap();
    assert!(matches!(
        customer_view.open_message(&late, NOW),
        Err(MessageError::UnknownEpoch { .. })
    ));
    assert!(admin_view.open_message(&late, NOW).is_ok());
}

#[test]
fn late_message_from_previous_epoch_is_still_read() {
    let mut w = World::new(CipherSuite::default(), 1);
    let (mut customer_view, mut admin_view, mut bot_view, _) = w.assigned_thread();
    let late = bot_view
        .seal(&w.agents[0], &Content::text("sent before the rekey"), None)
        .unwrap();
    let rekey = w.commit(&mut admin_view, CommitAction::Rekey);
    customer_view
        .apply_commit(&w.customer, &rekey, NOW)
        .unwrap();
    bot_view.apply_commit(&w.agents[0], &rekey, NOW).unwrap();
    // The bot is still a member, so its epoch-1 message arriving late is accepted.
    assert_eq!(
        customer_view.open_message(&late, NOW).unwrap().epoch,
        Epoch(1)
    );
    let mut strict = customer_view.with_retention(RetentionPolicy::current_only());
    let late2 = admin_view
        .seal(&w.admin, &Content::text("current"), None)
        .unwrap();
    assert!(strict.open_message(&late2, NOW).is_ok());
}

#[test]
fn suites_are_negotiated_per_device() {
    // Customer on X25519, admin and bot on X-Wing: each wrap uses its recipient's suite.
    let mut rng = Csprng::from_seed([1; 32]);
    let entity = EntityId::new("acme").unwrap();
    let customer = DeviceKeys::generate(
        DeviceId::random(&mut rng),
        CipherSuite::X25519Sha256ChaCha20Poly1305,
        &mut rng,
    );
    let admin = DeviceKeys::generate(
        DeviceId::random(&mut rng),
        CipherSuite::XWingSha256ChaCha20Poly1305,
        &mut rng,
    );
    let bot = DeviceKeys::generate(
        DeviceId::random(&mut rng),
        CipherSuite::XWingSha256ChaCha20Poly1305,
        &mut rng,
    );
    let (mut customer_view, open) =
        ThreadState::open(&customer, entity.clone(), &admin.bundle(NOW), NOW, &mut rng).unwrap();
    assert_eq!(open.wrap.suite, CipherSuite::XWingSha256ChaCha20Poly1305);
    let mut admin_view =
        ThreadState::accept(&admin, &entity, &open, NOW, &mut SeenWraps::new()).unwrap();
    let bundle = bot.bundle(NOW);
    let credential = AgentCredential::issue(
        &admin,
        &CredentialRequest {
            entity: &entity,
            agent: &bundle,
            display_name: "PQBot",
            kind: AgentKind::Bot,
            issued_at: NOW,
            expires_at: NOW.plus(60),
        },
    )
    .unwrap();
    let assign = admin_view
        .commit(
            &admin,
            CommitAction::Assign {
                agent: Box::new(Member::agent(bundle, credential)),
            },
            NOW,
            &mut rng,
        )
        .unwrap();
    let suite_of = |d: DeviceId| assign.wrap_for(d).unwrap().suite;
    assert_eq!(
        suite_of(customer.device()),
        CipherSuite::X25519Sha256ChaCha20Poly1305
    );
    assert_eq!(
        suite_of(bot.device()),
        CipherSuite::XWingSha256ChaCha20Poly1305
    );
    customer_view.apply_commit(&customer, &assign, NOW).unwrap();
    let mut bot_view = ThreadState::join(
        &bot,
        &entity,
        admin.device(),
        admin.identity_public(),
        &assign,
        NOW,
        &mut DeviceMemory::new(),
    )
    .unwrap();
    let hi = customer_view
        .seal(&customer, &Content::text("hi"), None)
        .unwrap();
    assert_eq!(
        bot_view.open_message(&hi, NOW).unwrap().content,
        Content::text("hi")
    );
}

#[test]
fn invalid_roster_changes_are_refused() {
    let mut w = World::new(CipherSuite::default(), 2);
    let (_, mut admin_view, _, _) = w.assigned_thread();
    let again = w.member(0, AgentKind::Bot);
    let cases = [
        CommitAction::Assign {
            agent: Box::new(w.member(1, AgentKind::Bot)),
        },
        CommitAction::AddToGroup {
            agent: Box::new(again),
        },
        CommitAction::Remove {
            device: w.customer.device(),
        },
        CommitAction::Remove {
            device: w.admin.device(),
        },
        CommitAction::Remove {
            device: w.agents[1].device(),
        },
        CommitAction::Transfer {
            from: w.agents[1].device(),
            to: Box::new(w.member(1, AgentKind::Bot)),
        },
        CommitAction::SetFloor {
            floor: Floor::Agent(w.agents[1].device()),
        },
    ];
    for action in cases {
        let err = admin_view
            .commit(&w.admin, action.clone(), NOW, &mut w.rng)
            .unwrap_err();
        assert!(
            matches!(err, CommitError::InvalidAction(_)),
            "{action:?}: {err}"
        );
    }
    assert_eq!(
        admin_view.epoch(),
        Epoch(1),
        "refused changes leave the epoch alone"
    );
}

/// Persists a state the way a keystore does: snapshot, JSON, restore.
fn reload(keys: &DeviceKeys, state: &ThreadState) -> ThreadState {
    let json = encode(&state.snapshot()).unwrap();
    ThreadState::restore(keys, decode(&json).unwrap()).unwrap()
}

#[test]
fn restored_states_continue_the_conversation_and_keep_replay_protection() {
    let mut w = World::new(CipherSuite::default(), 2);
    let (mut customer, mut admin, mut bot, _) = w.assigned_thread();
    let hello = customer
        .seal(&w.customer, &Content::text("hello"), None)
        .unwrap();
    bot.open_message(&hello, NOW).unwrap();
    admin.open_message(&hello, NOW).unwrap();

    // Every device restarts.
    let mut customer = reload(&w.customer, &customer);
    let mut admin = reload(&w.admin, &admin);
    let mut bot = reload(&w.agents[0], &bot);

    // The replay window survived: the old message is still a duplicate.
    assert!(matches!(
        bot.open_message(&hello, NOW),
        Err(MessageError::Duplicate { .. })
    ));
    // The send counter survived: the next message has a new generation and is accepted.
    let again = customer
        .seal(&w.customer, &Content::text("still there?"), None)
        .unwrap();
    assert_eq!(again.header.generation, hello.header.generation + 1);
    assert_eq!(
        bot.open_message(&again, NOW).unwrap().content,
        Content::text("still there?")
    );
    // The restored admin can still change the roster, and the restored members follow.
    let add = w.member(1, AgentKind::Human);
    let commit = w.commit(
        &mut admin,
        CommitAction::AddToGroup {
            agent: Box::new(add),
        },
    );
    customer.apply_commit(&w.customer, &commit, NOW).unwrap();
    bot.apply_commit(&w.agents[0], &commit, NOW).unwrap();
    let mut human = w.join(1, &commit);
    let reply = bot
        .seal(&w.agents[0], &Content::text("welcome"), None)
        .unwrap();
    assert!(human.open_message(&reply, NOW).is_ok());
    assert!(customer.open_message(&reply, NOW).is_ok());
}

#[test]
fn snapshot_of_another_device_or_without_its_epoch_is_refused() {
    let mut w = World::new(CipherSuite::default(), 1);
    let (customer, _, bot, _) = w.assigned_thread();
    let snapshot = customer.snapshot();
    // Another device's keys.
    assert!(matches!(
        ThreadState::restore(&w.agents[0], snapshot.clone()),
        Err(Error::Snapshot(_))
    ));
    // Same device id but other keys (a snapshot is tied to the member's keys too).
    let impostor = DeviceKeys::from_seed(w.customer.device(), CipherSuite::default(), &[0xee; 32]);
    assert!(matches!(
        ThreadState::restore(&impostor, snapshot),
        Err(Error::Snapshot(_))
    ));
    // A snapshot whose current epoch was cut out.
    let mut json: serde_json::Value =
        serde_json::from_slice(&encode(&bot.snapshot()).unwrap()).unwrap();
    json["epochs"] = serde_json::json!([]);
    let cut = decode(&serde_json::to_vec(&json).unwrap()).unwrap();
    assert!(matches!(
        ThreadState::restore(&w.agents[0], cut),
        Err(Error::Snapshot(_))
    ));
    // An unknown snapshot version.
    json["v"] = serde_json::json!(2);
    assert!(matches!(
        decode::<ThreadSnapshot>(&serde_json::to_vec(&json).unwrap()),
        Err(WireError::UnsupportedVersion { .. })
    ));
}

#[test]
fn snapshot_debug_output_holds_no_secret() {
    let mut w = World::new(CipherSuite::default(), 1);
    let (customer, ..) = w.assigned_thread();
    let secret = customer.epoch_secret(customer.epoch()).unwrap().as_bytes();
    let printed = format!("{:?}", customer.snapshot());
    let json = String::from_utf8(encode(&customer.snapshot()).unwrap()).unwrap();
    // The JSON does hold the secret (that is its purpose); the Debug form must not.
    let b64 = json
        .split("\"secret\":\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap()
        .to_owned();
    assert!(!printed.contains(&b64), "{printed}");
    assert!(!printed.contains(&format!("{secret:?}")));
}

#[test]
fn snapshot_with_an_inconsistent_receive_window_is_refused() {
    let mut w = World::new(CipherSuite::default(), 1);
    let (mut customer, _, mut bot, _) = w.assigned_thread();
    for text in ["one", "two", "three"] {
        let m = bot.seal(&w.agents[0], &Content::text(text), None).unwrap();
        customer.open_message(&m, NOW).unwrap();
    }
    let good: serde_json::Value =
        serde_json::from_slice(&encode(&customer.snapshot()).unwrap()).unwrap();
    let epochs = good["epochs"].as_array().unwrap();
    let (index, _) = epochs
        .iter()
        .enumerate()
        .find(|(_, e)| e["epoch"] == 1)
        .unwrap();
    let bot_id = serde_json::to_value(w.agents[0].device()).unwrap();
    let bot_id = bot_id.as_str().unwrap();
    assert_eq!(
        good["epochs"][index]["windows"][bot_id]["digests"]
            .as_array()
            .unwrap()
            .len(),
        3
    );
    let refused = |change: &dyn Fn(&mut serde_json::Value)| {
        let mut json = good.clone();
        change(&mut json["epochs"][index]["windows"][bot_id]);
        let snapshot = decode(&serde_json::to_vec(&json).unwrap()).unwrap();
        matches!(
            ThreadState::restore(&w.customer, snapshot),
            Err(Error::Snapshot(_))
        )
    };
    // A digest for a generation never seen, a digest twice, digests out of order.
    assert!(refused(&|win| win["digests"][0]["generation"] = 7.into()));
    assert!(refused(&|win| {
        let first = win["digests"][0].clone();
        win["digests"].as_array_mut().unwrap().push(first);
    }));
    assert!(refused(&|win| {
        win["digests"].as_array_mut().unwrap().reverse();
    }));
    // The untouched snapshot restores.
    ThreadState::restore(
        &w.customer,
        decode(&serde_json::to_vec(&good).unwrap()).unwrap(),
    )
    .unwrap();
}

/// The relay's cap for a message item must hold the largest message the protocol accepts: 64 KiB
/// of text that JSON escapes six-fold (control characters), then base64 on top.
#[test]
fn the_largest_valid_message_fits_the_relays_message_cap() {
    let mut w = World::new(CipherSuite::default(), 1);
    let (mut customer, _, _, _) = w.assigned_thread();
    let text = "\u{1}".repeat(MAX_TEXT_BYTES);
    let sealed = customer
        .seal(&w.customer, &Content::text(text), None)
        .unwrap();
    let bytes = encode(&sealed).unwrap().len();
    let cap = api::ItemKind::Message.max_payload_bytes();
    assert!(bytes <= cap, "{bytes} bytes > cap {cap}");
}
