//! The [`Bot`] trait and the types its hooks receive.

use async_trait::async_trait;
use switchboard_protocol::{
    Content, DeviceId, EntityId, Epoch, Fingerprint, HandoffTarget, MessageId, ReceiptKind, Sender,
    ThreadId,
};

use crate::ctx::Ctx;
use crate::error::BotError;

/// A bot: hooks the runtime calls for the events of the threads the bot is in. Every hook has
/// a default that does nothing. One thread's events come in order, one at a time; different
/// threads run concurrently (so `&self` is shared: keep per-thread data in
/// [`Ctx::state`](crate::Ctx::state)).
///
/// What a hook does through its [`Ctx`] (replies, state) takes effect only if the hook returns
/// `Ok`: an error drops it (a transient error retries the event first).
#[async_trait]
pub trait Bot: Send + Sync + 'static {
    /// A thread forwarded to this bot, with what the customer wrote before (the history grant).
    /// The runtime waits up to 3 s after the bot joined for the grant; one that comes later
    /// (the relay was refusing requests meanwhile, say) brings its texts through
    /// [`Bot::on_message`] instead, after this hook was called with no history.
    async fn on_thread(
        &self,
        cx: &mut Ctx,
        thread: &ThreadInfo,
        history: &[Message],
    ) -> Result<(), BotError> {
        let _ = (cx, thread, history);
        Ok(())
    }

    /// A new message in a thread of the bot (text or a reply; never the bot's own).
    async fn on_message(&self, cx: &mut Ctx, msg: &Message) -> Result<(), BotError> {
        let _ = (cx, msg);
        Ok(())
    }

    /// A member joined or left the thread.
    async fn on_member(&self, cx: &mut Ctx, change: &MemberChange) -> Result<(), BotError> {
        let _ = (cx, change);
        Ok(())
    }

    /// The floor went to another agent (handoff/transfer); the bot may no longer post text.
    async fn on_floor_lost(&self, cx: &mut Ctx) -> Result<(), BotError> {
        let _ = cx;
        Ok(())
    }

    /// Removed from the thread: its state is gone, nothing can be posted.
    async fn on_removed(&self, thread: ThreadId) -> Result<(), BotError> {
        let _ = thread;
        Ok(())
    }

    /// Delivered or read receipts from another member.
    async fn on_receipt(&self, cx: &mut Ctx, receipt: &Receipt) -> Result<(), BotError> {
        let _ = (cx, receipt);
        Ok(())
    }
}

/// One bot shared: the same instance serves several runtimes (instances of one bot in one
/// process, or a runtime started again after a crash, as the conformance suite does).
#[async_trait]
impl<B: Bot + ?Sized> Bot for std::sync::Arc<B> {
    async fn on_thread(
        &self,
        cx: &mut Ctx,
        thread: &ThreadInfo,
        history: &[Message],
    ) -> Result<(), BotError> {
        (**self).on_thread(cx, thread, history).await
    }

    async fn on_message(&self, cx: &mut Ctx, msg: &Message) -> Result<(), BotError> {
        (**self).on_message(cx, msg).await
    }

    async fn on_member(&self, cx: &mut Ctx, change: &MemberChange) -> Result<(), BotError> {
        (**self).on_member(cx, change).await
    }

    async fn on_floor_lost(&self, cx: &mut Ctx) -> Result<(), BotError> {
        (**self).on_floor_lost(cx).await
    }

    async fn on_removed(&self, thread: ThreadId) -> Result<(), BotError> {
        (**self).on_removed(thread).await
    }

    async fn on_receipt(&self, cx: &mut Ctx, receipt: &Receipt) -> Result<(), BotError> {
        (**self).on_receipt(cx, receipt).await
    }
}

/// A message of a thread, verified and decrypted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// Its id.
    pub id: MessageId,
    /// The thread.
    pub thread: ThreadId,
    /// The sending device.
    pub sender: DeviceId,
    /// Who that device is (verified against the roster and its credential).
    pub from: Sender,
    /// What it says.
    pub content: Content,
    /// The message it quotes, for replies.
    pub quoted: Option<MessageId>,
}

impl Message {
    /// The text of a text message or reply; `""` for other content.
    #[must_use]
    pub fn text(&self) -> &str {
        match &self.content {
            Content::Text { text } | Content::Reply { text } => text,
            _ => "",
        }
    }

    /// Whether the customer sent it.
    #[must_use]
    pub fn is_from_customer(&self) -> bool {
        self.from == Sender::Customer
    }
}

/// A thread as the bot sees it when it is forwarded there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ThreadInfo {
    /// The thread.
    pub thread: ThreadId,
    /// The entity the bot speaks for.
    pub entity: EntityId,
    /// The epoch the bot joined in.
    pub epoch: Epoch,
    /// The customer's device.
    pub customer: Option<DeviceId>,
    /// Whether the bot may post text (it holds the floor, or the thread is a group).
    pub has_floor: bool,
}

/// A member joined or left a thread.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum MemberChange {
    /// A member joined.
    Joined {
        /// Its device.
        device: DeviceId,
        /// Who it is.
        who: Sender,
    },
    /// A member left (or was removed).
    Left {
        /// Its device.
        device: DeviceId,
        /// Who it was.
        who: Sender,
    },
}

/// Receipts another member sent.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Receipt {
    /// The member's device.
    pub from: DeviceId,
    /// Delivered or read.
    pub kind: ReceiptKind,
    /// The messages.
    pub messages: Vec<MessageId>,
}

/// Where to hand a thread (see [`Ctx::handoff`](crate::Ctx::handoff)).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Handoff {
    pub(crate) target: HandoffTarget,
    pub(crate) note: String,
}

impl Handoff {
    /// To any member of a team, e.g. "billing".
    #[must_use]
    pub fn to_team(team: impl Into<String>) -> Self {
        Self::new(HandoffTarget::Team(team.into()))
    }

    /// To a named agent device.
    #[must_use]
    pub fn to_agent(device: DeviceId) -> Self {
        Self::new(HandoffTarget::Agent(device))
    }

    /// To whichever human the admin's policy picks.
    #[must_use]
    pub fn to_human() -> Self {
        Self::new(HandoffTarget::AnyHuman)
    }

    /// With a note for whoever takes over.
    #[must_use]
    pub fn note(mut self, note: impl Into<String>) -> Self {
        self.note = note.into();
        self
    }

    fn new(target: HandoffTarget) -> Self {
        Self {
            target,
            note: String::new(),
        }
    }
}

/// Who the bot is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// The bot's device.
    pub device: DeviceId,
    /// The entity it speaks for.
    pub entity: EntityId,
    /// Its name, as its credential says (empty until the bot is in a thread).
    pub display_name: String,
    /// The fingerprint of its identity key.
    pub fingerprint: Fingerprint,
}
