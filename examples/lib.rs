//! Runnable examples of Switchboard: see the `[[example]]` entries of this crate's Cargo.toml.
//! Each example file starts with the command that runs it.
//!
//! The bots and layers of the SDK examples are also modules of this library (the very same
//! files), so that the tests in `tests/` run them against a whole system on loopback; the
//! 20-line bot is run as its example binary.

#[allow(dead_code)]
#[path = "custom_layer.rs"]
pub mod custom_layer;
#[allow(dead_code)]
#[path = "group_thread.rs"]
pub mod group_thread;
#[allow(dead_code)]
#[path = "handoff.rs"]
pub mod handoff;
#[allow(dead_code)]
#[path = "typed_state.rs"]
pub mod typed_state;
