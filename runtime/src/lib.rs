//! Process plumbing shared by the healthbridge binaries: logs, the shutdown signal, the hardened HTTP server.

// Tests may unwrap: a panic there is a failed test with its message.
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod fdlimit;
#[cfg(feature = "flood")]
pub mod flood;
pub mod logging;
pub mod serve;
pub mod settings;
pub mod shutdown;

/// Content type of the OpenMetrics text exposition served at `/metrics`.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";
