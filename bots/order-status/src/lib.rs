//! The order-status bot's logic: find an order number in a customer's message, ask the
//! business's order API for its status, and word the reply.
//!
//! ```no_run
//! use switchboard_bot_order_status::{OrderApi, order_id, reply_for};
//!
//! # async fn run() -> Result<(), switchboard_bot_order_status::ApiError> {
//! let api = OrderApi::new("http://127.0.0.1:8080", reqwest::Client::new())?;
//! if let Some(id) = order_id("Hi, where is my order 42?") {
//!     let status = api.status(&id).await?;
//!     println!("{}", reply_for(&status)); // "Order 42 is on its way; expected tomorrow."
//! }
//! # Ok(())
//! # }
//! ```
//!
//! The API is `GET {base}/orders/{id}` answering `{ "id", "status", "eta" }`; every call is
//! bounded by a timeout and a body size cap, and [`ApiError::is_transient`] tells failures worth
//! retrying (5xx, timeouts, connection errors) from final ones (404: unknown order, malformed
//! answers). [`fake_api`] is a small local API for tests and the demo. [`OrderBot`] wires it
//! all up as a bot of the SDK (`switchboard`); the binary `switchboard-bot-order-status` runs
//! it.

mod api;
mod bot;
mod extract;
pub mod fake_api;
mod reply;

pub use api::{
    ApiError, DEFAULT_MAX_BODY, DEFAULT_TIMEOUT, MAX_FIELD_CHARS, OrderApi, OrderStatus,
};
pub use bot::{ASK_FOR_NUMBER, DEFAULT_HANDOFF_TEAM, HANDING_OFF, OrderBot};
pub use extract::{MAX_ORDER_ID_CHARS, MAX_SCAN_CHARS, order_id};
pub use reply::reply_for;
