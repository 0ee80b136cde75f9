//! healthbridge agent: serves a pod's health over plain HTTP for load balancers that know nothing of Kubernetes.

pub mod duration;
pub mod report;
pub mod tls;
