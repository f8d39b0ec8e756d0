//! A hostile relay for attack tests: an HTTP proxy on loopback in front of a real relay that
//! forwards every request unchanged (the devices' request signatures and session MACs cover
//! only method, path, query and body, so they still verify upstream; the device of a session's
//! requests is known from the session's opening, which passes through too) and lets a test
//! tamper with what devices get back: replace a `GET` answer (a key bundle, a directory
//! record), append items to a device's inbox (a replayed commit), and watch requests as they
//! pass (to check what was durable when a post left its device).
//!
//! It injects faults too: redelivery of inbox items ([`HostileRelay::redeliver`]), error answers
//! ([`HostileRelay::fail_next`]) and connections closed without an answer
//! ([`HostileRelay::reset_connections`]). Every answer asks the client to close its connection,
//! so each request comes on a new one (a closed connection then fails exactly one request).
//!
//! Devices under attack are pointed at [`HostileRelay::url`]; the others may talk to the real
//! relay directly.
//!
//! The proxy serves no inbox streams (`GET /v1/inbox/stream` is answered `not_found`, as by a
//! relay without them, before any fault or watcher sees it): clients behind it long-poll, and
//! every item they get passes through the faults above.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::HeaderMap;
/// The HTTP method a [`Watcher`] is given.
pub use axum::http::Method;
/// The HTTP status an [`AnswerWatcher`] is given.
pub use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use switchboard_protocol::api::{ErrorBody, ErrorCode, ErrorDetail, InboxAnswer, InboxItem};
use switchboard_protocol::request::headers;
use switchboard_protocol::session::{SessionGrant, headers as session_headers};
use switchboard_protocol::{DeviceId, MessageHeader, SealedMessage, decode, encode};

/// The largest request body forwarded (the relay's own limit is 4 MiB).
const MAX_BODY: usize = 8 * 1024 * 1024;

/// How many requests [`HostileRelay::requests`] keeps (the oldest are dropped beyond).
pub const REQUEST_LOG: usize = 10_000;

/// A request that came through the proxy.
#[derive(Clone, Debug)]
pub struct Logged {
    /// When it came.
    pub at: std::time::Instant,
    /// Its method.
    pub method: Method,
    /// Its path and query.
    pub path: String,
    /// The status the proxy answered it with instead of forwarding it
    /// ([`HostileRelay::fail_next`]), if it did.
    pub fault: Option<StatusCode>,
}

/// A sealed message a device posted through the proxy (`POST /v1/threads/{thread}/messages`),
/// as its header says (the header travels in the clear: the proxy sees what the relay sees).
#[derive(Clone, Debug)]
pub struct PostedMessage {
    /// When it came.
    pub at: std::time::Instant,
    /// The device that sent it (signed the request, or opened the session it came in).
    pub device: Option<DeviceId>,
    /// The message's header: thread, epoch, sender, generation, content type.
    pub header: MessageHeader,
    /// The relay's answer; `None` if the relay could not be reached. (A post the proxy fails
    /// itself, [`HostileRelay::fail_next`], is answered before its body is read and is not
    /// listed.)
    pub status: Option<StatusCode>,
}

/// How many delivered items [`HostileRelay::delivered`] keeps per device (the oldest are
/// dropped beyond).
pub const DELIVERED_LOG: usize = 10_000;

/// How many delivered items a redelivering device's buffer keeps (per device and instance);
/// the oldest positions are dropped beyond.
pub const REDELIVERY_BUFFER: usize = 10_000;

/// Called for every request before it is forwarded: method and path (with query).
pub type Watcher = Box<dyn Fn(&Method, &str) + Send + Sync>;

/// Called with every answer the relay gave (not the proxy's own faults): the request's method
/// and path (with query), and the answer's status.
pub type AnswerWatcher = Box<dyn Fn(&Method, &str, StatusCode) + Send + Sync>;

#[derive(Default)]
struct Tampering {
    /// Answers served instead of the relay's, by exact path (`GET` only).
    answers: HashMap<String, serde_json::Value>,
    /// Items slipped into the next inbox answer of a device that carries real items.
    injected: HashMap<DeviceId, Vec<(InboxItem, Slip)>>,
    /// Every inbox item the relay delivered through this proxy, by device.
    delivered: HashMap<DeviceId, Vec<InboxItem>>,
    watchers: Vec<Watcher>,
    answer_watchers: Vec<AnswerWatcher>,
    /// The last [`REQUEST_LOG`] requests.
    requests: std::collections::VecDeque<Logged>,
    /// The last [`REQUEST_LOG`] messages posted.
    posts: std::collections::VecDeque<PostedMessage>,
    /// How many times in all each item is delivered, by device ([`HostileRelay::redeliver`]).
    redeliver: HashMap<DeviceId, u32>,
    /// Items already delivered to a redelivering device, by device and lease instance.
    redelivery: HashMap<(DeviceId, Option<String>), BTreeMap<u64, Copies>>,
    /// The next requests to answer with an error ([`HostileRelay::fail_next`]).
    failing: Option<Failing>,
    /// How many of the next connections to close at once ([`HostileRelay::reset_connections`]).
    resets: u32,
    /// The device of each relay session opened through this proxy (its requests name the
    /// session, not the device), by session id as sent.
    sessions: HashMap<String, DeviceId>,
}

/// An item delivered to a redelivering device, and how many more copies later answers carry.
struct Copies {
    item: InboxItem,
    left: u32,
}

/// Error answers still to give.
#[derive(Clone, Copy)]
struct Failing {
    left: u32,
    status: StatusCode,
    retry_after: Option<u64>,
}

/// Where an injected item goes in the inbox answer that carries it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Slip {
    /// Before the relay's items (it shares the first one's position).
    Before,
    /// After the relay's items (it shares the last one's position).
    After,
}

#[derive(Clone)]
struct Proxy {
    upstream: String,
    http: reqwest::Client,
    tampering: Arc<Mutex<Tampering>>,
}

/// A proxy in front of a relay that a test can turn hostile. Stops when dropped.
pub struct HostileRelay {
    addr: std::net::SocketAddr,
    tampering: Arc<Mutex<Tampering>>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for HostileRelay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HostileRelay")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Drop for HostileRelay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl HostileRelay {
    /// Starts a proxy on `127.0.0.1` in front of the relay at `upstream` (`http://HOST:PORT`).
    ///
    /// # Panics
    /// If no loopback port can be bound (a test environment problem).
    pub async fn start(upstream: &str) -> Self {
        #[allow(clippy::expect_used)]
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port for the hostile relay");
        #[allow(clippy::expect_used)]
        let addr = listener.local_addr().expect("the bound address");
        let tampering = Arc::new(Mutex::new(Tampering::default()));
        let proxy = Proxy {
            upstream: upstream.trim_end_matches('/').to_owned(),
            http: reqwest::Client::new(),
            tampering: Arc::clone(&tampering),
        };
        let app = axum::Router::new().fallback(forward).with_state(proxy);
        let listener = Resetting {
            inner: listener,
            tampering: Arc::clone(&tampering),
        };
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            addr,
            tampering,
            task,
        }
    }

    /// `http://ADDR` of the proxy: give it to the devices under attack.
    #[must_use]
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn tampering(&self) -> std::sync::MutexGuard<'_, Tampering> {
        self.tampering
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// From now on, answers `GET path` (exact path, without query) with `body` instead of
    /// asking the relay: e.g. `/v1/devices/{id}` with another device's key bundle, or
    /// `/v1/entities/{entity}` with another admin's directory record.
    pub fn replace_answer(&self, path: &str, body: serde_json::Value) {
        self.tampering().answers.insert(path.to_owned(), body);
    }

    /// Slips `item` into the next inbox answer for `device` that carries items from the relay,
    /// before or after them, at the inbox position of the first or last of them. (Inbox
    /// positions are the relay's; the device's requests are signed, so the proxy cannot move
    /// its cursor: an injected item rides along with real ones instead of taking a position
    /// a real item would need.)
    pub fn inject(&self, device: DeviceId, item: InboxItem, slip: Slip) {
        self.tampering()
            .injected
            .entry(device)
            .or_default()
            .push((item, slip));
    }

    /// How many items [`HostileRelay::inject`]ed for `device` still wait for an inbox answer
    /// to ride along with.
    #[must_use]
    pub fn pending_injections(&self, device: DeviceId) -> usize {
        self.tampering().injected.get(&device).map_or(0, Vec::len)
    }

    /// The last [`DELIVERED_LOG`] inbox items the relay delivered to `device` through this
    /// proxy, in order.
    #[must_use]
    pub fn delivered(&self, device: DeviceId) -> Vec<InboxItem> {
        self.tampering()
            .delivered
            .get(&device)
            .cloned()
            .unwrap_or_default()
    }

    /// Calls `watcher` with the method and path of every request, before it is forwarded.
    pub fn watch(&self, watcher: Watcher) {
        self.tampering().watchers.push(watcher);
    }

    /// The requests that came through the proxy, oldest first (at most [`REQUEST_LOG`]), with
    /// the fault each was answered with, if any.
    #[must_use]
    pub fn requests(&self) -> Vec<Logged> {
        self.tampering().requests.iter().cloned().collect()
    }

    /// The sealed messages posted through the proxy, oldest first (at most [`REQUEST_LOG`]),
    /// with the relay's answer to each. A message posted again (a retry) is listed again.
    #[must_use]
    pub fn posts(&self) -> Vec<PostedMessage> {
        self.tampering().posts.iter().cloned().collect()
    }

    /// Calls `watcher` with the method, path and status of every answer of the relay, before
    /// it is passed on (a message refused as a generation sealed twice is a `POST` to
    /// `/v1/threads/{thread}/messages` answered `409 Conflict`).
    pub fn watch_answers(&self, watcher: AnswerWatcher) {
        self.tampering().answer_watchers.push(watcher);
    }

    /// From now on, every inbox item the relay delivers to `device` is delivered `times` times
    /// in all (`0` and `1` turn redelivery off): twice in the answer that brings it, and the
    /// other copies one per later inbox answer of the device (also empty ones, and also after
    /// the device acknowledged it), at the item's position among that answer's items, so the
    /// device sees old positions again. Copies go to answers for the same lease `instance` as
    /// the original. An item the relay itself delivers again (not acknowledged yet) is not
    /// multiplied again. At most [`REDELIVERY_BUFFER`] items are kept per device and instance.
    pub fn redeliver(&self, device: DeviceId, times: u32) {
        let mut tampering = self.tampering();
        if times <= 1 {
            tampering.redeliver.remove(&device);
            tampering.redelivery.retain(|(d, _), _| *d != device);
        } else {
            tampering.redeliver.insert(device, times);
        }
    }

    /// Answers the next `n` requests (of any device) with `status` and, if given, a
    /// `Retry-After: retry_after` header, without forwarding them (a relay that is down, busy
    /// or rate limiting), with the relay's JSON error body (`rate_limited` for 429,
    /// `unavailable` for 503, ...). A `status` that is not an HTTP status becomes 503. Requests
    /// of every device count, background acknowledgements too. Replaces what an earlier call
    /// left; `n == 0` turns it off.
    pub fn fail_next(&self, n: u32, status: u16, retry_after: Option<u64>) {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
        self.tampering().failing = (n > 0).then_some(Failing {
            left: n,
            status,
            retry_after,
        });
    }

    /// Closes the connections of the next `n` requests without an answer (a relay that crashes
    /// or a network that drops): the client sees its connection closed. Adds to what an
    /// earlier call left.
    pub fn reset_connections(&self, n: u32) {
        let mut tampering = self.tampering();
        tampering.resets = tampering.resets.saturating_add(n);
    }
}

/// The proxy's listener: closes the connections it is told to reset as they come (each
/// request comes on a connection of its own, see the module docs).
struct Resetting {
    inner: tokio::net::TcpListener,
    tampering: Arc<Mutex<Tampering>>,
}

impl axum::serve::Listener for Resetting {
    type Io = tokio::net::TcpStream;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let (stream, addr) = axum::serve::Listener::accept(&mut self.inner).await;
            {
                let mut tampering = self
                    .tampering
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                if tampering.resets > 0 {
                    tampering.resets -= 1;
                    drop(stream);
                    continue;
                }
            }
            return (stream, addr);
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

async fn forward(State(proxy): State<Proxy>, request: Request) -> Response {
    let mut response = answer(proxy, request).await;
    response.headers_mut().insert(
        axum::http::header::CONNECTION,
        axum::http::HeaderValue::from_static("close"),
    );
    response
}

async fn answer(proxy: Proxy, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    if parts.uri.path() == "/v1/inbox/stream" {
        return (
            StatusCode::NOT_FOUND,
            axum::Json(ErrorBody {
                error: ErrorDetail {
                    code: ErrorCode::NotFound,
                    message: "this proxy serves no inbox streams: long-poll /v1/inbox".to_owned(),
                },
            }),
        )
            .into_response();
    }
    let path_and_query = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.path().to_owned(), ToString::to_string);
    let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
    let signed_by: Option<DeviceId> = header(headers::DEVICE).and_then(|v| v.parse().ok());
    let session = header(session_headers::SESSION).map(str::to_owned);
    let device;
    {
        let mut tampering = proxy
            .tampering
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        device = signed_by.or_else(|| {
            session
                .as_ref()
                .and_then(|s| tampering.sessions.get(s).copied())
        });
        for watcher in &tampering.watchers {
            watcher(&parts.method, &path_and_query);
        }
        if tampering.requests.len() >= REQUEST_LOG {
            tampering.requests.pop_front();
        }
        let fault = tampering.failing.as_ref().map(|f| f.status);
        tampering.requests.push_back(Logged {
            at: std::time::Instant::now(),
            method: parts.method.clone(),
            path: path_and_query.clone(),
            fault,
        });
        if let Some(failing) = tampering.failing.as_mut() {
            let (status, retry_after) = (failing.status, failing.retry_after);
            failing.left = failing.left.saturating_sub(1);
            if failing.left == 0 {
                tampering.failing = None;
            }
            let mut headers = HeaderMap::new();
            if let Some(secs) = retry_after {
                headers.insert(axum::http::header::RETRY_AFTER, secs.into());
            }
            return (status, headers, axum::Json(fault_body(status))).into_response();
        }
        if parts.method == Method::GET
            && let Some(answer) = tampering.answers.get(parts.uri.path())
        {
            return (StatusCode::OK, axum::Json(answer.clone())).into_response();
        }
    }
    let Ok(body) = axum::body::to_bytes(body, MAX_BODY).await else {
        return StatusCode::PAYLOAD_TOO_LARGE.into_response();
    };
    let posted = (parts.method == Method::POST && is_message_post(parts.uri.path()))
        .then(|| decode::<SealedMessage>(&body).ok())
        .flatten()
        .map(|message| PostedMessage {
            at: std::time::Instant::now(),
            device,
            header: message.header,
            status: None,
        });
    let mut upstream = proxy.http.request(
        parts.method.clone(),
        format!("{}{path_and_query}", proxy.upstream),
    );
    for (name, value) in &parts.headers {
        if name != "host" && name != "content-length" {
            upstream = upstream.header(name.as_str(), value.as_bytes());
        }
    }
    let sent = upstream.body(body.to_vec()).send().await;
    let status = sent.as_ref().ok().map(|answer| {
        StatusCode::from_u16(answer.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY)
    });
    if let Some(mut posted) = posted {
        posted.status = status;
        let mut tampering = proxy
            .tampering
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if tampering.posts.len() >= REQUEST_LOG {
            tampering.posts.pop_front();
        }
        tampering.posts.push_back(posted);
    }
    let (answer, status) = match (sent, status) {
        (Ok(answer), Some(status)) => (answer, status),
        (Err(e), _) => return (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
        (Ok(_), None) => return StatusCode::BAD_GATEWAY.into_response(),
    };
    for watcher in &proxy
        .tampering
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .answer_watchers
    {
        watcher(&parts.method, &path_and_query, status);
    }
    let mut headers = HeaderMap::new();
    for (name, value) in answer.headers() {
        if let (Ok(name), Ok(value)) = (
            axum::http::HeaderName::from_bytes(name.as_str().as_bytes()),
            axum::http::HeaderValue::from_bytes(value.as_bytes()),
        ) && name != "content-length"
            && name != "transfer-encoding"
        {
            headers.insert(name, value);
        }
    }
    let Ok(bytes) = answer.bytes().await else {
        return StatusCode::BAD_GATEWAY.into_response();
    };
    if let (Some(device), "/v1/sessions", true) = (device, parts.uri.path(), status.is_success())
        && let Ok(grant) = decode::<SessionGrant>(&bytes)
    {
        proxy
            .tampering
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .sessions
            .insert(grant.session, device);
    }
    let bytes = match (device, parts.uri.path(), status.is_success()) {
        (Some(device), "/v1/inbox", true) => {
            tamper_inbox(&proxy, device, instance(parts.uri.query()), bytes)
        }
        _ => bytes,
    };
    (status, headers, Body::from(bytes)).into_response()
}

/// Whether `path` is `/v1/threads/{thread}/messages`.
fn is_message_post(path: &str) -> bool {
    path.strip_prefix("/v1/threads/")
        .and_then(|rest| rest.strip_suffix("/messages"))
        .is_some_and(|thread| !thread.is_empty() && !thread.contains('/'))
}

/// The relay's error body for an injected failure with `status`.
fn fault_body(status: StatusCode) -> ErrorBody {
    let code = match status.as_u16() {
        429 => ErrorCode::RateLimited,
        503 => ErrorCode::Unavailable,
        403 => ErrorCode::Forbidden,
        404 => ErrorCode::NotFound,
        409 => ErrorCode::Conflict,
        500 => ErrorCode::Internal,
        _ => ErrorCode::Unknown,
    };
    ErrorBody {
        error: ErrorDetail {
            code,
            message: "fault injected by the hostile relay".to_owned(),
        },
    }
}

/// The lease instance an inbox request names (`instance=` in its query), as sent.
fn instance(query: Option<&str>) -> Option<String> {
    query?
        .split('&')
        .find_map(|pair| pair.strip_prefix("instance="))
        .map(str::to_owned)
}

/// Records what the relay delivered to `device`, appends what the test injected, and adds
/// redelivered copies.
fn tamper_inbox(proxy: &Proxy, device: DeviceId, instance: Option<String>, bytes: Bytes) -> Bytes {
    let Ok(mut answer) = decode::<InboxAnswer>(&bytes) else {
        return bytes;
    };
    let mut tampering = proxy
        .tampering
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    let delivered = tampering.delivered.entry(device).or_default();
    for item in &answer.items {
        if !delivered.iter().any(|d| d.seq == item.seq) {
            if delivered.len() >= DELIVERED_LOG {
                delivered.remove(0);
            }
            delivered.push(item.clone());
        }
    }
    let redelivered = redeliver(&mut tampering, device, instance, &mut answer.items);
    let (Some(first), Some(last)) = (
        answer.items.first().map(|i| i.seq),
        answer.items.last().map(|i| i.seq),
    ) else {
        return bytes;
    };
    let injected = tampering.injected.remove(&device).unwrap_or_default();
    if injected.is_empty() && !redelivered {
        return bytes;
    }
    let mut before = Vec::new();
    for (mut item, slip) in injected {
        match slip {
            Slip::Before => {
                item.seq = first;
                before.push(item);
            }
            Slip::After => {
                item.seq = last;
                answer.items.push(item);
            }
        }
    }
    before.append(&mut answer.items);
    answer.items = before;
    encode(&answer).map_or(bytes, Bytes::from)
}

/// Adds redelivered copies to `items`, an inbox answer for `device` (under lease `instance`):
/// a second copy of each item new to the buffer, and one copy of each buffered item that has
/// copies left; keeps the answer in position order. Whether it changed anything.
fn redeliver(
    tampering: &mut Tampering,
    device: DeviceId,
    instance: Option<String>,
    items: &mut Vec<InboxItem>,
) -> bool {
    let Some(&times) = tampering.redeliver.get(&device) else {
        return false;
    };
    let buffer = tampering.redelivery.entry((device, instance)).or_default();
    let fresh: Vec<u64> = items.iter().map(|item| item.seq).collect();
    let mut copies = Vec::new();
    for (seq, copy) in buffer.iter_mut() {
        if copy.left > 0 && !fresh.contains(seq) {
            copy.left -= 1;
            copies.push(copy.item.clone());
        }
    }
    for item in items.iter() {
        if let std::collections::btree_map::Entry::Vacant(slot) = buffer.entry(item.seq) {
            copies.push(item.clone());
            slot.insert(Copies {
                item: item.clone(),
                left: times.saturating_sub(2),
            });
        }
    }
    while buffer.len() > REDELIVERY_BUFFER {
        buffer.pop_first();
    }
    if copies.is_empty() {
        return false;
    }
    items.append(&mut copies);
    // Stable: each copy right after the original of its position.
    items.sort_by_key(|item| item.seq);
    true
}
