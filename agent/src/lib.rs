//! healthbridge agent: serves a pod's health over plain HTTP for load balancers that know nothing of Kubernetes.

// Tests may unwrap: a panic there is a failed test with its message.
#![cfg_attr(test, allow(clippy::unwrap_used))]

/// Durations as the agent and the webhook read them: written once, in the contract crate.
pub use healthbridge_contract::duration;

pub mod bridge;
pub mod cause;
pub mod cli;
pub mod config;
pub mod endpoints;
pub mod exec;
pub mod listen;
pub mod metrics;
pub mod periodic;
pub mod pod_status;
pub mod probe;
pub mod render;
pub mod report;
pub mod run;
pub mod server;
pub mod socket;
pub mod tls;
