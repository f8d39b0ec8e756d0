//! The request types of the three pipelines, and the services at their ends.
//!
//! - Inbound: [`Inbound`] (an event with its [`Ctx`]) through a
//!   `Service<Inbound, Response = (), Error = BotError>` to the bot's hooks.
//! - Outbound: [`Outgoing`] (a message the bot produced, before sealing) through a
//!   `Service<Outgoing, Response = Outgoing, Error = BotError>`.
//! - Delivery: [`Delivery`] (a sealed message from the outbox) through a
//!   `Service<Delivery, Response = (), Error = BotError>` to the relay.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use switchboard_client::RelayClient;
use switchboard_protocol::{Content, DeviceId, MessageId, SealedMessage, Sender, ThreadId};
use tower::Service;
use tower::util::BoxCloneSyncService;

use crate::bot::{Bot, MemberChange, Message, Receipt, ThreadInfo};
use crate::ctx::Ctx;
use crate::error::BotError;
use crate::layers::{InboundInfo, OutgoingContent, ThreadScoped, TypingSignal};

/// The inbound pipeline, boxed.
pub type InboundService = BoxCloneSyncService<Inbound, (), BotError>;
/// The outbound pipeline, boxed.
pub type OutboundService = BoxCloneSyncService<Outgoing, Outgoing, BotError>;
/// The delivery pipeline, boxed.
pub type DeliveryService = BoxCloneSyncService<Delivery, (), BotError>;

/// One event for the bot, with its context.
#[derive(Clone, Debug)]
pub struct Inbound {
    /// The event.
    pub event: BotEvent,
    /// Its context.
    pub ctx: Ctx,
}

/// What happened in a thread.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum BotEvent {
    /// The thread was forwarded to the bot, with what was written before.
    Thread {
        /// The thread.
        info: ThreadInfo,
        /// The granted history.
        history: Vec<Message>,
    },
    /// A new message.
    Message(Message),
    /// A member joined or left.
    Member(MemberChange),
    /// The bot lost the floor.
    FloorLost,
    /// The bot was removed from the thread.
    Removed,
    /// Receipts.
    Receipt(Receipt),
}

impl BotEvent {
    /// A short label for traces and metrics.
    #[must_use]
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Thread { .. } => "thread",
            Self::Message(_) => "message",
            Self::Member(_) => "member",
            Self::FloorLost => "floor_lost",
            Self::Removed => "removed",
            Self::Receipt(_) => "receipt",
        }
    }
}

impl ThreadScoped for Inbound {
    fn thread(&self) -> ThreadId {
        self.ctx.thread()
    }
}

impl InboundInfo for Inbound {
    fn sender(&self) -> Option<&Sender> {
        match &self.event {
            BotEvent::Message(m) => Some(&m.from),
            _ => None,
        }
    }

    fn sender_device(&self) -> Option<DeviceId> {
        match &self.event {
            BotEvent::Message(m) => Some(m.sender),
            BotEvent::Receipt(r) => Some(r.from),
            _ => None,
        }
    }

    fn typing(&self) -> Option<Arc<dyn TypingSignal>> {
        if matches!(self.event, BotEvent::Removed) || !self.ctx.has_floor() {
            return None;
        }
        Some(Arc::new(self.ctx.typing_handle()))
    }
}

/// A message the bot produced, before sealing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outgoing {
    /// The thread.
    pub thread: ThreadId,
    /// What to send.
    pub content: Content,
    /// The quoted message, for replies.
    pub quoted: Option<MessageId>,
}

impl ThreadScoped for Outgoing {
    fn thread(&self) -> ThreadId {
        self.thread
    }
}

impl OutgoingContent for Outgoing {
    fn content(&self) -> &Content {
        &self.content
    }

    fn content_mut(&mut self) -> &mut Content {
        &mut self.content
    }
}

/// A sealed message from the outbox on its way to the relay.
#[derive(Clone, Debug)]
pub struct Delivery {
    /// The thread.
    pub thread: ThreadId,
    /// The message.
    pub message: SealedMessage,
}

impl ThreadScoped for Delivery {
    fn thread(&self) -> ThreadId {
        self.thread
    }
}

/// How long one post to the relay may take.
const DELIVERY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

type BoxFuture<T> = Pin<Box<dyn Future<Output = Result<T, BotError>> + Send>>;

/// The end of the inbound pipeline: the bot's hooks.
#[derive(Clone)]
pub(crate) struct BotService(pub(crate) Arc<dyn Bot>);

impl Service<Inbound> for BotService {
    type Response = ();
    type Error = BotError;
    type Future = BoxFuture<()>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BotError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Inbound) -> Self::Future {
        let bot = Arc::clone(&self.0);
        Box::pin(async move {
            let Inbound { event, mut ctx } = req;
            let cx = &mut ctx;
            match &event {
                BotEvent::Thread { info, history } => bot.on_thread(cx, info, history).await,
                BotEvent::Message(m) => bot.on_message(cx, m).await,
                BotEvent::Member(change) => bot.on_member(cx, change).await,
                BotEvent::FloorLost => bot.on_floor_lost(cx).await,
                BotEvent::Removed => bot.on_removed(cx.thread()).await,
                BotEvent::Receipt(r) => bot.on_receipt(cx, r).await,
            }
        })
    }
}

/// The end of the outbound pipeline: the message as it is.
pub(crate) fn outbound_end() -> OutboundService {
    BoxCloneSyncService::new(tower::service_fn(|o: Outgoing| async move {
        Ok::<_, BotError>(o)
    }))
}

/// The end of the delivery pipeline: posts to the relay (at most [`DELIVERY_TIMEOUT`]). The
/// relay is idempotent by message id: a message it stored before counts as delivered.
pub(crate) fn delivery_end(relay: RelayClient) -> DeliveryService {
    BoxCloneSyncService::new(tower::service_fn(move |d: Delivery| {
        let relay = relay.clone();
        async move {
            let posted =
                tokio::time::timeout(DELIVERY_TIMEOUT, relay.post_message(d.thread, &d.message))
                    .await
                    .map_err(|_| BotError::Timeout(DELIVERY_TIMEOUT))?;
            match posted {
                Ok(_) => Ok(()),
                Err(e) => {
                    let e = BotError::from(e);
                    if e.is_conflict() { Ok(()) } else { Err(e) }
                }
            }
        }
    }))
}
