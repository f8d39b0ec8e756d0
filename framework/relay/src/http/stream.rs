//! `GET /v1/inbox/stream`: a device's inbox as server-sent events over one long-lived response,
//! beside the long-polling `GET /v1/inbox`. The same authentication, the same items, the same
//! leases (with `instance`) and the same acknowledgements (`POST /v1/inbox/ack`); one request
//! for as many items as arrive while it lasts, instead of one request per page.
//!
//! Each item is one event: `id:` its inbox position, `event: item`, `data:` the item as
//! `GET /v1/inbox` answers it (one line of JSON). While nothing arrives, a comment line
//! (`: keep-alive`) every [`STREAM_HEARTBEAT`] shows the connection is alive. After
//! [`STREAM_MAX`] the response ends (`event: end`) and the device connects again from its
//! cursor, so that every connection is authenticated anew now and then. A store failure is
//! sent as `event: error` (the error body of the other endpoints) and ends the response.
//!
//! Memory: the body is produced as the connection takes it. The next page is read from the
//! store only once the previous one was handed to the connection, so a reader that does not
//! read holds at most one page (`MAX_INBOX_PAGE_BYTES`) and the connection's buffers.

use std::fmt::Write as _;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse as _, Response};
use serde::Deserialize;
use switchboard_protocol::DeviceId;
use tokio::time::Instant;

use super::threads::{POLL_INTERVAL, Waiter, check_cursor, check_instance, read_page, to_wire};
use super::{ApiError, RelayState, Signed};

/// How often an idle stream carries a keep-alive comment: 15 seconds.
pub const STREAM_HEARTBEAT: Duration = Duration::from_secs(15);
/// How long one stream lasts at most: 5 minutes; the device then connects again from its
/// cursor.
pub const STREAM_MAX: Duration = Duration::from_secs(300);
/// Items read from the store per page (a page is also bounded by bytes).
const STREAM_PAGE: u32 = 100;

/// Query of `GET /v1/inbox/stream`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct StreamQuery {
    /// The cursor: items after this position.
    #[serde(default)]
    after: u64,
    /// For a bot run as several processes: this process's instance name (threads are leased
    /// to one instance at a time, as with `GET /v1/inbox`).
    instance: Option<String>,
}

/// Where a stream stands between two chunks of its body.
struct Cursor {
    state: RelayState,
    device: DeviceId,
    instance: Option<String>,
    after: u64,
    waiter: Waiter,
    ends_at: Instant,
    done: bool,
}

pub(super) async fn inbox_stream(
    State(state): State<RelayState>,
    query: Result<Query<StreamQuery>, axum::extract::rejection::QueryRejection>,
    Signed { device, .. }: Signed<0>,
) -> Result<Response, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::Malformed(e.body_text()))?;
    check_instance(query.instance.as_deref())?;
    check_cursor(query.after, "after")?;
    let waiter = state.waiters.get(device.device);
    let cursor = Cursor {
        state,
        device: device.device,
        instance: query.instance,
        after: query.after,
        waiter,
        ends_at: Instant::now() + STREAM_MAX,
        done: false,
    };
    let body = futures_util::stream::unfold(cursor, |mut cursor| async move {
        if cursor.done {
            return None;
        }
        let chunk = next_chunk(&mut cursor).await;
        Some((Ok::<Bytes, std::convert::Infallible>(chunk), cursor))
    });
    let mut response = Body::from_stream(body).into_response();
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // Proxies that buffer responses would hold the events back.
    headers.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(response)
}

/// The next piece of the body: the next page of items as events, a keep-alive comment after
/// [`STREAM_HEARTBEAT`] without items, or the final event (end or error).
async fn next_chunk(cursor: &mut Cursor) -> Bytes {
    let quiet_until = Instant::now() + STREAM_HEARTBEAT;
    loop {
        // Registered before reading, so that a post between the read and the wait wakes it.
        let notified = cursor.waiter.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let page = read_page(
            &cursor.state,
            cursor.device,
            cursor.instance.as_deref(),
            cursor.after,
            STREAM_PAGE,
        )
        .await;
        let items = match page {
            Ok(items) => items,
            Err(e) => {
                cursor.done = true;
                tracing::warn!(error = %e, "inbox stream ended by a store failure");
                return Bytes::from(format!("event: error\ndata: {}\n\n", e.body_json()));
            }
        };
        if !items.is_empty() {
            return events(&mut cursor.after, &items);
        }
        let now = Instant::now();
        if now >= cursor.ends_at {
            cursor.done = true;
            return Bytes::from_static(b"event: end\ndata: {}\n\n");
        }
        if now >= quiet_until {
            return Bytes::from_static(b": keep-alive\n\n");
        }
        // Re-read now and then: posts made through another relay process sharing the
        // database wake nobody here.
        let nap = POLL_INTERVAL
            .min(quiet_until - now)
            .min(cursor.ends_at - now);
        tokio::select! {
            () = &mut notified => {}
            () = tokio::time::sleep(nap) => {}
        }
    }
}

/// The items as events, moving the cursor past them. An item that cannot be encoded (it does
/// not happen: the store holds only what the relay accepted as JSON) is sent as an event
/// without data, so the device still moves past its position.
fn events(after: &mut u64, items: &[crate::store::InboxItem]) -> Bytes {
    let mut text = String::new();
    for item in items {
        *after = (*after).max(item.seq);
        let data = to_wire(item)
            .ok()
            .and_then(|wire| serde_json::to_string(&wire).ok())
            .unwrap_or_else(|| "null".to_owned());
        let _ = write!(text, "id: {}\nevent: item\ndata: {data}\n\n", item.seq);
    }
    Bytes::from(text)
}
