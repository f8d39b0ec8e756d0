//! Runnable examples of Switchboard: see the `[[example]]` entries of this crate's Cargo.toml.
//! Each example file starts with the command that runs it.
