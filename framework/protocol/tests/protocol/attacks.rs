//! Attack tests: each named for the attack it proves is refused. See the validation table in
//! docs/protocol.md.

use switchboard_protocol::*;

use crate::support::{NOW, World, header_for, spec_key_nonce, spec_seal};

// ---- key wraps ----------------------------------------------------------------------------

/// The customer's wrap of epoch 0 to the admin, and what the admin expects of it.
fn thread_open_wrap(suite: CipherSuite) -> (World, ThreadOpen) {
    let mut w = World::new(suite, 2);
    let (_, open) = ThreadState::open(
        &w.customer,
        w.entity.clone(),
        &w.admin.bundle(NOW),
        NOW,
        &mut w.rng,
    )
    .unwrap();
    (w, open)
}

fn open_as_admin(w: &World, open: &ThreadOpen, wrap: &KeyWrap) -> Result<EpochSecret, WrapError> {
    let roster = Roster::initial(w.entity.clone(), open.customer.clone(), open.admin.clone());
    wrap.open(
        &w.admin,
        &ExpectedWrap {
            sender: w.customer.device(),
            sender_key: &w.customer.identity_public(),
            thread: open.thread,
            epoch: Epoch(0),
            roster_hash: roster.hash(),
        },
        NOW,
        &mut SeenWraps::new(),
    )
}

#[test]
fn every_flipped_bit_of_a_wrap_is_rejected() {
    for suite in CipherSuite::ALL {
        let (w, open) = thread_open_wrap(suite);
        open_as_admin(&w, &open, &open.wrap).expect("the genuine wrap opens");
        let json = encode(&open.wrap).unwrap();
        let mut decoded_but_refused = 0;
        for i in 0..json.len() {
            for bit in 0..8 {
                let mut bad = json.clone();
                bad[i] ^= 1 << bit;
                if let Ok(wrap) = decode::<KeyWrap>(&bad) {
                    decoded_but_refused += 1;
                    assert!(
                        open_as_admin(&w, &open, &wrap).is_err(),
                        "{suite}: flipping bit {bit} of byte {i} was accepted"
                    );
                }
            }
        }
        // Many flips survive JSON decoding (inside base64, hex and numbers) and must be caught
        // by the signature, the context checks or HPKE.
        assert!(
            decoded_but_refused > 100,
            "{suite}: only {decoded_but_refused} flips decoded"
        );

        // And at the binary level: every byte of enc, ciphertext and signature.
        for field in 0..3 {
            let len = [open.wrap.enc.len(), open.wrap.ciphertext.len(), 64][field];
            for i in 0..len {
                let mut wrap = open.wrap.clone();
                match field {
                    0 => wrap.enc[i] ^= 0x01,
                    1 => wrap.ciphertext[i] ^= 0x80,
                    _ => {
                        let mut sig = wrap.signature.to_bytes();
                        sig[i] ^= 0x01;
                        wrap.signature = Signature::from_bytes(sig);
                    }
                }
                assert!(
                    open_as_admin(&w, &open, &wrap).is_err(),
                    "{suite}: field {field} byte {i}"
                );
            }
        }
    }
}

#[test]
fn every_truncation_of_a_wrap_is_rejected() {
    for suite in CipherSuite::ALL {
        let (w, open) = thread_open_wrap(suite);
        let json = encode(&open.wrap).unwrap();
        for len in 0..json.len() {
            if let Ok(wrap) = decode::<KeyWrap>(&json[..len]) {
                assert!(
                    open_as_admin(&w, &open, &wrap).is_err(),
                    "{suite}: prefix of {len} accepted"
                );
            }
        }
        for len in [0, 1, open.wrap.enc.len() - 1] {
            let mut wrap = open.wrap.clone();
            wrap.enc.truncate(len);
            assert!(open_as_admin(&w, &open, &wrap).is_err());
        }
        for len in [0, 16, open.wrap.ciphertext.len() - 1] {
            let mut wrap = open.wrap.clone();
            wrap.ciphertext.truncate(len);
            assert!(open_as_admin(&w, &open, &wrap).is_err());
        }
        // A signature of the wrong length does not even decode.
        let mut v: serde_json::Value = serde_json::from_slice(&json).unwrap();
        let sig = v["signature"].as_str().unwrap().to_owned();
        v["signature"] = serde_json::Value::String(sig[..sig.len() - 2].to_owned());
        assert!(decode::<KeyWrap>(v.to_string().as_bytes()).is_err());
    }
}

#[test]
fn wrap_for_another_recipient_is_rejected() {
    let mut w = World::new(CipherSuite::default(), 2);
    let (_, mut admin_view, _) = w.open_thread();
    let member = w.member(0, AgentKind::Bot);
    let commit = w.commit(
        &mut admin_view,
        CommitAction::Assign {
            agent: Box::new(member),
        },
    );
    // Agent 1 is not in the roster; it takes agent 0's wrap and tries to open it.
    let wrap = commit.wrap_for(w.agents[0].device()).unwrap();
    let expected = ExpectedWrap {
        sender: w.admin.device(),
        sender_key: &w.admin.identity_public(),
        thread: commit.thread,
        epoch: commit.epoch,
        roster_hash: commit.roster.hash(),
    };
    let err = wrap
        .open(&w.agents[1], &expected, NOW, &mut SeenWraps::new())
        .unwrap_err();
    assert!(matches!(err, WrapError::WrongRecipient { .. }), "{err}");
    // Rewriting the addressee breaks the admin's signature.
    let mut readdressed = wrap.clone();
    readdressed.recipient = w.agents[1].device();
    let err = readdressed
        .open(&w.agents[1], &expected, NOW, &mut SeenWraps::new())
        .unwrap_err();
    assert!(matches!(err, WrapError::BadSignature { .. }), "{err}");
    // And joining through the commit fails for the outsider.
    let err = ThreadState::join(
        &w.agents[1],
        &w.entity,
        w.admin.device(),
        w.admin.identity_public(),
        &commit,
        NOW,
        &mut DeviceMemory::new(),
    )
    .unwrap_err();
    assert!(matches!(err, CommitError::Removed { .. }), "{err}");
}

#[test]
fn unsigned_wrap_is_rejected() {
    let (w, open) = thread_open_wrap(CipherSuite::default());
    let mut wrap = open.wrap.clone();
    wrap.signature = Signature::from_bytes([0; 64]);
    let err = open_as_admin(&w, &open, &wrap).unwrap_err();
    assert!(matches!(err, WrapError::BadSignature { .. }), "{err}");
    // A wrap without a signature field does not decode at all.
    let mut v: serde_json::Value = serde_json::from_slice(&encode(&open.wrap).unwrap()).unwrap();
    v.as_object_mut().unwrap().remove("signature");
    let err = decode::<KeyWrap>(v.to_string().as_bytes()).unwrap_err();
    assert!(err.to_string().contains("signature"), "{err}");
}

#[test]
fn wrap_signed_by_non_admin_is_rejected() {
    let mut w = World::new(CipherSuite::default(), 2);
    let (customer_view, admin_view, _) = w.open_thread();
    // Agent 0 (not the admin) wraps a secret of its choosing to the customer for "epoch 1",
    // claiming to be the admin.
    let fake = KeyWrap::seal(
        &w.agents[0],
        &w.customer.bundle(NOW),
        &WrapContext {
            thread: customer_view.thread(),
            epoch: Epoch(1),
            roster_hash: admin_view.roster_hash(),
            expires_at: NOW.plus(60),
        },
        &EpochSecret::from_bytes([7; 32]),
        &mut w.rng,
    )
    .unwrap();
    let expected = ExpectedWrap {
        sender: w.admin.device(),
        sender_key: &w.admin.identity_public(),
        thread: customer_view.thread(),
        epoch: Epoch(1),
        roster_hash: admin_view.roster_hash(),
    };
    let err = fake
        .open(&w.customer, &expected, NOW, &mut SeenWraps::new())
        .unwrap_err();
    assert!(matches!(err, WrapError::UnexpectedSender { .. }), "{err}");
    let mut claimed = fake.clone();
    claimed.sender = w.admin.device();
    let err = claimed
        .open(&w.customer, &expected, NOW, &mut SeenWraps::new())
        .unwrap_err();
    assert!(matches!(err, WrapError::BadSignature { .. }), "{err}");
}

#[test]
fn commit_signed_by_non_admin_is_rejected() {
    let mut w = World::new(CipherSuite::default(), 2);
    let (mut customer_view, mut admin_view, _) = w.open_thread();
    // The agent builds a perfectly formed commit in a copy of the admin's state... but it can
    // only sign with its own key.
    let member = w.member(0, AgentKind::Bot);
    let mut commit = w.commit(
        &mut admin_view,
        CommitAction::Assign {
            agent: Box::new(member),
        },
    );
    commit.signature = w.agents[0].identity().sign(b"anything");
    let err = customer_view
        .apply_commit(&w.customer, &commit, NOW)
        .unwrap_err();
    assert!(matches!(err, CommitError::BadSignature { .. }), "{err}");
    assert_eq!(customer_view.epoch(), Epoch(0));
    // A non-admin cannot even make a commit through the API.
    let err = customer_view
        .commit(&w.customer, CommitAction::Rekey, NOW, &mut w.rng)
        .unwrap_err();
    assert_eq!(err, CommitError::NotAdmin);
}

#[test]
fn replayed_wrap_is_rejected() {
    let mut w = World::new(CipherSuite::default(), 1);
    let (customer_view, admin_view, open) = w.open_thread();
    let _ = (customer_view, admin_view);
    let roster = Roster::initial(w.entity.clone(), open.customer.clone(), open.admin.clone());
    let expected = ExpectedWrap {
        sender: w.customer.device(),
        sender_key: &w.customer.identity_public(),
        thread: open.thread,
        epoch: Epoch(0),
        roster_hash: roster.hash(),
    };
    let mut seen = SeenWraps::new();
    open.wrap.open(&w.admin, &expected, NOW, &mut seen).unwrap();
    let err = open
        .wrap
        .open(&w.admin, &expected, NOW, &mut seen)
        .unwrap_err();
    assert!(matches!(err, WrapError::Replayed { .. }), "{err}");
    // Pruning keeps the id until the wrap expires; after that the wrap is refused as expired.
    seen.prune(NOW.plus(60));
    assert!(matches!(
        open.wrap.open(&w.admin, &expected, NOW.plus(60), &mut seen),
        Err(WrapError::Replayed { .. })
    ));
    let later = NOW.plus(DEFAULT_WRAP_LIFETIME_SECS);
    seen.prune(later);
    assert!(seen.is_empty());
    assert!(matches!(
        open.wrap.open(&w.admin, &expected, later, &mut seen),
        Err(WrapError::Expired { .. })
    ));
}

#[test]
fn replayed_commit_is_rejected() {
    let mut w = World::new(CipherSuite::default(), 1);
    let (mut customer_view, _, _, commit) = w.assigned_thread();
    let err = customer_view
        .apply_commit(&w.customer, &commit, NOW)
        .unwrap_err();
    assert!(matches!(err, CommitError::EpochMismatch { .. }), "{err}");
}

#[test]
fn wrap_for_another_thread_or_epoch_is_rejected() {
    let (w, open) = thread_open_wrap(CipherSuite::default());
    let roster = Roster::initial(w.entity.clone(), open.customer.clone(), open.admin.clone());
    let mut expected = ExpectedWrap {
        sender: w.customer.device(),
        sender_key: &w.customer.identity_public(),
        thread: ThreadId::from_bytes([9; 16]),
        epoch: Epoch(0),
        roster_hash: roster.hash(),
    };
    let err = open
        .wrap
        .open(&w.admin, &expected, NOW, &mut SeenWraps::new())
        .unwrap_err();
    assert!(
        matches!(
            err,
            WrapError::ContextMismatch {
                field: "thread",
                ..
            }
        ),
        "{err}"
    );
    expected.thread = open.thread;
    expected.epoch = Epoch(1);
    let err = open
        .wrap
        .open(&w.admin, &expected, NOW, &mut SeenWraps::new())
        .unwrap_err();
    assert!(
        matches!(err, WrapError::ContextMismatch { field: "epoch", .. }),
        "{err}"
    );
}

// ---- messages -----------------------------------------------------------------------------

#[test]
fn every_flipped_bit_of_a_message_is_rejected() {
    let mut w = World::new(CipherSuite::default(), 1);
    let (mut customer_view, _, mut agent_view, _) = w.assigned_thread();
    let quoted = MessageId::from_bytes([3; 16]);
    let msg = agent_view
        .seal(
            &w.agents[0],
            &Content::Reply {
                text: "Order 42 ships today".into(),
            },
            Some(quoted),
        )
        .unwrap();
    let json = encode(&msg).unwrap();
    let mut decoded = 0;
    for i in 0..json.len() {
        for bit in 0..8 {
            let mut bad = json.clone();
            bad[i] ^= 1 << bit;
            if let Ok(m) = decode::<SealedMessage>(&bad) {
                decoded += 1;
                assert!(
                    customer_view.open_message(&m, NOW).is_err(),
                    "flipping bit {bit} of byte {i} was accepted"
                );
            }
        }
    }
    assert!(decoded > 100, "only {decoded} flips decoded");
    for i in 0..msg.ciphertext.len() {
        let mut m = msg.clone();
        m.ciphertext[i] ^= 0x01;
        assert!(
            customer_view.open_message(&m, NOW).is_err(),
            "ciphertext byte {i}"
        );
    }
    // The genuine message is still accepted afterwards: the refusals recorded nothing.
    let got = customer_view.open_message(&msg, NOW).unwrap();
    assert_eq!(got.quoted, Some(quoted));
}

#[test]
fn every_truncation_of_a_message_is_rejected() {
    let mut w = World::new(CipherSuite::default(), 1);
    let (mut customer_view, _, mut agent_view, _) = w.assigned_thread();
    let msg = agent_view
        .seal(&w.agents[0], &Content::text("hello"), None)
        .unwrap();
    let json = encode(&msg).unwrap();
    for len in 0..json.len() {
        if let Ok(m) = decode::<SealedMessage>(&json[..len]) {
            assert!(
                customer_view.open_message(&m, NOW).is_err(),
                "prefix of {len} accepted"
            );
        }
    }
    for len in 0..msg.ciphertext.len() {
        let mut m = msg.clone();
        m.ciphertext.truncate(len);
        assert!(
            customer_view.open_message(&m, NOW).is_err(),
            "ciphertext of {len} bytes accepted"
        );
    }
    customer_view.open_message(&msg, NOW).unwrap();
}

#[test]
fn replayed_message_is_rejected() {
    let mut w = World::new(CipherSuite::default(), 1);
    let (mut customer_view, _, mut agent_view, _) = w.assigned_thread();
    let msg = agent_view
        .seal(&w.agents[0], &Content::text("hello"), None)
        .unwrap();
    customer_view.open_message(&msg, NOW).unwrap();
    let err = customer_view.open_message(&msg, NOW).unwrap_err();
    assert!(matches!(err, MessageError::Duplicate { .. }), "{err}");
}

#[test]
fn forged_sender_is_rejected() {
    // The bot holds epoch 1's secret, so it can derive the customer's message key and produce a
    // ciphertext that decrypts. It cannot produce the customer's signature.
    let mut w = World::new(CipherSuite::default(), 1);
    let (_, mut admin_view, agent_view, _) = w.assigned_thread();
    let secret = agent_view.epoch_secret(agent_view.epoch()).unwrap().clone();

    // Control: the spec construction signed by the bot as itself is accepted, so the forgery
    // below is refused only because of the sender signature.
    let own = spec_seal(
        &secret,
        header_for(&agent_view, w.agents[0].device(), 0),
        &Content::text("genuine"),
        w.agents[0].identity(),
    );
    assert_eq!(
        admin_view.open_message(&own, NOW).unwrap().content,
        Content::text("genuine")
    );

    let forged = spec_seal(
        &secret,
        header_for(&agent_view, w.customer.device(), 0),
        &Content::text("please refund me to account 666"),
        w.agents[0].identity(),
    );
    let err = admin_view.open_message(&forged, NOW).unwrap_err();
    assert_eq!(
        err,
        MessageError::BadSignature {
            sender: w.customer.device()
        }
    );
}

#[test]
fn removed_agent_cannot_decrypt_next_epoch() {
    let mut w = World::new(CipherSuite::default(), 2);
    let (mut customer_view, mut admin_view, mut bot_view, _) = w.assigned_thread();
    let human = w.member(1, AgentKind::Human);
    let transfer = w.commit(
        &mut admin_view,
        CommitAction::Transfer {
            from: w.agents[0].device(),
            to: Box::new(human),
        },
    );
    customer_view
        .apply_commit(&w.customer, &transfer, NOW)
        .unwrap();
    // The commit holds no wrap for the bot, and the bot cannot use anyone else's.
    assert!(transfer.wrap_for(w.agents[0].device()).is_none());
    let err = bot_view
        .apply_commit(&w.agents[0], &transfer, NOW)
        .unwrap_err();
    assert!(matches!(err, CommitError::Removed { .. }), "{err}");
    for wrap in &transfer.wraps {
        let err = wrap
            .open(
                &w.agents[0],
                &ExpectedWrap {
                    sender: w.admin.device(),
                    sender_key: &w.admin.identity_public(),
                    thread: transfer.thread,
                    epoch: transfer.epoch,
                    roster_hash: transfer.roster.hash(),
                },
                NOW,
                &mut SeenWraps::new(),
            )
            .unwrap_err();
        assert!(matches!(err, WrapError::WrongRecipient { .. }), "{err}");
    }
    // Messages of epoch 2 are unreadable for the bot.
    let secret_msg = customer_view
        .seal(&w.customer, &Content::text("my card ends 4242"), None)
        .unwrap();
    let err = bot_view.open_message(&secret_msg, NOW).unwrap_err();
    assert!(matches!(err, MessageError::UnknownEpoch { .. }), "{err}");
    assert!(!bot_view.epochs_held().contains(&transfer.epoch));
}

#[test]
fn removed_agent_cannot_post_in_old_epoch_after_removal() {
    let mut w = World::new(CipherSuite::default(), 2);
    let (mut customer_view, mut admin_view, mut bot_view, _) = w.assigned_thread();
    let transfer = w.commit(
        &mut admin_view,
        CommitAction::Transfer {
            from: w.agents[0].device(),
            to: Box::new(w.member(1, AgentKind::Human)),
        },
    );
    customer_view
        .apply_commit(&w.customer, &transfer, NOW)
        .unwrap();
    // The bot still holds epoch 1 and posts there after it was removed.
    let late = bot_view
        .seal(&w.agents[0], &Content::text("still here"), None)
        .unwrap();
    let err = customer_view.open_message(&late, NOW).unwrap_err();
    assert!(matches!(err, MessageError::SenderRemoved { .. }), "{err}");
}

#[test]
fn agent_without_floor_cannot_post() {
    let mut w = World::new(CipherSuite::default(), 2);
    let (mut customer_view, mut admin_view, mut bot_view, _) = w.assigned_thread();
    let add = w.commit(
        &mut admin_view,
        CommitAction::AddToGroup {
            agent: Box::new(w.member(1, AgentKind::Human)),
        },
    );
    customer_view.apply_commit(&w.customer, &add, NOW).unwrap();
    bot_view.apply_commit(&w.agents[0], &add, NOW).unwrap();
    // The bot hands the floor to the human but stays in the thread.
    let floor = w.commit(
        &mut admin_view,
        CommitAction::SetFloor {
            floor: Floor::Agent(w.agents[1].device()),
        },
    );
    customer_view
        .apply_commit(&w.customer, &floor, NOW)
        .unwrap();
    bot_view.apply_commit(&w.agents[0], &floor, NOW).unwrap();

    let err = bot_view
        .seal(&w.agents[0], &Content::text("I can still help!"), None)
        .unwrap_err();
    assert!(matches!(err, MessageError::NoFloor { .. }), "{err}");
    // A correctly encrypted and signed text built outside the API is refused by the receiver.
    let secret = bot_view.epoch_secret(bot_view.epoch()).unwrap().clone();
    let sneaky = spec_seal(
        &secret,
        header_for(&bot_view, w.agents[0].device(), 0),
        &Content::text("I can still help!"),
        w.agents[0].identity(),
    );
    let err = customer_view.open_message(&sneaky, NOW).unwrap_err();
    assert!(matches!(err, MessageError::NoFloor { .. }), "{err}");
    // Receipts and typing are still allowed without the floor.
    let receipt = bot_view
        .seal(&w.agents[0], &Content::Typing { active: false }, None)
        .unwrap();
    customer_view.open_message(&receipt, NOW).unwrap();
}

#[test]
fn all_zero_x25519_keys_are_refused() {
    let w = World::new(CipherSuite::default(), 0);
    assert_eq!(
        KemPublicKey::from_bytes(CipherSuite::X25519Sha256ChaCha20Poly1305, &[0; 32]).unwrap_err(),
        KeyError::WeakKemKey
    );
    // An X-Wing key whose X25519 half is all zero is refused too.
    let xwing = DeviceKeys::from_seed(
        DeviceId::from_bytes([4; 16]),
        CipherSuite::XWingSha256ChaCha20Poly1305,
        &[4; 32],
    );
    let mut bytes = xwing.kem_public().as_bytes().to_vec();
    bytes[1184..].fill(0);
    assert_eq!(
        KemPublicKey::from_bytes(CipherSuite::XWingSha256ChaCha20Poly1305, &bytes).unwrap_err(),
        KeyError::WeakKemKey
    );
    // A bundle carrying an all-zero KEM key does not decode, so nobody can wrap to it.
    let mut v: serde_json::Value =
        serde_json::from_slice(&encode(&w.admin.bundle(NOW)).unwrap()).unwrap();
    v["kem_key"]["key"] = serde_json::Value::String("A".repeat(43));
    let err = decode::<KeyBundle>(v.to_string().as_bytes()).unwrap_err();
    assert!(err.to_string().contains("small-order"), "{err}");
    // All-zero identity keys are refused as weak.
    assert!(IdentityPublicKey::from_bytes(&[0; 32]).is_err());
    let mut v: serde_json::Value =
        serde_json::from_slice(&encode(&w.admin.bundle(NOW)).unwrap()).unwrap();
    v["identity_key"] = serde_json::Value::String("A".repeat(43));
    assert!(decode::<KeyBundle>(v.to_string().as_bytes()).is_err());
}

#[test]
fn unknown_version_is_refused() {
    let mut w = World::new(CipherSuite::default(), 1);
    let (mut customer_view, _, mut agent_view, commit) = w.assigned_thread();
    let msg = agent_view
        .seal(&w.agents[0], &Content::text("hi"), None)
        .unwrap();
    let bundle = w.admin.bundle(NOW);
    let values: Vec<(&str, Vec<u8>)> = vec![
        ("message", encode(&msg).unwrap()),
        ("commit", encode(&commit).unwrap()),
        ("key wrap", encode(&commit.wraps[0]).unwrap()),
        ("key bundle", encode(&bundle).unwrap()),
    ];
    for (what, json) in values {
        for version in [0u64, 2, 99] {
            let mut v: serde_json::Value = serde_json::from_slice(&json).unwrap();
            v["v"] = serde_json::Value::from(version);
            let bytes = v.to_string().into_bytes();
            let err = match what {
                "message" => decode::<SealedMessage>(&bytes).map(drop),
                "commit" => decode::<Commit>(&bytes).map(drop),
                "key wrap" => decode::<KeyWrap>(&bytes).map(drop),
                _ => decode::<KeyBundle>(&bytes).map(drop),
            }
            .unwrap_err();
            assert_eq!(
                err,
                WireError::UnsupportedVersion {
                    what,
                    found: version,
                    supported: 1
                },
                "{what} v{version}"
            );
            assert!(err.to_string().contains("switchboard/1"), "{err}");
        }
    }
    // A missing version is malformed, not silently accepted.
    let mut v: serde_json::Value = serde_json::from_slice(&encode(&msg).unwrap()).unwrap();
    v.as_object_mut().unwrap().remove("v");
    assert!(matches!(
        decode::<SealedMessage>(v.to_string().as_bytes()),
        Err(WireError::Malformed { .. })
    ));
    customer_view.open_message(&msg, NOW).unwrap();
}

#[test]
fn message_with_roster_of_another_view_is_rejected() {
    let mut w = World::new(CipherSuite::default(), 1);
    let (mut customer_view, _, agent_view, _) = w.assigned_thread();
    let secret = agent_view.epoch_secret(agent_view.epoch()).unwrap().clone();
    let mut header = header_for(&agent_view, w.agents[0].device(), 0);
    header.roster_hash = RosterHash([1; 32]);
    let msg = spec_seal(
        &secret,
        header,
        &Content::text("hi"),
        w.agents[0].identity(),
    );
    let err = customer_view.open_message(&msg, NOW).unwrap_err();
    assert!(matches!(err, MessageError::RosterMismatch { .. }), "{err}");
}

#[test]
fn generation_jump_beyond_limit_is_rejected() {
    let mut w = World::new(CipherSuite::default(), 1);
    let (mut customer_view, _, agent_view, _) = w.assigned_thread();
    let secret = agent_view.epoch_secret(agent_view.epoch()).unwrap().clone();
    let far = spec_seal(
        &secret,
        header_for(
            &agent_view,
            w.agents[0].device(),
            ReplayPolicy::default().max_jump + 1,
        ),
        &Content::text("from the future"),
        w.agents[0].identity(),
    );
    let err = customer_view.open_message(&far, NOW).unwrap_err();
    assert!(
        matches!(err, MessageError::GenerationOutOfWindow { .. }),
        "{err}"
    );
}

#[test]
fn expired_credential_is_refused_in_a_commit() {
    let mut w = World::new(CipherSuite::default(), 1);
    let (_, mut admin_view, _) = w.open_thread();
    let member = w.member(0, AgentKind::Bot);
    let err = admin_view
        .commit(
            &w.admin,
            CommitAction::Assign {
                agent: Box::new(member),
            },
            NOW.plus(86_400),
            &mut w.rng,
        )
        .unwrap_err();
    assert!(
        matches!(
            err,
            CommitError::Credential(CredentialError::Expired { .. })
        ),
        "{err}"
    );
}

#[test]
fn expired_credential_of_existing_member_blocks_commits_until_removed() {
    let mut w = World::new(CipherSuite::default(), 1);
    let (mut customer_view, mut admin_view, _, _) = w.assigned_thread();
    let later = NOW.plus(86_400);
    let err = admin_view
        .commit(&w.admin, CommitAction::Rekey, later, &mut w.rng)
        .unwrap_err();
    assert!(
        matches!(
            err,
            CommitError::Credential(CredentialError::Expired { .. })
        ),
        "{err}"
    );
    // Removing the expired agent is allowed, and members accept it.
    let remove = admin_view
        .commit(
            &w.admin,
            CommitAction::Remove {
                device: w.agents[0].device(),
            },
            later,
            &mut w.rng,
        )
        .unwrap();
    customer_view
        .apply_commit(&w.customer, &remove, later)
        .unwrap();
}

#[test]
fn thread_open_for_another_admin_or_entity_is_refused() {
    let mut w = World::new(CipherSuite::default(), 1);
    // The customer wrapped to agent 0's keys (say, a spoofed directory record), not the admin's.
    let (_, open) = ThreadState::open(
        &w.customer,
        w.entity.clone(),
        &w.agents[0].bundle(NOW),
        NOW,
        &mut w.rng,
    )
    .unwrap();
    let err =
        ThreadState::accept(&w.admin, &w.entity, &open, NOW, &mut SeenWraps::new()).unwrap_err();
    assert!(
        matches!(err, Error::Key(KeyError::WrongDevice { .. })),
        "{err}"
    );
    // The right admin, but another entity.
    let (_, open) = ThreadState::open(
        &w.customer,
        EntityId::new("globex").unwrap(),
        &w.admin.bundle(NOW),
        NOW,
        &mut w.rng,
    )
    .unwrap();
    let err =
        ThreadState::accept(&w.admin, &w.entity, &open, NOW, &mut SeenWraps::new()).unwrap_err();
    assert!(err.to_string().contains("globex"), "{err}");
    // A tampered customer bundle.
    let (_, mut open) = ThreadState::open(
        &w.customer,
        w.entity.clone(),
        &w.admin.bundle(NOW),
        NOW,
        &mut w.rng,
    )
    .unwrap();
    open.customer.created_at = NOW.plus(1);
    let err =
        ThreadState::accept(&w.admin, &w.entity, &open, NOW, &mut SeenWraps::new()).unwrap_err();
    assert!(
        matches!(err, Error::Key(KeyError::BadBundleSignature { .. })),
        "{err}"
    );
}

#[test]
fn commit_for_another_thread_is_rejected() {
    let mut w = World::new(CipherSuite::default(), 1);
    let (_, _, _, commit) = w.assigned_thread();
    let (mut other_customer_view, _, _) = w.open_thread();
    let err = other_customer_view
        .apply_commit(&w.customer, &commit, NOW)
        .unwrap_err();
    // Another thread's commit is refused before anything else is looked at.
    assert!(matches!(err, CommitError::WrongThread { .. }), "{err}");
}

#[test]
fn commit_on_a_diverged_roster_is_rejected() {
    // Two admin histories from the same seeds diverge at epoch 2; a member who followed one
    // refuses epoch 3 of the other even though it is signed by the admin.
    let (mut w1, mut w2) = (
        World::new(CipherSuite::default(), 1),
        World::new(CipherSuite::default(), 1),
    );
    let (mut customer_view, mut admin1, _, _) = w1.assigned_thread();
    let (_, mut admin2, _, _) = w2.assigned_thread();
    let to_group = admin1
        .commit(
            &w1.admin,
            CommitAction::SetFloor {
                floor: Floor::Group,
            },
            NOW,
            &mut w1.rng,
        )
        .unwrap();
    customer_view
        .apply_commit(&w1.customer, &to_group, NOW)
        .unwrap();
    admin2
        .commit(&w2.admin, CommitAction::Rekey, NOW, &mut w2.rng)
        .unwrap();
    let diverged = admin2
        .commit(&w2.admin, CommitAction::Rekey, NOW, &mut w2.rng)
        .unwrap();
    let err = customer_view
        .apply_commit(&w1.customer, &diverged, NOW)
        .unwrap_err();
    assert!(matches!(err, CommitError::RosterMismatch { .. }), "{err}");
}

#[test]
fn message_for_another_thread_or_from_a_non_member_is_rejected() {
    let mut w = World::new(CipherSuite::default(), 2);
    let (mut customer_view, _, agent_view, _) = w.assigned_thread();
    let secret = agent_view.epoch_secret(agent_view.epoch()).unwrap().clone();
    let mut header = header_for(&agent_view, w.agents[0].device(), 0);
    header.thread = ThreadId::from_bytes([0xee; 16]);
    let msg = spec_seal(
        &secret,
        header,
        &Content::text("hi"),
        w.agents[0].identity(),
    );
    assert!(matches!(
        customer_view.open_message(&msg, NOW),
        Err(MessageError::WrongThread { .. })
    ));
    // Agent 1 learned the epoch secret somehow but is not in the roster.
    let header = header_for(&agent_view, w.agents[1].device(), 0);
    let msg = spec_seal(
        &secret,
        header,
        &Content::text("hi"),
        w.agents[1].identity(),
    );
    assert!(matches!(
        customer_view.open_message(&msg, NOW),
        Err(MessageError::UnknownSender { .. })
    ));
}

#[test]
fn message_whose_content_contradicts_its_header_is_rejected() {
    let mut w = World::new(CipherSuite::default(), 1);
    let (mut customer_view, _, agent_view, _) = w.assigned_thread();
    let secret = agent_view.epoch_secret(agent_view.epoch()).unwrap().clone();
    // Header says text, content is a handoff request.
    let header = header_for(&agent_view, w.agents[0].device(), 0);
    let content = Content::HandoffRequest {
        target: HandoffTarget::AnyHuman,
        note: "x".into(),
    };
    let msg = spec_seal(&secret, header, &content, w.agents[0].identity());
    assert!(matches!(
        customer_view.open_message(&msg, NOW),
        Err(MessageError::InvalidContent(_))
    ));
    // A reply that quotes nothing.
    let mut header = header_for(&agent_view, w.agents[0].device(), 1);
    header.content_type = ContentType::Reply;
    let msg = spec_seal(
        &secret,
        header,
        &Content::Reply { text: "x".into() },
        w.agents[0].identity(),
    );
    assert!(matches!(
        customer_view.open_message(&msg, NOW),
        Err(MessageError::InvalidContent(_))
    ));
    // Text over the limit.
    let header = header_for(&agent_view, w.agents[0].device(), 2);
    let msg = spec_seal(
        &secret,
        header,
        &Content::text("x".repeat(MAX_TEXT_BYTES + 1)),
        w.agents[0].identity(),
    );
    assert!(matches!(
        customer_view.open_message(&msg, NOW),
        Err(MessageError::InvalidContent(_))
    ));
}

#[test]
fn wrap_in_another_suite_than_the_recipients_key_is_rejected() {
    let (w, open) = thread_open_wrap(CipherSuite::default());
    let mut wrap = open.wrap.clone();
    wrap.suite = CipherSuite::XWingSha256ChaCha20Poly1305;
    let err = open_as_admin(&w, &open, &wrap).unwrap_err();
    assert!(matches!(err, WrapError::SuiteMismatch { .. }), "{err}");
}

#[test]
fn wrap_for_another_roster_is_rejected() {
    let (w, open) = thread_open_wrap(CipherSuite::default());
    let err = open
        .wrap
        .open(
            &w.admin,
            &ExpectedWrap {
                sender: w.customer.device(),
                sender_key: &w.customer.identity_public(),
                thread: open.thread,
                epoch: Epoch(0),
                roster_hash: RosterHash([0; 32]),
            },
            NOW,
            &mut SeenWraps::new(),
        )
        .unwrap_err();
    assert!(
        matches!(
            err,
            WrapError::ContextMismatch {
                field: "roster",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn agent_that_lost_the_floor_cannot_post_into_an_old_epoch() {
    let mut w = World::new(CipherSuite::default(), 1);
    let (mut customer_view, mut admin_view, mut bot_view, _) = w.assigned_thread();
    // The bot keeps epoch 1's secret; the admin takes the floor back in epoch 2.
    let floor = w.commit(
        &mut admin_view,
        CommitAction::SetFloor {
            floor: Floor::Admin,
        },
    );
    customer_view
        .apply_commit(&w.customer, &floor, NOW)
        .unwrap();
    // Built with epoch 1's secret and the bot's own valid signature.
    let secret = bot_view.epoch_secret(Epoch(1)).unwrap().clone();
    let stale = spec_seal(
        &secret,
        header_for(&bot_view, w.agents[0].device(), 5),
        &Content::text("still answering"),
        w.agents[0].identity(),
    );
    let err = customer_view.open_message(&stale, NOW).unwrap_err();
    assert!(matches!(err, MessageError::NoFloor { .. }), "{err}");
    // Receipts from the bot in the old epoch are still fine.
    let receipt = bot_view
        .seal(&w.agents[0], &Content::Typing { active: false }, None)
        .unwrap();
    customer_view.open_message(&receipt, NOW).unwrap();
}

#[test]
fn replayed_thread_open_is_rejected() {
    let mut w = World::new(CipherSuite::default(), 0);
    let (_, open) = ThreadState::open(
        &w.customer,
        w.entity.clone(),
        &w.admin.bundle(NOW),
        NOW,
        &mut w.rng,
    )
    .unwrap();
    let mut seen = SeenWraps::new();
    ThreadState::accept(&w.admin, &w.entity, &open, NOW, &mut seen).unwrap();
    let err = ThreadState::accept(&w.admin, &w.entity, &open, NOW, &mut seen).unwrap_err();
    assert!(
        matches!(err, Error::Wrap(WrapError::Replayed { .. })),
        "{err}"
    );
}

#[test]
fn expired_agent_credential_refuses_its_messages() {
    let mut w = World::new(CipherSuite::default(), 1);
    let (mut customer_view, _, mut bot_view, _) = w.assigned_thread();
    let msg = bot_view
        .seal(&w.agents[0], &Content::text("hello"), None)
        .unwrap();
    // Credentials from World::member expire after one day.
    let err = customer_view
        .open_message(&msg, NOW.plus(86_400))
        .unwrap_err();
    assert!(matches!(err, MessageError::SenderExpired { .. }), "{err}");
    customer_view.open_message(&msg, NOW.plus(86_399)).unwrap();
}

#[test]
fn system_notice_only_from_the_admin() {
    let mut w = World::new(CipherSuite::default(), 1);
    let (mut customer_view, mut admin_view, mut bot_view, _) = w.assigned_thread();
    let notice = Content::SystemNotice {
        text: "Dana joined".into(),
    };
    let err = bot_view.seal(&w.agents[0], &notice, None).unwrap_err();
    assert!(matches!(err, MessageError::AdminOnly { .. }), "{err}");
    let secret = bot_view.epoch_secret(bot_view.epoch()).unwrap().clone();
    let mut header = header_for(&bot_view, w.agents[0].device(), 0);
    header.content_type = ContentType::SystemNotice;
    let forged = spec_seal(&secret, header, &notice, w.agents[0].identity());
    let err = customer_view.open_message(&forged, NOW).unwrap_err();
    assert!(matches!(err, MessageError::AdminOnly { .. }), "{err}");
    let real = admin_view.seal(&w.admin, &notice, None).unwrap();
    customer_view.open_message(&real, NOW).unwrap();
}

#[test]
fn join_for_another_entity_is_refused() {
    let mut w = World::new(CipherSuite::default(), 1);
    let (_, _, _, commit) = w.assigned_thread();
    let err = ThreadState::join(
        &w.agents[0],
        &EntityId::new("globex").unwrap(),
        w.admin.device(),
        w.admin.identity_public(),
        &commit,
        NOW,
        &mut DeviceMemory::new(),
    )
    .unwrap_err();
    assert!(matches!(err, CommitError::WrongEntity { .. }), "{err}");
}

#[test]
fn unknown_or_missing_fields_are_refused_everywhere() {
    let mut w = World::new(CipherSuite::default(), 1);
    let (_, _, mut bot_view, commit) = w.assigned_thread();
    let mut v: serde_json::Value = serde_json::from_slice(&encode(&commit).unwrap()).unwrap();
    // Unit-like roles and actions, which serde's internally tagged enums would let through.
    let customer = w.customer.device().to_string();
    v["roster"]["members"][&customer]["role"]["extra"] = serde_json::json!(1);
    assert!(
        decode::<Commit>(v.to_string().as_bytes()).is_err(),
        "extra field on a role"
    );
    let mut v: serde_json::Value = serde_json::from_slice(&encode(&commit).unwrap()).unwrap();
    v["action"] = serde_json::json!({"action": "rekey", "device": customer});
    assert!(
        decode::<Commit>(v.to_string().as_bytes()).is_err(),
        "field on rekey"
    );
    let mut v: serde_json::Value = serde_json::from_slice(&encode(&commit).unwrap()).unwrap();
    v["roster"]["floor"]["extra"] = serde_json::json!(true);
    assert!(
        decode::<Commit>(v.to_string().as_bytes()).is_err(),
        "extra field on the floor"
    );
    // A header without "quoted" is malformed (it must be present, null when unused).
    let msg = bot_view
        .seal(&w.agents[0], &Content::text("x"), None)
        .unwrap();
    let mut v: serde_json::Value = serde_json::from_slice(&encode(&msg).unwrap()).unwrap();
    v["header"].as_object_mut().unwrap().remove("quoted");
    assert!(
        decode::<SealedMessage>(v.to_string().as_bytes()).is_err(),
        "missing quoted"
    );
    // A handoff team name is bounded like other texts.
    let long = Content::HandoffRequest {
        target: HandoffTarget::Team("t".repeat(65)),
        note: String::new(),
    };
    assert!(matches!(
        bot_view.seal(&w.agents[0], &long, None),
        Err(MessageError::InvalidContent(_))
    ));
}

// ---- replayed joins (issue 8, item 1a) ------------------------------------------------------

/// A removed agent's device drops the thread; a hostile relay then re-delivers the commit that
/// once added it (its wrap still within its lifetime). Joining from it again would restart the
/// agent at generation 0 of an epoch it already sent in: the same message key and nonce for a
/// new plaintext (keystream reuse), and a fresh replay window for old customer messages.
#[test]
fn removed_agent_cannot_rejoin_with_a_replayed_commit() {
    let mut w = World::new(CipherSuite::default(), 1);
    let (mut customer_view, mut admin_view, _) = w.open_thread();
    let member = w.member(0, AgentKind::Bot);
    let assign = w.commit(
        &mut admin_view,
        CommitAction::Assign {
            agent: Box::new(member),
        },
    );
    customer_view
        .apply_commit(&w.customer, &assign, NOW)
        .unwrap();
    let mut memory = DeviceMemory::new();
    let mut bot_view = ThreadState::join(
        &w.agents[0],
        &w.entity,
        w.admin.device(),
        w.admin.identity_public(),
        &assign,
        NOW,
        &mut memory,
    )
    .unwrap();
    let first = bot_view
        .seal(&w.agents[0], &Content::text("your order ships today"), None)
        .unwrap();
    let remove = w.commit(
        &mut admin_view,
        CommitAction::Remove {
            device: w.agents[0].device(),
        },
    );
    let err = bot_view
        .apply_commit(&w.agents[0], &remove, NOW)
        .unwrap_err();
    assert!(matches!(err, CommitError::Removed { .. }), "{err}");
    memory.removed(remove.thread, remove.epoch, NOW);
    drop(bot_view);

    // The relay replays the old commit.
    let replayed = ThreadState::join(
        &w.agents[0],
        &w.entity,
        w.admin.device(),
        w.admin.identity_public(),
        &assign,
        NOW.plus(60),
        &mut memory,
    );
    match replayed {
        Err(CommitError::StaleJoin { removed: true, .. }) => {}
        Err(other) => panic!("refused, but not as a stale join: {other}"),
        Ok(mut rejoined) => {
            let again = rejoined
                .seal(&w.agents[0], &Content::text("refund approved"), None)
                .unwrap();
            panic!(
                "the removed agent rejoined from a replayed commit (generation {} again, first was {})",
                again.header.generation, first.header.generation
            );
        }
    }
    // The memory survives a restart of the device (it is serialised into the keystore).
    let mut restored: DeviceMemory =
        serde_json::from_value(serde_json::to_value(&memory).unwrap()).unwrap();
    let err = ThreadState::join(
        &w.agents[0],
        &w.entity,
        w.admin.device(),
        w.admin.identity_public(),
        &assign,
        NOW.plus(60),
        &mut restored,
    )
    .unwrap_err();
    assert!(matches!(err, CommitError::StaleJoin { .. }), "{err}");
}

/// R12: the wrap ids a device opened are remembered device-wide (not per thread state), so even
/// a memory that lost its mark of the thread refuses a join from a wrap opened before.
#[test]
fn join_from_a_wrap_this_device_opened_before_is_refused() {
    let mut w = World::new(CipherSuite::default(), 1);
    let (_, mut admin_view, _) = w.open_thread();
    let member = w.member(0, AgentKind::Bot);
    let assign = w.commit(
        &mut admin_view,
        CommitAction::Assign {
            agent: Box::new(member),
        },
    );
    let mut memory = DeviceMemory::new();
    ThreadState::join(
        &w.agents[0],
        &w.entity,
        w.admin.device(),
        w.admin.identity_public(),
        &assign,
        NOW,
        &mut memory,
    )
    .unwrap();
    assert_eq!(
        memory.mark(assign.thread).unwrap().highest_epoch,
        assign.epoch
    );
    assert!(
        memory
            .wraps()
            .contains(assign.wrap_for(w.agents[0].device()).unwrap().wrap_id)
    );
    // The thread's mark is gone (an edited or partly restored keystore); its wraps are not.
    let mut json = serde_json::to_value(&memory).unwrap();
    json["threads"] = serde_json::json!({});
    let mut without_mark: DeviceMemory = serde_json::from_value(json).unwrap();
    let err = ThreadState::join(
        &w.agents[0],
        &w.entity,
        w.admin.device(),
        w.admin.identity_public(),
        &assign,
        NOW,
        &mut without_mark,
    )
    .unwrap_err();
    assert!(
        matches!(err, CommitError::Wrap(WrapError::Replayed { .. })),
        "{err}"
    );
}

// ---- issue 8: nonce reuse after a rollback, withheld commits, equivocation ----

/// The bot's view of an assigned thread, and a snapshot of it taken before it seals: what a
/// crash before persisting (or a second process of the same bot) leaves behind.
fn bot_sealing_twice_from_one_snapshot() -> (
    World,
    ThreadState,
    ThreadState,
    SealedMessage,
    SealedMessage,
) {
    let mut w = World::new(CipherSuite::default(), 1);
    let (customer, admin, mut bot, _) = w.assigned_thread();
    let saved = bot.snapshot();
    let first = bot
        .seal(
            &w.agents[0],
            &Content::text("refund APPROVED, order 42"),
            None,
        )
        .unwrap();
    let mut restored = ThreadState::restore(&w.agents[0], saved).unwrap();
    let second = restored
        .seal(
            &w.agents[0],
            &Content::text("refund REFUSED!, order 42"),
            None,
        )
        .unwrap();
    (w, customer, admin, first, second)
}

#[test]
fn restored_old_snapshot_sealing_again_never_reuses_a_key_and_nonce() {
    let (_w, customer, mut admin, first, second) = bot_sealing_twice_from_one_snapshot();
    // The rollback repeats the generation...
    assert_eq!(first.header.generation, second.header.generation);
    // ...but with one key and nonce the XOR of the ciphertexts would be the XOR of the
    // plaintexts (keystream reuse: knowing one message reveals the other).
    let p1 = serde_json::to_vec(&Content::text("refund APPROVED, order 42")).unwrap();
    let p2 = serde_json::to_vec(&Content::text("refund REFUSED!, order 42")).unwrap();
    assert_eq!(p1.len(), p2.len());
    let plain_xor: Vec<u8> = p1.iter().zip(&p2).map(|(a, b)| a ^ b).collect();
    let cipher_xor: Vec<u8> = first
        .ciphertext
        .iter()
        .zip(&second.ciphertext)
        .take(p1.len())
        .map(|(a, b)| a ^ b)
        .collect();
    assert_ne!(
        cipher_xor, plain_xor,
        "the restored state encrypted a second plaintext under the same key and nonce"
    );
    // The reuse guards differ, and so do the key and nonce the spec derives from them.
    assert_ne!(first.header.reuse_guard, second.header.reuse_guard);
    let secret = customer.epoch_secret(Epoch(1)).unwrap();
    let (k1, k2) = (
        spec_key_nonce(secret, &first.header),
        spec_key_nonce(secret, &second.header),
    );
    assert_ne!(k1[32..], k2[32..], "nonces");
    assert_ne!(k1[..32], k2[..32], "keys");
    // A receiver that did not see the first message opens the second normally (one that did
    // refuses it as equivocation: see the next test).
    let got = admin.open_message(&second, NOW).unwrap();
    assert_eq!(got.content, Content::text("refund REFUSED!, order 42"));
}

#[test]
fn a_second_message_under_a_seen_generation_is_reported_as_equivocation() {
    let (w, mut customer, _admin, first, second) = bot_sealing_twice_from_one_snapshot();
    customer.open_message(&first, NOW).unwrap();
    // A redelivery of the first message is a duplicate...
    assert!(matches!(
        customer.open_message(&first, NOW),
        Err(MessageError::Duplicate { .. })
    ));
    // ...but another message signed under the same generation is not: receivers that saw
    // different ones disagree about what the bot said.
    let err = customer.open_message(&second, NOW).unwrap_err();
    assert!(
        !matches!(err, MessageError::Duplicate { .. }),
        "a different message under a seen generation was dropped silently as a duplicate: {err}"
    );
    assert_eq!(
        err,
        MessageError::Equivocation {
            sender: w.agents[0].device(),
            epoch: Epoch(1),
            generation: 0,
            first: first.digest(),
            second: second.digest(),
        }
    );
    // The first message stands: a redelivery of it is still a duplicate, of the second still
    // equivocation; nothing of the second was recorded.
    assert!(matches!(
        customer.open_message(&first, NOW),
        Err(MessageError::Duplicate { .. })
    ));
    assert!(matches!(
        customer.open_message(&second, NOW),
        Err(MessageError::Equivocation { .. })
    ));
    // The digests survive a snapshot round trip.
    let mut restored = ThreadState::restore(
        &w.customer,
        decode(&encode(&customer.snapshot()).unwrap()).unwrap(),
    )
    .unwrap();
    assert!(matches!(
        restored.open_message(&second, NOW),
        Err(MessageError::Equivocation { .. })
    ));
}

#[test]
fn withheld_commit_cannot_keep_an_old_epoch_alive_past_the_grace_period() {
    let mut w = World::new(CipherSuite::default(), 2);
    let (mut customer, mut admin, mut bot, _) = w.assigned_thread();
    let human = w.member(1, AgentKind::Human);
    let transfer = w.commit(
        &mut admin,
        CommitAction::Transfer {
            from: w.agents[0].device(),
            to: Box::new(human),
        },
    );
    assert_eq!(transfer.epoch, Epoch(2));
    // The relay withholds the transfer from the customer, who keeps writing in epoch 1, which
    // the removed bot can still read.
    let soon = customer
        .seal(&w.customer, &Content::text("my address is 1 Main St"), None)
        .unwrap();
    assert!(bot.open_message(&soon, NOW).is_ok());
    // A late message within the grace period is still accepted by the admin...
    admin.open_message(&soon, NOW.plus(60)).unwrap();
    // ...but an hour later the admin refuses the old epoch, so the customer notices.
    let late = customer
        .seal(
            &w.customer,
            &Content::text("and my card ends in 4242"),
            None,
        )
        .unwrap();
    let result = admin.open_message(&late, NOW.plus(3600));
    assert!(
        result.is_err(),
        "the admin accepted an old-epoch message an hour after it moved on: {result:?}"
    );
    // Refused with a distinct error the admin audits, exactly at the end of the grace period
    // counted from when the admin installed epoch 2 (NOW).
    let grace = ReplayPolicy::default().old_epoch_grace_secs;
    assert_eq!(grace, DEFAULT_OLD_EPOCH_GRACE_SECS);
    let last_in_grace = customer
        .seal(&w.customer, &Content::text("still in time"), None)
        .unwrap();
    admin
        .open_message(&last_in_grace, NOW.plus(grace - 1))
        .unwrap();
    let mut restored_admin = ThreadState::restore(
        &w.admin,
        decode(&encode(&admin.snapshot()).unwrap()).unwrap(),
    )
    .unwrap();
    let first_late = customer
        .seal(&w.customer, &Content::text("too late"), None)
        .unwrap();
    assert_eq!(
        restored_admin.open_message(&first_late, NOW.plus(grace)),
        Err(MessageError::StaleEpoch {
            sender: w.customer.device(),
            epoch: Epoch(1),
            next: Epoch(2),
            next_installed_at: NOW,
            grace_secs: grace,
            now: NOW.plus(grace),
        })
    );
    // A shorter grace is configurable.
    let mut strict = ThreadState::restore(
        &w.admin,
        decode(&encode(&admin.snapshot()).unwrap()).unwrap(),
    )
    .unwrap()
    .with_replay_policy(ReplayPolicy {
        old_epoch_grace_secs: 10,
        ..ReplayPolicy::default()
    });
    let another = customer
        .seal(&w.customer, &Content::text("eleven seconds later"), None)
        .unwrap();
    assert!(matches!(
        strict.open_message(&another, NOW.plus(11)),
        Err(MessageError::StaleEpoch { .. })
    ));
}
