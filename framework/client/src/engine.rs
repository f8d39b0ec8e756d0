//! Applying one inbox item to the one thread it names: the verification and state changes of
//! [`Device::receive`](crate::Device::receive), as a function over that thread's state alone, so
//! that devices which keep their threads elsewhere (the bot runtime's store, one thread row at a
//! time) apply items exactly as the keystore-backed [`Device`](crate::Device) does.

use switchboard_protocol::api::{InboxItem, ItemKind};
use switchboard_protocol::{
    Commit, CommitAction, CommitError, DeviceKeys, DeviceMemory, HistoryGrant, MessageError,
    ReplayPolicy, SealedMessage, SeenWraps, ThreadOpen, ThreadState, Timestamp, WireType, decode,
};

use crate::device::{DeviceRole, Event};

/// Who applies an item, and when.
#[derive(Clone, Copy, Debug)]
pub struct ItemContext<'a> {
    /// The device's keys.
    pub keys: &'a DeviceKeys,
    /// The device's role (an admin accepts thread opens; an agent joins from commits).
    pub role: &'a DeviceRole,
    /// Replay limits for a thread created or joined by this item.
    pub replay: ReplayPolicy,
    /// The time of application.
    pub at: Timestamp,
}

/// What applying an item did.
#[derive(Debug)]
#[non_exhaustive]
pub struct Applied {
    /// What to report (`None` for items with nothing to report: redeliveries).
    pub event: Option<Event>,
    /// The action of a commit that installed a new epoch here (joined or applied), for the KEM
    /// rotation schedule.
    pub commit_action: Option<CommitAction>,
}

impl Applied {
    fn event(event: Option<Event>) -> Self {
        Self {
            event,
            commit_action: None,
        }
    }
}

/// Applies `item` to its thread, whose state is `slot` (`None` if this device does not hold the
/// thread: a join or an open may fill it; a removal empties it). `memory` is the device's memory
/// of its threads (at least of this one: marks are per thread, wrap ids are per commit), and
/// `seen_opens` the thread-open wraps an admin accepted. Items that fail verification become
/// [`Event::Refused`] and change nothing.
pub fn apply_item(
    cx: &ItemContext<'_>,
    slot: &mut Option<ThreadState>,
    memory: &mut DeviceMemory,
    seen_opens: &mut SeenWraps,
    item: &InboxItem,
) -> Applied {
    let thread = item.thread;
    let refused = |reason: String| {
        Applied::event(Some(Event::Refused {
            thread,
            seq: item.seq,
            kind: item.kind,
            reason,
        }))
    };
    match item.kind {
        ItemKind::ThreadOpen => {
            let open: ThreadOpen = match payload(item) {
                Ok(open) => open,
                Err(e) => return refused(e),
            };
            let DeviceRole::Admin { entity } = cx.role else {
                return refused("a thread open reached a device that is not an admin".into());
            };
            if open.thread != thread {
                return refused("the thread open names another thread".into());
            }
            if slot.is_some() {
                return Applied::event(None);
            }
            match ThreadState::accept(cx.keys, entity, &open, cx.at, seen_opens) {
                Ok(state) => {
                    *slot = Some(state.with_replay_policy(cx.replay));
                    Applied::event(Some(Event::ThreadOpened {
                        thread,
                        customer: open.customer.device,
                    }))
                }
                Err(e) => refused(e.to_string()),
            }
        }
        ItemKind::Commit => {
            let commit: Commit = match payload(item) {
                Ok(commit) => commit,
                Err(e) => return refused(e),
            };
            if commit.thread != thread {
                return refused("the commit names another thread".into());
            }
            if let Some(state) = slot.as_mut() {
                if commit.epoch <= state.epoch() {
                    // Already applied (a redelivery).
                    return Applied::event(None);
                }
                return match state.apply_commit(cx.keys, &commit, cx.at) {
                    Ok(()) => {
                        if remembers_joins(cx.role) {
                            memory.applied(cx.keys.device(), &commit, cx.at);
                        }
                        Applied {
                            event: Some(Event::RosterChanged {
                                thread,
                                epoch: commit.epoch,
                            }),
                            commit_action: Some(commit.action),
                        }
                    }
                    Err(CommitError::Removed { .. }) => {
                        // Dropping the state zeroizes its epoch secrets; the memory keeps the
                        // removal, so a replay of the commit that added this device is refused.
                        *slot = None;
                        memory.removed(thread, commit.epoch, cx.at);
                        Applied::event(Some(Event::Removed { thread }))
                    }
                    Err(e) => refused(e.to_string()),
                };
            }
            let DeviceRole::Agent {
                entity,
                admin,
                admin_key,
            } = cx.role
            else {
                return refused("a commit for a thread this device is not in".into());
            };
            if !commit.roster.members.contains_key(&cx.keys.device()) {
                // A commit that removed this device from a thread it had already left.
                return Applied::event(None);
            }
            match ThreadState::join(cx.keys, entity, *admin, *admin_key, &commit, cx.at, memory) {
                Ok(state) => {
                    *slot = Some(state.with_replay_policy(cx.replay));
                    Applied {
                        event: Some(Event::Joined {
                            thread,
                            epoch: commit.epoch,
                        }),
                        commit_action: Some(commit.action),
                    }
                }
                Err(e) => refused(e.to_string()),
            }
        }
        ItemKind::History => {
            let grant: HistoryGrant = match payload(item) {
                Ok(grant) => grant,
                Err(e) => return refused(e),
            };
            let Some(state) = slot.as_mut() else {
                return refused("a history grant for a thread this device is not in".into());
            };
            match state.accept_history(cx.keys, &grant, cx.at) {
                Ok(messages) => Applied::event(Some(Event::History { thread, messages })),
                Err(e) => refused(e.to_string()),
            }
        }
        ItemKind::Message => {
            let message: SealedMessage = match payload(item) {
                Ok(message) => message,
                Err(e) => return refused(e),
            };
            let Some(state) = slot.as_mut() else {
                return refused("a message for a thread this device is not in".into());
            };
            if message.header.thread != thread {
                return refused("the message names another thread".into());
            }
            let event = match state.open_message(&message, cx.at) {
                Ok(received) => Some(Event::Message {
                    thread,
                    message: received,
                    sealed: Box::new(message),
                }),
                Err(MessageError::Duplicate { .. }) => None,
                Err(MessageError::Equivocation {
                    sender,
                    epoch,
                    generation,
                    first,
                    second,
                }) => Some(Event::Equivocation {
                    thread,
                    sender,
                    epoch,
                    generation,
                    first,
                    second,
                }),
                Err(MessageError::StaleEpoch {
                    sender,
                    epoch,
                    next,
                    next_installed_at,
                    ..
                }) => Some(Event::LateMessage {
                    thread,
                    sender,
                    epoch,
                    next,
                    next_installed_at,
                }),
                Err(e) => return refused(e.to_string()),
            };
            Applied::event(event)
        }
    }
}

/// Whether a device of `role` joins threads from commits (agents), and so keeps a memory of the
/// threads it was in.
fn remembers_joins(role: &DeviceRole) -> bool {
    matches!(role, DeviceRole::Agent { .. })
}

/// Decodes an inbox item's payload as `T`.
fn payload<T: WireType>(item: &InboxItem) -> Result<T, String> {
    let bytes = serde_json::to_vec(&item.payload).map_err(|e| e.to_string())?;
    decode(&bytes).map_err(|e| e.to_string())
}
