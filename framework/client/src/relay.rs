//! The relay's HTTP API, every request signed by the device's identity key.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::Method;
use switchboard_protocol::api::{
    Ack, DirectoryRecord, ErrorBody, ErrorCode, InboxItem, ItemKind, MAX_INBOX_PAGE_BYTES,
    NewEntity, PostAnswer, Registration,
};
use switchboard_protocol::session::{
    SessionAuth, SessionGrant, SessionId, SessionKey, SessionOffer,
};
use switchboard_protocol::wire::MAX_WIRE_BYTES;
use switchboard_protocol::{
    Commit, Csprng, DeviceId, DeviceKeys, EntityId, HistoryGrant, KeyBundle, RequestAuth,
    SealedMessage, ThreadId, ThreadOpen, Timestamp, Version, WireType, decode, encode,
};

use crate::error::ClientError;

/// The largest answer read from the relay: a full inbox page (the relay pages by bytes) plus
/// one largest item and the items' envelopes, with room to spare.
const MAX_ANSWER_BYTES: usize = 2 * (MAX_INBOX_PAGE_BYTES + MAX_WIRE_BYTES);
/// Time allowed for a request on top of a long-poll's wait.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The current time as Unix seconds.
#[must_use]
pub fn now() -> Timestamp {
    Timestamp(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
    )
}

/// A device's connection to one relay.
#[derive(Clone)]
pub struct RelayClient {
    http: reqwest::Client,
    base: String,
    keys: Arc<DeviceKeys>,
    rng: Arc<Mutex<Csprng>>,
    /// The relay session its requests use once open (shared by clones).
    session: Arc<Mutex<SessionState>>,
}

/// A client's relay session (`switchboard_protocol::session`): after its first signed request
/// a client opens one, and authenticates later requests with a MAC instead of a signature.
#[derive(Default)]
struct SessionState {
    open: Option<OpenSession>,
    /// Requests signed so far (a client that makes one request only opens no session).
    signed: u64,
    /// A session is being opened (requests meanwhile are signed).
    opening: bool,
    /// Unix seconds before which no session is tried again (the relay refused one).
    retry_at: u64,
}

struct OpenSession {
    id: SessionId,
    key: Arc<SessionKey>,
    next: u64,
    expires_at: u64,
}

/// A session is not used in its last minute (a request must not arrive after it expired).
const SESSION_MARGIN_SECS: u64 = 60;
/// After the relay refused a session, requests are signed for this long before the next try.
const SESSION_RETRY_SECS: u64 = 60;

/// Marks a session being opened; clears the mark when dropped.
struct Opening<'a>(&'a RelayClient);

impl Drop for Opening<'_> {
    fn drop(&mut self) {
        self.0.session().opening = false;
    }
}

/// How a request is authenticated.
enum Auth {
    Signed(RequestAuth),
    Session(SessionAuth),
}

impl std::fmt::Debug for RelayClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelayClient")
            .field("relay", &self.base)
            .field("device", &self.keys.device())
            .finish_non_exhaustive()
    }
}

impl RelayClient {
    /// A client of the relay at `url` (`http://HOST:PORT`; `https://` needs the `tls` feature)
    /// acting as the device `keys`.
    ///
    /// # Errors
    /// [`ClientError::BadUrl`] for another URL form; [`ClientError::Unreachable`] if the HTTP
    /// client cannot be built.
    pub fn new(url: &str, keys: Arc<DeviceKeys>) -> Result<Self, ClientError> {
        let base = check_url(url)?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| ClientError::Unreachable {
                url: base.clone(),
                detail: e.to_string(),
            })?;
        let rng = Csprng::from_os().map_err(|e| ClientError::Protocol(e.into()))?;
        Ok(Self {
            http,
            base,
            keys,
            rng: Arc::new(Mutex::new(rng)),
            session: Arc::default(),
        })
    }

    /// The same connection acting with `keys` (the same device after a KEM key rotation), so
    /// that the client does not keep the replaced keys alive.
    #[must_use]
    pub fn with_keys(&self, keys: Arc<DeviceKeys>) -> Self {
        Self {
            http: self.http.clone(),
            base: self.base.clone(),
            keys,
            rng: Arc::clone(&self.rng),
            session: Arc::clone(&self.session),
        }
    }

    /// Whether this client holds a relay session (its requests then carry a MAC under the
    /// session key instead of an Ed25519 signature; it opens one after its first signed
    /// request, and signs again for a minute when the relay refuses one).
    #[must_use]
    pub fn session_open(&self) -> bool {
        self.session().open.is_some()
    }

    /// The relay's base URL.
    #[must_use]
    pub fn url(&self) -> &str {
        &self.base
    }

    /// The device this client acts as.
    #[must_use]
    pub fn device(&self) -> DeviceId {
        self.keys.device()
    }

    /// Sends one signed request; returns the body of a 2xx answer, or the relay's refusal.
    async fn call(
        &self,
        what: &'static str,
        method: Method,
        path_and_query: &str,
        body: Vec<u8>,
        timeout: Duration,
    ) -> Result<Vec<u8>, ClientError> {
        let response = self
            .send(method, path_and_query, body, Some(timeout))
            .await?;
        self.answer(what, response).await
    }

    /// Sends a request authenticated by the session, or signed (within `timeout`, if given:
    /// the whole exchange, body included); the relay's answer, whatever its status. A request
    /// the relay refuses as unauthenticated under a session (expired, or lost with a restart)
    /// is sent again signed, and the session dropped.
    async fn send(
        &self,
        method: Method,
        path_and_query: &str,
        body: Vec<u8>,
        timeout: Option<Duration>,
    ) -> Result<reqwest::Response, ClientError> {
        match self
            .session_auth(method.as_str(), path_and_query, &body)
            .await
        {
            Some(auth) => {
                let response = self
                    .send_with(
                        Auth::Session(auth.clone()),
                        method.clone(),
                        path_and_query,
                        body.clone(),
                        timeout,
                    )
                    .await?;
                if response.status() != reqwest::StatusCode::UNAUTHORIZED {
                    return Ok(response);
                }
                tracing::debug!(relay = %self.base, "the relay refused the session; signing");
                {
                    let mut state = self.session();
                    // Not a newer session another request opened meanwhile.
                    if state.open.as_ref().is_some_and(|o| o.id == auth.session) {
                        state.open = None;
                    }
                }
                let auth = self.sign(method.as_str(), path_and_query, &body);
                self.send_with(auth, method, path_and_query, body, timeout)
                    .await
            }
            None => {
                let auth = self.sign(method.as_str(), path_and_query, &body);
                self.session().signed += 1;
                self.send_with(auth, method, path_and_query, body, timeout)
                    .await
            }
        }
    }

    fn session(&self) -> std::sync::MutexGuard<'_, SessionState> {
        self.session.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn sign(&self, method: &str, path_and_query: &str, body: &[u8]) -> Auth {
        let mut rng = self.rng.lock().unwrap_or_else(PoisonError::into_inner);
        Auth::Signed(RequestAuth::sign(
            &self.keys,
            method,
            path_and_query,
            body,
            now(),
            &mut rng,
        ))
    }

    /// The session headers of a request, opening a session first if it is time to (after the
    /// first signed request; not while another task opens one; not soon after a refusal).
    async fn session_auth(
        &self,
        method: &str,
        path_and_query: &str,
        body: &[u8],
    ) -> Option<SessionAuth> {
        let now = now().0;
        let open = {
            let mut state = self.session();
            if let Some(open) = state
                .open
                .as_mut()
                .filter(|o| o.expires_at > now.saturating_add(SESSION_MARGIN_SECS))
            {
                let counter = open.next;
                open.next += 1;
                let key = Arc::clone(&open.key);
                let id = open.id;
                drop(state);
                return Some(key.authenticate(&id, counter, method, path_and_query, body));
            }
            let open = state.signed >= 1 && !state.opening && now >= state.retry_at;
            if open {
                state.opening = true;
            }
            open
        };
        if !open {
            return None;
        }
        // Given back even if this future is dropped midway (a caller's timeout).
        let opening = Opening(self);
        let opened = self.open_session().await;
        drop(opening);
        let mut state = self.session();
        match opened {
            Ok(mut session) => {
                let counter = session.next;
                session.next += 1;
                let auth =
                    session
                        .key
                        .authenticate(&session.id, counter, method, path_and_query, body);
                state.open = Some(session);
                Some(auth)
            }
            Err(e) => {
                tracing::debug!(relay = %self.base, error = %e, "no relay session; signing requests");
                state.retry_at = now.saturating_add(SESSION_RETRY_SECS);
                None
            }
        }
    }

    /// Opens a session with a signed `POST /v1/sessions` (one task at a time: see
    /// [`Opening`]).
    async fn open_session(&self) -> Result<OpenSession, ClientError> {
        let offer = {
            let mut rng = self.rng.lock().unwrap_or_else(PoisonError::into_inner);
            SessionOffer::new(&mut rng)
        };
        let body = encode(&offer.request())?;
        let path = "/v1/sessions";
        let auth = self.sign("POST", path, &body);
        let response = self
            .send_with(auth, Method::POST, path, body, Some(REQUEST_TIMEOUT))
            .await?;
        let bytes = self.answer("session", response).await?;
        let grant: SessionGrant = decode(&bytes)?;
        let (id, key) =
            offer
                .accept(self.keys.device(), &grant)
                .map_err(|detail| ClientError::BadAnswer {
                    what: "session",
                    detail,
                })?;
        Ok(OpenSession {
            id,
            key: Arc::new(key),
            next: 0,
            expires_at: grant.expires_at.0,
        })
    }

    /// Sends a request with `auth`'s headers.
    async fn send_with(
        &self,
        auth: Auth,
        method: Method,
        path_and_query: &str,
        body: Vec<u8>,
        timeout: Option<Duration>,
    ) -> Result<reqwest::Response, ClientError> {
        let mut request = self
            .http
            .request(method, format!("{}{path_and_query}", self.base));
        if let Some(timeout) = timeout {
            request = request.timeout(timeout);
        }
        let headers: Vec<_> = match auth {
            Auth::Signed(auth) => auth.header_values().into(),
            Auth::Session(auth) => auth.header_values().into(),
        };
        for (name, value) in headers {
            request = request.header(name, value);
        }
        if !body.is_empty() {
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body);
        }
        request.send().await.map_err(|e| self.unreachable(&e))
    }

    fn unreachable(&self, e: &reqwest::Error) -> ClientError {
        ClientError::Unreachable {
            url: self.base.clone(),
            detail: e.to_string(),
        }
    }

    /// The body of a successful answer (at most [`MAX_ANSWER_BYTES`]), or the relay's refusal.
    async fn answer(
        &self,
        what: &'static str,
        mut response: reqwest::Response,
    ) -> Result<Vec<u8>, ClientError> {
        let status = response.status();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        let mut bytes = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| self.unreachable(&e))? {
            if bytes.len() + chunk.len() > MAX_ANSWER_BYTES {
                return Err(ClientError::BadAnswer {
                    what,
                    detail: format!("the answer is larger than {MAX_ANSWER_BYTES} bytes"),
                });
            }
            bytes.extend_from_slice(&chunk);
        }
        if status.is_success() {
            return Ok(bytes);
        }
        let (code, message) = match serde_json::from_slice::<ErrorBody>(&bytes) {
            Ok(body) => (body.error.code, body.error.message),
            Err(_) => (
                ErrorCode::Unknown,
                String::from_utf8_lossy(bytes.get(..bytes.len().min(500)).unwrap_or_default())
                    .into_owned(),
            ),
        };
        Err(ClientError::Refused {
            what,
            status: status.as_u16(),
            code,
            message,
            retry_after,
        })
    }

    /// Opens the device's inbox as a stream of items as they arrive (`GET /v1/inbox/stream`):
    /// the items after `after` (of the threads leased to `instance`, if given), over one
    /// response instead of a request per page. Acknowledge with [`RelayClient::ack`].
    ///
    /// # Errors
    /// [`ClientError::Unreachable`], or the relay's refusal ([`ClientError::Refused`]; a relay
    /// without streams answers `not_found`: use [`RelayClient::inbox_page`] then).
    pub async fn inbox_stream(
        &self,
        after: u64,
        instance: Option<&str>,
    ) -> Result<InboxStream, ClientError> {
        let mut path = format!("/v1/inbox/stream?after={after}");
        if let Some(instance) = instance {
            path.push_str("&instance=");
            path.push_str(instance);
        }
        let response = self.send(Method::GET, &path, Vec::new(), None).await?;
        if !response.status().is_success() {
            // The refusal, as for any request (the body is bounded there).
            self.answer("inbox stream", response).await?;
            return Err(ClientError::BadAnswer {
                what: "inbox stream",
                detail: "refused without an error".to_owned(),
            });
        }
        Ok(InboxStream {
            response,
            buffer: Vec::new(),
            ended: false,
            url: self.base.clone(),
        })
    }

    async fn call_decode<T: WireType>(
        &self,
        what: &'static str,
        method: Method,
        path_and_query: &str,
        body: Vec<u8>,
    ) -> Result<T, ClientError> {
        let bytes = self
            .call(what, method, path_and_query, body, REQUEST_TIMEOUT)
            .await?;
        decode(&bytes).map_err(|e| ClientError::BadAnswer {
            what,
            detail: e.to_string(),
        })
    }

    /// Registers this device's key bundle (or updates it).
    ///
    /// # Errors
    /// [`ClientError::Refused`] with `conflict` if the device id is registered with another key.
    pub async fn register(&self) -> Result<Registration, ClientError> {
        let bundle = encode(&self.keys.bundle(now()))?;
        self.call_decode("registration", Method::POST, "/v1/devices", bundle)
            .await
    }

    /// Publishes `bundle`, this device's bundle: a newer one replaces the registered one (a KEM
    /// key rotation); the relay refuses one older than what it has.
    ///
    /// # Errors
    /// [`ClientError::Refused`] with `conflict` if the device id is registered with another key
    /// or a newer bundle.
    pub async fn publish_bundle(&self, bundle: &KeyBundle) -> Result<Registration, ClientError> {
        let body = encode(bundle)?;
        self.call_decode("registration", Method::POST, "/v1/devices", body)
            .await
    }

    /// A device's key bundle, verified and checked to be that device's.
    ///
    /// # Errors
    /// [`ClientError::Refused`] with `not_found` for an unknown device; [`ClientError::BadAnswer`]
    /// if the relay serves a bundle that does not verify or is another device's.
    pub async fn device_bundle(&self, device: DeviceId) -> Result<KeyBundle, ClientError> {
        let bundle: KeyBundle = self
            .call_decode(
                "device bundle",
                Method::GET,
                &format!("/v1/devices/{device}"),
                Vec::new(),
            )
            .await?;
        if bundle.device != device {
            return Err(ClientError::BadAnswer {
                what: "device bundle",
                detail: format!("asked for {device}, got {}", bundle.device),
            });
        }
        bundle.verify().map_err(|e| ClientError::BadAnswer {
            what: "device bundle",
            detail: e.to_string(),
        })?;
        Ok(bundle)
    }

    /// Creates `entity` with this device as its admin.
    ///
    /// # Errors
    /// [`ClientError::Refused`] with `conflict` if the entity has another admin.
    pub async fn create_entity(
        &self,
        entity: &EntityId,
        display_name: &str,
    ) -> Result<(), ClientError> {
        let body = encode(&NewEntity {
            v: Version,
            entity: entity.clone(),
            display_name: display_name.to_owned(),
        })?;
        self.call(
            "entity",
            Method::POST,
            "/v1/entities",
            body,
            REQUEST_TIMEOUT,
        )
        .await?;
        Ok(())
    }

    /// An entity's directory record, its admin bundle verified.
    ///
    /// # Errors
    /// [`ClientError::Refused`] with `not_found` for an unknown entity; [`ClientError::BadAnswer`]
    /// if the record is for another entity or its bundle does not verify.
    pub async fn directory(&self, entity: &EntityId) -> Result<DirectoryRecord, ClientError> {
        let record: DirectoryRecord = self
            .call_decode(
                "directory record",
                Method::GET,
                &format!("/v1/entities/{entity}"),
                Vec::new(),
            )
            .await?;
        if &record.entity != entity {
            return Err(ClientError::BadAnswer {
                what: "directory record",
                detail: format!("asked for {entity}, got {}", record.entity),
            });
        }
        record.admin.verify().map_err(|e| ClientError::BadAnswer {
            what: "directory record",
            detail: e.to_string(),
        })?;
        Ok(record)
    }

    /// Posts a thread open (customer).
    ///
    /// # Errors
    /// [`ClientError::Refused`] if the relay refuses it.
    pub async fn open_thread(&self, open: &ThreadOpen) -> Result<PostAnswer, ClientError> {
        self.call_decode("thread open", Method::POST, "/v1/threads", encode(open)?)
            .await
    }

    /// Posts a commit (admin).
    ///
    /// # Errors
    /// [`ClientError::Refused`] with `forbidden` unless this device is the thread's admin.
    pub async fn post_commit(
        &self,
        thread: ThreadId,
        commit: &Commit,
    ) -> Result<PostAnswer, ClientError> {
        self.call_decode(
            "commit",
            Method::POST,
            &format!("/v1/threads/{thread}/commits"),
            encode(commit)?,
        )
        .await
    }

    /// Posts a sealed message.
    ///
    /// # Errors
    /// [`ClientError::Refused`] with `forbidden` unless this device is a current member.
    pub async fn post_message(
        &self,
        thread: ThreadId,
        message: &SealedMessage,
    ) -> Result<PostAnswer, ClientError> {
        self.call_decode(
            "message",
            Method::POST,
            &format!("/v1/threads/{thread}/messages"),
            encode(message)?,
        )
        .await
    }

    /// Posts a history grant (admin) for the member it names.
    ///
    /// # Errors
    /// [`ClientError::Refused`] with `forbidden` unless this device is the thread's admin and
    /// the grantee a current member.
    pub async fn post_history(
        &self,
        thread: ThreadId,
        grant: &HistoryGrant,
    ) -> Result<PostAnswer, ClientError> {
        self.call_decode(
            "history grant",
            Method::POST,
            &format!("/v1/threads/{thread}/history"),
            encode(grant)?,
        )
        .await
    }

    /// Up to `limit` inbox items after `after`, waiting up to `wait` (rounded up to whole
    /// seconds, at most 30 s) for the first. With `instance`, only threads leased to that
    /// instance (a bot run as several processes). The relay pages by bytes too, so fewer items
    /// may come (at least one if any is waiting).
    ///
    /// One bad item never stops the inbox: an item whose position, thread and kind can be read
    /// but whose other fields cannot comes with a `null` payload (which the device then refuses
    /// and reports, moving past it); an item without even those is left out (the items after it
    /// still come).
    ///
    /// # Errors
    /// [`ClientError::Unreachable`] or [`ClientError::Refused`]; [`ClientError::BadAnswer`] if
    /// the answer as a whole is not an inbox.
    pub async fn inbox(
        &self,
        after: u64,
        limit: u32,
        wait: Duration,
        instance: Option<&str>,
    ) -> Result<Vec<InboxItem>, ClientError> {
        Ok(self.inbox_page(after, limit, wait, instance).await?.0)
    }

    /// [`RelayClient::inbox`], with the highest position in the answer, also of items that were
    /// left out as unreadable: a device moves its cursor past those too, so an item it cannot
    /// read (e.g. of a kind a newer relay added) never holds its inbox.
    ///
    /// # Errors
    /// As [`RelayClient::inbox`].
    pub async fn inbox_page(
        &self,
        after: u64,
        limit: u32,
        wait: Duration,
        instance: Option<&str>,
    ) -> Result<(Vec<InboxItem>, Option<u64>), ClientError> {
        self.inbox_page_acking(after, None, limit, wait, instance)
            .await
    }

    /// Like [`RelayClient::inbox_page`], but first acknowledges every item up to `ack` (as
    /// [`RelayClient::ack`] does, for the same instance) in the same request: one request
    /// instead of two. The acknowledgement holds once this returns `Ok`.
    ///
    /// # Errors
    /// As [`RelayClient::inbox`].
    pub async fn inbox_page_acking(
        &self,
        after: u64,
        ack: Option<u64>,
        limit: u32,
        wait: Duration,
        instance: Option<&str>,
    ) -> Result<(Vec<InboxItem>, Option<u64>), ClientError> {
        // The relay waits in whole seconds: round up, so that a short wait long-polls for a
        // second instead of turning into a busy loop of immediate answers.
        let wait_secs = wait.as_nanos().div_ceil(1_000_000_000).min(30);
        let wait = Duration::from_secs(u64::try_from(wait_secs).unwrap_or(30));
        let mut path = format!(
            "/v1/inbox?after={after}&limit={limit}&wait={}",
            wait.as_secs()
        );
        if let Some(instance) = instance {
            path.push_str("&instance=");
            path.push_str(instance);
        }
        if let Some(ack) = ack {
            path.push_str(&format!("&ack={ack}"));
        }
        let bytes = self
            .call(
                "inbox",
                Method::GET,
                &path,
                Vec::new(),
                wait + REQUEST_TIMEOUT,
            )
            .await?;
        inbox_items(&bytes)
    }

    /// Acknowledges every inbox item up to `up_to`: the relay deletes them.
    ///
    /// # Errors
    /// [`ClientError::Unreachable`] or [`ClientError::Refused`].
    pub async fn ack(&self, up_to: u64, instance: Option<&str>) -> Result<(), ClientError> {
        let body = encode(&Ack {
            v: Version,
            up_to,
            instance: instance.map(str::to_owned),
        })?;
        self.call("ack", Method::POST, "/v1/inbox/ack", body, REQUEST_TIMEOUT)
            .await?;
        Ok(())
    }
}

/// The envelope of an inbox answer, its items read one by one.
#[derive(serde::Deserialize)]
struct LenientInbox {
    v: serde_json::Value,
    items: Vec<serde_json::Value>,
}

/// Reads an inbox answer item by item (see [`RelayClient::inbox`]).
/// How long an inbox stream may stay silent (no item, no keep-alive) before it is taken for
/// dead: twice the relay's keep-alive interval and some.
pub const STREAM_IDLE: Duration = Duration::from_secs(35);

/// A device's inbox as it arrives, from [`RelayClient::inbox_stream`].
pub struct InboxStream {
    response: reqwest::Response,
    /// Bytes received and not yet parsed into whole events.
    buffer: Vec<u8>,
    ended: bool,
    url: String,
}

impl std::fmt::Debug for InboxStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InboxStream")
            .field("url", &self.url)
            .field("buffered", &self.buffer.len())
            .field("ended", &self.ended)
            .finish_non_exhaustive()
    }
}

impl InboxStream {
    /// The next items (at least one) and the highest position among them (items that do not
    /// read are passed on without their payload, as by [`RelayClient::inbox_page`]), or `None`
    /// when the relay ended the stream (it does after a few minutes): connect again from the
    /// cursor.
    ///
    /// # Errors
    /// [`ClientError::Unreachable`] if the connection broke or stayed silent for
    /// [`STREAM_IDLE`]; [`ClientError::Refused`] for an error the relay sent in the stream;
    /// [`ClientError::BadAnswer`] for an event larger than an inbox page.
    pub async fn next_items(
        &mut self,
    ) -> Result<Option<(Vec<InboxItem>, Option<u64>)>, ClientError> {
        loop {
            let mut values = Vec::new();
            let mut highest = None;
            while let Some(end) = self.buffer.windows(2).position(|w| w == b"\n\n") {
                let event: Vec<u8> = self.buffer.drain(..end + 2).collect();
                match parse_event(&event)? {
                    Event::Item { seq, data } => {
                        highest = highest.max(seq);
                        values.extend(data);
                    }
                    Event::End => self.ended = true,
                    Event::Nothing => {}
                }
            }
            if !values.is_empty() || highest.is_some() {
                let items = values.iter().filter_map(item_of).collect();
                return Ok(Some((items, highest)));
            }
            if self.ended {
                return Ok(None);
            }
            if self.buffer.len() > MAX_ANSWER_BYTES {
                return Err(ClientError::BadAnswer {
                    what: "inbox stream",
                    detail: format!("an event larger than {MAX_ANSWER_BYTES} bytes"),
                });
            }
            let chunk = tokio::time::timeout(STREAM_IDLE, self.response.chunk())
                .await
                .map_err(|_| self.broken(format!("silent for {STREAM_IDLE:?}")))?
                .map_err(|e| self.broken(e.to_string()))?;
            match chunk {
                Some(bytes) => self.buffer.extend_from_slice(&bytes),
                None => return Err(self.broken("the relay closed the stream".to_owned())),
            }
        }
    }

    fn broken(&self, detail: String) -> ClientError {
        ClientError::Unreachable {
            url: self.url.clone(),
            detail,
        }
    }
}

/// One server-sent event of the inbox stream.
enum Event {
    /// An item: its position (from `id:`) and its JSON, if it parses.
    Item {
        seq: Option<u64>,
        data: Option<serde_json::Value>,
    },
    End,
    /// A comment (keep-alive) or an event of a kind this client does not know.
    Nothing,
}

fn parse_event(event: &[u8]) -> Result<Event, ClientError> {
    let text = String::from_utf8_lossy(event);
    let (mut id, mut kind, mut data) = (None, None, String::new());
    for line in text.lines() {
        if let Some(value) = line.strip_prefix("id:") {
            id = value.trim().parse::<u64>().ok();
        } else if let Some(value) = line.strip_prefix("event:") {
            kind = Some(value.trim().to_owned());
        } else if let Some(value) = line.strip_prefix("data:") {
            data.push_str(value.trim_start());
        }
    }
    Ok(match kind.as_deref() {
        Some("item") => Event::Item {
            seq: id,
            data: serde_json::from_str(&data).ok(),
        },
        Some("end") => Event::End,
        Some("error") => {
            let (code, message) = match serde_json::from_str::<ErrorBody>(&data) {
                Ok(body) => (body.error.code, body.error.message),
                Err(_) => (ErrorCode::Unknown, data),
            };
            return Err(ClientError::Refused {
                what: "inbox stream",
                status: 503,
                code,
                message,
                retry_after: None,
            });
        }
        _ => Event::Nothing,
    })
}

/// An item from its JSON (salvaged without its payload if that does not read).
fn item_of(value: &serde_json::Value) -> Option<InboxItem> {
    match <InboxItem as serde::Deserialize>::deserialize(value) {
        Ok(item) => Some(item),
        Err(e) => {
            let item = salvage(value);
            match &item {
                Some(item) => {
                    tracing::warn!(seq = item.seq, error = %e, "inbox item is not valid; passing it on without its payload");
                }
                None => {
                    tracing::warn!(error = %e, "inbox item without a readable position, thread and kind; skipped");
                }
            }
            item
        }
    }
}

fn inbox_items(bytes: &[u8]) -> Result<(Vec<InboxItem>, Option<u64>), ClientError> {
    let bad = |detail: String| ClientError::BadAnswer {
        what: "inbox",
        detail,
    };
    let answer: LenientInbox = serde_json::from_slice(bytes).map_err(|e| bad(e.to_string()))?;
    if answer.v != 1 {
        return Err(bad(format!("unsupported version {}", answer.v)));
    }
    let highest = answer
        .items
        .iter()
        .filter_map(|value| value.get("seq").and_then(serde_json::Value::as_u64))
        .max();
    let items = answer.items.iter().filter_map(item_of).collect();
    Ok((items, highest))
}

/// An item whose position, thread, sender and kind read, with a `null` payload.
fn salvage(value: &serde_json::Value) -> Option<InboxItem> {
    let field = |name: &str| value.get(name).cloned();
    Some(InboxItem {
        seq: value.get("seq")?.as_u64()?,
        thread: serde_json::from_value(field("thread")?).ok()?,
        thread_seq: value
            .get("thread_seq")
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(0),
        sender: serde_json::from_value(field("sender")?).ok()?,
        kind: value.get("kind")?.as_str()?.parse::<ItemKind>().ok()?,
        payload: serde_json::Value::Null,
    })
}

/// `scheme://host[:port]` without a trailing slash, or why not.
fn check_url(url: &str) -> Result<String, ClientError> {
    let bad = |why| ClientError::BadUrl {
        url: url.to_owned(),
        why,
    };
    let rest = if let Some(rest) = url.strip_prefix("http://") {
        rest
    } else if let Some(rest) = url.strip_prefix("https://") {
        if !cfg!(feature = "tls") {
            return Err(bad(
                "https needs switchboard-client's `tls` feature (this build has no TLS)",
            ));
        }
        rest
    } else {
        return Err(bad("it must start with http:// or https://"));
    };
    let host = rest.strip_suffix('/').unwrap_or(rest);
    if host.is_empty() {
        return Err(bad("it has no host"));
    }
    if host.contains(['/', '?', '#', '@', ' ']) {
        return Err(bad(
            "give only scheme, host and port: the API paths are fixed",
        ));
    }
    Ok(url.strip_suffix('/').unwrap_or(url).to_owned())
}

#[cfg(test)]
mod tests {
    use super::{check_url, inbox_items};

    #[test]
    fn one_bad_inbox_item_does_not_stop_the_others() {
        let thread = "00112233445566778899aabbccddeeff";
        let sender = "ffeeddccbbaa99887766554433221100";
        let good = format!(
            r#"{{"seq":1,"thread":"{thread}","thread_seq":1,"sender":"{sender}","kind":"message","payload":{{"v":1}}}}"#
        );
        let extra_field = format!(
            r#"{{"seq":2,"thread":"{thread}","thread_seq":2,"sender":"{sender}","kind":"message","payload":{{}},"surprise":1}}"#
        );
        let unknown_kind = format!(
            r#"{{"seq":3,"thread":"{thread}","thread_seq":3,"sender":"{sender}","kind":"poll","payload":{{}}}}"#
        );
        let no_seq = r#"{"thread":"x"}"#;
        let last = good.replace(r#""seq":1"#, r#""seq":5"#);
        let answer =
            format!(r#"{{"v":1,"items":[{good},{extra_field},{unknown_kind},{no_seq},{last}]}}"#);
        let (items, highest) = inbox_items(answer.as_bytes()).unwrap();
        let seqs: Vec<u64> = items.iter().map(|i| i.seq).collect();
        assert_eq!(seqs, [1, 2, 5]);
        assert_eq!(highest, Some(5));
        assert!(
            items[1].payload.is_null(),
            "the bad item comes without its payload"
        );
        assert!(inbox_items(br#"{"v":2,"items":[]}"#).is_err());
    }

    /// An answer whose only item cannot be read (a kind a newer relay added): the device must
    /// still learn its position and move past it, or it fetches the same item forever.
    #[test]
    fn an_unreadable_last_item_still_moves_the_cursor() {
        let thread = "00112233445566778899aabbccddeeff";
        let sender = "ffeeddccbbaa99887766554433221100";
        let unknown_kind = format!(
            r#"{{"v":1,"items":[{{"seq":7,"thread":"{thread}","thread_seq":3,"sender":"{sender}","kind":"poll","payload":{{}}}}]}}"#
        );
        let (items, highest) = inbox_items(unknown_kind.as_bytes()).unwrap();
        assert!(items.is_empty());
        assert_eq!(highest, Some(7));
    }

    #[test]
    fn relay_urls_are_checked() {
        assert_eq!(
            check_url("http://127.0.0.1:8700/").ok().as_deref(),
            Some("http://127.0.0.1:8700")
        );
        assert!(check_url("http://relay.example").is_ok());
        for bad in [
            "127.0.0.1:8700",
            "ftp://x",
            "http://",
            "http://host/path",
            "http://user@host",
        ] {
            assert!(check_url(bad).is_err(), "{bad}");
        }
        if !cfg!(feature = "tls") {
            let err = check_url("https://relay.example").unwrap_err().to_string();
            assert!(err.contains("tls"), "{err}");
        }
    }
}
