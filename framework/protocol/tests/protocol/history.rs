//! History grants: an agent added later reads the earlier epochs the admin grants it, and
//! nothing it is not granted. One test per attack.

use switchboard_protocol::*;

use crate::support::{NOW, World};

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
    // The admin moves on to epoch 2 and grants epochs 0 and 1 to an agent still in epoch 1:
    // epoch 1 is not history for it, so the grant is refused whole.
    let (mut w, _, mut admin, mut agent, first, _) = granted();
    w.commit(&mut admin, CommitAction::Rekey);
    let bundle = w.agents[0].bundle(NOW);
    let grant = admin
        .grant_history(&w.admin, &bundle, vec![first], NOW, &mut w.rng)
        .unwrap();
    assert_eq!(grant.epochs.len(), 2);
    assert!(matches!(
        agent.accept_history(&w.agents[0], &grant, NOW),
        Err(HistoryError::NotEarlier { epoch: Epoch(1) })
    ));
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
