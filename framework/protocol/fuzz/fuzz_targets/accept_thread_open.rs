//! Fuzz target: see `targets::accept_thread_open`.
//! Run: `cd framework/protocol/fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run accept_thread_open`
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| switchboard_protocol_fuzz::accept_thread_open(data));
