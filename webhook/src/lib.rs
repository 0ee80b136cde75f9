//! healthbridge webhook: injects the agent into opted-in pods and reconciles their RBAC and NodePort Services.

pub mod controller;
pub mod keys;
