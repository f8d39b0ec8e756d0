//! KEM key rotation at the relay: a device publishes a newer bundle; an older one never
//! replaces it.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use switchboard_protocol::{DeviceKeys, KeyBundle, decode, encode};

use super::{Relay, code};

fn post(relay: &mut Relay, keys: &DeviceKeys, bundle: &KeyBundle) -> Request<Body> {
    let body = encode(bundle).unwrap();
    relay.signed(keys, "POST", "/v1/devices", &body)
}

#[tokio::test]
async fn older_bundle_cannot_replace_a_newer_registration() {
    let mut relay = Relay::new().await;
    let reader = relay.device();
    relay.register(&reader).await;
    let mut keys = relay.device();
    let t0 = relay.now();
    let first = keys.bundle(t0);
    let request = post(&mut relay, &keys, &first);
    let (status, json) = relay.send(request).await;
    assert_eq!(status, StatusCode::CREATED, "{json}");

    // The device rotates its KEM key and publishes a newer bundle: the relay serves it.
    let mut rng = switchboard_protocol::Csprng::from_os().unwrap();
    keys.rotate_kem(t0.plus(10), &mut rng);
    let newer = keys.bundle(t0.plus(10));
    let request = post(&mut relay, &keys, &newer);
    let (status, json) = relay.send(request).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    let path = format!("/v1/devices/{}", keys.device());
    let served = |relay: &mut Relay| relay.signed(&reader, "GET", &path, b"");
    let request = served(&mut relay);
    let (_, json) = relay.send(request).await;
    let bundle: KeyBundle = decode(json.to_string().as_bytes()).unwrap();
    assert_eq!(bundle, newer);

    // Publishing the same bundle again is fine (a retried registration).
    let request = post(&mut relay, &keys, &newer);
    let (status, json) = relay.send(request).await;
    assert_eq!(status, StatusCode::OK, "{json}");

    // The old bundle (a stale keystore restored from a backup, or a replay) is refused, as is
    // a different bundle with the same created_at: the newer key stays published.
    let request = post(&mut relay, &keys, &first);
    let (status, json) = relay.send(request).await;
    assert_eq!(
        (status, code(&json)),
        (StatusCode::CONFLICT, "conflict"),
        "an older bundle replaced the newer one: {json}"
    );
    keys.rotate_kem(t0.plus(10), &mut rng);
    let same_time = keys.bundle(t0.plus(10));
    let request = post(&mut relay, &keys, &same_time);
    let (status, json) = relay.send(request).await;
    assert_eq!(status, StatusCode::CONFLICT, "{json}");
    let request = served(&mut relay);
    let (_, json) = relay.send(request).await;
    let bundle: KeyBundle = decode(json.to_string().as_bytes()).unwrap();
    assert_eq!(bundle, newer);
}

/// Many devices behind one address (a proxy, a NAT) must still rotate their keys when that
/// address has spent its registration budget: a registered device publishing a newer bundle is
/// charged to its own limit, not to its address's.
#[tokio::test]
async fn rotations_are_not_charged_to_the_address_registration_limit() {
    let mut relay = Relay::new().await;
    let addr = "192.0.2.44:40000";
    let mut keys = relay.device();
    let t0 = relay.now();
    let request = super::robustness::from(addr, post(&mut relay, &keys, &keys.bundle(t0)));
    assert_eq!(relay.send(request).await.0, StatusCode::CREATED);
    // New devices from the same address until the address is refused.
    let mut refused = false;
    for _ in 0..500 {
        let other = relay.device();
        let request = super::robustness::from(addr, post(&mut relay, &other, &other.bundle(t0)));
        if relay.send(request).await.0 == StatusCode::TOO_MANY_REQUESTS {
            refused = true;
            break;
        }
    }
    assert!(refused, "the address's registration budget was never spent");
    let mut rng = switchboard_protocol::Csprng::from_os().unwrap();
    keys.rotate_kem(t0.plus(5), &mut rng);
    let newer = keys.bundle(t0.plus(5));
    let request = super::robustness::from(addr, post(&mut relay, &keys, &newer));
    let (status, json) = relay.send(request).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "a rotation was refused with the address: {json}"
    );
}

/// A bundle dated far ahead would make every genuine later rotation "older" (refused), so
/// whoever stole the identity key could pin its own KEM key for good.
#[tokio::test]
async fn a_bundle_dated_in_the_future_is_refused() {
    let mut relay = Relay::new().await;
    let mut keys = relay.device();
    let t0 = relay.now();
    let request = post(&mut relay, &keys, &keys.bundle(t0));
    assert_eq!(relay.send(request).await.0, StatusCode::CREATED);
    let mut rng = switchboard_protocol::Csprng::from_os().unwrap();
    keys.rotate_kem(t0.plus(10), &mut rng);
    let far = keys.bundle(t0.plus(10 * 365 * 86_400));
    let request = post(&mut relay, &keys, &far);
    let (status, json) = relay.send(request).await;
    assert_eq!(
        (status, code(&json)),
        (StatusCode::BAD_REQUEST, "malformed"),
        "{json}"
    );
}
