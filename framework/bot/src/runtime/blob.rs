//! What the store holds of one thread: the blob the runtime serialises (the store encrypts it).

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use switchboard_protocol::{
    AgentKind, Content, DeviceId, DeviceKeys, DeviceMemory, Epoch, MessageId, Sender, ThreadId,
    ThreadSnapshot, ThreadState,
};

use crate::bot::Message;
use crate::error::BotError;

/// The most recent messages of a thread the runtime keeps (and [`Ctx::history`](crate::Ctx::history)
/// returns): older ones are dropped from the store as new ones come.
pub const HISTORY_LIMIT: usize = 100;

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
    /// Recent messages, oldest first (at most [`HISTORY_LIMIT`]); shared with the events'
    /// contexts, not copied for each. Stored as history rows of their own (see
    /// [`HistoryEntry`](crate::store::HistoryEntry)), not in the blob: read here only from blobs
    /// of earlier versions, which kept it inline.
    #[serde(
        default,
        skip_serializing,
        deserialize_with = "history_serde::deserialize"
    )]
    pub(crate) history: Arc<Vec<Message>>,
    /// The position the next history entry takes.
    #[serde(default)]
    pub(crate) history_next: u64,
    /// How many of the newest messages of `history` are not stored as entries yet.
    #[serde(skip)]
    pub(crate) unsaved: usize,
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

/// One history message as stored in its own entry.
pub(crate) fn encode_message(message: &Message) -> Result<Vec<u8>, BotError> {
    serde_json::to_vec(&history_serde::Borrowed::of(message))
        .map_err(|e| BotError::State(e.to_string()))
}

/// A history message read back from its entry.
pub(crate) fn decode_message(bytes: &[u8]) -> Result<Message, BotError> {
    serde_json::from_slice::<StoredMessage>(bytes)
        .map(Message::from)
        .map_err(|e| BotError::State(format!("a stored history entry does not decode: {e}")))
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

/// The history as stored: each message through [`StoredMessage`], borrowed when written.
mod history_serde {
    use std::sync::Arc;

    use serde::{Deserialize, Deserializer, Serialize};
    use switchboard_protocol::{AgentKind, Content, DeviceId, MessageId, Sender, ThreadId};

    use super::StoredMessage;
    use crate::bot::Message;

    #[derive(Serialize)]
    pub(super) struct Borrowed<'a> {
        id: MessageId,
        thread: ThreadId,
        sender: DeviceId,
        from: BorrowedSender<'a>,
        content: &'a Content,
        quoted: Option<MessageId>,
    }

    #[derive(Serialize)]
    #[serde(tag = "who", rename_all = "snake_case")]
    enum BorrowedSender<'a> {
        Customer,
        Admin,
        Agent { display_name: &'a str, bot: bool },
    }

    impl<'a> Borrowed<'a> {
        pub(super) fn of(m: &'a Message) -> Self {
            let from = match &m.from {
                Sender::Customer => BorrowedSender::Customer,
                Sender::Admin => BorrowedSender::Admin,
                Sender::Agent { display_name, kind } => BorrowedSender::Agent {
                    display_name,
                    bot: *kind == AgentKind::Bot,
                },
            };
            Self {
                id: m.id,
                thread: m.thread,
                sender: m.sender,
                from,
                content: &m.content,
                quoted: m.quoted,
            }
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Arc<Vec<Message>>, D::Error> {
        let stored = Vec::<StoredMessage>::deserialize(d)?;
        Ok(Arc::new(stored.into_iter().map(Message::from).collect()))
    }
}

/// A message as stored in the history.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StoredMessage {
    id: MessageId,
    thread: ThreadId,
    sender: DeviceId,
    from: StoredSender,
    content: Content,
    quoted: Option<MessageId>,
}

#[derive(Deserialize)]
#[serde(tag = "who", rename_all = "snake_case", deny_unknown_fields)]
enum StoredSender {
    Customer,
    Admin,
    Agent { display_name: String, bot: bool },
}

impl From<StoredMessage> for Message {
    fn from(m: StoredMessage) -> Self {
        let from = match m.from {
            StoredSender::Customer => Sender::Customer,
            StoredSender::Admin => Sender::Admin,
            StoredSender::Agent { display_name, bot } => Sender::Agent {
                display_name,
                kind: if bot {
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
            content: m.content,
            quoted: m.quoted,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]

    use switchboard_protocol::{CipherSuite, Csprng, EntityId, Timestamp};

    use super::*;

    fn customer_thread() -> (DeviceKeys, ThreadState) {
        let mut rng = Csprng::from_os().unwrap();
        let now = Timestamp(1_800_000_000);
        let device = |rng: &mut Csprng| {
            DeviceKeys::generate(DeviceId::random(rng), CipherSuite::default(), rng)
        };
        let (customer, admin) = (device(&mut rng), device(&mut rng));
        let acme = EntityId::new("acme").unwrap();
        let (state, _) =
            ThreadState::open(&customer, acme, &admin.bundle(now), now, &mut rng).unwrap();
        (customer, state)
    }

    #[test]
    fn a_claimed_generation_is_never_sealed_again() {
        let (keys, mut state) = customer_thread();
        let first = state.seal(&keys, &Content::text("a"), None).unwrap();
        assert_eq!(first.header.generation, 0);
        let claim = Claim {
            epoch: state.epoch(),
            next_generation: 5,
        };
        let mut state = honour_claim(&keys, state, claim).unwrap();
        let next = state.seal(&keys, &Content::text("b"), None).unwrap();
        assert_eq!(next.header.generation, 5);
        // A claim below the counter, or of another epoch, changes nothing.
        let mut state = honour_claim(&keys, state, claim).unwrap();
        assert_eq!(
            state
                .seal(&keys, &Content::text("c"), None)
                .unwrap()
                .header
                .generation,
            6
        );
        let other = Claim {
            epoch: Epoch(9),
            next_generation: 100,
        };
        let mut state = honour_claim(&keys, state, other).unwrap();
        assert_eq!(
            state
                .seal(&keys, &Content::text("d"), None)
                .unwrap()
                .header
                .generation,
            7
        );
    }

    #[test]
    fn a_blob_round_trips_and_an_empty_record_is_a_new_thread() {
        let (_, state) = customer_thread();
        let message = Message {
            id: MessageId::derive(state.thread(), Epoch(0), DeviceId::from_bytes([1; 16]), 0),
            thread: state.thread(),
            sender: DeviceId::from_bytes([1; 16]),
            from: Sender::Agent {
                display_name: "OrderBot".into(),
                kind: AgentKind::Bot,
            },
            content: Content::text("hi"),
            quoted: None,
        };
        let blob = ThreadBlob {
            snapshot: Some(state.snapshot()),
            bot_state: serde_json::json!({"seen": 3}),
            history: Arc::new(vec![message.clone()]),
            history_next: 7,
            ..ThreadBlob::default()
        };
        let bytes = blob.encode().unwrap();
        let back = ThreadBlob::decode(&bytes).unwrap();
        assert!(back.snapshot == blob.snapshot);
        assert_eq!(back.bot_state, blob.bot_state);
        assert_eq!(back.history_next, 7);
        // The history is stored in entries of its own, not in the blob.
        assert!(back.history.is_empty());
        assert_eq!(
            decode_message(&encode_message(&message).unwrap()).unwrap(),
            message
        );
        // A blob of an earlier version, with the history inline, still reads.
        let mut inline: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        let stored: serde_json::Value =
            serde_json::from_slice(&encode_message(&message).unwrap()).unwrap();
        inline["history"] = serde_json::Value::Array(vec![stored]);
        let legacy = ThreadBlob::decode(&serde_json::to_vec(&inline).unwrap()).unwrap();
        assert_eq!(legacy.history[0], message);
        assert!(ThreadBlob::decode(&[]).unwrap().snapshot.is_none());
        assert!(ThreadBlob::decode(b"{").is_err());
    }
}
