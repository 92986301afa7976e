//! What the integration tests share: a recording HTTP server on loopback that answers from a
//! script, and the built binary run with an explicit environment. The receiver's harness
//! (`receiver.rs` and what it includes) is the serve test binary's alone.

#![allow(dead_code, unused_imports)]

mod run;
mod server;

pub use run::{Finish, Outcome, TOKEN, Vars, binary, finish};
pub use server::{CLOSED, Recorded, Reply, Server, json, refused_url, with_header};

/// Whether the tests run under Wine (.ci/run's Windows suite), where a few things behave
/// differently enough to need a gentler test, or none.
pub fn under_wine() -> bool {
    std::env::var_os("COVERALLS_FINISH_TESTS_UNDER_WINE").is_some()
}
