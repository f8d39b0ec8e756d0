//! # switchboard-testkit
//!
//! Helpers for tests that drive Switchboard devices against a relay: bounded waits for events,
//! scratch directories, and accessors for what was said. Every wait is bounded, so a broken
//! system fails a test instead of hanging it. [`world`] is a whole system in one process (a
//! relay, an entity's admin with its routing policy, agents, customers), [`conformance`] the
//! bot conformance suite built on it, [`hostile`] a proxy that tampers and injects faults,
//! [`sim`] a lightweight in-memory customer for load tests, [`floor`] the protocol's
//! cryptographic cost floor, [`pg`] a PostgreSQL schema per test.

pub mod conformance;
pub mod floor;
pub mod hostile;
pub mod pg;
pub mod sim;
pub mod world;

use std::path::PathBuf;
use std::time::Duration;

use switchboard_client::{Device, Event};
use switchboard_protocol::{Content, Csprng, DeviceId, Sender};

/// How long one receive waits, and how many rounds [`until`] tries (30 s in all).
const ROUND: Duration = Duration::from_secs(1);
const ROUNDS: usize = 30;

/// A fresh directory under the system's temporary directory, unique to this call.
///
/// # Panics
/// If the directory cannot be created or no randomness is available (a test environment
/// problem, reported as a failed test).
#[must_use]
pub fn scratch_dir(prefix: &str) -> PathBuf {
    #[allow(clippy::expect_used)]
    let mut rng = Csprng::from_os().expect("randomness for a scratch directory name");
    let dir = std::env::temp_dir().join(format!(
        "switchboard-{prefix}-{}-{}",
        std::process::id(),
        DeviceId::random(&mut rng)
    ));
    #[allow(clippy::expect_used)]
    std::fs::create_dir_all(&dir).expect("a scratch directory");
    dir
}

/// Receives on `device` until an event matches `want`, and returns it; events before it are
/// dropped.
///
/// # Panics
/// If no event matches within 30 s, or receiving fails: the test fails with what it waited for.
pub async fn until(device: &mut Device, want: impl Fn(&Event) -> bool) -> Event {
    for _ in 0..ROUNDS {
        #[allow(clippy::expect_used)]
        for event in device.receive(ROUND).await.expect("receive") {
            if want(&event) {
                return event;
            }
        }
    }
    #[allow(clippy::panic)]
    {
        panic!("device {} never received the awaited event", device.id());
    }
}

/// Who said what, for a message event.
#[must_use]
pub fn said_by(event: &Event) -> Option<(&Sender, &Content)> {
    match event {
        Event::Message { message, .. } => Some((&message.sender_info, &message.content)),
        _ => None,
    }
}

/// Whether `event` is a message from the agent named `name` (its verified credential name).
#[must_use]
pub fn agent_said(event: &Event, name: &str) -> bool {
    matches!(
        said_by(event),
        Some((Sender::Agent { display_name, .. }, _)) if display_name == name
    )
}

/// Creates an agent device of `entity` with its keystore at `path`, taking the admin key the
/// relay serves only if it is `admin` (see [`ExpectedKey`](switchboard_client::ExpectedKey)).
///
/// # Panics
/// If the device cannot be created (the test fails with the reason).
pub async fn new_agent(
    path: &std::path::Path,
    secret: &switchboard_client::KeystoreSecret,
    relay: &str,
    entity: &str,
    admin: switchboard_client::ExpectedKey,
) -> Device {
    #[allow(clippy::expect_used)]
    let entity = switchboard_protocol::EntityId::new(entity).expect("a valid entity name");
    #[allow(clippy::expect_used)]
    Device::create(
        path,
        secret,
        switchboard_client::NewDevice::new(
            relay,
            switchboard_client::NewRole::Agent { entity, admin },
        ),
    )
    .await
    .expect("an agent device")
}

/// Receives on `device`, keeping every event, until `enough` says the events so far suffice;
/// returns them all.
///
/// # Panics
/// If that does not happen within 30 s, or receiving fails.
pub async fn gather(device: &mut Device, enough: impl Fn(&[Event]) -> bool) -> Vec<Event> {
    let mut events = Vec::new();
    for _ in 0..ROUNDS {
        #[allow(clippy::expect_used)]
        events.extend(device.receive(ROUND).await.expect("receive"));
        if enough(&events) {
            return events;
        }
    }
    #[allow(clippy::panic)]
    {
        panic!(
            "device {} never received enough; it got {events:#?}",
            device.id()
        );
    }
}
