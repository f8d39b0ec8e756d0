//! A customer is served by a bot, the bot hands off to a human, the thread is transferred.

use switchboard_protocol::{
    AgentCredential, AgentKind, CipherSuite, CommitAction, Content, CredentialRequest, Csprng,
    DeviceId, DeviceKeys, EntityId, Floor, HandoffTarget, Member, MessageError, SeenWraps, Sender,
    ThreadState, Timestamp,
};
use switchboard_tests::Wire;

const NOW: Timestamp = Timestamp(1_800_000_000);

fn agent(
    admin: &DeviceKeys,
    entity: &EntityId,
    keys: &DeviceKeys,
    name: &str,
    kind: AgentKind,
) -> Member {
    let bundle = keys.bundle(NOW);
    let credential = AgentCredential::issue(
        admin,
        &CredentialRequest {
            entity,
            agent: &bundle,
            display_name: name,
            kind,
            issued_at: NOW,
            expires_at: NOW.plus(3600),
        },
    )
    .unwrap();
    Member::agent(bundle, credential)
}

#[test]
fn bot_hands_off_to_human_and_loses_access() {
    let mut rng = Csprng::from_os().unwrap();
    let mut wire = Wire::default();
    let acme = EntityId::new("acme").unwrap();
    let mut new_device = |suite| DeviceKeys::generate(DeviceId::random(&mut rng), suite, &mut rng);
    let (customer, admin) = (
        new_device(CipherSuite::default()),
        new_device(CipherSuite::default()),
    );
    let (bot, human) = (
        new_device(CipherSuite::default()),
        new_device(CipherSuite::XWingSha256ChaCha20Poly1305),
    );

    let (mut c, open) =
        ThreadState::open(&customer, acme.clone(), &admin.bundle(NOW), NOW, &mut rng).unwrap();
    let mut a = ThreadState::accept(
        &admin,
        &acme,
        &wire.carry(&open).unwrap(),
        NOW,
        &mut SeenWraps::new(),
    )
    .unwrap();
    let first = wire
        .carry(
            &c.seal(&customer, &Content::text("refund please"), None)
                .unwrap(),
        )
        .unwrap();
    assert_eq!(
        a.open_message(&first, NOW).unwrap().sender_info,
        Sender::Customer
    );

    // Bot first.
    let assign = wire
        .carry(
            &a.commit(
                &admin,
                CommitAction::Assign {
                    agent: Box::new(agent(&admin, &acme, &bot, "OrderBot", AgentKind::Bot)),
                },
                NOW,
                &mut rng,
            )
            .unwrap(),
        )
        .unwrap();
    c.apply_commit(&customer, &assign, NOW).unwrap();
    let mut b = ThreadState::join(
        &bot,
        &acme,
        admin.device(),
        admin.identity_public(),
        &assign,
        NOW,
        &mut switchboard_protocol::DeviceMemory::new(),
    )
    .unwrap();
    // History is not granted by default: the bot cannot read the customer's first message.
    assert!(matches!(
        b.open_message(&first, NOW),
        Err(MessageError::UnknownEpoch { .. })
    ));

    // The bot asks for a human; the admin reads the request.
    let ask = wire
        .carry(
            &b.seal(
                &bot,
                &Content::HandoffRequest {
                    target: HandoffTarget::AnyHuman,
                    note: "refund".into(),
                },
                None,
            )
            .unwrap(),
        )
        .unwrap();
    let request = a.open_message(&ask, NOW).unwrap();
    assert!(matches!(
        request.content,
        Content::HandoffRequest {
            target: HandoffTarget::AnyHuman,
            ..
        }
    ));
    c.open_message(&ask, NOW).unwrap();

    // The admin transfers: the human gets the floor, the bot is out.
    let transfer = wire
        .carry(
            &a.commit(
                &admin,
                CommitAction::Transfer {
                    from: bot.device(),
                    to: Box::new(agent(&admin, &acme, &human, "Dana", AgentKind::Human)),
                },
                NOW,
                &mut rng,
            )
            .unwrap(),
        )
        .unwrap();
    c.apply_commit(&customer, &transfer, NOW).unwrap();
    assert_eq!(c.roster().floor, Floor::Agent(human.device()));
    let mut h = ThreadState::join(
        &human,
        &acme,
        admin.device(),
        admin.identity_public(),
        &transfer,
        NOW,
        &mut switchboard_protocol::DeviceMemory::new(),
    )
    .unwrap();
    assert!(b.apply_commit(&bot, &transfer, NOW).is_err());

    let hello = wire
        .carry(
            &h.seal(&human, &Content::text("Dana here, refund issued"), None)
                .unwrap(),
        )
        .unwrap();
    let seen = c.open_message(&hello, NOW).unwrap();
    assert_eq!(
        seen.sender_info,
        Sender::Agent {
            display_name: "Dana".into(),
            kind: AgentKind::Human
        }
    );
    assert!(b.open_message(&hello, NOW).is_err());
    assert_eq!(
        wire.values, 6,
        "open, first message, assign, handoff request, transfer, reply"
    );
}
