//! Threads and inboxes: opening threads, commits (admin only), messages (members only), the
//! long-polling inbox and acknowledgements.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use switchboard_protocol::api::MAX_INBOX_PAGE_BYTES;
use switchboard_protocol::{
    Commit, DeviceId, HistoryGrant, SealedMessage, ThreadId, ThreadOpen, Version,
};
use tokio::sync::Notify;

use super::{
    Ack, ApiError, InboxAnswer, MAX_ACK_BYTES, PathId, PostAnswer, RelayState, Signed, SignedOnce,
    WireItem, wire,
};
use crate::store::{InboxItem, ItemKind, Post, PostKey, Posted, ThreadRecord};

const OPEN_MAX: usize = ItemKind::ThreadOpen.max_payload_bytes();
const COMMIT_MAX: usize = ItemKind::Commit.max_payload_bytes();
const MESSAGE_MAX: usize = ItemKind::Message.max_payload_bytes();
const HISTORY_MAX: usize = ItemKind::History.max_payload_bytes();

/// The longest a long-poll waits: 30 seconds.
pub const MAX_WAIT_SECS: u64 = 30;
/// The most items one inbox fetch returns.
pub const MAX_FETCH: u32 = 500;
/// How long an instance's lease on a thread lasts after its last fetch: 30 seconds.
pub const LEASE_SECS: u64 = 30;
/// How often a waiting long-poll re-reads the store, to see posts made through another relay
/// process sharing the database.
pub(super) const POLL_INTERVAL: Duration = Duration::from_millis(500);

/// Wakes long-polls of this process when an item is queued for their device. A device has an
/// entry only while one of its long-polls waits, so the table holds at most one entry per open
/// request.
#[derive(Clone, Default)]
pub(super) struct Waiters(Arc<Mutex<HashMap<DeviceId, Arc<Notify>>>>);

/// One long-poll's registration in [`Waiters`]; dropping it removes the device's entry when no
/// other long-poll of the device waits.
pub(super) struct Waiter {
    table: Waiters,
    device: DeviceId,
    notify: Arc<Notify>,
}

impl std::ops::Deref for Waiter {
    type Target = Notify;

    fn deref(&self) -> &Notify {
        &self.notify
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        let mut map = self.table.0.lock().unwrap_or_else(PoisonError::into_inner);
        // The table's reference and this one: nobody else waits.
        if map
            .get(&self.device)
            .is_some_and(|n| Arc::ptr_eq(n, &self.notify) && Arc::strong_count(n) == 2)
        {
            map.remove(&self.device);
        }
    }
}

impl Waiters {
    pub(super) fn get(&self, device: DeviceId) -> Waiter {
        let mut map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let notify = Arc::clone(map.entry(device).or_default());
        Waiter {
            table: self.clone(),
            device,
            notify,
        }
    }

    fn wake(&self, devices: &[DeviceId]) {
        let map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        for device in devices {
            if let Some(notify) = map.get(device) {
                notify.notify_waiters();
            }
        }
    }
}

fn parse_thread(text: &str) -> Result<ThreadId, ApiError> {
    text.parse()
        .map_err(|e: switchboard_protocol::WireError| ApiError::Malformed(e.to_string()))
}

/// The answer to a post: 201 with where it went, or 200 with the same for a message stored
/// before.
fn posted(state: &RelayState, thread: ThreadId, posted: &Posted) -> Response {
    state.waiters.wake(&posted.recipients);
    let answer = PostAnswer {
        v: Version,
        thread,
        thread_seq: posted.thread_seq,
        recipients: usize::try_from(posted.recipient_count).unwrap_or(usize::MAX),
    };
    let status = if posted.stored_before {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    (status, Json(answer)).into_response()
}

pub(super) async fn open_thread(
    State(state): State<RelayState>,
    Signed {
        device: customer,
        body: raw,
    }: Signed<OPEN_MAX>,
) -> Result<Response, ApiError> {
    let open: ThreadOpen = wire(&raw)?;
    if open.customer.device != customer.device
        || open.customer.identity_key.as_bytes() != &customer.identity_key
    {
        return Err(ApiError::Forbidden(
            "a thread can only be opened by the customer device it names".to_owned(),
        ));
    }
    let entity = state
        .store
        .entity(&open.entity)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no entity named {}", open.entity)))?;
    if customer.device == entity.admin {
        return Err(ApiError::Malformed(format!(
            "device {} is the admin of {}: it cannot open a thread with its own entity as a \
             customer; use another device",
            customer.device, open.entity
        )));
    }
    if open.admin.device != entity.admin || open.wrap.recipient != entity.admin {
        return Err(ApiError::Conflict(format!(
            "entity {} has another admin device; fetch its directory record again",
            open.entity
        )));
    }
    let mut members = vec![open.customer.device, entity.admin];
    members.sort_unstable();
    let record = ThreadRecord {
        thread: open.thread,
        entity: open.entity,
        customer: customer.device,
        admin: entity.admin,
        epoch: 0,
        members,
    };
    let result = state.store.open_thread(&record, &raw).await?;
    Ok(posted(&state, record.thread, &result))
}

async fn thread_of(state: &RelayState, thread: ThreadId) -> Result<ThreadRecord, ApiError> {
    state
        .store
        .thread(thread)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no thread {thread}")))
}

/// The thread named in the path, if `sender` is its entity's admin (who alone may `what`).
async fn admins_thread(
    state: &RelayState,
    thread: &str,
    sender: DeviceId,
    what: &str,
) -> Result<(ThreadId, ThreadRecord), ApiError> {
    let thread = parse_thread(thread)?;
    let record = thread_of(state, thread).await?;
    if sender != record.admin {
        return Err(ApiError::Forbidden(format!(
            "only the entity's admin device may {what}"
        )));
    }
    Ok((thread, record))
}

pub(super) async fn post_commit(
    State(state): State<RelayState>,
    PathId(thread): PathId,
    Signed {
        device: sender,
        body: raw,
    }: Signed<COMMIT_MAX>,
) -> Result<Response, ApiError> {
    let (thread, record) =
        admins_thread(&state, &thread, sender.device, "change a thread's roster").await?;
    let commit: Commit = wire(&raw)?;
    if commit.thread != thread || commit.committer != sender.device {
        return Err(ApiError::Malformed(
            "the commit names another thread or committer than the request".to_owned(),
        ));
    }
    if commit.epoch.0 != record.epoch.saturating_add(1) {
        return Err(ApiError::Conflict(format!(
            "the thread is at epoch {}; a commit must start epoch {}",
            record.epoch,
            record.epoch.saturating_add(1)
        )));
    }
    let members: Vec<DeviceId> = commit.roster.members.keys().copied().collect();
    for device in &members {
        if state.store.device(*device).await?.is_none() {
            return Err(ApiError::NotFound(format!(
                "member device {device} is not registered"
            )));
        }
    }
    let post = Post {
        thread,
        sender: sender.device,
        kind: ItemKind::Commit,
        payload: &raw,
        new_roster: Some((commit.epoch.0, &members)),
        to: None,
        key: None,
    };
    let result = state.store.post(&post).await?;
    Ok(posted(&state, thread, &result))
}

pub(super) async fn post_message(
    State(state): State<RelayState>,
    PathId(thread): PathId,
    SignedOnce {
        device: sender,
        body: raw,
        nonce,
    }: SignedOnce<MESSAGE_MAX>,
) -> Result<Response, ApiError> {
    let thread = parse_thread(&thread)?;
    // Membership (a sender must be a member, checked in the post's own transaction) and the
    // thread's existence are the store's to check.
    let message: SealedMessage = wire(&raw)?;
    if message.header.thread != thread || message.header.sender != sender.device {
        return Err(ApiError::Malformed(
            "the message header names another thread or sender than the request".to_owned(),
        ));
    }
    use sha2::Digest as _;
    let post = Post {
        thread,
        sender: sender.device,
        kind: ItemKind::Message,
        payload: &raw,
        new_roster: None,
        to: None,
        key: Some(PostKey {
            epoch: message.header.epoch.0,
            generation: message.header.generation,
            digest: sha2::Sha256::digest(&raw).into(),
        }),
    };
    let result = match &nonce {
        Some(nonce) => state.store.post_once(&post, nonce).await?,
        // Authenticated by a session: the replay window took the request already.
        None => state.store.post(&post).await?,
    };
    Ok(posted(&state, thread, &result))
}

/// `POST /v1/threads/{thread}/history`: the admin delivers a history grant to one current
/// member (not itself), and to that member alone.
pub(super) async fn post_history(
    State(state): State<RelayState>,
    PathId(thread): PathId,
    Signed {
        device: sender,
        body: raw,
    }: Signed<HISTORY_MAX>,
) -> Result<Response, ApiError> {
    let (thread, record) = admins_thread(&state, &thread, sender.device, "grant history").await?;
    let grant: HistoryGrant = wire(&raw)?;
    if grant.thread != thread || grant.admin != sender.device {
        return Err(ApiError::Malformed(
            "the grant names another thread or admin than the request".to_owned(),
        ));
    }
    if grant.to == sender.device || !record.members.contains(&grant.to) {
        return Err(ApiError::Forbidden(format!(
            "device {} is not a member of thread {thread} to grant history to",
            grant.to
        )));
    }
    let post = Post {
        thread,
        sender: sender.device,
        kind: ItemKind::History,
        payload: &raw,
        new_roster: None,
        to: Some(grant.to),
        key: None,
    };
    let result = state.store.post(&post).await?;
    Ok(posted(&state, thread, &result))
}

/// Query of `GET /v1/inbox`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct InboxQuery {
    #[serde(default)]
    after: u64,
    limit: Option<u32>,
    #[serde(default)]
    wait: u64,
    /// For a bot run as several processes: this process's instance name. Threads are then
    /// leased to one instance at a time.
    instance: Option<String>,
    /// Acknowledges every item up to this position before fetching (as `POST /v1/inbox/ack`
    /// does, with the same instance), so that a device need not send its acknowledgements in
    /// requests of their own.
    ack: Option<u64>,
}

/// Checks an instance name: 1 to 64 characters of `A-Z a-z 0-9 _ . -`.
pub(super) fn check_instance(instance: Option<&str>) -> Result<(), ApiError> {
    match instance {
        Some(name)
            if name.is_empty()
                || name.len() > 64
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b)) =>
        {
            Err(ApiError::Malformed(
                "instance must have 1 to 64 characters of A-Z, a-z, 0-9, '_', '.' and '-'"
                    .to_owned(),
            ))
        }
        _ => Ok(()),
    }
}

pub(super) fn to_wire(item: &InboxItem) -> Result<WireItem, ApiError> {
    let payload = serde_json::from_slice(&item.payload).map_err(|_| ApiError::Internal)?;
    Ok(WireItem {
        seq: item.seq,
        thread: item.thread,
        thread_seq: item.thread_seq,
        sender: item.sender,
        kind: item.kind,
        payload,
    })
}

/// Refuses a cursor the store cannot hold (above 2^63 - 1).
pub(super) fn check_cursor(cursor: u64, what: &str) -> Result<(), ApiError> {
    if i64::try_from(cursor).is_err() {
        return Err(ApiError::Malformed(format!(
            "{what} {cursor} is past the largest inbox position (2^63 - 1)"
        )));
    }
    Ok(())
}

pub(super) async fn inbox(
    State(state): State<RelayState>,
    query: Result<Query<InboxQuery>, axum::extract::rejection::QueryRejection>,
    Signed { device, .. }: Signed<0>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::Malformed(e.body_text()))?;
    check_instance(query.instance.as_deref())?;
    check_cursor(query.after, "after")?;
    if let Some(up_to) = query.ack {
        check_cursor(up_to, "ack")?;
        match &query.instance {
            None => state.store.ack(device.device, up_to).await?,
            Some(instance) => {
                state
                    .store
                    .ack_leased(device.device, instance, up_to)
                    .await?
            }
        };
    }
    let limit = query.limit.unwrap_or(100).clamp(1, MAX_FETCH);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(query.wait.min(MAX_WAIT_SECS));
    let notify = state.waiters.get(device.device);
    let items = loop {
        // Register for wake-ups before reading, so a post between the read and the wait is not
        // missed.
        let notified = notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let items = read_page(
            &state,
            device.device,
            query.instance.as_deref(),
            query.after,
            limit,
        )
        .await?;
        let now = tokio::time::Instant::now();
        if !items.is_empty() || now >= deadline {
            break items;
        }
        let nap = (deadline - now).min(POLL_INTERVAL);
        tokio::select! {
            () = &mut notified => {}
            () = tokio::time::sleep(nap) => {}
        }
    };
    let items = items.iter().map(to_wire).collect::<Result<Vec<_>, _>>()?;
    Ok(Json(InboxAnswer { v: Version, items }).into_response())
}

/// One page of the device's items after `after` (of the threads leased to `instance`, taking
/// or renewing their leases, if given), at most `limit` items and one page of bytes.
pub(super) async fn read_page(
    state: &RelayState,
    device: DeviceId,
    instance: Option<&str>,
    after: u64,
    limit: u32,
) -> Result<Vec<InboxItem>, ApiError> {
    let max_bytes = MAX_INBOX_PAGE_BYTES as u64;
    Ok(match instance {
        None => state.store.fetch(device, after, limit, max_bytes).await?,
        Some(instance) => {
            let now = (state.clock)().0;
            state
                .store
                .fetch_leased(device, instance, after, limit, max_bytes, now, LEASE_SECS)
                .await?
        }
    })
}

pub(super) async fn ack(
    State(state): State<RelayState>,
    Signed { device, body: raw }: Signed<MAX_ACK_BYTES>,
) -> Result<Response, ApiError> {
    let ack: Ack = wire(&raw)?;
    check_instance(ack.instance.as_deref())?;
    check_cursor(ack.up_to, "up_to")?;
    let removed = match &ack.instance {
        None => state.store.ack(device.device, ack.up_to).await?,
        Some(instance) => {
            state
                .store
                .ack_leased(device.device, instance, ack.up_to)
                .await?
        }
    };
    Ok(Json(serde_json::json!({ "v": 1, "acked": removed })).into_response())
}

#[cfg(test)]
mod tests {
    use std::sync::PoisonError;

    use switchboard_protocol::DeviceId;

    use super::Waiters;

    #[test]
    fn the_waiter_table_forgets_devices_nobody_waits_for() {
        let waiters = Waiters::default();
        for i in 0..1000u32 {
            let mut id = [0u8; 16];
            id[..4].copy_from_slice(&i.to_be_bytes());
            let waiter = waiters.get(DeviceId::from_bytes(id));
            drop(waiter);
        }
        let tracked = waiters
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len();
        assert_eq!(tracked, 0, "entries of finished long-polls are removed");
    }
}
