//! Threads and inboxes over HTTP, with real protocol objects end to end through the router.

use axum::http::StatusCode;
use serde_json::Value;
use switchboard_protocol::api::ItemKind;
use switchboard_protocol::{
    AgentCredential, AgentKind, Commit, CommitAction, Content, CredentialRequest, DeviceKeys,
    EntityId, Member, SealedMessage, SeenWraps, Sender, ThreadOpen, ThreadState, decode, encode,
};
use switchboard_relay::http::InboxAnswer;

use super::{Relay, code};

struct Cast {
    customer: DeviceKeys,
    admin: DeviceKeys,
    bot: DeviceKeys,
    entity: EntityId,
}

async fn cast(relay: &mut Relay) -> Cast {
    let (customer, admin, bot) = (relay.device(), relay.device(), relay.device());
    for k in [&customer, &admin, &bot] {
        relay.register(k).await;
    }
    let request = relay.signed(
        &admin,
        "POST",
        "/v1/entities",
        br#"{"v":1,"entity":"acme","display_name":"Acme"}"#,
    );
    assert_eq!(relay.send(request).await.0, StatusCode::CREATED);
    Cast {
        customer,
        admin,
        bot,
        entity: EntityId::new("acme").unwrap(),
    }
}

impl Relay {
    pub(crate) async fn post(
        &mut self,
        keys: &DeviceKeys,
        path: &str,
        body: &[u8],
    ) -> (StatusCode, Value) {
        let request = self.signed(keys, "POST", path, body);
        self.send(request).await
    }

    async fn inbox(&mut self, keys: &DeviceKeys, query: &str) -> InboxAnswer {
        let path = format!("/v1/inbox?{query}");
        let request = self.signed(keys, "GET", &path, b"");
        let (status, json) = self.send(request).await;
        assert_eq!(status, StatusCode::OK, "{json}");
        decode(json.to_string().as_bytes()).unwrap()
    }
}

fn payload<T: switchboard_protocol::WireType>(item: &switchboard_relay::http::WireItem) -> T {
    decode(item.payload.to_string().as_bytes()).unwrap()
}

#[tokio::test]
async fn a_thread_flows_through_the_relay_and_only_members_and_the_admin_may_post() {
    let mut relay = Relay::new().await;
    let c = cast(&mut relay).await;
    let now = relay.now();
    let mut rng = switchboard_protocol::Csprng::from_os().unwrap();

    // The customer opens a thread; it is queued for the admin only.
    let (mut customer_view, open) = ThreadState::open(
        &c.customer,
        c.entity.clone(),
        &c.admin.bundle(now),
        now,
        &mut rng,
    )
    .unwrap();
    let (status, json) = relay
        .post(&c.customer, "/v1/threads", &encode(&open).unwrap())
        .await;
    assert_eq!(
        (status, json["recipients"].as_u64()),
        (StatusCode::CREATED, Some(1)),
        "{json}"
    );
    let (status, json) = relay
        .post(&c.customer, "/v1/threads", &encode(&open).unwrap())
        .await;
    assert_eq!(
        (status, code(&json)),
        (StatusCode::CONFLICT, "conflict"),
        "a thread id is taken once"
    );
    let inbox = relay.inbox(&c.admin, "after=0").await;
    assert_eq!(inbox.items.len(), 1);
    assert_eq!(inbox.items[0].kind, ItemKind::ThreadOpen);
    let received: ThreadOpen = payload(&inbox.items[0]);
    let mut admin_view =
        ThreadState::accept(&c.admin, &c.entity, &received, now, &mut SeenWraps::new()).unwrap();

    let thread_path = format!("/v1/threads/{}", open.thread);
    let hello = customer_view
        .seal(&c.customer, &Content::text("where is order 42?"), None)
        .unwrap();
    let (status, _) = relay
        .post(
            &c.customer,
            &format!("{thread_path}/messages"),
            &encode(&hello).unwrap(),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    // The same signed request again (its nonce spent in the post's own transaction): refused
    // as a replay, and the admin still has the message once.
    let message_path = format!("{thread_path}/messages");
    let hello_bytes = encode(&hello).unwrap();
    let auth = switchboard_protocol::RequestAuth::sign(
        &c.customer,
        "POST",
        &message_path,
        &hello_bytes,
        relay.now(),
        &mut relay.rng,
    );
    let (status, _) = relay
        .send(super::with_auth(
            &auth,
            "POST",
            &message_path,
            hello_bytes.clone(),
        ))
        .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "a new request posting the message again: stored before"
    );
    let (status, json) = relay
        .send(super::with_auth(&auth, "POST", &message_path, hello_bytes))
        .await;
    assert_eq!(
        (status, code(&json)),
        (StatusCode::UNAUTHORIZED, "replayed_request"),
        "{json}"
    );
    let messages = relay.inbox(&c.admin, "after=0").await;
    assert_eq!(
        messages
            .items
            .iter()
            .filter(|i| i.kind == ItemKind::Message)
            .count(),
        1,
        "the message reached the admin once"
    );

    // The bot is not a member yet: a message in its own name is refused (checked in the
    // post's transaction), and one in another's name is refused before that.
    let mut in_its_name = hello.clone();
    in_its_name.header.sender = c.bot.device();
    let (status, json) = relay
        .post(
            &c.bot,
            &format!("{thread_path}/messages"),
            &encode(&in_its_name).unwrap(),
        )
        .await;
    assert_eq!(
        (status, code(&json)),
        (StatusCode::FORBIDDEN, "forbidden"),
        "{json}"
    );
    let (status, json) = relay
        .post(
            &c.bot,
            &format!("{thread_path}/messages"),
            &encode(&hello).unwrap(),
        )
        .await;
    assert_eq!(
        (status, code(&json)),
        (StatusCode::BAD_REQUEST, "malformed"),
        "{json}"
    );

    // The admin forwards the thread to the bot; a customer cannot post commits.
    let bundle = c.bot.bundle(now);
    let credential = AgentCredential::issue(
        &c.admin,
        &CredentialRequest {
            entity: &c.entity,
            agent: &bundle,
            display_name: "OrderBot",
            kind: AgentKind::Bot,
            issued_at: now,
            expires_at: now.plus(3600),
        },
    )
    .unwrap();
    let assign = admin_view
        .commit(
            &c.admin,
            CommitAction::Assign {
                agent: Box::new(Member::agent(bundle, credential)),
            },
            now,
            &mut rng,
        )
        .unwrap();
    let commit_body = encode(&assign).unwrap();
    let (status, json) = relay
        .post(&c.customer, &format!("{thread_path}/commits"), &commit_body)
        .await;
    assert_eq!(
        (status, code(&json)),
        (StatusCode::FORBIDDEN, "forbidden"),
        "{json}"
    );
    let (status, json) = relay
        .post(&c.admin, &format!("{thread_path}/commits"), &commit_body)
        .await;
    assert_eq!(
        (status, json["recipients"].as_u64()),
        (StatusCode::CREATED, Some(2)),
        "{json}"
    );
    let (status, json) = relay
        .post(&c.admin, &format!("{thread_path}/commits"), &commit_body)
        .await;
    assert_eq!(
        (status, code(&json)),
        (StatusCode::CONFLICT, "conflict"),
        "replayed commit: {json}"
    );

    // The admin grants the bot the customer's first message (epoch 0). Only the admin may,
    // only to a current member other than itself, and only that member receives it.
    admin_view.open_message(&hello, now).unwrap();
    let grant = admin_view
        .grant_history(
            &c.admin,
            &c.bot.bundle(now),
            vec![hello.clone()],
            now,
            &mut rng,
        )
        .unwrap();
    let grant_body = encode(&grant).unwrap();
    let history_path = format!("{thread_path}/history");
    for (who, body, expected) in [
        (
            &c.customer,
            grant_body.clone(),
            (StatusCode::FORBIDDEN, "forbidden"),
        ),
        (
            &c.bot,
            grant_body.clone(),
            (StatusCode::FORBIDDEN, "forbidden"),
        ),
        (
            &c.admin,
            b"{\"v\":1}".to_vec(),
            (StatusCode::BAD_REQUEST, "malformed"),
        ),
    ] {
        let (status, json) = relay.post(who, &history_path, &body).await;
        assert_eq!((status, code(&json)), expected, "{json}");
    }
    let outsider = relay.device();
    relay.register(&outsider).await;
    for to in [outsider.device(), c.admin.device()] {
        let mut wrong = grant.clone();
        wrong.to = to;
        let (status, json) = relay
            .post(&c.admin, &history_path, &encode(&wrong).unwrap())
            .await;
        assert_eq!(
            (status, code(&json)),
            (StatusCode::FORBIDDEN, "forbidden"),
            "{json}"
        );
    }
    let (status, json) = relay.post(&c.admin, &history_path, &grant_body).await;
    assert_eq!(
        (status, json["recipients"].as_u64()),
        (StatusCode::CREATED, Some(1)),
        "{json}"
    );

    // The bot joins from its inbox, reads the granted history, and replies; the customer sees
    // who spoke.
    let bot_inbox = relay.inbox(&c.bot, "after=0").await;
    let kinds: Vec<ItemKind> = bot_inbox.items.iter().map(|i| i.kind).collect();
    assert_eq!(kinds, [ItemKind::Commit, ItemKind::History]);
    let commit: Commit = payload(&bot_inbox.items[0]);
    let mut bot_view = ThreadState::join(
        &c.bot,
        &c.entity,
        c.admin.device(),
        c.admin.identity_public(),
        &commit,
        now,
        &mut switchboard_protocol::DeviceMemory::new(),
    )
    .unwrap();
    let history = bot_view
        .accept_history(&c.bot, &payload(&bot_inbox.items[1]), now)
        .unwrap();
    assert_eq!(history[0].content, Content::text("where is order 42?"));
    let reply = bot_view
        .seal(&c.bot, &Content::text("ships today"), None)
        .unwrap();
    let (status, _) = relay
        .post(
            &c.bot,
            &format!("{thread_path}/messages"),
            &encode(&reply).unwrap(),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    // Posting someone else's message (sender spoofing at the relay) is refused.
    let (status, json) = relay
        .post(
            &c.bot,
            &format!("{thread_path}/messages"),
            &encode(&hello).unwrap(),
        )
        .await;
    assert_eq!(
        (status, code(&json)),
        (StatusCode::BAD_REQUEST, "malformed"),
        "{json}"
    );

    let customer_inbox = relay.inbox(&c.customer, "after=0").await;
    let kinds: Vec<ItemKind> = customer_inbox.items.iter().map(|i| i.kind).collect();
    assert_eq!(kinds, [ItemKind::Commit, ItemKind::Message]);
    customer_view
        .apply_commit(&c.customer, &payload(&customer_inbox.items[0]), now)
        .unwrap();
    let seen = customer_view
        .open_message(&payload::<SealedMessage>(&customer_inbox.items[1]), now)
        .unwrap();
    assert_eq!(
        seen.sender_info,
        Sender::Agent {
            display_name: "OrderBot".into(),
            kind: AgentKind::Bot
        }
    );

    // Acknowledged items are gone; unacknowledged ones come back.
    let last = customer_inbox.items[1].seq;
    let (status, json) = relay
        .post(
            &c.customer,
            "/v1/inbox/ack",
            format!(r#"{{"v":1,"up_to":{last}}}"#).as_bytes(),
        )
        .await;
    assert_eq!(
        (status, json["acked"].as_u64()),
        (StatusCode::OK, Some(2)),
        "{json}"
    );
    assert!(relay.inbox(&c.customer, "after=0").await.items.is_empty());
    let admin_items = relay.inbox(&c.admin, "after=0").await.items;
    assert_eq!(admin_items.len(), 3, "open, hello, reply");
    // A fetch may acknowledge what came before in the same request.
    let second = admin_items[1].seq;
    let page = relay
        .inbox(&c.admin, &format!("after={second}&ack={second}"))
        .await;
    assert_eq!(
        page.items,
        admin_items[2..].to_vec(),
        "the items after the cursor"
    );
    assert_eq!(
        relay.inbox(&c.admin, "after=0").await.items,
        admin_items[2..].to_vec(),
        "what the fetch acknowledged is gone"
    );
    let request = relay.signed(
        &c.admin,
        "GET",
        "/v1/inbox?after=0&ack=9223372036854775808",
        b"",
    );
    let (status, json) = relay.send(request).await;
    assert_eq!(
        (status, code(&json)),
        (StatusCode::BAD_REQUEST, "malformed"),
        "{json}"
    );
}

#[tokio::test]
async fn long_poll_returns_when_an_item_arrives() {
    let mut relay = Relay::new().await;
    let c = cast(&mut relay).await;
    let now = relay.now();
    let mut rng = switchboard_protocol::Csprng::from_os().unwrap();
    let (_, open) = ThreadState::open(
        &c.customer,
        c.entity.clone(),
        &c.admin.bundle(now),
        now,
        &mut rng,
    )
    .unwrap();
    let wait = relay.signed(&c.admin, "GET", "/v1/inbox?after=0&wait=10", b"");
    let post = relay.signed(&c.customer, "POST", "/v1/threads", &encode(&open).unwrap());
    let started = std::time::Instant::now();
    let ((status, json), _) = tokio::join!(relay.send(wait), async {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        relay.send(post).await
    });
    assert_eq!(status, StatusCode::OK, "{json}");
    assert_eq!(json["items"].as_array().map(Vec::len), Some(1), "{json}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "the poll returned on the post"
    );
}

#[tokio::test]
async fn bad_inbox_queries_and_unknown_threads_are_refused() {
    let mut relay = Relay::new().await;
    let c = cast(&mut relay).await;
    let request = relay.signed(&c.admin, "GET", "/v1/inbox?wait=soon", b"");
    let (status, json) = relay.send(request).await;
    assert_eq!(
        (status, code(&json)),
        (StatusCode::BAD_REQUEST, "malformed"),
        "{json}"
    );
    let path = format!("/v1/threads/{}/messages", "00".repeat(16));
    let (status, json) = relay.post(&c.customer, &path, b"{}").await;
    assert_eq!(
        (status, code(&json)),
        (StatusCode::BAD_REQUEST, "malformed"),
        "{json}"
    );
    // A well-formed message to a thread that does not exist.
    let now = relay.now();
    let mut rng = switchboard_protocol::Csprng::from_os().unwrap();
    let (mut view, _) = ThreadState::open(
        &c.customer,
        c.entity.clone(),
        &c.admin.bundle(now),
        now,
        &mut rng,
    )
    .unwrap();
    let mut stray = view
        .seal(&c.customer, &Content::text("anyone?"), None)
        .unwrap();
    stray.header.thread = switchboard_protocol::ThreadId::from_bytes([0; 16]);
    let (status, json) = relay
        .post(&c.customer, &path, &encode(&stray).unwrap())
        .await;
    assert_eq!(
        (status, code(&json)),
        (StatusCode::NOT_FOUND, "not_found"),
        "{json}"
    );
    let (status, json) = relay
        .post(&c.customer, "/v1/threads/nothex/messages", b"{}")
        .await;
    assert_eq!(
        (status, code(&json)),
        (StatusCode::BAD_REQUEST, "malformed"),
        "{json}"
    );
}

#[tokio::test]
async fn bot_instances_share_threads_through_leases() {
    let mut relay = Relay::new().await;
    let c = cast(&mut relay).await;
    let now = relay.now();
    let mut rng = switchboard_protocol::Csprng::from_os().unwrap();
    // Two threads, both assigned to the bot.
    let mut threads = Vec::new();
    for _ in 0..2 {
        let (mut customer_view, open) = ThreadState::open(
            &c.customer,
            c.entity.clone(),
            &c.admin.bundle(now),
            now,
            &mut rng,
        )
        .unwrap();
        relay
            .post(&c.customer, "/v1/threads", &encode(&open).unwrap())
            .await;
        let mut admin_view =
            ThreadState::accept(&c.admin, &c.entity, &open, now, &mut SeenWraps::new()).unwrap();
        let bundle = c.bot.bundle(now);
        let credential = AgentCredential::issue(
            &c.admin,
            &CredentialRequest {
                entity: &c.entity,
                agent: &bundle,
                display_name: "OrderBot",
                kind: AgentKind::Bot,
                issued_at: now,
                expires_at: now.plus(3600),
            },
        )
        .unwrap();
        let assign = admin_view
            .commit(
                &c.admin,
                CommitAction::Assign {
                    agent: Box::new(Member::agent(bundle, credential)),
                },
                now,
                &mut rng,
            )
            .unwrap();
        let path = format!("/v1/threads/{}", open.thread);
        relay
            .post(
                &c.admin,
                &format!("{path}/commits"),
                &encode(&assign).unwrap(),
            )
            .await;
        customer_view
            .apply_commit(&c.customer, &assign, now)
            .unwrap();
        let m = customer_view
            .seal(&c.customer, &Content::text("hi"), None)
            .unwrap();
        relay
            .post(
                &c.customer,
                &format!("{path}/messages"),
                &encode(&m).unwrap(),
            )
            .await;
        threads.push(open.thread);
    }
    let a = relay.inbox(&c.bot, "after=0&limit=1&instance=bot-a").await;
    assert_eq!(a.items.len(), 1);
    let b = relay.inbox(&c.bot, "after=0&instance=bot-b").await;
    assert!(!b.items.is_empty());
    assert!(
        b.items.iter().all(|i| i.thread != a.items[0].thread),
        "one instance per thread"
    );
    let request = relay.signed(&c.bot, "GET", "/v1/inbox?instance=bad%20name", b"");
    let (status, json) = relay.send(request).await;
    assert_eq!(
        (status, code(&json)),
        (StatusCode::BAD_REQUEST, "malformed"),
        "{json}"
    );
    // B acks with its instance name: only its thread's items go.
    let up_to = b.items.last().unwrap().seq.max(a.items[0].seq);
    let body = format!(r#"{{"v":1,"up_to":{up_to},"instance":"bot-b"}}"#);
    let (status, json) = relay.post(&c.bot, "/v1/inbox/ack", body.as_bytes()).await;
    assert_eq!(
        (status, json["acked"].as_u64()),
        (StatusCode::OK, Some(b.items.len() as u64)),
        "{json}"
    );
}
