//! [`Ctx`]: what a hook can do in its thread.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use serde::Serialize;
use serde::de::DeserializeOwned;
use switchboard_protocol::{
    Content, ContentType, DeviceKeys, Floor, MessageId, ReceiptKind, SealedMessage, ThreadId,
    ThreadState,
};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

use crate::bot::{Handoff, Identity, Message};
use crate::error::BotError;
use crate::pipeline::Outgoing;
use crate::runtime::blob::{Claim, ThreadBlob};
use crate::runtime::shared::Shared;

/// The most bytes a thread's typed state may take, serialised as JSON (see
/// [`Ctx::set_state`]).
pub const MAX_STATE_BYTES: usize = 64 * 1024;

/// What one event's hooks change, shared by the event's [`Ctx`] clones and typing handles.
pub(crate) struct Scratch {
    /// The thread's protocol state after the inbox item was applied (`None` once removed).
    pub(crate) state: Option<ThreadState>,
    /// Messages sealed by the hooks (the event's outbox).
    pub(crate) sealed: Vec<SealedMessage>,
    /// The bot's typed state.
    pub(crate) bot_state: serde_json::Value,
    /// The blob as stored before this item (what a typing claim writes, with its claim).
    pub(crate) base: Arc<Vec<u8>>,
    /// The stored version the event commits against.
    pub(crate) version: Option<u64>,
}

/// One event's shared part.
pub(crate) struct EventShared {
    pub(crate) thread: ThreadId,
    pub(crate) scratch: Mutex<Scratch>,
    pub(crate) keys: Arc<DeviceKeys>,
    pub(crate) runtime: Arc<Shared>,
    /// Typing claims of this event, one at a time.
    pub(crate) typing: tokio::sync::Mutex<()>,
}

impl EventShared {
    pub(crate) fn scratch(&self) -> MutexGuard<'_, Scratch> {
        self.scratch.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The context of one event in one thread: reply, hand off, keep typed state.
///
/// Everything done through it (replies, state) is part of the event's effects: committed
/// together with the handled event, and posted only after that commit.
#[derive(Clone)]
pub struct Ctx {
    pub(crate) thread: ThreadId,
    pub(crate) me: Arc<Identity>,
    pub(crate) history: Arc<Vec<Message>>,
    pub(crate) shared: Arc<EventShared>,
}

impl std::fmt::Debug for Ctx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx")
            .field("thread", &self.thread)
            .field("me", &self.me.device)
            .finish_non_exhaustive()
    }
}

impl Ctx {
    /// The thread.
    #[must_use]
    pub fn thread(&self) -> ThreadId {
        self.thread
    }

    /// Who the bot is.
    #[must_use]
    pub fn me(&self) -> &Identity {
        &self.me
    }

    /// Whether the bot may post text in the thread now.
    #[must_use]
    pub fn has_floor(&self) -> bool {
        let scratch = self.shared.scratch();
        scratch
            .state
            .as_ref()
            .is_some_and(|s| s.roster().may_post(self.me.device))
    }

    /// Replies with `content` (`&str` and `String` become text).
    ///
    /// # Errors
    /// [`BotError::NoFloor`] if the bot may not post; an error of the outbound pipeline;
    /// [`BotError::Protocol`] if the message cannot be sealed.
    pub async fn reply(
        &mut self,
        content: impl Into<Content> + Send,
    ) -> Result<MessageId, BotError> {
        self.send(content.into(), None).await
    }

    /// Replies quoting the message `quoted`.
    ///
    /// # Errors
    /// As [`Ctx::reply`].
    pub async fn reply_quoting(
        &mut self,
        quoted: MessageId,
        text: impl Into<String> + Send,
    ) -> Result<MessageId, BotError> {
        self.send(Content::Reply { text: text.into() }, Some(quoted))
            .await
    }

    /// Sets the typing indicator now (posted at once, not with the event's effects).
    ///
    /// # Errors
    /// As [`TypingHandle::set`].
    pub async fn typing(&mut self, active: bool) -> Result<(), BotError> {
        self.typing_handle().set(active).await
    }

    /// A handle that sets the typing indicator of this thread (for tasks and layers).
    #[must_use]
    pub fn typing_handle(&self) -> TypingHandle {
        TypingHandle {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Marks messages read.
    ///
    /// # Errors
    /// As [`Ctx::reply`] (a receipt needs no floor).
    pub async fn mark_read(&mut self, messages: &[MessageId]) -> Result<(), BotError> {
        self.send(
            Content::Receipt {
                kind: ReceiptKind::Read,
                messages: messages.to_vec(),
            },
            None,
        )
        .await
        .map(drop)
    }

    /// Asks the entity's admin to hand the thread over (to a team, an agent or any human).
    /// When the admin grants it, the bot loses the floor ([`Bot::on_floor_lost`]) and, for a
    /// transfer, leaves the thread ([`Bot::on_removed`]).
    ///
    /// [`Bot::on_floor_lost`]: crate::Bot::on_floor_lost
    /// [`Bot::on_removed`]: crate::Bot::on_removed
    ///
    /// # Errors
    /// [`BotError::NoFloor`] unless the bot holds the floor (or the thread is a group).
    pub async fn handoff(&mut self, to: Handoff) -> Result<(), BotError> {
        self.send(
            Content::HandoffRequest {
                target: to.target,
                note: to.note,
            },
            None,
        )
        .await
        .map(drop)
    }

    /// Asks the admin to add an agent to a group thread (every agent may post there). The
    /// admin adds to a group only: in a thread whose floor the bot holds alone, use
    /// [`Ctx::handoff`] (the admin transfers such a thread).
    ///
    /// # Errors
    /// [`BotError::Protocol`] if the thread is not a group; as [`Ctx::reply`].
    pub async fn ask_to_add(&mut self, to: Handoff) -> Result<(), BotError> {
        let group = {
            let scratch = self.shared.scratch();
            scratch
                .state
                .as_ref()
                .is_some_and(|s| s.roster().floor == Floor::Group)
        };
        if !group {
            return Err(BotError::Protocol(
                "the admin adds agents to group threads only; use handoff to pass this thread on"
                    .to_owned(),
            ));
        }
        self.handoff(to).await
    }

    /// The bot's typed state of this thread (`T::default()` if none was set yet).
    ///
    /// # Errors
    /// [`BotError::State`] if the stored state is not a `T`.
    pub fn state<T: DeserializeOwned + Default>(&self) -> Result<T, BotError> {
        let scratch = self.shared.scratch();
        if scratch.bot_state.is_null() {
            return Ok(T::default());
        }
        T::deserialize(&scratch.bot_state).map_err(|e| BotError::State(e.to_string()))
    }

    /// Replaces the bot's typed state of this thread (saved with the event's effects).
    ///
    /// # Errors
    /// [`BotError::State`] if `value` cannot be serialised, or is larger than
    /// [`MAX_STATE_BYTES`] serialised (keep large data in the business's own systems).
    pub fn set_state<T: Serialize>(&mut self, value: &T) -> Result<(), BotError> {
        let bytes = serde_json::to_vec(value).map_err(|e| BotError::State(e.to_string()))?;
        if bytes.len() > MAX_STATE_BYTES {
            return Err(BotError::State(format!(
                "the thread's state is {} bytes serialised, more than the {MAX_STATE_BYTES} a \
                 thread may keep",
                bytes.len()
            )));
        }
        let value: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|e| BotError::State(e.to_string()))?;
        self.shared.scratch().bot_state = value;
        Ok(())
    }

    /// Recent messages of the thread, oldest first (the last [`HISTORY_LIMIT`](crate::HISTORY_LIMIT)).
    #[must_use]
    pub fn history(&self) -> &[Message] {
        &self.history
    }

    /// The HTTP client for business APIs (the one given to the runtime builder).
    #[must_use]
    pub fn http(&self) -> &reqwest::Client {
        &self.shared.runtime.http
    }

    /// Cancelled when the runtime starts shutting down: long calls may stop early.
    #[must_use]
    pub fn shutdown(&self) -> &CancellationToken {
        &self.shared.runtime.shutdown
    }

    /// Runs `content` through the outbound pipeline and seals it into the event's effects.
    async fn send(
        &mut self,
        content: Content,
        quoted: Option<MessageId>,
    ) -> Result<MessageId, BotError> {
        if !content.content_type().allowed_without_floor() && !self.may_post(&content) {
            return Err(BotError::NoFloor);
        }
        let outgoing = Outgoing {
            thread: self.thread,
            content,
            quoted,
        };
        let outgoing = self
            .shared
            .runtime
            .outbound
            .clone()
            .oneshot(outgoing)
            .await?;
        let mut scratch = self.shared.scratch();
        let state = scratch.state.as_mut().ok_or(BotError::NoFloor)?;
        let sealed = state.seal(&self.shared.keys, &outgoing.content, outgoing.quoted)?;
        let id = sealed.header.message_id();
        scratch.sealed.push(sealed);
        Ok(id)
    }

    fn may_post(&self, content: &Content) -> bool {
        let scratch = self.shared.scratch();
        scratch.state.as_ref().is_some_and(|s| {
            content.content_type() == ContentType::HandoffRequest
                && s.roster().floor == Floor::Group
                || s.roster().may_post(self.me.device)
        })
    }
}

/// Sets the typing indicator of one thread. Each call posts a typing message at once: its
/// generation is claimed durably in the store first, so no generation is ever sealed twice.
#[derive(Clone)]
pub struct TypingHandle {
    shared: Arc<EventShared>,
}

impl std::fmt::Debug for TypingHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TypingHandle")
            .field("thread", &self.shared.thread)
            .finish_non_exhaustive()
    }
}

impl TypingHandle {
    /// Typing on (`true`) or off: posts a typing message now.
    ///
    /// # Errors
    /// [`BotError::NoFloor`] if the bot left the thread; store and relay errors.
    pub async fn set(&self, active: bool) -> Result<(), BotError> {
        let shared = &self.shared;
        let _one_at_a_time = shared.typing.lock().await;
        let (entry, effects) = {
            let mut scratch = shared.scratch();
            let scratch = &mut *scratch;
            let state = scratch.state.as_mut().ok_or(BotError::NoFloor)?;
            let sealed = state.seal(&shared.keys, &Content::Typing { active }, None)?;
            let claim = Claim {
                epoch: state.epoch(),
                next_generation: sealed.header.generation.saturating_add(1),
            };
            let mut base = ThreadBlob::decode(&scratch.base)?;
            base.claimed = Some(claim);
            let data = base.encode()?;
            scratch.base = Arc::new(data.clone());
            let entry = crate::runtime::outbox_entry(shared.thread, &sealed)?;
            let effects = crate::store::Effects {
                thread: shared.thread,
                expected_version: scratch.version,
                data: Some(data),
                handled: Vec::new(),
                outbox: vec![entry.clone()],
                history: Vec::new(),
                history_from: 0,
            };
            (entry, effects)
        };
        let version = shared.runtime.store.commit(effects).await?;
        shared.scratch().version = Some(version);
        // In the thread's order, behind its earlier replies (and not at all if it is stale by
        // then).
        shared.runtime.sender.push_typing(shared.thread, entry);
        crate::runtime::sender::post_thread(&shared.runtime, shared.thread).await
    }
}

#[async_trait::async_trait]
impl crate::layers::TypingSignal for TypingHandle {
    async fn set(&self, active: bool) -> Result<(), BotError> {
        Self::set(self, active).await
    }
}
