//! healthbridge webhook: injects the agent into opted-in pods and reconciles their RBAC and NodePort Services.

pub mod admission;
pub mod annotations;
pub mod certs;
pub mod cli;
pub mod config;
pub mod controller;
pub mod group;
pub mod keys;
pub mod metrics;
pub mod patch;
pub mod server;
pub mod tls;
