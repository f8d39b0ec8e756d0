//! Middleware for the bot's pipelines: the request traits every layer is generic over.
//!
//! The runtime implements these traits for its request types ([`Inbound`](crate::Inbound),
//! [`Outgoing`](crate::Outgoing), [`Delivery`](crate::Delivery)).

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use switchboard_protocol::{Content, DeviceId, Sender, ThreadId};

use crate::error::BotError;

mod metrics;

pub use metrics::{Counter, Histogram, Metrics};

/// A request that belongs to one thread.
pub trait ThreadScoped {
    /// The thread.
    fn thread(&self) -> ThreadId;
}

/// An inbound event as the guards see it.
pub trait InboundInfo: ThreadScoped {
    /// Who sent the message, if the event is a message (None for joins, removals, ...).
    fn sender(&self) -> Option<&Sender>;
    /// The sending device, if a message.
    fn sender_device(&self) -> Option<DeviceId>;
    /// Typing signal for the thread (None if the bot cannot post there, e.g. removed).
    fn typing(&self) -> Option<Arc<dyn TypingSignal>>;
}

/// An outgoing message before sealing.
pub trait OutgoingContent: ThreadScoped {
    /// The content.
    fn content(&self) -> &Content;
    /// The content, to change.
    fn content_mut(&mut self) -> &mut Content;
}

/// An error that says whether trying again may help (implemented for [`BotError`]).
pub trait Transient {
    /// Whether trying again may succeed.
    fn is_transient(&self) -> bool;
    /// How long to wait first, if the error says.
    fn retry_after(&self) -> Option<Duration>;
}

/// Sets the typing indicator of a thread.
#[async_trait::async_trait]
pub trait TypingSignal: Send + Sync + Debug {
    /// Typing on (`true`) or off.
    async fn set(&self, active: bool) -> Result<(), BotError>;
}
