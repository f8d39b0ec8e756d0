//! Attacks on the relay's resources and error paths (issue 8, item 8), through the router.

use std::net::SocketAddr;

use axum::body::{Body, to_bytes};
use axum::extract::ConnectInfo;
use axum::http::{Request, StatusCode};
use serde_json::Value;
use switchboard_protocol::{
    Content, EntityId, SealedMessage, SeenWraps, ThreadState, WireType, decode, encode,
};
use switchboard_relay::http::InboxAnswer;
use tower::ServiceExt as _;

use super::{Relay, code, with_auth};

/// `request` as if it came from `addr`.
pub(super) fn from(addr: &str, mut request: Request<Body>) -> Request<Body> {
    let addr: SocketAddr = addr.parse().unwrap();
    request.extensions_mut().insert(ConnectInfo(addr));
    request
}

/// A customer, an admin with entity `acme`, and a thread between them; returns the customer's
/// and admin's views.
struct Opened {
    customer: switchboard_protocol::DeviceKeys,
    admin: switchboard_protocol::DeviceKeys,
    customer_view: ThreadState,
    admin_view: ThreadState,
    thread_path: String,
}

async fn opened(relay: &mut Relay) -> Opened {
    let (customer, admin) = (relay.device(), relay.device());
    relay.register(&customer).await;
    relay.register(&admin).await;
    let (status, json) = relay
        .post(
            &admin,
            "/v1/entities",
            br#"{"v":1,"entity":"acme","display_name":"Acme"}"#,
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{json}");
    let entity = EntityId::new("acme").unwrap();
    let now = relay.now();
    let mut rng = switchboard_protocol::Csprng::from_os().unwrap();
    let (customer_view, open) =
        ThreadState::open(&customer, entity.clone(), &admin.bundle(now), now, &mut rng).unwrap();
    let (status, json) = relay
        .post(&customer, "/v1/threads", &encode(&open).unwrap())
        .await;
    assert_eq!(status, StatusCode::CREATED, "{json}");
    let admin_view =
        ThreadState::accept(&admin, &entity, &open, now, &mut SeenWraps::new()).unwrap();
    Opened {
        customer,
        admin,
        customer_view,
        admin_view,
        thread_path: format!("/v1/threads/{}", open.thread),
    }
}

async fn raw(relay: &Relay, request: Request<Body>) -> (StatusCode, Vec<u8>) {
    let response = relay.router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = to_bytes(response.into_body(), usize::MAX).await.unwrap();
    (status, bytes.to_vec())
}

#[tokio::test]
async fn errors_outside_the_handlers_come_in_the_json_error_shape() {
    let mut relay = Relay::new().await;
    let keys = relay.device();
    relay.register(&keys).await;
    let cases = [
        ("GET", "/v1/nowhere", StatusCode::NOT_FOUND, "not_found"),
        (
            "DELETE",
            "/v1/devices",
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        ),
        (
            "GET",
            "/v1/devices/%FF%FE",
            StatusCode::BAD_REQUEST,
            "malformed",
        ),
    ];
    for (method, path, status, expected) in cases {
        let request = relay.signed(&keys, method, path, b"");
        let (got, bytes) = raw(&relay, request).await;
        let json: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        assert_eq!(
            (got, code(&json)),
            (status, expected),
            "{method} {path}: {}",
            String::from_utf8_lossy(&bytes)
        );
    }
}

#[tokio::test]
async fn cursors_above_the_storable_range_are_bad_requests() {
    let mut relay = Relay::new().await;
    let keys = relay.device();
    relay.register(&keys).await;
    let big = 1u64 << 63;
    let request = relay.signed(&keys, "GET", &format!("/v1/inbox?after={big}"), b"");
    let (status, json) = relay.send(request).await;
    assert_eq!(
        (status, code(&json)),
        (StatusCode::BAD_REQUEST, "malformed"),
        "{json}"
    );
    let body = format!(r#"{{"v":1,"up_to":{big}}}"#);
    let (status, json) = relay.post(&keys, "/v1/inbox/ack", body.as_bytes()).await;
    assert_eq!(
        (status, code(&json)),
        (StatusCode::BAD_REQUEST, "malformed"),
        "{json}"
    );
}

#[tokio::test]
async fn a_thread_whose_customer_is_the_admin_itself_is_a_bad_request() {
    let mut relay = Relay::new().await;
    let admin = relay.device();
    relay.register(&admin).await;
    relay
        .post(
            &admin,
            "/v1/entities",
            br#"{"v":1,"entity":"acme","display_name":"Acme"}"#,
        )
        .await;
    let now = relay.now();
    let mut rng = switchboard_protocol::Csprng::from_os().unwrap();
    let (_, open) = ThreadState::open(
        &admin,
        EntityId::new("acme").unwrap(),
        &admin.bundle(now),
        now,
        &mut rng,
    )
    .unwrap();
    let (status, json) = relay
        .post(&admin, "/v1/threads", &encode(&open).unwrap())
        .await;
    assert_eq!(
        (status, code(&json)),
        (StatusCode::BAD_REQUEST, "malformed"),
        "{json}"
    );
}

#[tokio::test]
async fn invented_methods_do_not_grow_the_metrics() {
    let relay = Relay::new().await;
    for i in 0..300 {
        let request = Request::builder()
            .method(format!("INVENTED{i}").as_str())
            .uri("/v1/devices")
            .body(Body::empty())
            .unwrap();
        raw(&relay, request).await;
        let request = Request::builder()
            .uri(format!("/random/path/{i}"))
            .body(Body::empty())
            .unwrap();
        raw(&relay, request).await;
    }
    let request = Request::builder()
        .uri("/metrics")
        .body(Body::empty())
        .unwrap();
    let (status, bytes) = raw(&relay, request).await;
    let text = String::from_utf8_lossy(&bytes);
    assert_eq!(status, StatusCode::OK);
    assert!(!text.contains("INVENTED"), "{text}");
    assert!(!text.contains("/random/"), "{text}");
    assert!(
        text.lines().count() < 20,
        "a bounded set of label values: {text}"
    );
}

#[tokio::test]
async fn a_message_posted_again_after_a_lost_answer_is_stored_once() {
    let mut relay = Relay::new().await;
    let mut o = opened(&mut relay).await;
    let hello = o
        .customer_view
        .seal(&o.customer, &Content::text("hello"), None)
        .unwrap();
    let path = format!("{}/messages", o.thread_path);
    let body = encode(&hello).unwrap();
    let (status, first) = relay.post(&o.customer, &path, &body).await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    let (status, again) = relay.post(&o.customer, &path, &body).await;
    assert!(status.is_success(), "{status} {again}");
    assert_eq!(again["thread_seq"], first["thread_seq"], "{again}");
    let request = relay.signed(&o.admin, "GET", "/v1/inbox?after=0", b"");
    let (_, json) = relay.send(request).await;
    let inbox: InboxAnswer = decode(json.to_string().as_bytes()).unwrap();
    assert_eq!(inbox.items.len(), 2, "the open and one copy of the message");
    // Another message under the same generation is a conflict, not stored.
    let mut other = hello.clone();
    let mut forged: Value = serde_json::from_slice(&encode(&other).unwrap()).unwrap();
    forged["ciphertext"] = Value::from("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA");
    other = decode(forged.to_string().as_bytes()).unwrap();
    let (status, json) = relay
        .post(&o.customer, &path, &encode(&other).unwrap())
        .await;
    assert_eq!(
        (status, code(&json)),
        (StatusCode::CONFLICT, "conflict"),
        "{json}"
    );
    let _ = &mut o.admin_view;
}

#[tokio::test]
async fn registration_stores_the_canonical_bundle_not_the_padding() {
    let mut relay = Relay::new().await;
    let (keys, reader) = (relay.device(), relay.device());
    relay.register(&reader).await;
    let canonical = encode(&keys.bundle(relay.now())).unwrap();
    let mut padded = canonical.clone();
    padded.splice(1..1, std::iter::repeat_n(b' ', 2000));
    let request = relay.signed(&keys, "POST", "/v1/devices", &padded);
    let (status, json) = relay.send(request).await;
    assert_eq!(status, StatusCode::CREATED, "{json}");
    let path = format!("/v1/devices/{}", keys.device());
    let request = relay.signed(&reader, "GET", &path, b"");
    let (status, served) = raw(&relay, request).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        String::from_utf8_lossy(&served),
        String::from_utf8_lossy(&canonical)
    );
}

#[tokio::test]
async fn a_bundle_padded_to_megabytes_is_refused_by_the_route_limit() {
    let mut relay = Relay::new().await;
    let keys = relay.device();
    let mut padded = encode(&keys.bundle(relay.now())).unwrap();
    padded.splice(1..1, std::iter::repeat_n(b' ', 1024 * 1024));
    let request = relay.signed(&keys, "POST", "/v1/devices", &padded);
    let (status, json) = relay.send(request).await;
    assert_eq!(
        (status, code(&json)),
        (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
        "{json}"
    );
}

#[tokio::test]
async fn a_message_over_its_kind_cap_is_refused() {
    let mut relay = Relay::new().await;
    let mut o = opened(&mut relay).await;
    let hello = o
        .customer_view
        .seal(&o.customer, &Content::text("hello"), None)
        .unwrap();
    let mut json: Value = serde_json::from_slice(&encode(&hello).unwrap()).unwrap();
    json["ciphertext"] = Value::from("A".repeat(1024 * 1024));
    let body = json.to_string().into_bytes();
    assert!(
        decode::<SealedMessage>(&body).is_ok(),
        "a valid, merely large, message"
    );
    let (status, json) = relay
        .post(&o.customer, &format!("{}/messages", o.thread_path), &body)
        .await;
    assert_eq!(
        (status, code(&json)),
        (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
        "{json}"
    );
}

#[tokio::test]
async fn inbox_answers_are_paged_by_bytes_and_always_carry_an_item() {
    let mut relay = Relay::new().await;
    let mut o = opened(&mut relay).await;
    let path = format!("{}/messages", o.thread_path);
    let text = "x".repeat(switchboard_protocol::MAX_TEXT_BYTES - 16);
    let posted = 60;
    for _ in 0..posted {
        let m = o
            .customer_view
            .seal(&o.customer, &Content::text(text.clone()), None)
            .unwrap();
        let (status, json) = relay.post(&o.customer, &path, &encode(&m).unwrap()).await;
        assert_eq!(status, StatusCode::CREATED, "{json}");
    }
    let mut after = 0;
    let mut seen = 0;
    for _ in 0..posted + 2 {
        let request = relay.signed(
            &o.admin,
            "GET",
            &format!("/v1/inbox?after={after}&limit=500"),
            b"",
        );
        let (status, bytes) = raw(&relay, request).await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            bytes.len() <= switchboard_protocol::api::MAX_INBOX_PAGE_BYTES + 64 * 1024,
            "answer of {} bytes",
            bytes.len()
        );
        let answer: InboxAnswer = decode(&bytes).unwrap();
        let Some(last) = answer.items.last() else {
            break;
        };
        after = last.seq;
        seen += answer.items.len();
    }
    assert_eq!(seen, posted + 1, "every item comes, page by page");
    let _ = &mut o.admin_view;
}

#[tokio::test]
async fn registrations_from_one_address_are_limited() {
    let mut relay = Relay::new().await;
    let mut refused = 0;
    for _ in 0..200 {
        let keys = relay.device();
        let body = encode(&keys.bundle(relay.now())).unwrap();
        let request = from(
            "192.0.2.7:40000",
            relay.signed(&keys, "POST", "/v1/devices", &body),
        );
        let (status, json) = relay.send(request).await;
        if status == StatusCode::TOO_MANY_REQUESTS {
            assert_eq!(code(&json), "rate_limited");
            refused += 1;
        } else {
            assert_eq!(status, StatusCode::CREATED, "{json}");
        }
    }
    assert!(refused > 0, "200 registrations at once from one address");
    // Another address is not affected.
    let keys = relay.device();
    let body = encode(&keys.bundle(relay.now())).unwrap();
    let request = from(
        "198.51.100.9:40000",
        relay.signed(&keys, "POST", "/v1/devices", &body),
    );
    assert_eq!(relay.send(request).await.0, StatusCode::CREATED);
}

#[tokio::test]
async fn a_request_without_valid_auth_headers_is_refused_before_its_body_is_read() {
    let mut relay = Relay::new().await;
    let keys = relay.device();
    relay.register(&keys).await;
    // A body that never ends: a relay that reads it first never answers.
    let endless = || {
        Body::from_stream(futures_util::stream::pending::<
            Result<axum::body::Bytes, std::io::Error>,
        >())
    };
    let unsigned = Request::builder()
        .method("POST")
        .uri("/v1/threads")
        .header("content-length", "4000000")
        .body(endless())
        .unwrap();
    let stale = {
        let old = switchboard_protocol::Timestamp(relay.now().0 - 3600);
        let auth = switchboard_protocol::RequestAuth::sign(
            &keys,
            "POST",
            "/v1/threads",
            b"",
            old,
            &mut relay.rng,
        );
        let mut request = with_auth(&auth, "POST", "/v1/threads", Vec::new());
        *request.body_mut() = endless();
        request
    };
    for (request, expected) in [(unsigned, "unauthenticated"), (stale, "stale_request")] {
        let answer = tokio::time::timeout(std::time::Duration::from_secs(20), relay.send(request))
            .await
            .expect("answered without waiting for the body");
        assert_eq!(
            (answer.0, code(&answer.1)),
            (StatusCode::UNAUTHORIZED, expected),
            "{}",
            answer.1
        );
    }
}

/// The item kinds' caps are what the protocol's values can need.
#[test]
fn kind_caps_hold_the_largest_honest_values() {
    use switchboard_protocol::api::ItemKind;
    assert!(ItemKind::Message.max_payload_bytes() > 2 * switchboard_protocol::MAX_TEXT_BYTES);
    assert_eq!(
        ItemKind::History.max_payload_bytes(),
        switchboard_protocol::wire::MAX_WIRE_BYTES
    );
    let _ = <SealedMessage as WireType>::WHAT;
}

#[tokio::test]
async fn a_busy_device_that_honours_retry_after_is_slowed_but_never_banned() {
    let mut relay = Relay::with_limits(super::tight()).await;
    let keys = relay.device();
    relay.register(&keys).await;
    let path = format!("/v1/devices/{}", keys.device());
    let (mut served, mut slowed) = (0, 0);
    for _ in 0..300 {
        let request = relay.signed(&keys, "GET", &path, b"");
        let response = relay.router.clone().oneshot(request).await.unwrap();
        match response.status() {
            StatusCode::OK => served += 1,
            StatusCode::TOO_MANY_REQUESTS => {
                slowed += 1;
                let wait: u64 = response.headers()["retry-after"]
                    .to_str()
                    .unwrap()
                    .parse()
                    .unwrap();
                relay
                    .now
                    .fetch_add(wait, std::sync::atomic::Ordering::SeqCst);
            }
            other => panic!("a well-behaved device got {other}"),
        }
    }
    assert!(
        slowed > 50 && served > 100,
        "{served} served, {slowed} slowed"
    );
}

#[tokio::test]
async fn limits_follow_the_role_and_the_entity_quota_is_shared() {
    use switchboard_relay::http::{Limits, Rate};
    let limits = Limits {
        customer: Rate::new(1, 3),
        admin: Rate::new(1, 50),
        entity: Rate::new(1, 60),
        ..Limits::default()
    };
    let mut relay = Relay::with_limits(limits).await;
    let o = opened(&mut relay).await;
    // The relay reads a device's role again after a minute: by then it knows who is the admin.
    relay.now.fetch_add(61, std::sync::atomic::Ordering::SeqCst);
    let count_ok = |relay: &mut Relay, keys: &switchboard_protocol::DeviceKeys, n: usize| {
        let path = format!("/v1/devices/{}", keys.device());
        let requests: Vec<_> = (0..n)
            .map(|_| relay.signed(keys, "GET", &path, b""))
            .collect();
        requests
    };
    let mut customer_ok = 0;
    for request in count_ok(&mut relay, &o.customer, 10) {
        if relay.send(request).await.0 == StatusCode::OK {
            customer_ok += 1;
        }
    }
    let mut admin_ok = 0;
    for request in count_ok(&mut relay, &o.admin, 70) {
        if relay.send(request).await.0 == StatusCode::OK {
            admin_ok += 1;
        }
    }
    assert!(
        customer_ok <= 3,
        "a customer gets its own small burst: {customer_ok}"
    );
    assert!(
        (40..=50).contains(&admin_ok),
        "the admin gets the admin burst, within the entity quota: {admin_ok}"
    );
}

#[tokio::test]
async fn bodies_past_the_unverified_budget_are_refused_as_busy() {
    use switchboard_relay::http::Limits;
    let mut relay = Relay::with_limits(Limits {
        unverified_body_bytes: 4096,
        ..Limits::default()
    })
    .await;
    let mut o = opened(&mut relay).await;
    let m = o
        .customer_view
        .seal(&o.customer, &Content::text("x".repeat(6000)), None)
        .unwrap();
    let (status, json) = relay
        .post(
            &o.customer,
            &format!("{}/messages", o.thread_path),
            &encode(&m).unwrap(),
        )
        .await;
    assert_eq!(
        (status, code(&json)),
        (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        "{json}"
    );
    let _ = &mut o.admin_view;
}

#[tokio::test]
async fn health_and_readiness_are_served() {
    let relay = Relay::new().await;
    for path in ["/healthz", "/readyz"] {
        let request = Request::builder().uri(path).body(Body::empty()).unwrap();
        let (status, _) = raw(&relay, request).await;
        assert_eq!(status, StatusCode::OK, "{path}");
    }
}
