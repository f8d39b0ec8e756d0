//! `switchboard-client-bot`: a bot written without the SDK, on `switchboard-client`'s `Device`
//! alone, run as a process by the conformance scenarios to prove the suite's process boundary.
//! It reads its world from the conformance suite's variables (`SWITCHBOARD_KEYSTORE`,
//! `SWITCHBOARD_KEY_FILE`, `SWITCHBOARD_RELAY`), prints `ready`, and answers every text of the
//! customer with `you said: TEXT` (the messages a thread was forwarded with too), in threads
//! where it may post. SIGTERM ends it (status 0).
//!
//! A `Device` saves its inbox cursor before it returns what it received: a crash between
//! receiving a question and answering it loses the answer (at most once), so this bot is run
//! without the suite's crash check.
//!
//! `SWITCHBOARD_CLIENT_BOT_FLAW` makes it misbehave, for the checks that catch each flaw:
//! - `ignore-retry-after`: it retries a refused request at once, whatever the relay's
//!   `Retry-After` says;
//! - `exit-on-refused`: it exits (status 1) when its device refuses an inbox item (one that
//!   was tampered with or is not for it), as a bot that treats every error as fatal;
//! - `exit-when-relay-down`: it exits when the relay cannot be reached or answers 5xx;
//! - `newest-first`: it fetches every 1.5 s and answers what came in one fetch newest first;
//! - `ignores-floor`: it keeps a copy of each thread's state as it was when it last answered
//!   there, and where its device may no longer post (another agent holds the floor) it seals
//!   the answer from that copy and posts it itself;
//! - `farewell`: from that copy it says goodbye in a thread it was removed from.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use switchboard_client::{ClientError, Device, Event, KeystoreSecret};
use switchboard_protocol::{Content, Sender, ThreadId, ThreadSnapshot, ThreadState};

/// How long one receive long-polls.
const POLL: Duration = Duration::from_secs(1);
/// How often a post is tried before the answer is given up.
const ATTEMPTS: u32 = 6;
/// The pause after a failure without `Retry-After`.
const BACKOFF: Duration = Duration::from_millis(200);

/// How to misbehave.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Flaw {
    None,
    IgnoreRetryAfter,
    ExitOnRefused,
    ExitWhenRelayDown,
    NewestFirst,
    IgnoresFloor,
    Farewell,
}

/// Each thread's state as it was when the bot last answered there (kept for the
/// `ignores-floor` and `farewell` flaws only).
type Stale = HashMap<ThreadId, ThreadSnapshot>;

/// How long the `newest-first` bot waits between fetches.
const BATCHING: Duration = Duration::from_millis(1500);

fn var(name: &str) -> Result<String, String> {
    std::env::var(name).map_err(|_| format!("{name} is not set"))
}

/// How long to wait after `error` before trying again.
fn pause(error: &ClientError, flaw: Flaw) -> Duration {
    match error {
        _ if flaw == Flaw::IgnoreRetryAfter => Duration::ZERO,
        ClientError::Refused {
            retry_after: Some(secs),
            ..
        } => Duration::from_secs(*secs),
        _ => BACKOFF,
    }
}

/// Seals `content` from the stale copy of `thread`'s state and posts it past the device (the
/// flaws `ignores-floor` and `farewell`).
async fn post_from_copy(device: &Device, stale: &mut Stale, thread: ThreadId, content: &Content) {
    let Some(snapshot) = stale.remove(&thread) else {
        return;
    };
    let sealed = ThreadState::restore(device.keys(), snapshot)
        .map_err(|e| e.to_string())
        .and_then(|mut state| {
            let sealed = state
                .seal(device.keys(), content, None)
                .map_err(|e| e.to_string());
            stale.insert(thread, state.snapshot());
            sealed
        });
    match sealed {
        Ok(sealed) => match device.relay().post_message(thread, &sealed).await {
            Ok(_) => tracing::info!("posted from the old copy of the thread"),
            Err(e) => tracing::warn!(error = %e, "the relay refused the post from the old copy"),
        },
        Err(e) => tracing::warn!(error = %e, "sealing from the old copy failed"),
    }
}

/// Answers `text` in `thread`, if the bot may post there; retries what the relay refuses
/// for now.
async fn answer(device: &mut Device, stale: &mut Stale, thread: ThreadId, text: &str, flaw: Flaw) {
    let may_post = device
        .thread(thread)
        .is_some_and(|s| s.roster().may_post(device.id()));
    if text.trim().is_empty() {
        return;
    }
    let reply: String = text.trim().chars().take(1000).collect();
    let content = Content::text(format!("you said: {reply}"));
    if !may_post {
        if flaw == Flaw::IgnoresFloor {
            post_from_copy(device, stale, thread, &content).await;
        }
        return;
    }
    for _ in 0..ATTEMPTS {
        match device.send(thread, &content, None).await {
            Ok(_) => {
                if matches!(flaw, Flaw::IgnoresFloor | Flaw::Farewell)
                    && let Some(state) = device.thread(thread)
                {
                    stale.insert(thread, state.snapshot());
                }
                return;
            }
            Err(e) if e.is_transient() => {
                tracing::warn!(error = %e, "the answer was not posted; trying again");
                tokio::time::sleep(pause(&e, flaw)).await;
            }
            Err(e) => {
                tracing::error!(error = %e, "the answer was refused");
                return;
            }
        }
    }
    tracing::error!("the answer was given up after {ATTEMPTS} attempts");
}

async fn run() -> Result<(), String> {
    let keystore = PathBuf::from(var("SWITCHBOARD_KEYSTORE")?);
    let key_file = PathBuf::from(var("SWITCHBOARD_KEY_FILE")?);
    let relay = var("SWITCHBOARD_RELAY")?;
    let flaw = match std::env::var("SWITCHBOARD_CLIENT_BOT_FLAW").as_deref() {
        Err(_) | Ok("") => Flaw::None,
        Ok("ignore-retry-after") => Flaw::IgnoreRetryAfter,
        Ok("exit-on-refused") => Flaw::ExitOnRefused,
        Ok("exit-when-relay-down") => Flaw::ExitWhenRelayDown,
        Ok("newest-first") => Flaw::NewestFirst,
        Ok("ignores-floor") => Flaw::IgnoresFloor,
        Ok("farewell") => Flaw::Farewell,
        Ok(other) => return Err(format!("unknown SWITCHBOARD_CLIENT_BOT_FLAW {other:?}")),
    };
    let mut device = Device::open(&keystore, &KeystoreSecret::KeyFile(key_file), Some(&relay))
        .await
        .map_err(|e| e.to_string())?;
    {
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "ready")
            .and_then(|()| stdout.flush())
            .map_err(|e| e.to_string())?;
    }
    let mut stale = Stale::new();
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(|e| e.to_string())?;
    loop {
        let received = tokio::select! {
            _ = terminate.recv() => break,
            received = device.receive(POLL) => received,
        };
        let mut events = match received {
            Ok(events) => events,
            Err(e) => {
                let down = matches!(e, ClientError::Unreachable { .. })
                    || matches!(e, ClientError::Refused { status, .. } if status >= 500);
                if flaw == Flaw::ExitWhenRelayDown && down {
                    return Err(format!("the relay is down: {e}"));
                }
                tracing::warn!(error = %e, "receiving failed");
                tokio::time::sleep(pause(&e, flaw)).await;
                continue;
            }
        };
        if flaw == Flaw::NewestFirst {
            events.reverse();
        }
        for event in events {
            match event {
                Event::Refused { reason, .. } if flaw == Flaw::ExitOnRefused => {
                    return Err(format!("an inbox item was refused: {reason}"));
                }
                Event::History { thread, messages } => {
                    for message in messages {
                        if let (Sender::Customer, Content::Text { text }) =
                            (&message.sender_info, &message.content)
                        {
                            answer(&mut device, &mut stale, thread, text, flaw).await;
                        }
                    }
                }
                Event::Removed { thread } if flaw == Flaw::Farewell => {
                    let goodbye = Content::text("I was taken off this conversation: goodbye!");
                    post_from_copy(&device, &mut stale, thread, &goodbye).await;
                }
                Event::Removed { thread } => {
                    stale.remove(&thread);
                }
                Event::Message {
                    thread, message, ..
                } => {
                    if let (Sender::Customer, Content::Text { text }) =
                        (&message.sender_info, &message.content)
                    {
                        answer(&mut device, &mut stale, thread, text, flaw).await;
                    }
                }
                _ => {}
            }
        }
        if flaw == Flaw::NewestFirst {
            tokio::select! {
                _ = terminate.recv() => break,
                () = tokio::time::sleep(BATCHING) => {}
            }
        }
    }
    device.flush_acks().await;
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    match run().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "switchboard-client-bot: {e}");
            ExitCode::FAILURE
        }
    }
}
