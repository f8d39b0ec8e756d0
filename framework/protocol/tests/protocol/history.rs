//! History grants: an agent added later reads the earlier epochs the admin grants it, and
//! nothing it is not granted. One test per attack.

use switchboard_protocol::*;

use crate::support::{NOW, World, spec_sign_grant};

/// Customer writes in epoch 0; admin reads it, assigns agent 0 (epoch 1). Returns the views,
/// the epoch-0 message, and the grant the admin made for agent 0.
fn granted() -> (
    World,
    ThreadState,
    ThreadState,
    ThreadState,
    SealedMessage,
    HistoryGrant,
) {
    let mut w = World::new(CipherSuite::default(), 2);
    let (mut customer, mut admin, _) = w.open_thread();
    let first = customer
        .seal(&w.customer, &Content::text("where is order 42?"), None)
        .unwrap();
    admin.open_message(&first, NOW).unwrap();
    let member = w.member(0, AgentKind::Bot);
    let bundle = member.bundle.clone();
    let commit = w.commit(
        &mut admin,
        CommitAction::Assign {
            agent: Box::new(member),
        },
    );
    customer.apply_commit(&w.customer, &commit, NOW).unwrap();
    let agent = w.join(0, &commit);
    let grant = admin
        .grant_history(&w.admin, &bundle, vec![first.clone()], NOW, &mut w.rng)
        .unwrap();
    (w, customer, admin, agent, first, grant)
}

#[test]
fn agent_added_later_reads_the_history_it_is_granted() {
    let (w, _, _, mut agent, _, grant) = granted();
    // It cannot read epoch 0 on its own...
    assert_eq!(agent.epochs_held(), [Epoch(1)]);
    // ...but with the grant, it reads the customer's first message, verified.
    let grant: HistoryGrant = decode(&encode(&grant).unwrap()).unwrap();
    let history = agent.accept_history(&w.agents[0], &grant, NOW).unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].sender_info, Sender::Customer);
    assert_eq!(history[0].content, Content::text("where is order 42?"));
    // The granted secret is not kept.
    assert_eq!(agent.epochs_held(), [Epoch(1)]);
}

#[test]
fn history_grant_not_signed_by_the_admin_is_refused() {
    let (w, _, _, mut agent, _, mut grant) = granted();
    // Signed by another device (the other agent), or altered after signing.
    let mut forged = grant.clone();
    forged.signature = w.agents[1].identity().sign(b"anything");
    assert!(matches!(
        agent.accept_history(&w.agents[0], &forged, NOW),
        Err(HistoryError::BadSignature)
    ));
    grant.messages.clear();
    assert!(matches!(
        agent.accept_history(&w.agents[0], &grant, NOW),
        Err(HistoryError::BadSignature)
    ));
}

#[test]
fn history_grant_for_another_member_is_refused() {
    let (w, _, _, mut agent, _, mut grant) = granted();
    grant.to = w.agents[1].device();
    assert!(matches!(
        agent.accept_history(&w.agents[0], &grant, NOW),
        Err(HistoryError::NotForMe { .. })
    ));
    // And a device that is not a member cannot be granted anything.
    let (mut w, _, admin, _, first, _) = granted();
    let outsider = w.agents[1].bundle(NOW);
    assert!(matches!(
        admin.grant_history(&w.admin, &outsider, vec![first], NOW, &mut w.rng),
        Err(HistoryError::NotAMember { .. })
    ));
}

#[test]
fn history_grant_of_an_epoch_the_agent_holds_is_refused() {
    // The admin moves on to epoch 2 and grants history to an agent that joined in epoch 1: it
    // grants epoch 0 only, which the agent accepts...
    let (mut w, _, mut admin, mut agent, first, _) = granted();
    let roster = admin.roster().clone();
    let rekey = w.commit(&mut admin, CommitAction::Rekey);
    agent.apply_commit(&w.agents[0], &rekey, NOW).unwrap();
    let bundle = w.agents[0].bundle(NOW);
    let grant = admin
        .grant_history(&w.admin, &bundle, vec![first], NOW, &mut w.rng)
        .unwrap();
    assert_eq!(grant.epochs.len(), 1);
    // ...but a grant that also carries epoch 1 (one the agent held as a member, signed by the
    // admin) is not history for it, so the grant is refused whole.
    let mut with_epoch_1 = grant.clone();
    let context = WrapContext {
        thread: grant.thread,
        epoch: Epoch(1),
        roster_hash: roster.hash(),
        expires_at: NOW.plus(3600),
    };
    let secret = admin.epoch_secret(Epoch(1)).unwrap().clone();
    with_epoch_1.epochs.push(GrantedEpoch {
        epoch: Epoch(1),
        prev_roster_hash: grant.epochs[0].roster.hash(),
        roster,
        wrap: KeyWrap::seal(&w.admin, &bundle, &context, &secret, &mut w.rng).unwrap(),
    });
    spec_sign_grant(&mut with_epoch_1, w.admin.identity());
    assert!(matches!(
        agent.accept_history(&w.agents[0], &with_epoch_1, NOW),
        Err(HistoryError::NotEarlier { epoch: Epoch(1) })
    ));
    agent.accept_history(&w.agents[0], &grant, NOW).unwrap();
}

#[test]
fn tampered_message_in_a_history_grant_is_refused() {
    // The grant's signature covers message ids and signatures; the ciphertext is the sender's
    // to vouch for: a flipped byte fails the sender's signature.
    let (w, _, _, mut agent, _, mut grant) = granted();
    grant.messages[0].ciphertext[0] ^= 1;
    assert!(matches!(
        agent.accept_history(&w.agents[0], &grant, NOW),
        Err(HistoryError::Message { index: 0, .. })
    ));
}

#[test]
fn replayed_history_grant_is_refused() {
    let (w, _, _, mut agent, _, grant) = granted();
    agent.accept_history(&w.agents[0], &grant, NOW).unwrap();
    assert!(matches!(
        agent.accept_history(&w.agents[0], &grant, NOW),
        Err(HistoryError::Wrap(WrapError::Replayed { .. }))
    ));
}

#[test]
fn history_messages_must_be_of_granted_epochs() {
    // The admin cannot put a current-epoch message into a grant...
    let (mut w, _, admin, mut agent, _, _) = granted();
    let now_message = agent
        .seal(&w.agents[0], &Content::text("current"), None)
        .unwrap();
    let bundle = w.agents[0].bundle(NOW);
    assert!(matches!(
        admin.grant_history(&w.admin, &bundle, vec![now_message], NOW, &mut w.rng),
        Err(HistoryError::NotEarlier { epoch: Epoch(1) })
    ));
    // ...and only the admin grants history.
    let (mut w, _, _, agent, first, _) = granted();
    assert!(matches!(
        agent.grant_history(&w.agents[0], &bundle, vec![first], NOW, &mut w.rng),
        Err(HistoryError::NotAdmin)
    ));
}

#[test]
fn history_grant_for_another_thread_is_refused() {
    let (w, _, _, mut agent, _, mut grant) = granted();
    grant.thread = ThreadId::random(&mut Csprng::from_seed([7; 32]));
    assert!(matches!(
        agent.accept_history(&w.agents[0], &grant, NOW),
        Err(HistoryError::WrongThread { .. })
    ));
}

// ---- issue 8 item 6: granted rosters are validated ----

/// The admin's grant for agent 0 with epoch 0's roster replaced by `change(roster)`, re-wrapped
/// and re-signed by the admin (an admin bug, or a tampered history log it signs), and without
/// messages (so that only the roster is judged).
fn grant_with_roster(
    change: impl FnOnce(&World, &mut Roster),
) -> (World, ThreadState, HistoryGrant) {
    let (mut w, _, admin, agent, _, mut grant) = granted();
    let mut roster = grant.epochs[0].roster.clone();
    change(&w, &mut roster);
    let context = WrapContext {
        thread: grant.thread,
        epoch: Epoch(0),
        roster_hash: roster.hash(),
        expires_at: NOW.plus(3600),
    };
    let secret = admin.epoch_secret(Epoch(0)).unwrap().clone();
    grant.epochs[0].wrap = KeyWrap::seal(
        &w.admin,
        &w.agents[0].bundle(NOW),
        &context,
        &secret,
        &mut w.rng,
    )
    .unwrap();
    grant.epochs[0].roster = roster;
    grant.messages.clear();
    spec_sign_grant(&mut grant, w.admin.identity());
    (w, agent, grant)
}

#[test]
fn the_unchanged_grant_re_signed_by_the_test_is_accepted() {
    // The control for the attacks below: the helper's re-wrap and re-signature are valid.
    let (w, mut agent, grant) = grant_with_roster(|_, _| {});
    agent.accept_history(&w.agents[0], &grant, NOW).unwrap();
}

#[test]
fn history_grant_with_another_customer_in_a_roster_is_refused() {
    let (w, mut agent, grant) = grant_with_roster(|w, roster| {
        roster.members.remove(&w.customer.device());
        let impostor = w.agents[1].bundle(NOW);
        roster.members.insert(
            impostor.device,
            Member {
                bundle: impostor,
                role: Role::Customer,
            },
        );
    });
    let result = agent.accept_history(&w.agents[0], &grant, NOW);
    assert!(
        result.is_err(),
        "a grant naming another customer was accepted: {result:?}"
    );
    assert!(
        matches!(
            result,
            Err(HistoryError::InvalidRoster {
                epoch: Epoch(0),
                ..
            })
        ),
        "{result:?}"
    );
}

#[test]
fn history_grant_with_a_forged_member_credential_is_refused() {
    let (w, mut agent, grant) = grant_with_roster(|w, roster| {
        // Agent 1 "vouched for" by itself, not by the admin.
        let bundle = w.agents[1].bundle(NOW);
        let credential = AgentCredential::issue(
            &w.agents[1],
            &CredentialRequest {
                entity: &w.entity,
                agent: &bundle,
                display_name: "Dana",
                kind: AgentKind::Human,
                issued_at: NOW,
                expires_at: NOW.plus(60),
            },
        )
        .unwrap();
        roster
            .members
            .insert(bundle.device, Member::agent(bundle, credential));
    });
    let result = agent.accept_history(&w.agents[0], &grant, NOW);
    assert!(
        result.is_err(),
        "a grant whose roster holds a forged credential was accepted: {result:?}"
    );
    assert!(
        matches!(
            result,
            Err(HistoryError::InvalidRoster {
                epoch: Epoch(0),
                ..
            })
        ),
        "{result:?}"
    );
}

#[test]
fn history_grant_whose_rosters_do_not_chain_to_the_join_is_refused() {
    // A valid member (credential from the admin) that was never in epoch 0: the roster is
    // well formed but is not the one the commit that added agent 0 built on.
    let (w, mut agent, grant) = grant_with_roster(|w, roster| {
        let member = w.member(1, AgentKind::Human);
        roster.members.insert(member.device(), member);
    });
    let result = agent.accept_history(&w.agents[0], &grant, NOW);
    assert!(
        result.is_err(),
        "a grant whose roster is not the joined-on roster was accepted: {result:?}"
    );
    assert_eq!(result, Err(HistoryError::BrokenChain { epoch: Epoch(0) }));
    // A device that did not join through a commit (the customer) accepts no grant at all.
    let (mut w, mut customer, admin, _, _, _) = granted();
    let to_customer = admin
        .grant_history(&w.admin, &w.customer.bundle(NOW), vec![], NOW, &mut w.rng)
        .unwrap();
    assert!(
        to_customer.epochs.is_empty(),
        "the customer was in every epoch"
    );
    let mut forged = to_customer;
    forged.epochs = grant.epochs.clone();
    forged.to = w.customer.device();
    spec_sign_grant(&mut forged, w.admin.identity());
    assert!(matches!(
        customer.accept_history(&w.customer, &forged, NOW),
        Err(HistoryError::BrokenChain { .. } | HistoryError::NotEarlier { .. })
    ));
}

#[test]
fn granted_epochs_chain_through_several_commits() {
    // Epochs 0 (customer, admin), 1 (rekey), 2 (agent 0 assigned): agent 0 gets 0 and 1,
    // chained, and an epoch left out of the run breaks the chain.
    let mut w = World::new(CipherSuite::default(), 2);
    let (mut customer, mut admin, _) = w.open_thread();
    let first = customer
        .seal(&w.customer, &Content::text("hello"), None)
        .unwrap();
    admin.open_message(&first, NOW).unwrap();
    let rekey = w.commit(&mut admin, CommitAction::Rekey);
    customer.apply_commit(&w.customer, &rekey, NOW).unwrap();
    let second = customer
        .seal(&w.customer, &Content::text("anyone?"), None)
        .unwrap();
    admin.open_message(&second, NOW).unwrap();
    let member = w.member(0, AgentKind::Bot);
    let bundle = member.bundle.clone();
    let assign = w.commit(
        &mut admin,
        CommitAction::Assign {
            agent: Box::new(member),
        },
    );
    let mut agent = w.join(0, &assign);
    let grant = admin
        .grant_history(&w.admin, &bundle, vec![first, second], NOW, &mut w.rng)
        .unwrap();
    assert_eq!(grant.epochs.len(), 2);
    let mut gap = grant.clone();
    gap.epochs.remove(1);
    gap.messages.truncate(1);
    spec_sign_grant(&mut gap, w.admin.identity());
    assert_eq!(
        agent.accept_history(&w.agents[0], &gap, NOW),
        Err(HistoryError::BrokenChain { epoch: Epoch(0) })
    );
    let history = agent.accept_history(&w.agents[0], &grant, NOW).unwrap();
    assert_eq!(history.len(), 2);
}
