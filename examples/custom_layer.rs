//! Run: `cargo run -p switchboard-examples --example custom_layer` in a directory holding an
//! agent's `bot.keystore` and `bot.key` (`switchboard agent init`, enrolled by the admin).
//!
//! A custom inbound layer (see docs/middleware.md): outside business hours it answers a
//! customer's message with a fixed text and does not wake the bot; inside them, and for every
//! event that is not a customer's message, it passes the event on.

use std::sync::Arc;
use std::task::{Context, Poll};

use switchboard::layers::{BoxResponseFuture, InboundInfo};
use switchboard::pipeline::Inbound;
use switchboard::prelude::*;
use tower::{Layer, Service};

/// Answers customers outside business hours (`open..close`, hours of the day, UTC).
#[derive(Clone, Debug)]
pub struct BusinessHoursLayer {
    open: u32,
    close: u32,
    closed_text: Arc<str>,
    /// The current hour of the day; a function so that tests can fix it.
    hour: fn() -> u32,
}

impl BusinessHoursLayer {
    /// Open from `open` (inclusive) to `close` (exclusive); `open > close` spans midnight.
    #[must_use]
    pub fn new(open: u32, close: u32, closed_text: &str) -> Self {
        Self {
            open,
            close,
            closed_text: closed_text.into(),
            hour: utc_hour,
        }
    }

    /// Replaces the clock (for tests).
    #[must_use]
    pub fn clock(mut self, hour: fn() -> u32) -> Self {
        self.hour = hour;
        self
    }

    fn is_open(&self) -> bool {
        let hour = (self.hour)();
        if self.open <= self.close {
            (self.open..self.close).contains(&hour)
        } else {
            hour >= self.open || hour < self.close
        }
    }
}

fn utc_hour() -> u32 {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    u32::try_from(secs / 3600 % 24).unwrap_or(0)
}

impl<S> Layer<S> for BusinessHoursLayer {
    type Service = BusinessHours<S>;

    fn layer(&self, inner: S) -> BusinessHours<S> {
        BusinessHours {
            inner,
            config: self.clone(),
        }
    }
}

/// The service of [`BusinessHoursLayer`].
#[derive(Clone, Debug)]
pub struct BusinessHours<S> {
    inner: S,
    config: BusinessHoursLayer,
}

impl<S> Service<Inbound> for BusinessHours<S>
where
    S: Service<Inbound, Response = (), Error = BotError>,
    S::Future: Send + 'static,
{
    type Response = ();
    type Error = BotError;
    type Future = BoxResponseFuture<(), BotError>;

    // Readiness is the inner service's.
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BotError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Inbound) -> Self::Future {
        let from_customer = matches!(req.sender(), Some(Sender::Customer));
        if !from_customer || self.config.is_open() {
            return Box::pin(self.inner.call(req));
        }
        let text = Arc::clone(&self.config.closed_text);
        Box::pin(async move { req.ctx.reply(Content::text(&*text)).await.map(drop) })
    }
}

/// The bot behind the layer: it answers what reaches it.
#[derive(Debug, Default)]
pub struct DaytimeBot;

#[async_trait]
impl Bot for DaytimeBot {
    async fn on_message(&self, cx: &mut Ctx, msg: &Message) -> Result<(), BotError> {
        if msg.is_from_customer() {
            cx.reply(Content::text(format!("Happy to help with: {}", msg.text())))
                .await?;
        }
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<(), BotError> {
    Runtime::builder()
        .keystore("bot.keystore")
        .key_file("bot.key")
        .inbound(BusinessHoursLayer::new(
            8,
            18,
            "We are closed; we answer from 8:00 UTC.",
        ))
        .bot(DaytimeBot)
        .build()
        .await?
        .run_until_shutdown()
        .await
}
