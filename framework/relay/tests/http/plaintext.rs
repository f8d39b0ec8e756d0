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

/// Sends known texts through a relay on `url`; returns the texts, an epoch secret and the thread
/// id (which the database must hold, as a sanity check of the scan).
async fn send_known_texts(url: &str) -> (Vec<&'static str>, Vec<u8>, String) {
    let mut relay = Relay::on(url).await;
    let (customer, admin, bot) = (relay.device(), relay.device(), relay.device());
    for k in [&customer, &admin, &bot] {
        relay.register(k).await;
    }
    // A fresh entity name: PostgreSQL runs share one database.
    let name = format!(
        "e{}",
        &switchboard_protocol::DeviceId::random(&mut relay.rng).to_string()[..12]
    );
    let body = format!(r#"{{"v":1,"entity":"{name}","display_name":"Acme"}}"#);
    let request = relay.signed(&admin, "POST", "/v1/entities", body.as_bytes());
    let (status, json) = relay.send(request).await;
    assert_eq!(status, axum::http::StatusCode::CREATED, "{json}");
    let now = relay.now();
    let entity = switchboard_protocol::EntityId::new(name).unwrap();
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
        &mut switchboard_protocol::DeviceMemory::new(),
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

    let secret = secrets.into_iter().next().unwrap();
    (texts.to_vec(), secret, open.thread.to_string())
}

#[tokio::test]
async fn sqlite_database_files_hold_no_message_text() {
    let dir = std::env::temp_dir().join(format!("switchboard-plaintext-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join("relay.db");
    let _ = std::fs::remove_file(&db);
    let (texts, secret, thread) = send_known_texts(&format!("sqlite://{}", db.display())).await;
    // Every byte the database wrote: the main file and the write-ahead log.
    let mut bytes = std::fs::read(&db).unwrap();
    if let Ok(wal) = std::fs::read(dir.join("relay.db-wal")) {
        bytes.extend_from_slice(&wal);
    }
    assert!(bytes.len() > 4096, "the database holds data");
    assert!(
        contains(&bytes, thread.as_bytes()),
        "routing metadata is stored (sanity check of the scan)"
    );
    for text in texts {
        assert!(
            !contains(&bytes, text.as_bytes()),
            "plaintext {text:?} found in the database"
        );
    }
    assert!(
        !contains(&bytes, &secret),
        "an epoch secret found in the database"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn postgres_tables_hold_no_message_text() {
    let Ok(url) = std::env::var("SWITCHBOARD_TEST_PG") else {
        let _ = std::io::Write::write_all(
            &mut std::io::stderr(),
            b"SKIPPED: PostgreSQL plaintext scan (set SWITCHBOARD_TEST_PG)\n",
        );
        return;
    };
    let (texts, secret, thread) = send_known_texts(&url).await;
    // Every row of every relay table, as PostgreSQL's text form (bytea as hex).
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&url)
        .await
        .unwrap();
    let tables: Vec<(String,)> = sqlx::query_as(
        "SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'public' AND table_type = 'BASE TABLE'",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert!(tables.len() >= 7, "{tables:?}");
    let mut dump = String::new();
    for (table,) in &tables {
        let rows: Vec<(String,)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT t::text FROM \"{table}\" t"
        )))
        .fetch_all(&pool)
        .await
        .unwrap();
        for (row,) in rows {
            dump.push_str(&row);
            dump.push('\n');
        }
    }
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    assert!(
        dump.contains(&thread),
        "routing metadata is stored (sanity check of the scan)"
    );
    for text in texts {
        assert!(!dump.contains(text), "plaintext {text:?} found");
        assert!(
            !dump.contains(&hex(text.as_bytes())),
            "plaintext {text:?} found as bytea"
        );
    }
    assert!(
        !dump.contains(&hex(&secret)),
        "an epoch secret found as bytea"
    );
    pool.close().await;
}
