//! Helpers shared by the end-to-end tests: cluster access, per-test namespaces, polling, fixtures, probes.

pub mod admission;
pub mod cluster;
pub mod echo;
pub mod fixtures;
pub mod haproxy;
pub mod http;
pub mod nodes;
pub mod poll;
pub mod scenario;
pub mod webhook;

pub use cluster::Cluster;
pub use fixtures::{DemoPod, demo_pod};
pub use nodes::Node;
pub use poll::poll_until;
pub use scenario::Scenario;
