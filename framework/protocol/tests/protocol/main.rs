//! Integration tests of switchboard-protocol: RFC 9180 / X-Wing known-answer tests, the
//! project's own JSON test vectors, attack tests (one per attack), and whole flows.
//! One test binary (see STYLE.md): each scenario file is a module.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::print_stdout,
    clippy::print_stderr,
    missing_docs,
    unreachable_pub
)]

mod attacks;
mod flows;
mod fuzz_smoke;
mod history;
mod rfc9180;
mod rotation;
mod spec_table;
mod support;
mod vectors;
mod xwing_derive;
