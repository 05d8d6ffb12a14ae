//! Step kinds for ca-a2a-flow, one file each. Adding a kind: write
//! `src/<kind>.rs` implementing [`ca_a2a_flow_engine::Step`], then add one line
//! to [`registry`].

pub mod noop;
pub mod shell;
pub mod sleep;
pub mod wait_http;

use ca_a2a_flow_engine::Registry;

/// Every step kind this build knows.
pub fn registry() -> Registry {
    Registry::new().register(noop::Noop).register(shell::Shell).register(sleep::Sleep).register(wait_http::WaitHttp)
}
