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
