//! The system's flow through real HTTP: open, route to a bot, reply, hand off, transfer; groups.

use std::time::Duration;

use switchboard_client::{ClientError, Event};
use switchboard_protocol::{
    AgentKind, CommitAction, Content, HandoffTarget, MessageError, Sender, ThreadState,
};

use crate::{Cast, events, messages};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn customer_bot_handoff_and_transfer_over_http() {
    let mut cast = Cast::new().await;
    let mut bot = cast.agent("bot").await;
    let mut human = cast.agent("human").await;

    // The customer opens a thread and writes; the admin gets both.
    let thread = cast.customer.open_thread(&cast.entity).await.unwrap();
    let pinned = cast.customer.pinned_admin(&cast.entity).unwrap();
    assert_eq!(pinned.fingerprint(), cast.admin.fingerprint());
    cast.customer
        .send(thread, &Content::text("where is order 42?"), None)
        .await
        .unwrap();
    let got = events(&mut cast.admin, 2).await;
    assert!(
        matches!(got[0], Event::ThreadOpened { customer, .. } if customer == cast.customer.id())
    );
    assert_eq!(messages(&got)[0].sender_info, Sender::Customer);

    // The admin forwards the thread to the bot: a signed commit with the secret wrapped to it.
    cast.assign_bot(thread, &mut bot).await;

    // The bot replies; the customer sees who spoke, verified by the admin's credential.
    bot.send(thread, &Content::text("Order 42 ships today."), None)
        .await
        .unwrap();
    let seen = events(&mut cast.customer, 1).await;
    assert_eq!(
        messages(&seen)[0].sender_info,
        Sender::Agent {
            display_name: "OrderBot".into(),
            kind: AgentKind::Bot
        }
    );

    // The bot asks for a human; the admin transfers the thread to one, in a new epoch.
    bot.send(
        thread,
        &Content::HandoffRequest {
            target: HandoffTarget::Team("billing".into()),
            note: "refund".into(),
        },
        None,
    )
    .await
    .unwrap();
    let asked = events(&mut cast.admin, 2).await; // the bot's reply and its handoff request
    assert!(matches!(
        messages(&asked)[1].content,
        Content::HandoffRequest { .. }
    ));
    let dana = cast.member(&human, "Dana", AgentKind::Human);
    cast.admin
        .commit(
            thread,
            CommitAction::Transfer {
                from: bot.id(),
                to: Box::new(dana),
            },
        )
        .await
        .unwrap();
    assert!(matches!(
        events(&mut human, 1).await[0],
        Event::Joined { .. }
    ));
    assert!(matches!(
        events(&mut bot, 1).await[0],
        Event::Removed { .. }
    ));
    // The customer sees the handoff request too (its app can say a person is coming), then the
    // new roster.
    let at_customer = events(&mut cast.customer, 2).await;
    assert!(matches!(
        messages(&at_customer)[0].content,
        Content::HandoffRequest { .. }
    ));
    assert!(matches!(at_customer[1], Event::RosterChanged { .. }));

    // The bot has nothing left of the thread: it cannot send, and gets nothing more.
    assert!(matches!(
        bot.send(thread, &Content::text("still here"), None).await,
        Err(ClientError::UnknownThread(_))
    ));
    cast.customer
        .send(thread, &Content::text("thanks Dana"), None)
        .await
        .unwrap();
    let to_human = events(&mut human, 1).await;
    assert_eq!(messages(&to_human)[0].content, Content::text("thanks Dana"));
    assert!(
        bot.receive(Duration::from_millis(300))
            .await
            .unwrap()
            .is_empty(),
        "the relay no longer delivers to the removed bot"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_of_two_agents_and_removal_rekeys() {
    let mut cast = Cast::new().await;
    let mut a = cast.agent("a").await;
    let mut b = cast.agent("b").await;
    let thread = cast.customer.open_thread(&cast.entity).await.unwrap();
    events(&mut cast.admin, 1).await;
    for (agent, name) in [(&a, "Ann"), (&b, "Bob")] {
        let member = cast.member(agent, name, AgentKind::Human);
        cast.admin
            .commit(
                thread,
                CommitAction::AddToGroup {
                    agent: Box::new(member),
                },
            )
            .await
            .unwrap();
    }
    events(&mut a, 2).await; // joined, then Bob's addition
    events(&mut b, 1).await;
    events(&mut cast.customer, 2).await;

    // All three see each other.
    a.send(thread, &Content::text("Ann here"), None)
        .await
        .unwrap();
    b.send(thread, &Content::text("Bob here"), None)
        .await
        .unwrap();
    cast.customer
        .send(thread, &Content::text("hi both"), None)
        .await
        .unwrap();
    let names = |events: &[Event]| -> Vec<String> {
        messages(events)
            .iter()
            .map(|m| match &m.sender_info {
                Sender::Agent { display_name, .. } => display_name.clone(),
                other => format!("{other:?}"),
            })
            .collect()
    };
    assert_eq!(names(&events(&mut a, 2).await), ["Bob", "Customer"]);
    assert_eq!(names(&events(&mut b, 2).await), ["Ann", "Customer"]);
    assert_eq!(names(&events(&mut cast.customer, 2).await), ["Ann", "Bob"]);

    // Removing Bob starts a new epoch without him. (Keep what Bob holds now, to try it on the
    // next epoch.)
    let bob_before = b.thread(thread).unwrap().snapshot();
    cast.admin
        .commit(thread, CommitAction::Remove { device: b.id() })
        .await
        .unwrap();
    assert!(matches!(events(&mut b, 1).await[0], Event::Removed { .. }));
    events(&mut a, 1).await;
    events(&mut cast.customer, 1).await;
    let after = cast
        .customer
        .send(thread, &Content::text("only Ann now"), None)
        .await
        .unwrap();
    assert_eq!(names(&events(&mut a, 1).await), ["Customer"]);
    // Bob's keys of the old epoch cannot read the new one, and the relay delivers him nothing.
    let mut bob_old = ThreadState::restore(b.keys(), bob_before).unwrap();
    assert!(matches!(
        bob_old.open_message(&after, switchboard_client::now()),
        Err(MessageError::UnknownEpoch { .. })
    ));
    assert!(
        b.receive(Duration::from_millis(300))
            .await
            .unwrap()
            .is_empty()
    );
}
