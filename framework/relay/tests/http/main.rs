//! Handler tests through `Router::oneshot`, no sockets: every endpoint and each refusal.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    missing_docs,
    unreachable_pub
)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::body::{Body, to_bytes};
use axum::http::{Request, StatusCode};
use serde_json::Value;
use switchboard_protocol::{
    CipherSuite, Csprng, DeviceId, DeviceKeys, KeyBundle, RequestAuth, Timestamp, decode, encode,
};
use switchboard_relay::http::{Clock, DirectoryRecord, Limits, Rate};
use switchboard_relay::{RelayState, app};
use tower::ServiceExt as _;

mod plaintext;
mod robustness;
mod rotation;
mod schemas;
mod sessions;
mod threads;

const T0: u64 = 1_800_000_000;

struct Relay {
    router: axum::Router,
    now: Arc<AtomicU64>,
    rng: Csprng,
}

impl Relay {
    async fn new() -> Self {
        Self::with_limits(Limits::default()).await
    }

    async fn with_limits(limits: Limits) -> Self {
        Self::build("sqlite::memory:", limits).await
    }

    /// A relay over the SQLite database at `url`.
    async fn on(url: &str) -> Self {
        Self::build(url, Limits::default()).await
    }

    async fn build(url: &str, limits: Limits) -> Self {
        let store: Arc<dyn switchboard_relay::Store> =
            Arc::from(switchboard_relay::store::open(url).await.unwrap());
        let now = Arc::new(AtomicU64::new(T0));
        let clock_now = Arc::clone(&now);
        let clock: Clock = Arc::new(move || Timestamp(clock_now.load(Ordering::SeqCst)));
        Self {
            router: app(RelayState::new(store, clock).with_limits(limits)),
            now,
            rng: Csprng::from_os().unwrap(),
        }
    }

    fn now(&self) -> Timestamp {
        Timestamp(self.now.load(Ordering::SeqCst))
    }

    fn device(&mut self) -> DeviceKeys {
        DeviceKeys::generate(
            DeviceId::random(&mut self.rng),
            CipherSuite::default(),
            &mut self.rng,
        )
    }

    /// A request signed by `keys` at the relay's current time.
    fn signed(
        &mut self,
        keys: &DeviceKeys,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> Request<Body> {
        let auth = RequestAuth::sign(keys, method, path, body, self.now(), &mut self.rng);
        with_auth(&auth, method, path, body.to_vec())
    }

    async fn send(&self, request: Request<Body>) -> (StatusCode, Value) {
        let response = self.router.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let bytes = to_bytes(response.into_body(), usize::MAX).await.unwrap();
        let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (status, json)
    }

    async fn register(&mut self, keys: &DeviceKeys) -> (StatusCode, Value) {
        let body = encode(&keys.bundle(self.now())).unwrap();
        let request = self.signed(keys, "POST", "/v1/devices", &body);
        self.send(request).await
    }
}

fn with_auth(auth: &RequestAuth, method: &str, path: &str, body: Vec<u8>) -> Request<Body> {
    with_headers(auth.header_values(), method, path, body)
}

/// A JSON request with the authentication headers `headers`.
fn with_headers(
    headers: impl IntoIterator<Item = (&'static str, String)>,
    method: &str,
    path: &str,
    body: Vec<u8>,
) -> Request<Body> {
    let mut builder = Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", "application/json");
    for (name, value) in headers {
        builder = builder.header(name, value);
    }
    builder.body(Body::from(body)).unwrap()
}

fn code(json: &Value) -> &str {
    json["error"]["code"].as_str().unwrap_or("<no error code>")
}

#[tokio::test]
async fn registration_creates_then_updates() {
    let mut relay = Relay::new().await;
    let keys = relay.device();
    let (status, json) = relay.register(&keys).await;
    assert_eq!(status, StatusCode::CREATED, "{json}");
    assert_eq!(
        json["fingerprint"],
        keys.bundle(relay.now()).fingerprint().to_string()
    );
    let (status, json) = relay.register(&keys).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    assert_eq!(json["created"], false);
}

#[tokio::test]
async fn registration_signed_by_another_key_is_refused() {
    let mut relay = Relay::new().await;
    let victim = relay.device();
    let body = encode(&victim.bundle(relay.now())).unwrap();
    // The thief signs as the victim's device id with its own key.
    let forged = DeviceKeys::from_seed(victim.device(), CipherSuite::default(), &[9; 32]);
    let request = relay.signed(&forged, "POST", "/v1/devices", &body);
    let (status, json) = relay.send(request).await;
    assert_eq!(
        (status, code(&json)),
        (StatusCode::UNAUTHORIZED, "bad_signature"),
        "{json}"
    );
}

#[tokio::test]
async fn registration_of_a_taken_device_id_with_another_key_conflicts() {
    let mut relay = Relay::new().await;
    let keys = relay.device();
    relay.register(&keys).await;
    let impostor = DeviceKeys::from_seed(keys.device(), CipherSuite::default(), &[7; 32]);
    let (status, json) = relay.register(&impostor).await;
    assert_eq!(
        (status, code(&json)),
        (StatusCode::CONFLICT, "conflict"),
        "{json}"
    );
}

#[tokio::test]
async fn unauthenticated_request_is_refused() {
    let mut relay = Relay::new().await;
    let keys = relay.device();
    let body = encode(&keys.bundle(relay.now())).unwrap();
    let request = Request::builder()
        .method("POST")
        .uri("/v1/devices")
        .body(Body::from(body))
        .unwrap();
    let (status, json) = relay.send(request).await;
    assert_eq!(
        (status, code(&json)),
        (StatusCode::UNAUTHORIZED, "unauthenticated"),
        "{json}"
    );
    assert!(
        json["error"]["message"]
            .as_str()
            .unwrap()
            .contains("x-sb-device")
    );
    let request = Request::builder()
        .uri(format!("/v1/devices/{}", keys.device()))
        .body(Body::empty())
        .unwrap();
    let (status, json) = relay.send(request).await;
    assert_eq!(
        (status, code(&json)),
        (StatusCode::UNAUTHORIZED, "unauthenticated"),
        "{json}"
    );
}

#[tokio::test]
async fn stale_request_is_refused() {
    let mut relay = Relay::new().await;
    let keys = relay.device();
    relay.register(&keys).await;
    let path = format!("/v1/devices/{}", keys.device());
    let request = relay.signed(&keys, "GET", &path, b"");
    relay.now.fetch_add(301, Ordering::SeqCst);
    let (status, json) = relay.send(request).await;
    assert_eq!(
        (status, code(&json)),
        (StatusCode::UNAUTHORIZED, "stale_request"),
        "{json}"
    );
}

#[tokio::test]
async fn replayed_request_is_refused() {
    let mut relay = Relay::new().await;
    let keys = relay.device();
    relay.register(&keys).await;
    let path = format!("/v1/devices/{}", keys.device());
    let auth = RequestAuth::sign(&keys, "GET", &path, b"", relay.now(), &mut relay.rng);
    let (status, _) = relay.send(with_auth(&auth, "GET", &path, Vec::new())).await;
    assert_eq!(status, StatusCode::OK);
    let (status, json) = relay.send(with_auth(&auth, "GET", &path, Vec::new())).await;
    assert_eq!(
        (status, code(&json)),
        (StatusCode::UNAUTHORIZED, "replayed_request"),
        "{json}"
    );
}

#[tokio::test]
async fn unknown_device_is_refused() {
    let mut relay = Relay::new().await;
    let stranger = relay.device();
    let request = relay.signed(&stranger, "GET", "/v1/entities/acme", b"");
    let (status, json) = relay.send(request).await;
    assert_eq!(
        (status, code(&json)),
        (StatusCode::UNAUTHORIZED, "unknown_device"),
        "{json}"
    );
}

#[tokio::test]
async fn tampered_body_fails_the_signature() {
    let mut relay = Relay::new().await;
    let keys = relay.device();
    relay.register(&keys).await;
    let body = br#"{"v":1,"entity":"acme","display_name":"Acme"}"#;
    let auth = RequestAuth::sign(
        &keys,
        "POST",
        "/v1/entities",
        body,
        relay.now(),
        &mut relay.rng,
    );
    let tampered = br#"{"v":1,"entity":"evil","display_name":"Acme"}"#.to_vec();
    let (status, json) = relay
        .send(with_auth(&auth, "POST", "/v1/entities", tampered))
        .await;
    assert_eq!(
        (status, code(&json)),
        (StatusCode::UNAUTHORIZED, "bad_signature"),
        "{json}"
    );
}

#[tokio::test]
async fn malformed_json_is_refused() {
    let mut relay = Relay::new().await;
    let keys = relay.device();
    for body in [&b"{not json"[..], b"[]", br#"{"v":1,"device":"zz"}"#] {
        let request = relay.signed(&keys, "POST", "/v1/devices", body);
        let (status, json) = relay.send(request).await;
        assert_eq!(
            (status, code(&json)),
            (StatusCode::BAD_REQUEST, "malformed"),
            "{json}"
        );
    }
}

#[tokio::test]
async fn unknown_version_is_refused() {
    let mut relay = Relay::new().await;
    let keys = relay.device();
    let mut bundle: Value =
        serde_json::from_slice(&encode(&keys.bundle(relay.now())).unwrap()).unwrap();
    bundle["v"] = Value::from(2);
    let body = bundle.to_string().into_bytes();
    let request = relay.signed(&keys, "POST", "/v1/devices", &body);
    let (status, json) = relay.send(request).await;
    assert_eq!(
        (status, code(&json)),
        (StatusCode::BAD_REQUEST, "unsupported_version"),
        "{json}"
    );
}

#[tokio::test]
async fn too_large_body_is_refused() {
    let mut relay = Relay::new().await;
    let keys = relay.device();
    let body = vec![b' '; switchboard_protocol::wire::MAX_WIRE_BYTES + 1];
    let request = relay.signed(&keys, "POST", "/v1/devices", &body);
    let (status, json) = relay.send(request).await;
    assert_eq!(
        (status, code(&json)),
        (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
        "{json}"
    );
}

#[tokio::test]
async fn entity_directory_serves_the_admin_bundle() {
    let mut relay = Relay::new().await;
    let (admin, customer, other) = (relay.device(), relay.device(), relay.device());
    for k in [&admin, &customer, &other] {
        relay.register(k).await;
    }
    let body = br#"{"v":1,"entity":"acme","display_name":"Acme Shop"}"#;
    let request = relay.signed(&admin, "POST", "/v1/entities", body);
    let (status, json) = relay.send(request).await;
    assert_eq!(status, StatusCode::CREATED, "{json}");
    // Another device cannot take the name.
    let request = relay.signed(&other, "POST", "/v1/entities", body);
    let (status, json) = relay.send(request).await;
    assert_eq!(
        (status, code(&json)),
        (StatusCode::CONFLICT, "conflict"),
        "{json}"
    );
    // A customer fetches the record and gets the admin's verifiable bundle.
    let request = relay.signed(&customer, "GET", "/v1/entities/acme", b"");
    let (status, json) = relay.send(request).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    let record: DirectoryRecord = decode(json.to_string().as_bytes()).unwrap();
    record.admin.verify().unwrap();
    assert_eq!(record.admin.identity_key, admin.identity_public());
    assert_eq!(record.display_name, "Acme Shop");
    // Unknown entities and bad names.
    let request = relay.signed(&customer, "GET", "/v1/entities/globex", b"");
    let (status, json) = relay.send(request).await;
    assert_eq!(
        (status, code(&json)),
        (StatusCode::NOT_FOUND, "not_found"),
        "{json}"
    );
    let request = relay.signed(&customer, "GET", "/v1/entities/Not%20Valid", b"");
    let (status, json) = relay.send(request).await;
    assert_eq!(
        (status, code(&json)),
        (StatusCode::BAD_REQUEST, "malformed"),
        "{json}"
    );
    // Bad display names.
    let request = relay.signed(
        &other,
        "POST",
        "/v1/entities",
        br#"{"v":1,"entity":"x","display_name":""}"#,
    );
    let (status, json) = relay.send(request).await;
    assert_eq!(
        (status, code(&json)),
        (StatusCode::BAD_REQUEST, "malformed"),
        "{json}"
    );
}

#[tokio::test]
async fn device_bundles_are_served_to_registered_devices() {
    let mut relay = Relay::new().await;
    let (a, b) = (relay.device(), relay.device());
    relay.register(&a).await;
    relay.register(&b).await;
    let path = format!("/v1/devices/{}", b.device());
    let request = relay.signed(&a, "GET", &path, b"");
    let (status, json) = relay.send(request).await;
    assert_eq!(status, StatusCode::OK, "{json}");
    let bundle: KeyBundle = decode(json.to_string().as_bytes()).unwrap();
    assert_eq!(bundle.identity_key, b.identity_public());
    let missing = format!("/v1/devices/{}", DeviceId::from_bytes([0; 16]));
    let request = relay.signed(&a, "GET", &missing, b"");
    let (status, json) = relay.send(request).await;
    assert_eq!(
        (status, code(&json)),
        (StatusCode::NOT_FOUND, "not_found"),
        "{json}"
    );
}

fn tight() -> Limits {
    Limits {
        strikes_to_ban: 3,
        first_ban_secs: 60,
        max_ban_secs: 100,
        ..Limits::uniform(Rate::new(1, 3))
    }
}

#[tokio::test]
async fn rate_limited_device_gets_429_with_retry_after() {
    let mut relay = Relay::with_limits(tight()).await;
    let keys = relay.device();
    relay.register(&keys).await;
    let path = format!("/v1/devices/{}", keys.device());
    for _ in 0..3 {
        let request = relay.signed(&keys, "GET", &path, b"");
        assert_eq!(relay.send(request).await.0, StatusCode::OK);
    }
    let request = relay.signed(&keys, "GET", &path, b"");
    let response = relay.router.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(response.headers()["retry-after"], "1");
    // A second later one more request is allowed.
    relay.now.fetch_add(1, Ordering::SeqCst);
    let request = relay.signed(&keys, "GET", &path, b"");
    assert_eq!(relay.send(request).await.0, StatusCode::OK);
}

#[tokio::test]
async fn device_that_keeps_exceeding_its_limit_is_banned_and_bans_escalate() {
    let mut relay = Relay::with_limits(tight()).await;
    let keys = relay.device();
    relay.register(&keys).await;
    let path = format!("/v1/devices/{}", keys.device());
    let mut last = (StatusCode::OK, Value::Null);
    for _ in 0..6 {
        let request = relay.signed(&keys, "GET", &path, b"");
        last = relay.send(request).await;
    }
    assert_eq!(
        (last.0, code(&last.1)),
        (StatusCode::FORBIDDEN, "banned"),
        "{}",
        last.1
    );
    // Still banned 59 s later, free after 60 s.
    relay.now.fetch_add(59, Ordering::SeqCst);
    let request = relay.signed(&keys, "GET", &path, b"");
    let (status, json) = relay.send(request).await;
    assert_eq!(
        (status, code(&json)),
        (StatusCode::FORBIDDEN, "banned"),
        "{json}"
    );
    relay.now.fetch_add(1, Ordering::SeqCst);
    let request = relay.signed(&keys, "GET", &path, b"");
    assert_eq!(relay.send(request).await.0, StatusCode::OK);
    // Offending again: the second ban is longer (doubled, capped at 100 s).
    for _ in 0..6 {
        let request = relay.signed(&keys, "GET", &path, b"");
        last = relay.send(request).await;
    }
    assert_eq!(code(&last.1), "banned");
    assert!(
        last.1["error"]["message"]
            .as_str()
            .unwrap()
            .contains("100 s"),
        "{}",
        last.1
    );
}

#[tokio::test]
async fn forged_requests_do_not_count_against_a_device() {
    let mut relay = Relay::with_limits(tight()).await;
    let victim = relay.device();
    relay.register(&victim).await;
    let forger = DeviceKeys::from_seed(victim.device(), CipherSuite::default(), &[3; 32]);
    let path = format!("/v1/devices/{}", victim.device());
    for _ in 0..20 {
        let request = relay.signed(&forger, "GET", &path, b"");
        assert_eq!(code(&relay.send(request).await.1), "bad_signature");
    }
    let request = relay.signed(&victim, "GET", &path, b"");
    assert_eq!(relay.send(request).await.0, StatusCode::OK);
}

#[tokio::test]
async fn openapi_document_is_served_and_lists_every_route() {
    let relay = Relay::new().await;
    let request = Request::builder()
        .uri("/openapi.json")
        .body(Body::empty())
        .unwrap();
    let (status, doc) = relay.send(request).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(doc["openapi"], "3.1.0");
    let routes = [
        ("/v1/devices", "post"),
        ("/v1/devices/{device}", "get"),
        ("/v1/sessions", "post"),
        ("/v1/entities", "post"),
        ("/v1/entities/{entity}", "get"),
        ("/v1/threads", "post"),
        ("/v1/threads/{thread}/commits", "post"),
        ("/v1/threads/{thread}/messages", "post"),
        ("/v1/threads/{thread}/history", "post"),
        ("/v1/inbox", "get"),
        ("/v1/inbox/ack", "post"),
        ("/v1/inbox/stream", "get"),
        ("/metrics", "get"),
        ("/healthz", "get"),
        ("/readyz", "get"),
        ("/openapi.json", "get"),
    ];
    assert_eq!(doc["paths"].as_object().unwrap().len(), routes.len());
    for (path, method) in routes {
        assert!(
            doc["paths"][path][method].is_object(),
            "{method} {path} is documented"
        );
        // And the route exists: anything but 404/405 from the router.
        let request = Request::builder()
            .method(method.to_uppercase().as_str())
            .uri(path)
            .body(Body::empty())
            .unwrap();
        let (status, _) = relay.send(request).await;
        assert!(
            status != StatusCode::NOT_FOUND || path.contains('{'),
            "{method} {path}: {status}"
        );
        assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
    }
    let codes: Vec<&str> =
        doc["components"]["schemas"]["Error"]["properties"]["error"]["properties"]["code"]["enum"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap())
            .collect();
    let shared: Vec<&str> = switchboard_protocol::api::ErrorCode::ALL
        .iter()
        .map(|c| c.as_str())
        .collect();
    assert_eq!(codes, shared, "every stable error code is documented");
}
