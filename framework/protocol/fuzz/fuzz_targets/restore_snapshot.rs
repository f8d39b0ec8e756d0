//! Fuzz target: see `targets::restore_snapshot`.
//! Run: `cd framework/protocol/fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run restore_snapshot`
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| switchboard_protocol_fuzz::restore_snapshot(data));
