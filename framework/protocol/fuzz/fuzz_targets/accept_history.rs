//! Fuzz target: see `targets::accept_history`.
//! Run: `cd framework/protocol/fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run accept_history`
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| switchboard_protocol_fuzz::accept_history(data));
