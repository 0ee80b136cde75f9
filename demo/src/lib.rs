//! The demo workload: a UDP and TCP echo server whose readiness is nothing but a marker file.

// Tests may unwrap: a panic there is the failure report.
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod cli;
pub mod echo;
pub mod ready;
pub mod status;
