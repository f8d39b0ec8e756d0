//! `switchboard chat --relay URL ENTITY`: the customer's terminal chat, line by line.
//!
//! Shows who is speaking (agent name, bot or human, as the entity's admin vouched for it in a
//! credential), fingerprints, receipts, typing, quoted replies, handoffs, and warns if the
//! entity's admin key changed since first contact (sending is then blocked until `/trust`).

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use switchboard_client::{ClientError, Device, Event, NewDevice, NewRole};
use switchboard_protocol::{
    AgentKind, Content, EntityId, Fingerprint, HandoffTarget, MessageId, ReceiptKind,
    ReceivedMessage, Sender, ThreadId,
};
use tokio::io::AsyncBufReadExt as _;

use crate::admin_cmd::device_secret;
use crate::out;

/// `switchboard chat`.
#[derive(Debug, Args)]
pub(crate) struct ChatArgs {
    /// The relay.
    #[arg(long)]
    relay: String,
    /// The entity to talk to, e.g. `acme`.
    entity: String,
    /// Your keystore (created on first use). Default: `switchboard-chat-ENTITY.keystore`.
    #[arg(long)]
    keystore: Option<PathBuf>,
    /// Unlock with this key file (created if missing) instead of `SWITCHBOARD_PASSPHRASE`.
    #[arg(long)]
    key_file: Option<PathBuf>,
}

const HELP: &str = "commands: /reply N TEXT (quote message #N), /typing, /fp (fingerprints), \
                    /trust (accept a changed admin key), /help, /quit";

struct Chat {
    device: Device,
    entity: EntityId,
    display_name: String,
    thread: Option<ThreadId>,
    /// Messages shown, by number (#1 is the first).
    shown: Vec<MessageId>,
    /// Messages sent, by number, to show receipts against.
    sent: Vec<MessageId>,
    blocked: bool,
}

pub(crate) async fn run(args: ChatArgs) -> Result<(), String> {
    let secret = device_secret(args.key_file.as_deref())?;
    let entity = EntityId::new(args.entity).map_err(|e| e.to_string())?;
    let path = args
        .keystore
        .unwrap_or_else(|| PathBuf::from(format!("switchboard-chat-{entity}.keystore")));
    let device = if path.exists() {
        let device = Device::open(&path, &secret, Some(&args.relay))
            .await
            .map_err(|e| e.to_string())?;
        device.register().await.map_err(|e| e.to_string())?;
        device
    } else {
        Device::create(
            &path,
            &secret,
            NewDevice::new(&args.relay, NewRole::Customer),
        )
        .await
        .map_err(|e| e.to_string())?
    };
    let thread = device
        .threads()
        .filter(|t| *t.entity() == entity)
        .map(|t| t.thread())
        .last();
    let mut chat = Chat {
        device,
        entity,
        display_name: String::new(),
        thread,
        shown: Vec::new(),
        sent: Vec::new(),
        blocked: false,
    };
    chat.greet().await?;
    chat.run().await
}

impl Chat {
    async fn greet(&mut self) -> Result<(), String> {
        out(&format!(
            "Switchboard chat with {}. You are device {} (fingerprint {}).",
            self.entity,
            self.device.id(),
            self.device.fingerprint()
        ));
        let record = self
            .device
            .relay()
            .directory(&self.entity)
            .await
            .map_err(|e| e.to_string())?;
        self.display_name = record.display_name.clone();
        let served = record.admin.identity_key.fingerprint();
        match self.device.pinned_admin(&self.entity) {
            Some(pinned) if pinned.identity_key != record.admin.identity_key => {
                self.blocked = true;
                out(&format!(
                    "WARNING: the admin key of {} CHANGED. Pinned: {}. Now: {served}. \
                     Someone may be impersonating {}. Compare fingerprints with them, then \
                     /trust to accept the new key. Sending is blocked until then.",
                    self.entity,
                    pinned.fingerprint(),
                    self.display_name
                ));
            }
            Some(_) => out(&format!(
                "{} (admin key {served}, as pinned at first contact).",
                self.display_name
            )),
            None => out(&format!(
                "{}: admin key fingerprint {served} (pinned now; compare it with {}).",
                self.display_name, self.display_name
            )),
        }
        out("Type a message and press Enter. /help for commands.");
        Ok(())
    }

    async fn run(&mut self) -> Result<(), String> {
        let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
        let mut backoff = Duration::from_millis(200);
        loop {
            tokio::select! {
                line = lines.next_line() => {
                    match line {
                        Ok(Some(line)) => {
                            if !self.command(line.trim()).await? {
                                return Ok(());
                            }
                        }
                        // End of input: stop.
                        Ok(None) => return Ok(()),
                        Err(e) => return Err(format!("cannot read the terminal: {e}")),
                    }
                }
                events = self.device.receive(Duration::from_secs(25)) => {
                    match events {
                        Ok(events) => {
                            backoff = Duration::from_millis(200);
                            self.show(events).await;
                        }
                        Err(e) if e.is_transient() => {
                            out(&format!("(relay unavailable: {e}; retrying)"));
                            tokio::time::sleep(backoff).await;
                            backoff = (backoff * 2).min(Duration::from_secs(30));
                        }
                        Err(e) => return Err(e.to_string()),
                    }
                }
            }
        }
    }

    /// Handles one input line; `false` to quit.
    async fn command(&mut self, line: &str) -> Result<bool, String> {
        if line.is_empty() {
            return Ok(true);
        }
        match line
            .split_once(' ')
            .map_or((line, ""), |(c, rest)| (c, rest.trim()))
        {
            ("/quit", _) => return Ok(false),
            ("/help", _) => out(HELP),
            ("/fp", _) => self.fingerprints(),
            ("/trust", _) => {
                self.device
                    .trust_admin_key(&self.entity)
                    .map_err(|e| e.to_string())?;
                self.blocked = false;
                // The old thread was with the old admin key: the next message opens a new one.
                self.thread = None;
                out("* the new admin key will be pinned at your next message");
            }
            ("/typing", _) => {
                self.send(Content::Typing { active: true }, None).await;
            }
            ("/reply", rest) => {
                let (number, text) = rest.split_once(' ').unwrap_or((rest, ""));
                let quoted = number
                    .trim_start_matches('#')
                    .parse::<usize>()
                    .ok()
                    .and_then(|n| n.checked_sub(1))
                    .and_then(|i| self.shown.get(i).copied());
                match (quoted, text.trim()) {
                    (Some(id), text) if !text.is_empty() => {
                        self.send(
                            Content::Reply {
                                text: text.to_owned(),
                            },
                            Some(id),
                        )
                        .await;
                    }
                    _ => out("usage: /reply N TEXT, where #N is a message shown above"),
                }
            }
            (command, _) if command.starts_with('/') => {
                out(&format!("unknown command {command}; {HELP}"));
            }
            _ => self.send(Content::text(line), None).await,
        }
        Ok(true)
    }

    async fn send(&mut self, content: Content, quoted: Option<MessageId>) {
        if self.blocked {
            out("! not sent: the admin key changed (see the warning above); /trust to accept it");
            return;
        }
        let thread = match self.thread {
            Some(thread) => thread,
            None => match self.device.open_thread(&self.entity).await {
                Ok(thread) => {
                    self.thread = Some(thread);
                    thread
                }
                Err(e @ ClientError::AdminKeyChanged { .. }) => {
                    self.blocked = true;
                    out(&format!("WARNING: {e}"));
                    return;
                }
                Err(e) => {
                    out(&format!("! cannot open a thread: {e}"));
                    return;
                }
            },
        };
        let counts = !matches!(content, Content::Typing { .. } | Content::Receipt { .. });
        match self.device.send(thread, &content, quoted).await {
            Ok(sealed) if counts => {
                self.sent.push(sealed.header.message_id());
                out(&format!("  (sent, your message {})", self.sent.len()));
            }
            Ok(_) => {}
            Err(e) => out(&format!("! not sent: {e}")),
        }
    }

    fn fingerprints(&self) {
        out(&format!("you: {}", self.device.fingerprint()));
        if let Some(pinned) = self.device.pinned_admin(&self.entity) {
            out(&format!(
                "{} (admin): {}",
                self.display_name,
                pinned.fingerprint()
            ));
        }
        if let Some(thread) = self.thread {
            for (label, fingerprint) in self.agents(thread) {
                out(&format!("{label}: {fingerprint}"));
            }
        }
    }

    /// The agents of `thread` now: "Name (bot|human)", as their credentials say, and their
    /// fingerprints.
    fn agents(&self, thread: ThreadId) -> Vec<(String, Fingerprint)> {
        let Some(state) = self.device.thread(thread) else {
            return Vec::new();
        };
        state
            .roster()
            .agents()
            .filter_map(|member| {
                let credential = member.credential()?;
                let label = format!("{} ({})", credential.display_name, kind(credential.kind));
                Some((label, member.bundle.fingerprint()))
            })
            .collect()
    }

    fn label(&self, sender: &Sender) -> String {
        match sender {
            Sender::Customer => "you (another device)".to_owned(),
            Sender::Admin => format!("{} (admin)", self.display_name),
            Sender::Agent {
                display_name,
                kind: k,
            } => {
                format!("{display_name} ({}, for {})", kind(*k), self.display_name)
            }
        }
    }

    async fn show(&mut self, events: Vec<Event>) {
        let mut read = Vec::new();
        for event in events {
            match event {
                Event::Message { message, .. } => {
                    if let Some(id) = self.show_message(&message) {
                        read.push(id);
                    }
                }
                Event::RosterChanged { thread, epoch } => {
                    let names: Vec<String> = self
                        .agents(thread)
                        .into_iter()
                        .map(|(label, _)| label)
                        .collect();
                    if names.is_empty() {
                        out(&format!(
                            "* {} is with you (key epoch {})",
                            self.display_name, epoch.0
                        ));
                    } else {
                        out(&format!(
                            "* now with you: {} (key epoch {})",
                            names.join(", "),
                            epoch.0
                        ));
                    }
                }
                Event::History { messages, .. } => {
                    out(&format!(
                        "* {} earlier message(s) of this thread:",
                        messages.len()
                    ));
                    for message in &messages {
                        self.show_message(message);
                    }
                }
                Event::Removed { .. } => out("* you were removed from this thread"),
                Event::Refused { reason, .. } => {
                    out(&format!(
                        "! dropped an item that failed verification: {reason}"
                    ));
                }
                Event::Equivocation {
                    generation, epoch, ..
                } => out(&format!(
                    "! a member sent two different messages as message {generation} of key epoch {}: the second was dropped",
                    epoch.0
                )),
                Event::LateMessage { epoch, .. } => out(&format!(
                    "! dropped a late message of old key epoch {}: its sender may have missed a roster change",
                    epoch.0
                )),
                Event::ThreadOpened { .. } | Event::Joined { .. } => {}
            }
        }
        if !read.is_empty() {
            self.send(
                Content::Receipt {
                    kind: ReceiptKind::Read,
                    messages: read,
                },
                None,
            )
            .await;
        }
    }

    /// Prints a message; returns its id if it deserves a read receipt.
    fn show_message(&mut self, message: &ReceivedMessage) -> Option<MessageId> {
        let who = self.label(&message.sender_info);
        let number = |shown: &mut Vec<MessageId>| {
            shown.push(message.id);
            shown.len()
        };
        match &message.content {
            Content::Text { text } => {
                let n = number(&mut self.shown);
                out(&format!("#{n} {who}: {text}"));
                Some(message.id)
            }
            Content::Reply { text } => {
                let quoted = message
                    .quoted
                    .and_then(|q| self.quote_label(q))
                    .unwrap_or_else(|| "an earlier message".to_owned());
                let n = number(&mut self.shown);
                out(&format!("#{n} {who} (replying to {quoted}): {text}"));
                Some(message.id)
            }
            Content::Receipt { kind: k, messages } => {
                let mine: Vec<String> = messages
                    .iter()
                    .filter_map(|id| self.sent.iter().position(|s| s == id))
                    .map(|i| (i + 1).to_string())
                    .collect();
                if !mine.is_empty() {
                    let what = match k {
                        ReceiptKind::Delivered => "delivered to",
                        ReceiptKind::Read => "read by",
                    };
                    out(&format!(
                        "  ✓ your message {} {what} {who}",
                        mine.join(", ")
                    ));
                }
                None
            }
            Content::Typing { active } => {
                if *active {
                    out(&format!("  … {who} is typing"));
                }
                None
            }
            Content::HandoffRequest { target, .. } => {
                let to = match target {
                    HandoffTarget::Team(team) => format!("the {team} team"),
                    HandoffTarget::AnyHuman => "a person".to_owned(),
                    HandoffTarget::Agent(_) => "a colleague".to_owned(),
                };
                out(&format!("* {who} is handing you over to {to}"));
                None
            }
            Content::SystemNotice { text } => {
                out(&format!("* {}: {text}", self.display_name));
                None
            }
        }
    }

    fn quote_label(&self, id: MessageId) -> Option<String> {
        if let Some(i) = self.shown.iter().position(|s| *s == id) {
            return Some(format!("#{}", i + 1));
        }
        self.sent
            .iter()
            .position(|s| *s == id)
            .map(|i| format!("your message {}", i + 1))
    }
}

fn kind(kind: AgentKind) -> &'static str {
    match kind {
        AgentKind::Bot => "bot",
        AgentKind::Human => "human",
    }
}
