//! Fuzz target: see `targets::apply_commit`.
//! Run: `cd framework/protocol/fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run apply_commit`
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| switchboard_protocol_fuzz::apply_commit(data));
