//! Relay sessions (`POST /v1/sessions`, then a MAC per request): each attack on them refused.

use axum::body::Body;
use axum::http::{Request, StatusCode};
use switchboard_protocol::session::{
    SessionAuth, SessionGrant, SessionId, SessionKey, SessionOffer,
};
use switchboard_protocol::{DeviceKeys, decode, encode};
use switchboard_relay::http::Limits;

use crate::{Relay, code};

/// A request authenticated by `auth`.
fn with_session(auth: &SessionAuth, method: &str, path: &str, body: Vec<u8>) -> Request<Body> {
    crate::with_headers(auth.header_values(), method, path, body)
}

/// Opens a session for `keys`: its id and key, or the refusal.
async fn open(
    relay: &mut Relay,
    keys: &DeviceKeys,
) -> Result<(SessionId, SessionKey), (StatusCode, String)> {
    let offer = SessionOffer::new(&mut relay.rng);
    let body = encode(&offer.request()).unwrap();
    let request = relay.signed(keys, "POST", "/v1/sessions", &body);
    let (status, json) = relay.send(request).await;
    if status != StatusCode::CREATED {
        return Err((status, code(&json).to_owned()));
    }
    let grant: SessionGrant = decode(json.to_string().as_bytes()).unwrap();
    assert_eq!(grant.expires_at.0, relay.now().0 + 3600);
    Ok(offer.accept(keys.device(), &grant).unwrap())
}

const INBOX: &str = "/v1/inbox?after=0&limit=10&wait=0";

async fn inbox(
    relay: &Relay,
    id: &SessionId,
    key: &SessionKey,
    counter: u64,
) -> (StatusCode, String) {
    let auth = key.authenticate(id, counter, "GET", INBOX, b"");
    let (status, json) = relay
        .send(with_session(&auth, "GET", INBOX, Vec::new()))
        .await;
    (status, code(&json).to_owned())
}

#[tokio::test]
async fn a_session_authenticates_requests_once_each_and_refuses_every_forgery() {
    let mut relay = Relay::new().await;
    let alice = relay.device();
    relay.register(&alice).await;
    let (id, key) = open(&mut relay, &alice).await.unwrap();
    assert_eq!(inbox(&relay, &id, &key, 0).await.0, StatusCode::OK);
    assert_eq!(inbox(&relay, &id, &key, 2).await.0, StatusCode::OK);

    // The same request again (a captured one replayed): refused.
    assert_eq!(
        inbox(&relay, &id, &key, 0).await,
        (StatusCode::UNAUTHORIZED, "replayed_request".into())
    );
    // Out of order within the window is fine, once.
    assert_eq!(inbox(&relay, &id, &key, 1).await.0, StatusCode::OK);
    assert_eq!(inbox(&relay, &id, &key, 1).await.1, "replayed_request");

    // A captured MAC on another path, method or body: refused.
    let auth = key.authenticate(&id, 10, "GET", INBOX, b"");
    let other = "/v1/inbox?after=5&limit=10&wait=0";
    let (status, json) = relay
        .send(with_session(&auth, "GET", other, Vec::new()))
        .await;
    assert_eq!(
        (status, code(&json)),
        (StatusCode::UNAUTHORIZED, "bad_signature")
    );
    let ack = br#"{"v":1,"up_to":0}"#.to_vec();
    let auth = key.authenticate(&id, 11, "POST", "/v1/inbox/ack", br#"{"v":1,"up_to":1}"#);
    let (status, json) = relay
        .send(with_session(&auth, "POST", "/v1/inbox/ack", ack.clone()))
        .await;
    assert_eq!(
        (status, code(&json)),
        (StatusCode::UNAUTHORIZED, "bad_signature")
    );
    // The genuine one with that counter still goes through: a forgery spends no counter.
    let auth = key.authenticate(&id, 11, "POST", "/v1/inbox/ack", &ack);
    let (status, json) = relay
        .send(with_session(&auth, "POST", "/v1/inbox/ack", ack))
        .await;
    assert_eq!(status, StatusCode::OK, "{json}");

    // Another device that knows alice's session id but not its key: refused.
    let mallory = relay.device();
    relay.register(&mallory).await;
    let (_, mallory_key) = open(&mut relay, &mallory).await.unwrap();
    assert_eq!(
        inbox(&relay, &id, &mallory_key, 20).await.1,
        "bad_signature"
    );
    // A made-up session: refused before its body is read.
    assert_eq!(
        inbox(&relay, &[7; 16], &key, 0).await,
        (StatusCode::UNAUTHORIZED, "unknown_session".into())
    );

    // Too far below the highest counter: refused.
    assert_eq!(inbox(&relay, &id, &key, 5000).await.0, StatusCode::OK);
    assert_eq!(inbox(&relay, &id, &key, 3).await.1, "replayed_request");

    // Malformed session headers: a clear refusal, not a signature check.
    let request = Request::builder()
        .uri(INBOX)
        .header("x-sb-session", "not base64!")
        .body(Body::empty())
        .unwrap();
    let (status, json) = relay.send(request).await;
    assert_eq!(
        (status, code(&json)),
        (StatusCode::UNAUTHORIZED, "unauthenticated")
    );

    // Expired after an hour.
    relay
        .now
        .fetch_add(3600, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(inbox(&relay, &id, &key, 6000).await.1, "unknown_session");
}

#[tokio::test]
async fn opening_a_session_needs_a_valid_signature_and_a_good_key() {
    let mut relay = Relay::new().await;
    let alice = relay.device();
    relay.register(&alice).await;
    let offer = SessionOffer::new(&mut relay.rng);
    let body = encode(&offer.request()).unwrap();
    // Unsigned.
    let request = Request::builder()
        .method("POST")
        .uri("/v1/sessions")
        .body(Body::from(body.clone()))
        .unwrap();
    let (status, json) = relay.send(request).await;
    assert_eq!(
        (status, code(&json)),
        (StatusCode::UNAUTHORIZED, "unauthenticated")
    );
    // Signed.
    let request = relay.signed(&alice, "POST", "/v1/sessions", &body);
    let (status, _) = relay.send(request).await;
    assert_eq!(status, StatusCode::CREATED);
    // A low-order client key (all zeros): refused as malformed.
    let zero = format!(r#"{{"v":1,"client_key":"{}"}}"#, "A".repeat(43));
    let request = relay.signed(&alice, "POST", "/v1/sessions", zero.as_bytes());
    let (status, json) = relay.send(request).await;
    assert_eq!(
        (status, code(&json)),
        (StatusCode::BAD_REQUEST, "malformed"),
        "{json}"
    );
    // Not under another session: a stolen session key must not open the next session.
    let (id, key) = open(&mut relay, &alice).await.unwrap();
    let auth = key.authenticate(&id, 0, "POST", "/v1/sessions", &body);
    let (status, json) = relay
        .send(with_session(&auth, "POST", "/v1/sessions", body.clone()))
        .await;
    assert_eq!(
        (status, code(&json)),
        (StatusCode::UNAUTHORIZED, "unauthenticated"),
        "{json}"
    );
    // An unregistered device cannot open one.
    let stranger = relay.device();
    assert_eq!(
        open(&mut relay, &stranger).await.unwrap_err().1,
        "unknown_device"
    );
}

#[tokio::test]
async fn the_session_table_is_bounded_per_device_and_in_all() {
    let mut relay = Relay::with_limits(Limits {
        max_sessions: 6,
        ..Limits::default()
    })
    .await;
    let alice = relay.device();
    relay.register(&alice).await;
    // Four per device: the fifth closes the oldest.
    let mut sessions = Vec::new();
    for _ in 0..5 {
        sessions.push(open(&mut relay, &alice).await.unwrap());
    }
    let (id, key) = &sessions[0];
    assert_eq!(inbox(&relay, id, key, 0).await.1, "unknown_session");
    for (id, key) in &sessions[1..] {
        assert_eq!(inbox(&relay, id, key, 0).await.0, StatusCode::OK);
    }
    // Six in all: a third device is refused as busy (it signs its requests meanwhile).
    let bob = relay.device();
    relay.register(&bob).await;
    open(&mut relay, &bob).await.unwrap();
    open(&mut relay, &bob).await.unwrap();
    let carol = relay.device();
    relay.register(&carol).await;
    assert_eq!(
        open(&mut relay, &carol).await.unwrap_err(),
        (StatusCode::SERVICE_UNAVAILABLE, "unavailable".into())
    );
    // Once the others expired, there is room again.
    relay
        .now
        .fetch_add(3601, std::sync::atomic::Ordering::SeqCst);
    let (id, key) = open(&mut relay, &carol).await.unwrap();
    assert_eq!(inbox(&relay, &id, &key, 0).await.0, StatusCode::OK);
}
