//! End-to-end scenarios. One test binary; each scenario is a module. Until the relay lands
//! (see the relay issue), devices exchange JSON in process through [`switchboard_tests::Wire`].

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod handoff;
