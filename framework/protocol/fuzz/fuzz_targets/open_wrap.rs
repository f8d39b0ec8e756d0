//! Fuzz target: see `targets::open_wrap`.
//! Run: `cd framework/protocol/fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run open_wrap`
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| switchboard_protocol_fuzz::open_wrap(data));
