//! From what the engine reports about one inbox item to the bot's events.

use serde::Deserialize as _;
use switchboard_client::{Event, now};
use switchboard_protocol::api::{InboxItem, ItemKind};
use switchboard_protocol::{
    Content, DeviceId, MessageHeader, ReceivedMessage, Roster, Sender, ThreadId, ThreadState,
};

use crate::bot::{Identity, MemberChange, Message, Receipt, ThreadInfo};
use crate::pipeline::BotEvent;
use crate::runtime::blob::{PendingJoin, ThreadBlob};
use crate::runtime::shared::Shared;

/// The inbound journal's key of an item: the message id for a message (a redelivered message
/// is the same message at whatever position), its inbox position otherwise.
pub(super) fn journal_key(item: &InboxItem) -> String {
    if item.kind == ItemKind::Message
        && let Some(header) = item.payload.get("header")
        && let Ok(header) = MessageHeader::deserialize(header)
    {
        return format!("msg:{}", header.message_id());
    }
    format!("seq:{}", item.seq)
}

pub(super) fn identity(rt: &Shared, state: Option<&ThreadState>) -> Identity {
    let display_name = state
        .and_then(|s| s.roster().get(rt.me))
        .and_then(|m| m.credential())
        .map(|c| c.display_name.clone())
        .unwrap_or_default();
    Identity {
        device: rt.me,
        entity: rt.entity.clone(),
        display_name,
        fingerprint: rt.fingerprint,
    }
}

pub(super) fn thread_info(me: DeviceId, state: &ThreadState, pending: PendingJoin) -> ThreadInfo {
    ThreadInfo {
        thread: state.thread(),
        entity: state.entity().clone(),
        epoch: pending.epoch,
        customer: state.roster().customer().map(|m| m.device()),
        has_floor: state.roster().may_post(me),
    }
}

fn message_of(thread: ThreadId, m: ReceivedMessage) -> Message {
    Message {
        id: m.id,
        thread,
        sender: m.sender,
        from: m.sender_info,
        content: m.content,
        quoted: m.quoted,
    }
}

fn sender_in(roster: &Roster, device: DeviceId) -> Sender {
    match roster.get(device).and_then(|m| m.credential()) {
        Some(c) => Sender::Agent {
            display_name: c.display_name.clone(),
            kind: c.kind,
        },
        None if roster.customer().is_some_and(|m| m.device() == device) => Sender::Customer,
        None => Sender::Admin,
    }
}

/// Turns what the engine reported into the bot's events. Returns whether the bot joined.
#[allow(clippy::too_many_arguments)]
pub(super) fn map_event(
    rt: &Shared,
    event: Event,
    state: Option<&ThreadState>,
    before: Option<(Roster, bool)>,
    blob: &mut ThreadBlob,
    events: &mut Vec<BotEvent>,
    history: &mut Vec<Message>,
) -> bool {
    let count = |kind: &'static str| {
        rt.metrics
            .counter("switchboard_items_dropped_total", &[("reason", kind)])
            .inc();
    };
    let flush_pending = |blob: &mut ThreadBlob, events: &mut Vec<BotEvent>| {
        if let (Some(pending), Some(s)) = (blob.pending.take(), state) {
            events.push(BotEvent::Thread {
                info: thread_info(rt.me, s, pending),
                history: Vec::new(),
            });
        }
    };
    match event {
        Event::Joined { epoch, .. } => {
            blob.pending = Some(PendingJoin {
                epoch,
                since: now().0,
            });
            return true;
        }
        Event::History { thread, messages } => {
            let granted: Vec<Message> = messages
                .into_iter()
                .filter(|m| !matches!(m.content, Content::Typing { .. } | Content::Receipt { .. }))
                .map(|m| message_of(thread, m))
                .collect();
            history.extend(granted.iter().cloned());
            match (blob.pending.take(), state) {
                (Some(pending), Some(s)) => events.push(BotEvent::Thread {
                    info: thread_info(rt.me, s, pending),
                    history: granted,
                }),
                // Late: the bot was told of the thread without it (the grant came after
                // PENDING_JOIN_WAIT, say behind a relay that was refusing requests). What the
                // customer wrote before still reaches the bot, as messages.
                (None, Some(_)) => {
                    for message in granted {
                        if message.sender != rt.me
                            && matches!(
                                message.content,
                                Content::Text { .. } | Content::Reply { .. }
                            )
                        {
                            events.push(BotEvent::Message(message));
                        }
                    }
                }
                (_, None) => {}
            }
        }
        Event::RosterChanged { .. } => {
            if let (Some((old, had_floor)), Some(s)) = (before, state) {
                let new = s.roster();
                for (device, _) in new.members.iter().filter(|(d, _)| !old.contains(**d)) {
                    events.push(BotEvent::Member(MemberChange::Joined {
                        device: *device,
                        who: sender_in(new, *device),
                    }));
                }
                for (device, _) in old.members.iter().filter(|(d, _)| !new.contains(**d)) {
                    events.push(BotEvent::Member(MemberChange::Left {
                        device: *device,
                        who: sender_in(&old, *device),
                    }));
                }
                if had_floor && !new.may_post(rt.me) {
                    events.push(BotEvent::FloorLost);
                }
            }
        }
        Event::Removed { .. } => {
            blob.pending = None;
            if before.is_some_and(|(_, had_floor)| had_floor) {
                events.push(BotEvent::FloorLost);
            }
            events.push(BotEvent::Removed);
        }
        Event::Message {
            thread, message, ..
        } => {
            if message.sender == rt.me {
                return false;
            }
            match &message.content {
                Content::Typing { .. } => {}
                Content::Receipt { kind, messages } => {
                    events.push(BotEvent::Receipt(Receipt {
                        from: message.sender,
                        kind: *kind,
                        messages: messages.clone(),
                    }));
                }
                Content::Text { .. } | Content::Reply { .. } => {
                    flush_pending(blob, events);
                    let message = message_of(thread, message);
                    history.push(message.clone());
                    events.push(BotEvent::Message(message));
                }
                _ => history.push(message_of(thread, message)),
            }
        }
        Event::Refused { seq, reason, .. } => {
            count("refused");
            tracing::warn!(seq, %reason, "an inbox item was refused");
        }
        Event::Equivocation { sender, .. } => {
            count("equivocation");
            tracing::warn!(%sender, "a member equivocated; the second message was dropped");
        }
        Event::LateMessage { sender, .. } => {
            count("late_message");
            tracing::warn!(%sender, "a late message of an old epoch was dropped");
        }
        Event::ThreadOpened { .. } => {}
    }
    false
}
