//! The relay's HTTP API: `fn app(state) -> Router`, JSON over HTTP, every request signed by the
//! device's identity key (see [`switchboard_protocol::request`]).
//!
//! | method | path | who | what |
//! |---|---|---|---|
//! | POST | `/v1/devices` | anyone, signed by the key in the bundle | register a key bundle, or replace it with a newer one (KEM key rotation; an older one is a 409) |
//! | GET | `/v1/devices/{device}` | any registered device | a device's newest key bundle |
//! | POST | `/v1/entities` | the device that becomes the admin | create an entity |
//! | GET | `/v1/entities/{entity}` | any registered device | the entity's directory record |
//! | POST | `/v1/threads` | a customer device | open a thread (`ThreadOpen`), queued for the admin |
//! | POST | `/v1/threads/{thread}/commits` | the entity's admin only | a roster commit, to old and new members |
//! | POST | `/v1/threads/{thread}/messages` | current members only | a sealed message, to the other members |
//! | GET | `/v1/inbox?after=N&limit=M&wait=S[&instance=I][&ack=A]` | the device itself | its queued items after cursor N, long-polling up to S seconds; with `instance`, threads are leased to one instance at a time; with `ack`, items up to A are acknowledged first |
//! | GET | `/v1/inbox/stream?after=N[&instance=I]` | the device itself | its items after cursor N as server-sent events, as they arrive, over one response (see [`stream`](self) below) |
//! | POST | `/v1/inbox/ack` | the device itself | acknowledge (delete) items up to a cursor |
//! | GET | `/metrics` | unauthenticated (serve it on an internal network) | Prometheus text: requests by method, route, status |
//! | GET | `/healthz` | unauthenticated | the process is up |
//! | GET | `/readyz` | unauthenticated | the store answers (503 otherwise) |
//! | GET | `/openapi.json` | unauthenticated | the OpenAPI 3.1 document ([`OPENAPI`]) |
//!
//! Every answer that is not a success, including unknown routes (404), wrong methods (405) and
//! panics (500), is the JSON error of [`ApiError`]. Before a body is read, the authentication
//! headers are checked (present, well formed, fresh, a registered device), the declared length
//! against the route's limit (a key bundle [`MAX_BUNDLE_BYTES`], a post its item kind's cap),
//! and a share of the relay's budget for unverified bodies is taken
//! ([`Limits::unverified_body_bytes`]); the body must then arrive within
//! [`Limits::body_read_secs`].

mod error;
mod limits;
mod metrics;
mod sessions;
mod stream;
mod threads;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use switchboard_protocol::request::{MAX_CLOCK_SKEW_SECS, headers};
use switchboard_protocol::session::{self, SessionAuth, SessionRequest};
use switchboard_protocol::{
    DeviceId, EntityId, IdentityPublicKey, KeyBundle, RequestAuth, Timestamp, Version, WireType,
    decode, encode,
};
use tokio::sync::Semaphore;

pub use error::ApiError;
pub use limits::{Limits, Rate};
pub use stream::{STREAM_HEARTBEAT, STREAM_MAX};
pub use switchboard_protocol::api::{
    Ack, DirectoryRecord, InboxAnswer, InboxItem as WireItem, NewEntity, PostAnswer, Registration,
};
pub use threads::{LEASE_SECS, MAX_FETCH, MAX_WAIT_SECS};

use crate::store::{DeviceRecord, EntityRecord, Registered, RequestNonce, Store};

/// The largest key bundle registration accepts (bundles are a few KiB).
pub const MAX_BUNDLE_BYTES: usize = 16 * 1024;
/// The largest body of `POST /v1/entities`.
pub const MAX_ENTITY_BYTES: usize = 4 * 1024;
/// The largest body of `POST /v1/inbox/ack`.
pub const MAX_ACK_BYTES: usize = 1024;

/// The clock the relay judges request timestamps by (replaceable in tests).
pub type Clock = Arc<dyn Fn() -> Timestamp + Send + Sync>;

/// The system clock.
#[must_use]
pub fn system_clock() -> Clock {
    Arc::new(|| {
        Timestamp(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        )
    })
}

/// Shared state of the HTTP handlers.
#[derive(Clone)]
pub struct RelayState {
    store: Arc<dyn Store>,
    clock: Clock,
    waiters: threads::Waiters,
    limiter: limits::Limiter,
    metrics: metrics::Metrics,
    /// Bytes of request bodies being read whose signature is not verified yet.
    body_budget: Arc<Semaphore>,
    body_read: Duration,
    /// Identity keys of registered devices seen lately (a device's key never changes).
    identities: Identities,
    /// Open sessions (requests authenticated by a MAC instead of a signature).
    sessions: sessions::Sessions,
}

/// The identity keys of registered devices that sent requests lately, so that a request's
/// signature is checked without reading the device from the store. Safe to keep: the relay
/// never changes a registered device's identity key (a registration with another key is
/// refused) and never deletes a device. Bounded: when full, it starts over. Only devices found
/// in the store get in, so nobody can fill it with made-up ids.
#[derive(Clone, Default)]
struct Identities(Arc<std::sync::Mutex<std::collections::HashMap<DeviceId, KnownKey>>>);

/// A device's identity key as stored, and parsed.
type KnownKey = ([u8; 32], IdentityPublicKey);

/// Devices whose identity keys are kept at most.
const MAX_IDENTITIES: usize = 100_000;

impl Identities {
    /// The device's identity key, as stored and parsed (parsing decompresses a curve point:
    /// it is done once per device, not at every request).
    fn get(&self, device: DeviceId) -> Option<KnownKey> {
        let map = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.get(&device).copied()
    }

    fn remember(&self, device: DeviceId, bytes: [u8; 32], key: IdentityPublicKey) {
        let mut map = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if map.len() >= MAX_IDENTITIES {
            map.clear();
        }
        map.insert(device, (bytes, key));
    }
}

impl std::fmt::Debug for RelayState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayState")
            .field("store", &self.store)
            .finish_non_exhaustive()
    }
}

impl RelayState {
    /// State over `store`, judging time by `clock`.
    #[must_use]
    pub fn new(store: Arc<dyn Store>, clock: Clock) -> Self {
        Self {
            store,
            clock,
            waiters: threads::Waiters::default(),
            limiter: limits::Limiter::default(),
            metrics: metrics::Metrics::default(),
            body_budget: Arc::new(Semaphore::new(0)),
            body_read: Duration::ZERO,
            identities: Identities::default(),
            sessions: sessions::Sessions::new(Limits::default().max_sessions),
        }
        .with_limits(Limits::default())
    }

    /// The same state with other limits.
    #[must_use]
    pub fn with_limits(mut self, limits: Limits) -> Self {
        let budget = usize::try_from(limits.unverified_body_bytes)
            .unwrap_or(usize::MAX)
            .min(Semaphore::MAX_PERMITS);
        self.body_budget = Arc::new(Semaphore::new(budget));
        self.body_read = Duration::from_secs(limits.body_read_secs);
        self.sessions = sessions::Sessions::new(limits.max_sessions);
        self.limiter = limits::Limiter::new(limits);
        self
    }
}

/// The relay's router.
pub fn app(state: RelayState) -> Router {
    Router::new()
        .route("/v1/devices", post(register_device))
        .route("/v1/sessions", post(open_session))
        .route("/v1/devices/{device}", get(get_device))
        .route("/v1/entities", post(create_entity))
        .route("/v1/entities/{entity}", get(get_entity))
        .route("/v1/threads", post(threads::open_thread))
        .route("/v1/threads/{thread}/commits", post(threads::post_commit))
        .route("/v1/threads/{thread}/messages", post(threads::post_message))
        .route("/v1/threads/{thread}/history", post(threads::post_history))
        .route("/v1/inbox", get(threads::inbox))
        .route("/v1/inbox/ack", post(threads::ack))
        .route("/v1/inbox/stream", get(stream::inbox_stream))
        .route("/metrics", get(metrics::metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/openapi.json", get(openapi))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(panicked))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            metrics::observe,
        ))
        .with_state(state)
}

async fn not_found(uri: Uri) -> ApiError {
    let path: String = uri.path().chars().take(200).collect();
    ApiError::NotFound(format!("no route {path}; see /openapi.json"))
}

async fn method_not_allowed(method: Method, uri: Uri) -> ApiError {
    let allowed = match uri.path() {
        "/v1/devices" | "/v1/entities" | "/v1/threads" | "/v1/inbox/ack" => "POST",
        p if p.starts_with("/v1/threads/") => "POST",
        _ => "GET",
    };
    ApiError::MethodNotAllowed {
        method: method.as_str().chars().take(16).collect(),
        allowed: allowed.to_owned(),
    }
}

fn panicked(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("a handler panicked; answered 500");
    ApiError::Internal.into_response()
}

async fn healthz() -> Response {
    Json(serde_json::json!({ "status": "ok" })).into_response()
}

async fn readyz(State(state): State<RelayState>) -> Result<Response, ApiError> {
    state.store.ping().await?;
    Ok(Json(serde_json::json!({ "status": "ready" })).into_response())
}

/// A path segment naming a device, entity or thread, as text (a segment that is not UTF-8 is
/// refused as malformed, in the API's error shape).
pub(super) struct PathId(pub(super) String);

impl<S: Send + Sync> FromRequestParts<S> for PathId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let axum::extract::Path(id) =
            axum::extract::Path::<String>::from_request_parts(parts, state)
                .await
                .map_err(|e| ApiError::Malformed(format!("bad path: {}", e.body_text())))?;
        Ok(Self(id))
    }
}

fn wire<T: WireType>(bytes: &[u8]) -> Result<T, ApiError> {
    Ok(decode(bytes)?)
}

/// The authentication headers, parsed and fresh.
fn fresh_auth(state: &RelayState, headers_in: &HeaderMap) -> Result<RequestAuth, ApiError> {
    let get = |name: &str| headers_in.get(name).and_then(|v| v.to_str().ok());
    let auth = RequestAuth::parse(
        get(headers::DEVICE),
        get(headers::TIMESTAMP),
        get(headers::NONCE),
        get(headers::SIGNATURE),
    )
    .map_err(ApiError::Unauthenticated)?;
    if !auth.is_fresh((state.clock)()) {
        return Err(ApiError::StaleRequest);
    }
    Ok(auth)
}

/// Reads a body of at most `max` bytes: the declared length is checked first, a share of the
/// budget for unverified bodies is held while reading (refused as busy when exhausted), and the
/// whole body must arrive within the configured time.
async fn read_body(
    state: &RelayState,
    headers_in: &HeaderMap,
    body: Body,
    max: usize,
) -> Result<Bytes, ApiError> {
    let declared = http_body::Body::size_hint(&body).exact().or_else(|| {
        headers_in
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
    });
    if declared.is_some_and(|n| n > max as u64) {
        return Err(ApiError::TooLarge(max));
    }
    let reserve = declared.map_or(max, |n| usize::try_from(n).unwrap_or(max));
    let _permit = if reserve == 0 {
        None
    } else {
        let permits = u32::try_from(reserve).map_err(|_| ApiError::TooLarge(max))?;
        Some(
            Arc::clone(&state.body_budget)
                .try_acquire_many_owned(permits)
                .map_err(|_| ApiError::Busy("reading other request bodies"))?,
        )
    };
    match tokio::time::timeout(state.body_read, axum::body::to_bytes(body, max)).await {
        Err(_) => Err(ApiError::BodyTimeout(state.body_read.as_secs())),
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(e)) => {
            let too_large = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
            if too_large {
                Err(ApiError::TooLarge(max))
            } else {
                Err(ApiError::Malformed(format!("cannot read the body: {e}")))
            }
        }
    }
}

/// Checks the signature against `key`; returns the request's nonce, to be spent (only after
/// the signature verified, so nobody can burn another device's nonces).
fn check_signed(
    state: &RelayState,
    auth: &RequestAuth,
    key: &IdentityPublicKey,
    method: &Method,
    uri: &Uri,
    body: &[u8],
) -> Result<RequestNonce, ApiError> {
    let target = uri.path_and_query().map_or(uri.path(), |pq| pq.as_str());
    if !auth.verify(key, method.as_str(), target, body) {
        return Err(ApiError::BadSignature(auth.device.to_string()));
    }
    Ok(RequestNonce {
        device: auth.device,
        nonce: auth.nonce.to_vec(),
        expires_at: auth.timestamp.0.saturating_add(MAX_CLOCK_SKEW_SECS),
        now: (state.clock)().0,
    })
}

/// Spends a request's nonce in a transaction of its own.
async fn spend(state: &RelayState, nonce: &RequestNonce) -> Result<(), ApiError> {
    if !state
        .store
        .use_nonce(nonce.device, &nonce.nonce, nonce.expires_at, nonce.now)
        .await?
    {
        return Err(ApiError::ReplayedRequest);
    }
    Ok(())
}

/// Applies the device's rate limit (by its role) and its entity's quota.
async fn admit(state: &RelayState, device: DeviceId) -> Result<(), ApiError> {
    let now = (state.clock)();
    let role = match state.limiter.known_role(device, now) {
        Some(role) => role,
        None => {
            let role = state.store.device_role(device).await?;
            state.limiter.remember_role(device, role.clone(), now);
            role
        }
    };
    state.limiter.admit(device, &role, now)
}

/// The registered device a request came from.
#[derive(Clone, Copy, Debug)]
pub(super) struct Caller {
    /// The device.
    pub(super) device: DeviceId,
    /// Its Ed25519 identity key (the request's signature verified against it).
    pub(super) identity_key: [u8; 32],
}

/// A request authenticated as coming from a registered device (signed, or under a session),
/// with its body of at most `MAX` bytes. Use it as the last handler argument; it refuses the
/// request (JSON error) when the headers, body size, signature or session MAC, timestamp,
/// nonce or counter, or rate limit is refused, and checks what it can before reading the body.
pub(super) struct Signed<const MAX: usize> {
    /// The requesting device.
    pub(super) device: Caller,
    /// The request body.
    pub(super) body: Bytes,
}

impl<const MAX: usize> axum::extract::FromRequest<RelayState> for Signed<MAX> {
    type Rejection = ApiError;

    async fn from_request(
        request: axum::extract::Request,
        state: &RelayState,
    ) -> Result<Self, Self::Rejection> {
        let (parts, body) = request.into_parts();
        let (device, body, nonce) = authenticate::<MAX>(state, parts, body).await?;
        if let Some(nonce) = &nonce {
            spend(state, nonce).await?;
        }
        // Counted only for requests the device really signed, so nobody can get another device
        // banned by sending requests in its name.
        admit(state, device.device).await?;
        Ok(Self { device, body })
    }
}

/// Like [`Signed`], but the request's nonce is not spent yet: the handler spends it in the
/// same transaction as its write (one fsync instead of two: see
/// [`Store::post_once`](crate::store::Store::post_once)), and must not write anything
/// without it.
///
/// The rate limit counts the request before its nonce is known to be fresh: a replay (by
/// someone who captured the signed request, within its timestamp window) is refused at the
/// write but costs the device one request of its budget.
pub(super) struct SignedOnce<const MAX: usize> {
    /// The requesting device.
    pub(super) device: Caller,
    /// The request body.
    pub(super) body: Bytes,
    /// The request's nonce, not spent yet (`None`: authenticated by a session, whose replay
    /// window took it).
    pub(super) nonce: Option<RequestNonce>,
}

impl<const MAX: usize> axum::extract::FromRequest<RelayState> for SignedOnce<MAX> {
    type Rejection = ApiError;

    async fn from_request(
        request: axum::extract::Request,
        state: &RelayState,
    ) -> Result<Self, Self::Rejection> {
        let (parts, body) = request.into_parts();
        let (device, body, nonce) = authenticate::<MAX>(state, parts, body).await?;
        admit(state, device.device).await?;
        Ok(Self {
            device,
            body,
            nonce,
        })
    }
}

/// An authenticated request's device, body (at most `MAX` bytes) and, if it was signed, its
/// nonce (not spent), once the headers, timestamp, body size and signature or session MAC are
/// checked.
async fn authenticate<const MAX: usize>(
    state: &RelayState,
    parts: Parts,
    body: Body,
) -> Result<(Caller, Bytes, Option<RequestNonce>), ApiError> {
    if parts.headers.contains_key(session::headers::SESSION) {
        let get = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
        let auth = SessionAuth::parse(
            get(session::headers::SESSION),
            get(session::headers::COUNTER),
            get(session::headers::MAC),
        )
        .map_err(ApiError::Unauthenticated)?;
        // Known before the body is read: a made-up session costs no body budget.
        state.sessions.known(&auth, (state.clock)())?;
        let raw = read_body(state, &parts.headers, body, MAX).await?;
        let target = parts
            .uri
            .path_and_query()
            .map_or(parts.uri.path(), |pq| pq.as_str());
        let device =
            state
                .sessions
                .check(&auth, parts.method.as_str(), target, &raw, (state.clock)())?;
        let (identity_key, _) = identity(state, device).await?;
        // The request's log span names the device once the session vouched for it.
        tracing::Span::current().record("device", tracing::field::display(device));
        return Ok((
            Caller {
                device,
                identity_key,
            },
            raw,
            None,
        ));
    }
    let auth = fresh_auth(state, &parts.headers)?;
    let (identity_key, key) = identity(state, auth.device).await?;
    let raw = read_body(state, &parts.headers, body, MAX).await?;
    let nonce = check_signed(state, &auth, &key, &parts.method, &parts.uri, &raw)?;
    let caller = Caller {
        device: auth.device,
        identity_key,
    };
    Ok((caller, raw, Some(nonce)))
}

/// A registered device's identity key, as stored and parsed.
async fn identity(state: &RelayState, device: DeviceId) -> Result<KnownKey, ApiError> {
    if let Some(known) = state.identities.get(device) {
        return Ok(known);
    }
    let record = state
        .store
        .device(device)
        .await?
        .ok_or_else(|| ApiError::UnknownDevice(device.to_string()))?;
    let key =
        IdentityPublicKey::from_bytes(&record.identity_key).map_err(|_| ApiError::Internal)?;
    state
        .identities
        .remember(record.device, record.identity_key, key);
    Ok((record.identity_key, key))
}

/// `POST /v1/sessions`: a signed request opens a session (see
/// `switchboard_protocol::session`); its later requests carry a MAC instead of a signature.
async fn open_session(
    State(state): State<RelayState>,
    request_headers: HeaderMap,
    Signed { device, body }: Signed<MAX_SESSION_BYTES>,
) -> Result<Response, ApiError> {
    // A session opens only with the identity key: a stolen session key must not outlive its
    // session by opening the next one.
    if request_headers.contains_key(session::headers::SESSION) {
        return Err(ApiError::Unauthenticated(
            "a session is opened by a signed request, not under another session".to_owned(),
        ));
    }
    let request: SessionRequest = wire(&body)?;
    let grant = state
        .sessions
        .open(device.device, &request, (state.clock)())?;
    Ok((StatusCode::CREATED, Json(grant)).into_response())
}

/// The largest body of `POST /v1/sessions`.
const MAX_SESSION_BYTES: usize = 1024;

/// The OpenAPI 3.1 document of this API, for clients in other languages.
pub const OPENAPI: &str = include_str!("openapi.json");

async fn openapi() -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        OPENAPI,
    )
        .into_response()
}

fn json_bytes(status: StatusCode, bytes: Vec<u8>) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], bytes).into_response()
}

async fn register_device(
    State(state): State<RelayState>,
    request: axum::extract::Request,
) -> Result<Response, ApiError> {
    let (parts, body) = request.into_parts();
    let auth = fresh_auth(&state, &parts.headers)?;
    // A device already registered publishing a newer bundle (KEM key rotation) spends its own
    // budget, not its address's: many devices behind one proxy or NAT must still rotate. New
    // devices are limited per source address. (The signature is checked below either way.)
    if state.store.device(auth.device).await?.is_some() {
        admit(&state, auth.device).await?;
    } else if let Some(ConnectInfo(from)) = parts.extensions.get::<ConnectInfo<SocketAddr>>() {
        state
            .limiter
            .admit_registration(from.ip(), (state.clock)())?;
    }
    let raw = read_body(&state, &parts.headers, body, MAX_BUNDLE_BYTES).await?;
    let bundle: KeyBundle = wire(&raw)?;
    bundle
        .verify()
        .map_err(|e| ApiError::Malformed(e.to_string()))?;
    // Registration proves possession of the identity key: signed by the key being registered.
    if auth.device != bundle.device {
        return Err(ApiError::Unauthenticated(format!(
            "request signed as {} but registers {}",
            auth.device, bundle.device
        )));
    }
    let nonce = check_signed(
        &state,
        &auth,
        &bundle.identity_key,
        &parts.method,
        &parts.uri,
        &raw,
    )?;
    spend(&state, &nonce).await?;
    // A bundle dated in the future would make every genuine later rotation "older" (409), so a
    // thief of the identity key could pin its own KEM key for good.
    let now = (state.clock)();
    if bundle.created_at.0 > now.0.saturating_add(MAX_CLOCK_SKEW_SECS) {
        return Err(ApiError::Malformed(format!(
            "key bundle created_at {} is in the future (relay clock {}, allowed skew {MAX_CLOCK_SKEW_SECS} s)",
            bundle.created_at.0, now.0
        )));
    }
    refuse_older_bundle(&state, &bundle).await?;
    let record = DeviceRecord {
        device: bundle.device,
        identity_key: *bundle.identity_key.as_bytes(),
        // The canonical form, never the client's bytes (padding, spacing, key order).
        bundle: encode(&bundle).map_err(|_| ApiError::Internal)?,
        registered_at: (state.clock)().0,
    };
    let outcome = state.store.register_device(&record).await?;
    let status = match outcome {
        Registered::Created => StatusCode::CREATED,
        Registered::Updated => StatusCode::OK,
    };
    let answer = Registration {
        v: Version,
        device: bundle.device,
        fingerprint: bundle.fingerprint().to_string(),
        created: outcome == Registered::Created,
    };
    Ok((status, Json(answer)).into_response())
}

/// A registered device replaces its bundle only with a newer one (a KEM key rotation,
/// docs/protocol.md §2.4) or the same one again: an older bundle would bring back a retired key,
/// possibly deleted or compromised. A bundle under another identity key is the store's conflict.
async fn refuse_older_bundle(state: &RelayState, bundle: &KeyBundle) -> Result<(), ApiError> {
    let Some(existing) = state.store.device(bundle.device).await? else {
        return Ok(());
    };
    let Ok(current) = decode::<KeyBundle>(&existing.bundle) else {
        return Ok(());
    };
    if current.identity_key == bundle.identity_key
        && current != *bundle
        && bundle.created_at <= current.created_at
    {
        return Err(ApiError::Conflict(format!(
            "device {} has a newer key bundle registered (created at {}, this one at {}); publish a new KEM key with a later created_at",
            bundle.device, current.created_at, bundle.created_at
        )));
    }
    Ok(())
}

async fn get_device(
    State(state): State<RelayState>,
    PathId(device): PathId,
    _signed: Signed<0>,
) -> Result<Response, ApiError> {
    let device: DeviceId = device
        .parse()
        .map_err(|e: switchboard_protocol::WireError| ApiError::Malformed(e.to_string()))?;
    let record = state
        .store
        .device(device)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("device {device} is not registered")))?;
    Ok(json_bytes(StatusCode::OK, record.bundle))
}

async fn create_entity(
    State(state): State<RelayState>,
    Signed {
        device: admin,
        body: raw,
    }: Signed<MAX_ENTITY_BYTES>,
) -> Result<Response, ApiError> {
    let new: NewEntity = wire(&raw)?;
    let name_chars = new.display_name.chars().count();
    if name_chars == 0 || name_chars > 64 || new.display_name.chars().any(char::is_control) {
        return Err(ApiError::Malformed(
            "display_name must have 1 to 64 characters and no control characters".to_owned(),
        ));
    }
    state
        .store
        .create_entity(&EntityRecord {
            entity: new.entity.clone(),
            admin: admin.device,
            display_name: new.display_name,
        })
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(serde_json::json!({ "v": 1, "entity": new.entity })),
    )
        .into_response())
}

async fn get_entity(
    State(state): State<RelayState>,
    PathId(entity): PathId,
    _signed: Signed<0>,
) -> Result<Response, ApiError> {
    let entity = EntityId::new(entity).map_err(|e| ApiError::Malformed(e.to_string()))?;
    let record = state
        .store
        .entity(&entity)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no entity named {entity}")))?;
    let admin = state
        .store
        .device(record.admin)
        .await?
        .ok_or(ApiError::Internal)?;
    let admin: KeyBundle = decode(&admin.bundle).map_err(|_| ApiError::Internal)?;
    Ok(Json(DirectoryRecord {
        v: Version,
        entity: record.entity,
        display_name: record.display_name,
        admin,
    })
    .into_response())
}
