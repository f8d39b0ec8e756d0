//! End-to-end scenarios. One test binary; each scenario is a module. `handoff` exchanges JSON
//! in process through [`switchboard_tests::Wire`]; `redelivery` and `scale_out` run the echo bot
//! as processes (`switchboard-test-bot`) against a relay on loopback.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::print_stderr,
    missing_docs,
    unreachable_pub
)]

mod conformance_process;
mod delivery_order;
mod handoff;
mod redelivery;
mod scale_out;
mod support;
mod test_bot;
