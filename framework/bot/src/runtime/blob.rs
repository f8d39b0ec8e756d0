//! What the store holds of one thread: the blob the runtime serialises (the store encrypts it).

use serde::{Deserialize, Serialize};
use switchboard_protocol::{
    AgentKind, Content, DeviceId, DeviceKeys, DeviceMemory, Epoch, MessageId, Sender, ThreadId,
    ThreadSnapshot, ThreadState,
};

use crate::bot::Message;
use crate::error::BotError;

/// Most recent messages kept per thread.
pub(crate) const HISTORY_LIMIT: usize = 100;

/// One thread's state, as stored.
#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ThreadBlob {
    /// The protocol state (`None`: never joined, or removed: a tombstone).
    pub(crate) snapshot: Option<ThreadSnapshot>,
    /// What the device remembers of this thread (refuses replayed joins after a removal).
    pub(crate) memory: DeviceMemory,
    /// The bot's typed state.
    #[serde(default)]
    pub(crate) bot_state: serde_json::Value,
    /// Recent messages, oldest first (at most [`HISTORY_LIMIT`]).
    #[serde(default)]
    pub(crate) history: Vec<StoredMessage>,
    /// A join waiting for its history grant.
    #[serde(default)]
    pub(crate) pending: Option<PendingJoin>,
    /// Generations claimed by typing messages posted during an event not committed yet.
    #[serde(default)]
    pub(crate) claimed: Option<Claim>,
}

impl ThreadBlob {
    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, BotError> {
        if bytes.is_empty() {
            return Ok(Self::default());
        }
        serde_json::from_slice(bytes)
            .map_err(|e| BotError::State(format!("the stored thread does not decode: {e}")))
    }

    pub(crate) fn encode(&self) -> Result<Vec<u8>, BotError> {
        serde_json::to_vec(self).map_err(|e| BotError::State(e.to_string()))
    }
}

/// A join waiting for the history grant that normally follows it.
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PendingJoin {
    /// The epoch joined.
    pub(crate) epoch: Epoch,
    /// When (Unix seconds).
    pub(crate) since: u64,
}

/// Generations below `next_generation` of `epoch` were used (by typing messages).
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Claim {
    pub(crate) epoch: Epoch,
    pub(crate) next_generation: u64,
}

/// Makes sure `state` never seals a claimed generation again.
pub(crate) fn honour_claim(
    keys: &DeviceKeys,
    state: ThreadState,
    claim: Claim,
) -> Result<ThreadState, BotError> {
    if state.epoch() != claim.epoch {
        return Ok(state);
    }
    let bad = |e: serde_json::Error| BotError::State(e.to_string());
    let mut value = serde_json::to_value(state.snapshot()).map_err(bad)?;
    let Some(field) = value.get_mut("next_generation") else {
        return Err(BotError::State(
            "a snapshot without a generation".to_owned(),
        ));
    };
    if field.as_u64().unwrap_or(0) >= claim.next_generation {
        return Ok(state);
    }
    *field = claim.next_generation.into();
    let snapshot: ThreadSnapshot = serde_json::from_value(value).map_err(bad)?;
    ThreadState::restore(keys, snapshot).map_err(|e| BotError::Protocol(e.to_string()))
}

/// A message as stored in the history.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StoredMessage {
    id: MessageId,
    thread: ThreadId,
    sender: DeviceId,
    from: StoredSender,
    content: Content,
    quoted: Option<MessageId>,
}

#[derive(Clone, Serialize, Deserialize)]
#[serde(tag = "who", rename_all = "snake_case", deny_unknown_fields)]
enum StoredSender {
    Customer,
    Admin,
    Agent { display_name: String, bot: bool },
}

impl From<&Message> for StoredMessage {
    fn from(m: &Message) -> Self {
        let from = match &m.from {
            Sender::Customer => StoredSender::Customer,
            Sender::Admin => StoredSender::Admin,
            Sender::Agent { display_name, kind } => StoredSender::Agent {
                display_name: display_name.clone(),
                bot: *kind == AgentKind::Bot,
            },
        };
        Self {
            id: m.id,
            thread: m.thread,
            sender: m.sender,
            from,
            content: m.content.clone(),
            quoted: m.quoted,
        }
    }
}

impl From<&StoredMessage> for Message {
    fn from(m: &StoredMessage) -> Self {
        let from = match &m.from {
            StoredSender::Customer => Sender::Customer,
            StoredSender::Admin => Sender::Admin,
            StoredSender::Agent { display_name, bot } => Sender::Agent {
                display_name: display_name.clone(),
                kind: if *bot {
                    AgentKind::Bot
                } else {
                    AgentKind::Human
                },
            },
        };
        Self {
            id: m.id,
            thread: m.thread,
            sender: m.sender,
            from,
            content: m.content.clone(),
            quoted: m.quoted,
        }
    }
}
