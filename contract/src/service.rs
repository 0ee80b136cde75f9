//! The Service settings a pod asks for: NodePort and its range, external traffic policy, one Service per group or
//! per pod. Read by the webhook at admission and by the controller when it builds the Service.

use std::fmt;
use std::str::FromStr;

use thiserror::Error;

use crate::value::{ValueError, parse_port, shorten};

/// A Service setting the controller cannot apply.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ServiceValueError {
    #[error(transparent)]
    Port(#[from] ValueError),
    #[error(
        "`{value}` is not a NodePort of this cluster: use a free port in {range} or remove the annotation to let Kubernetes pick one"
    )]
    OutsideRange { value: String, range: NodePortRange },
    #[error(
        "`{0}` is not accepted: use Local (default: a node answers only for its own pods) or Cluster"
    )]
    TrafficPolicy(String),
    #[error(
        "`{0}` is not accepted: use group (default: one Service per healthbridge.io/group) or pod"
    )]
    Scope(String),
}

/// The NodePort range of the API server (`--service-node-port-range`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodePortRange {
    pub first: u16,
    pub last: u16,
}

impl Default for NodePortRange {
    fn default() -> Self {
        Self {
            first: 30000,
            last: 32767,
        }
    }
}

impl NodePortRange {
    pub fn contains(&self, port: u16) -> bool {
        (self.first..=self.last).contains(&port)
    }
}

impl fmt::Display for NodePortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}

impl FromStr for NodePortRange {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || {
            format!(
                "{text:?} is not a port range: write FIRST-LAST, e.g. 30000-32767, as the API server's --service-node-port-range"
            )
        };
        let (first, last) = text.split_once('-').ok_or_else(bad)?;
        let first: u16 = first.trim().parse().map_err(|_| bad())?;
        let last: u16 = last.trim().parse().map_err(|_| bad())?;
        if first == 0 || first > last {
            return Err(bad());
        }
        Ok(Self { first, last })
    }
}

/// A pinned NodePort: a port, inside `range`.
pub fn parse_node_port(value: &str, range: NodePortRange) -> Result<u16, ServiceValueError> {
    let port = parse_port(value)?;
    if !range.contains(port) {
        return Err(ServiceValueError::OutsideRange {
            value: shorten(value),
            range,
        });
    }
    Ok(port)
}

/// Where the Service's `externalTrafficPolicy` points.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TrafficPolicy {
    /// A node answers only for its own pods: what a load balancer checking each node needs.
    #[default]
    Local,
    Cluster,
}

impl TrafficPolicy {
    /// The value of `externalTrafficPolicy`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Local => "Local",
            Self::Cluster => "Cluster",
        }
    }
}

/// `Local` or `Cluster`, in any case.
pub fn parse_traffic_policy(value: &str) -> Result<TrafficPolicy, ServiceValueError> {
    match value.trim() {
        v if v.eq_ignore_ascii_case("local") => Ok(TrafficPolicy::Local),
        v if v.eq_ignore_ascii_case("cluster") => Ok(TrafficPolicy::Cluster),
        _ => Err(ServiceValueError::TrafficPolicy(shorten(value))),
    }
}

/// One Service per group (default) or one per pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ServiceScope {
    #[default]
    Group,
    Pod,
}

/// `group` or `pod`, in any case.
pub fn parse_scope(value: &str) -> Result<ServiceScope, ServiceValueError> {
    match value.trim() {
        v if v.eq_ignore_ascii_case("group") => Ok(ServiceScope::Group),
        v if v.eq_ignore_ascii_case("pod") => Ok(ServiceScope::Pod),
        _ => Err(ServiceValueError::Scope(shorten(value))),
    }
}

/// Whether a pod with this `service-scope` annotation (or none) shares its group's Service.
pub fn shares_group_service(scope: Option<&str>) -> bool {
    scope.is_none_or(|scope| parse_scope(scope) != Ok(ServiceScope::Pod))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ports_must_be_in_the_range() {
        let range = NodePortRange::default();
        assert_eq!(parse_node_port("30080", range), Ok(30080));
        assert_eq!(
            parse_node_port("8080", range).unwrap_err().to_string(),
            "`8080` is not a NodePort of this cluster: use a free port in 30000-32767 or remove the annotation to let Kubernetes pick one"
        );
        assert!(matches!(
            parse_node_port("x", range),
            Err(ServiceValueError::Port(_))
        ));
        let custom: NodePortRange = "20000-20100".parse().unwrap();
        assert_eq!(parse_node_port("20050", custom), Ok(20050));
        assert!("20100-20000".parse::<NodePortRange>().is_err());
    }

    #[test]
    fn policy_and_scope_are_read_in_any_case() {
        assert_eq!(parse_traffic_policy("cluster"), Ok(TrafficPolicy::Cluster));
        assert_eq!(parse_traffic_policy("Local"), Ok(TrafficPolicy::Local));
        assert!(parse_traffic_policy("Nearest").is_err());
        assert_eq!(parse_scope("POD"), Ok(ServiceScope::Pod));
        assert!(parse_scope("node").is_err());
        assert!(shares_group_service(None));
        assert!(!shares_group_service(Some("Pod")));
        assert!(shares_group_service(Some("group")));
    }
}
