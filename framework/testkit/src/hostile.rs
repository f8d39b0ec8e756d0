//! A hostile relay for attack tests: an HTTP proxy on loopback in front of a real relay that
//! forwards every request unchanged (the devices' request signatures cover only method, path,
//! query and body, so they still verify upstream) and lets a test tamper with what devices get
//! back: replace a `GET` answer (a key bundle, a directory record), append items to a device's
//! inbox (a replayed commit), and watch requests as they pass (to check what was durable when a
//! post left its device).
//!
//! Devices under attack are pointed at [`HostileRelay::url`]; the others may talk to the real
//! relay directly.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
/// The HTTP method a [`Watcher`] is given.
pub use axum::http::Method;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use switchboard_protocol::api::{InboxAnswer, InboxItem};
use switchboard_protocol::request::headers;
use switchboard_protocol::{DeviceId, decode, encode};

/// The largest request body forwarded (the relay's own limit is 4 MiB).
const MAX_BODY: usize = 8 * 1024 * 1024;

/// Called for every request before it is forwarded: method and path (with query).
pub type Watcher = Box<dyn Fn(&Method, &str) + Send + Sync>;

#[derive(Default)]
struct Tampering {
    /// Answers served instead of the relay's, by exact path (`GET` only).
    answers: HashMap<String, serde_json::Value>,
    /// Items slipped into the next inbox answer of a device that carries real items.
    injected: HashMap<DeviceId, Vec<(InboxItem, Slip)>>,
    /// Every inbox item the relay delivered through this proxy, by device.
    delivered: HashMap<DeviceId, Vec<InboxItem>>,
    watchers: Vec<Watcher>,
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

    /// Every inbox item the relay delivered to `device` through this proxy, in order.
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
}

async fn forward(State(proxy): State<Proxy>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let path_and_query = parts
        .uri
        .path_and_query()
        .map_or_else(|| parts.uri.path().to_owned(), ToString::to_string);
    let device: Option<DeviceId> = parts
        .headers
        .get(headers::DEVICE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    {
        let tampering = proxy
            .tampering
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for watcher in &tampering.watchers {
            watcher(&parts.method, &path_and_query);
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
    let mut upstream = proxy.http.request(
        parts.method.clone(),
        format!("{}{path_and_query}", proxy.upstream),
    );
    for (name, value) in &parts.headers {
        if name != "host" && name != "content-length" {
            upstream = upstream.header(name.as_str(), value.as_bytes());
        }
    }
    let answer = match upstream.body(body.to_vec()).send().await {
        Ok(answer) => answer,
        Err(e) => return (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    };
    let status = StatusCode::from_u16(answer.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
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
    let bytes = match (device, parts.uri.path(), status.is_success()) {
        (Some(device), "/v1/inbox", true) => tamper_inbox(&proxy, device, bytes),
        _ => bytes,
    };
    (status, headers, Body::from(bytes)).into_response()
}

/// Records what the relay delivered to `device` and appends what the test injected.
fn tamper_inbox(proxy: &Proxy, device: DeviceId, bytes: Bytes) -> Bytes {
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
            delivered.push(item.clone());
        }
    }
    let (Some(first), Some(last)) = (
        answer.items.first().map(|i| i.seq),
        answer.items.last().map(|i| i.seq),
    ) else {
        return bytes;
    };
    let injected = tampering.injected.remove(&device).unwrap_or_default();
    if injected.is_empty() {
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
