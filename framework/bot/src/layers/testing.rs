//! Test doubles shared by the layers' tests: a mock request that is every kind of request, a
//! counting mock service and a recording typing signal.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use switchboard_protocol::{AgentKind, Content, DeviceId, Sender, ThreadId};
use tokio::time::Instant;
use tower::Service;

use super::{BoxResponseFuture, InboundInfo, OutgoingContent, ThreadScoped, TypingSignal};
use crate::BotError;

/// A request of any pipeline: an inbound message or event, or an outgoing message.
#[derive(Clone, Debug)]
pub(crate) struct Req {
    pub(crate) thread: ThreadId,
    pub(crate) sender: Option<Sender>,
    pub(crate) device: Option<DeviceId>,
    pub(crate) typing: Option<Arc<dyn TypingSignal>>,
    pub(crate) content: Content,
    pub(crate) kind: &'static str,
}

pub(crate) fn thread(n: u8) -> ThreadId {
    ThreadId::from_bytes([n; 16])
}

pub(crate) fn device(n: u8) -> DeviceId {
    DeviceId::from_bytes([n; 16])
}

impl Req {
    /// A text message from `sender` in thread `t`.
    pub(crate) fn message(t: u8, sender: Sender, from: u8) -> Self {
        Self {
            thread: thread(t),
            sender: Some(sender),
            device: Some(device(from)),
            typing: None,
            content: Content::text("hello"),
            kind: "message",
        }
    }

    pub(crate) fn customer(t: u8) -> Self {
        Self::message(t, Sender::Customer, 1)
    }

    pub(crate) fn bot(t: u8, from: u8) -> Self {
        Self::message(
            t,
            Sender::Agent {
                display_name: format!("bot{from}"),
                kind: AgentKind::Bot,
            },
            from,
        )
    }

    pub(crate) fn human(t: u8) -> Self {
        Self::message(
            t,
            Sender::Agent {
                display_name: "Ann".to_owned(),
                kind: AgentKind::Human,
            },
            2,
        )
    }

    /// An event that is not a message (a member joined, the floor was lost, ...).
    pub(crate) fn event(t: u8) -> Self {
        Self {
            thread: thread(t),
            sender: None,
            device: None,
            typing: None,
            content: Content::Typing { active: false },
            kind: "member",
        }
    }

    /// An outgoing message with this content.
    pub(crate) fn outgoing(t: u8, content: Content) -> Self {
        Self {
            content,
            kind: "outgoing",
            ..Self::event(t)
        }
    }

    pub(crate) fn with_typing(mut self, typing: Arc<dyn TypingSignal>) -> Self {
        self.typing = Some(typing);
        self
    }
}

impl ThreadScoped for Req {
    fn thread(&self) -> ThreadId {
        self.thread
    }

    fn kind(&self) -> &'static str {
        self.kind
    }
}

impl InboundInfo for Req {
    fn sender(&self) -> Option<&Sender> {
        self.sender.as_ref()
    }

    fn sender_device(&self) -> Option<DeviceId> {
        self.device
    }

    fn typing(&self) -> Option<Arc<dyn TypingSignal>> {
        self.typing.clone()
    }
}

impl OutgoingContent for Req {
    fn content(&self) -> &Content {
        &self.content
    }

    fn content_mut(&mut self) -> &mut Content {
        &mut self.content
    }
}

type Script = Arc<dyn Fn(usize, Req) -> BoxResponseFuture<Req, BotError> + Send + Sync>;

/// A mock inner service: counts its calls and answers each with the script (given the call's
/// number, from 0, and the request). Clones share the count.
#[derive(Clone)]
pub(crate) struct Mock {
    calls: Arc<AtomicUsize>,
    seen: Arc<Mutex<Vec<Req>>>,
    script: Script,
}

impl std::fmt::Debug for Mock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mock")
            .field("calls", &self.calls())
            .finish()
    }
}

impl Mock {
    /// Answers every request with itself, at once.
    pub(crate) fn echo() -> Self {
        Self::new(|_, req| Box::pin(async move { Ok(req) }))
    }

    pub(crate) fn new(
        script: impl Fn(usize, Req) -> BoxResponseFuture<Req, BotError> + Send + Sync + 'static,
    ) -> Self {
        Self {
            calls: Arc::default(),
            seen: Arc::default(),
            script: Arc::new(script),
        }
    }

    pub(crate) fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    pub(crate) fn seen(&self) -> Vec<Req> {
        self.seen.lock().unwrap().clone()
    }
}

impl Service<Req> for Mock {
    type Response = Req;
    type Error = BotError;
    type Future = BoxResponseFuture<Req, BotError>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BotError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        self.seen.lock().unwrap().push(req.clone());
        (self.script)(n, req)
    }
}

/// A typing signal that records what was set and when, and may fail or hang.
#[derive(Debug, Default)]
pub(crate) struct MockTyping {
    pub(crate) log: Mutex<Vec<(bool, Instant)>>,
    pub(crate) fail: bool,
    pub(crate) hang: bool,
}

impl MockTyping {
    pub(crate) fn log(&self) -> Vec<(bool, Instant)> {
        self.log.lock().unwrap().clone()
    }
}

#[async_trait::async_trait]
impl TypingSignal for MockTyping {
    async fn set(&self, active: bool) -> Result<(), BotError> {
        self.log.lock().unwrap().push((active, Instant::now()));
        if self.hang {
            std::future::pending::<()>().await;
        }
        if self.fail {
            return Err(BotError::Protocol("typing failed".to_owned()));
        }
        Ok(())
    }
}
