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
//! | GET | `/v1/inbox?after=N&limit=M&wait=S[&instance=I]` | the device itself | its queued items after cursor N, long-polling up to S seconds; with `instance`, threads are leased to one instance at a time |
//! | POST | `/v1/inbox/ack` | the device itself | acknowledge (delete) items up to a cursor |
//! | GET | `/metrics` | unauthenticated (serve it on an internal network) | Prometheus text: requests by method, route, status |
//! | GET | `/openapi.json` | unauthenticated | the OpenAPI 3.1 document ([`OPENAPI`]) |

mod error;
mod limits;
mod metrics;
mod threads;

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use switchboard_protocol::request::{MAX_CLOCK_SKEW_SECS, headers};
use switchboard_protocol::wire::MAX_WIRE_BYTES;
use switchboard_protocol::{
    DeviceId, EntityId, IdentityPublicKey, KeyBundle, RequestAuth, Timestamp, Version, WireType,
    decode,
};

pub use error::ApiError;
pub use limits::Limits;
pub use switchboard_protocol::api::{
    Ack, DirectoryRecord, InboxAnswer, InboxItem as WireItem, NewEntity, PostAnswer, Registration,
};
pub use threads::{LEASE_SECS, MAX_FETCH, MAX_WAIT_SECS};

use crate::store::{DeviceRecord, EntityRecord, Registered, Store};

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
            limiter: limits::Limiter::new(Limits::default()),
            metrics: metrics::Metrics::default(),
        }
    }

    /// The same state with other rate limits.
    #[must_use]
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limiter = limits::Limiter::new(limits);
        self
    }
}

/// The relay's router.
pub fn app(state: RelayState) -> Router {
    Router::new()
        .route("/v1/devices", post(register_device))
        .route("/v1/devices/{device}", get(get_device))
        .route("/v1/entities", post(create_entity))
        .route("/v1/entities/{entity}", get(get_entity))
        .route("/v1/threads", post(threads::open_thread))
        .route("/v1/threads/{thread}/commits", post(threads::post_commit))
        .route("/v1/threads/{thread}/messages", post(threads::post_message))
        .route("/v1/threads/{thread}/history", post(threads::post_history))
        .route("/v1/inbox", get(threads::inbox))
        .route("/v1/inbox/ack", post(threads::ack))
        .route("/metrics", get(metrics::metrics))
        .route("/openapi.json", get(openapi))
        .layer(DefaultBodyLimit::max(MAX_WIRE_BYTES))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            metrics::observe,
        ))
        .with_state(state)
}

/// The body, or a JSON error (413 for an oversized body).
fn body(body: Result<Bytes, BytesRejection>) -> Result<Bytes, ApiError> {
    body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::TooLarge(MAX_WIRE_BYTES)
        } else {
            ApiError::Malformed(rejection.body_text())
        }
    })
}

fn wire<T: WireType>(bytes: &[u8]) -> Result<T, ApiError> {
    Ok(decode(bytes)?)
}

fn request_auth(headers_in: &HeaderMap) -> Result<RequestAuth, ApiError> {
    let get = |name: &str| headers_in.get(name).and_then(|v| v.to_str().ok());
    RequestAuth::parse(
        get(headers::DEVICE),
        get(headers::TIMESTAMP),
        get(headers::NONCE),
        get(headers::SIGNATURE),
    )
    .map_err(ApiError::Unauthenticated)
}

/// Checks freshness and signature against `key`, then spends the nonce (only after the signature
/// verified, so nobody can burn another device's nonces).
async fn check_signed(
    state: &RelayState,
    auth: &RequestAuth,
    key: &IdentityPublicKey,
    method: &Method,
    uri: &Uri,
    body: &[u8],
) -> Result<(), ApiError> {
    let now = (state.clock)();
    if !auth.is_fresh(now) {
        return Err(ApiError::StaleRequest);
    }
    let target = uri.path_and_query().map_or(uri.path(), |pq| pq.as_str());
    if !auth.verify(key, method.as_str(), target, body) {
        return Err(ApiError::BadSignature(auth.device.to_string()));
    }
    let expires = auth.timestamp.0.saturating_add(MAX_CLOCK_SKEW_SECS);
    if !state
        .store
        .use_nonce(auth.device, &auth.nonce, expires, now.0)
        .await?
    {
        return Err(ApiError::ReplayedRequest);
    }
    Ok(())
}

/// Authenticates a request from a registered device.
async fn authenticate(
    state: &RelayState,
    method: &Method,
    uri: &Uri,
    headers_in: &HeaderMap,
    body: &[u8],
) -> Result<DeviceRecord, ApiError> {
    let auth = request_auth(headers_in)?;
    let device = state
        .store
        .device(auth.device)
        .await?
        .ok_or_else(|| ApiError::UnknownDevice(auth.device.to_string()))?;
    let key =
        IdentityPublicKey::from_bytes(&device.identity_key).map_err(|_| ApiError::Internal)?;
    check_signed(state, &auth, &key, method, uri, body).await?;
    // Counted only for requests the device really signed, so nobody can get another device
    // banned by sending requests in its name.
    state.limiter.admit(auth.device, (state.clock)())?;
    Ok(device)
}

/// A request authenticated as coming from a registered device, with its body. Use it as the last
/// handler argument; it refuses the request (JSON error) when the body is too large or the
/// signature, timestamp, nonce or rate limit is refused.
pub(super) struct Signed {
    /// The requesting device.
    pub(super) device: DeviceRecord,
    /// The request body.
    pub(super) body: Bytes,
}

impl axum::extract::FromRequest<RelayState> for Signed {
    type Rejection = ApiError;

    async fn from_request(
        request: axum::extract::Request,
        state: &RelayState,
    ) -> Result<Self, Self::Rejection> {
        let (method, uri, headers_in) = (
            request.method().clone(),
            request.uri().clone(),
            request.headers().clone(),
        );
        let raw = body(Bytes::from_request(request, state).await)?;
        let device = authenticate(state, &method, &uri, &headers_in, &raw).await?;
        Ok(Self { device, body: raw })
    }
}

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
    method: Method,
    uri: Uri,
    headers_in: HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let raw = body(raw)?;
    let bundle: KeyBundle = wire(&raw)?;
    bundle
        .verify()
        .map_err(|e| ApiError::Malformed(e.to_string()))?;
    // Registration proves possession of the identity key: signed by the key being registered.
    let auth = request_auth(&headers_in)?;
    if auth.device != bundle.device {
        return Err(ApiError::Unauthenticated(format!(
            "request signed as {} but registers {}",
            auth.device, bundle.device
        )));
    }
    check_signed(&state, &auth, &bundle.identity_key, &method, &uri, &raw).await?;
    refuse_older_bundle(&state, &bundle).await?;
    let record = DeviceRecord {
        device: bundle.device,
        identity_key: *bundle.identity_key.as_bytes(),
        bundle: raw.to_vec(),
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
    Path(device): Path<String>,
    _signed: Signed,
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
    }: Signed,
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
    Path(entity): Path<String>,
    _signed: Signed,
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
