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
