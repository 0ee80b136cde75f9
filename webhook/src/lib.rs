//! healthbridge webhook: injects the agent into opted-in pods and reconciles their RBAC and NodePort Services.

pub mod admission;
pub mod annotations;
pub mod certs;
pub mod cli;
pub mod config;
pub mod controller;
pub mod group;
/// Every annotation and label key, from the contract crate shared with the agent.
pub use healthbridge_contract::keys;
pub mod metrics;
pub mod nodes;
pub mod patch;
pub mod run;
pub mod server;
pub mod tls;
pub mod trust;
