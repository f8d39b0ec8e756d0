//! The relay's database holds no plaintext: known texts sent through the relay appear nowhere in
//! the database files (main file and write-ahead log), in any table.

use switchboard_protocol::{
    AgentCredential, AgentKind, CommitAction, Content, CredentialRequest, Member, SeenWraps,
    ThreadState, encode,
};

use super::Relay;

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn database_files_hold_no_message_text() {
    let dir = std::env::temp_dir().join(format!("switchboard-plaintext-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join("relay.db");
    let _ = std::fs::remove_file(&db);
    let mut relay = Relay::on(&format!("sqlite://{}", db.display())).await;
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
    relay.send(request).await;
    let now = relay.now();
    let entity = switchboard_protocol::EntityId::new("acme").unwrap();
    let mut rng = switchboard_protocol::Csprng::from_os().unwrap();
    let (mut customer_view, open) =
        ThreadState::open(&customer, entity.clone(), &admin.bundle(now), now, &mut rng).unwrap();
    relay
        .post(&customer, "/v1/threads", &encode(&open).unwrap())
        .await;
    let mut admin_view =
        ThreadState::accept(&admin, &entity, &open, now, &mut SeenWraps::new()).unwrap();
    let bundle = bot.bundle(now);
    let credential = AgentCredential::issue(
        &admin,
        &CredentialRequest {
            entity: &entity,
            agent: &bundle,
            display_name: "OrderBot",
            kind: AgentKind::Bot,
            issued_at: now,
            expires_at: now.plus(60),
        },
    )
    .unwrap();
    let assign = admin_view
        .commit(
            &admin,
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
            &admin,
            &format!("{path}/commits"),
            &encode(&assign).unwrap(),
        )
        .await;
    customer_view.apply_commit(&customer, &assign, now).unwrap();
    let mut bot_view = ThreadState::join(
        &bot,
        &entity,
        admin.device(),
        admin.identity_public(),
        &assign,
        now,
    )
    .unwrap();

    let texts = [
        "CARD-NUMBER-4242-4242-4242-4242",
        "my password is hunter2-PLAINTEXT",
        "REFUND-APPROVED-ORDER-9931",
    ];
    let secrets: Vec<Vec<u8>> = [customer_view
        .epoch_secret(customer_view.epoch())
        .unwrap()
        .as_bytes()
        .to_vec()]
    .into();
    let m0 = customer_view
        .seal(&customer, &Content::text(texts[0]), None)
        .unwrap();
    let m1 = customer_view
        .seal(&customer, &Content::text(texts[1]), None)
        .unwrap();
    let m2 = bot_view.seal(&bot, &Content::text(texts[2]), None).unwrap();
    for (keys, m) in [(&customer, &m0), (&customer, &m1), (&bot, &m2)] {
        let (status, json) = relay
            .post(keys, &format!("{path}/messages"), &encode(m).unwrap())
            .await;
        assert_eq!(status, axum::http::StatusCode::CREATED, "{json}");
    }

    // Every byte the database wrote: the main file and the write-ahead log.
    let mut bytes = std::fs::read(&db).unwrap();
    if let Ok(wal) = std::fs::read(dir.join("relay.db-wal")) {
        bytes.extend_from_slice(&wal);
    }
    assert!(bytes.len() > 4096, "the database holds data");
    assert!(
        contains(&bytes, open.thread.to_string().as_bytes()),
        "routing metadata is stored (sanity check of the scan)"
    );
    for text in texts {
        assert!(
            !contains(&bytes, text.as_bytes()),
            "plaintext {text:?} found in the database"
        );
    }
    for secret in secrets {
        assert!(
            !contains(&bytes, &secret),
            "an epoch secret found in the database"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
