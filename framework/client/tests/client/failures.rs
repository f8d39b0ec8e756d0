//! What a device does when the relay is away or lies about an entity.

use std::time::Duration;

use switchboard_client::{ClientError, Device, NewDevice, NewRole};

use crate::{Cast, secret};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_admin_key_is_refused_until_trusted() {
    let mut cast = Cast::new().await;
    cast.customer.open_thread(&cast.entity).await.unwrap();
    let pinned = cast.customer.pinned_admin(&cast.entity).unwrap().clone();

    // Another relay serves "acme" with another admin key (an impostor, or a replaced admin).
    let other_server = crate::relay().await;
    let other = other_server.url();
    let impostor = Device::create(
        &cast.dir.join("impostor.keystore"),
        &secret(),
        NewDevice::new(
            &other,
            NewRole::Admin {
                entity: cast.entity.clone(),
                display_name: "Acme".into(),
            },
        ),
    )
    .await
    .unwrap();
    let path = cast.dir.join("customer.keystore");
    drop(cast.customer);
    let mut customer = Device::open(&path, &secret(), Some(&other)).await.unwrap();
    customer.register().await.unwrap();
    match customer.open_thread(&cast.entity).await {
        Err(ClientError::AdminKeyChanged {
            pinned: p, served, ..
        }) => {
            assert_eq!(p, pinned.fingerprint());
            assert_eq!(served, impostor.fingerprint());
        }
        other => panic!("expected AdminKeyChanged, got {other:?}"),
    }
    // The pin survives a restart (and the new relay is remembered), so the warning does too.
    drop(customer);
    let mut customer = Device::open(&path, &secret(), None).await.unwrap();
    assert_eq!(customer.relay().url(), other);
    assert!(matches!(
        customer.open_thread(&cast.entity).await,
        Err(ClientError::AdminKeyChanged { .. })
    ));
    // After comparing fingerprints, the customer may trust the new key.
    customer.trust_admin_key(&cast.entity).unwrap();
    customer.open_thread(&cast.entity).await.unwrap();
    assert_eq!(
        customer.pinned_admin(&cast.entity).unwrap().fingerprint(),
        impostor.fingerprint()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_relay_is_a_transient_error_retried_with_backoff() {
    let cast = Cast::new().await;
    let path = cast.dir.join("customer.keystore");
    drop(cast.customer);
    // A port nobody listens on: bind one, note it, close it.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let mut customer = Device::open(&path, &secret(), Some(&format!("http://{closed}")))
        .await
        .unwrap();
    let started = tokio::time::Instant::now();
    let err = customer
        .receive_retrying(Duration::from_secs(1), Duration::from_millis(700))
        .await
        .unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert!(matches!(err, ClientError::Unreachable { .. }), "{err}");
    // It retried (100 + 200 + 400 ms of backoff fit in the patience) and then gave up.
    assert!(started.elapsed() >= Duration::from_millis(300));
    // Back on the right relay, the same device works again.
    drop(customer);
    let mut customer = Device::open(&path, &secret(), Some(&cast.relay))
        .await
        .unwrap();
    customer.receive(Duration::from_millis(10)).await.unwrap();
}

/// The admin installs a commit, then the relay is away when it posts it. The commit is kept
/// (in the keystore) and posted again once the relay is back, so the thread does not stay an
/// epoch ahead of the relay and its members: the customer follows, and the next commit works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_the_relay_missed_is_posted_again_and_the_thread_moves_on() {
    let dir = crate::scratch();
    let db = format!("sqlite://{}", dir.join("relay.db").display());
    let server = switchboard_relay::server::start(&db, "127.0.0.1:0")
        .await
        .unwrap();
    let url = server.url();
    let entity = switchboard_protocol::EntityId::new("acme").unwrap();
    let admin_path = dir.join("admin.keystore");
    let customer_path = dir.join("customer.keystore");
    let mut admin = Device::create(
        &admin_path,
        &secret(),
        NewDevice::new(
            &url,
            NewRole::Admin {
                entity: entity.clone(),
                display_name: "Acme".into(),
            },
        ),
    )
    .await
    .unwrap();
    let mut customer = Device::create(
        &customer_path,
        &secret(),
        NewDevice::new(&url, NewRole::Customer),
    )
    .await
    .unwrap();
    let thread = customer.open_thread(&entity).await.unwrap();
    crate::events(&mut admin, 1).await;

    // The relay goes away; the rekey is installed at the admin but cannot be posted.
    drop(server);
    assert!(
        admin
            .commit(thread, switchboard_protocol::CommitAction::Rekey)
            .await
            .is_err()
    );
    assert_eq!(admin.thread(thread).unwrap().epoch().0, 1);
    assert_eq!(admin.unposted_commits().len(), 1);
    drop(admin);
    drop(customer);

    // The relay is back (same database, another port); the admin restarts from its keystore.
    let server = switchboard_relay::server::start(&db, "127.0.0.1:0")
        .await
        .unwrap();
    let url = server.url();
    let mut admin = Device::open(&admin_path, &secret(), Some(&url))
        .await
        .unwrap();
    assert_eq!(admin.unposted_commits().len(), 1, "kept in the keystore");
    admin.receive(Duration::from_secs(0)).await.unwrap();
    assert!(admin.unposted_commits().is_empty());
    let mut customer = Device::open(&customer_path, &secret(), Some(&url))
        .await
        .unwrap();
    let got = crate::events(&mut customer, 1).await;
    assert!(
        matches!(got[0], switchboard_client::Event::RosterChanged { epoch, .. } if epoch.0 == 1),
        "{got:?}"
    );
    // The thread moves on: the next commit is epoch 2, accepted by the relay.
    let next = admin
        .commit(thread, switchboard_protocol::CommitAction::Rekey)
        .await
        .unwrap();
    assert_eq!(next.epoch.0, 2);
}

/// A relay session lives in the relay's memory: after a relay restart the client's next
/// request is refused under it, sent again signed (the caller sees no failure), and a new
/// session is opened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_lost_with_a_relay_restart_is_replaced_without_a_failed_request() {
    use std::sync::Arc;
    use switchboard_client::RelayClient;
    use switchboard_protocol::{CipherSuite, Csprng, DeviceId, DeviceKeys};

    let dir = crate::scratch();
    let db = format!("sqlite://{}", dir.join("relay.db").display());
    let server = switchboard_relay::server::start(&db, "127.0.0.1:0")
        .await
        .unwrap();
    let addr = server.addr();
    let mut rng = Csprng::from_os().unwrap();
    let keys = Arc::new(DeviceKeys::generate(
        DeviceId::random(&mut rng),
        CipherSuite::default(),
        &mut rng,
    ));
    let relay = RelayClient::new(&server.url(), Arc::clone(&keys)).unwrap();
    relay
        .publish_bundle(&keys.bundle(switchboard_client::now()))
        .await
        .unwrap();
    assert!(!relay.session_open(), "one signed request first");
    relay.device_bundle(keys.device()).await.unwrap();
    assert!(relay.session_open());
    relay.device_bundle(keys.device()).await.unwrap();

    server.stop().await.unwrap();
    let server = switchboard_relay::server::start(&db, &addr.to_string())
        .await
        .unwrap();
    relay.device_bundle(keys.device()).await.unwrap();
    assert!(!relay.session_open(), "the forgotten session was dropped");
    relay.device_bundle(keys.device()).await.unwrap();
    assert!(relay.session_open(), "and a new one opened");
    server.stop().await.unwrap();
    std::fs::remove_dir_all(&dir).ok();
}
