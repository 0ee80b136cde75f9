//! What the webhook injects: agent image, port, resources, sidecar mode and the namespaces it never touches.

use std::collections::BTreeSet;

use crate::trust::AgentImages;
use healthbridge_contract::service::NodePortRange;

/// Whether the agent becomes a native sidecar (an init container with `restartPolicy: Always`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum NativeSidecar {
    /// Native where the cluster supports it (Kubernetes ≥ 1.29), else a regular container.
    Auto,
    /// Always native: pods fail validation on clusters older than 1.29.
    Always,
    /// Always a regular container.
    Never,
}

/// Requests and limits of the agent container, as Kubernetes quantities.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentResources {
    pub cpu_request: String,
    pub cpu_limit: Option<String>,
    pub memory_request: String,
    pub memory_limit: String,
}

impl Default for AgentResources {
    fn default() -> Self {
        // Measured agent footprint is a few MiB; the limit leaves room for bursts of /all checks.
        Self {
            cpu_request: "10m".into(),
            cpu_limit: None,
            memory_request: "16Mi".into(),
            memory_limit: "32Mi".into(),
        }
    }
}

/// Everything the patch needs from the webhook's own configuration.
#[derive(Debug, Clone)]
pub struct InjectionConfig {
    pub agent_image: String,
    /// Images that may run as the agent: the repository of `agent_image` and any allowed extra ones.
    pub agent_images: AgentImages,
    pub agent_port: u16,
    pub resources: AgentResources,
    pub native_sidecar: NativeSidecar,
    /// Pods in these namespaces are never injected.
    pub excluded_namespaces: BTreeSet<String>,
    /// NodePorts the controller may pin (`--node-port-range` with `run`, else the Kubernetes default).
    pub node_port_range: NodePortRange,
}

/// Namespaces of the cluster itself, never injected.
pub const SYSTEM_NAMESPACES: [&str; 3] = ["kube-system", "kube-public", "kube-node-lease"];

/// The agent's port when neither the flag nor the annotation says otherwise.
pub const DEFAULT_AGENT_PORT: u16 = 13000;

impl InjectionConfig {
    /// Configuration with the system namespaces and `own_namespace` (the webhook's) excluded.
    pub fn new(agent_image: impl Into<String>, own_namespace: Option<&str>) -> Self {
        let mut excluded_namespaces: BTreeSet<String> = SYSTEM_NAMESPACES
            .iter()
            .map(|ns| (*ns).to_owned())
            .collect();
        if let Some(ns) = own_namespace.filter(|ns| !ns.is_empty()) {
            excluded_namespaces.insert(ns.to_owned());
        }
        let agent_image = agent_image.into();
        Self {
            agent_images: AgentImages::new(&agent_image, std::iter::empty::<&str>()),
            agent_image,
            agent_port: DEFAULT_AGENT_PORT,
            resources: AgentResources::default(),
            native_sidecar: NativeSidecar::Auto,
            excluded_namespaces,
            node_port_range: NodePortRange::default(),
        }
    }

    /// Whether pods of this namespace are never injected. The system namespaces always are, whatever the set
    /// or the webhook's namespaceSelector says (defence in depth, as Istio's injector does).
    pub fn is_excluded(&self, namespace: &str) -> bool {
        SYSTEM_NAMESPACES.contains(&namespace) || self.excluded_namespaces.contains(namespace)
    }

    /// Whether the agent goes in as a native sidecar, given what the cluster supports.
    pub fn use_native_sidecar(&self, cluster_supports_native: bool) -> bool {
        match self.native_sidecar {
            NativeSidecar::Always => true,
            NativeSidecar::Never => false,
            NativeSidecar::Auto => cluster_supports_native,
        }
    }
}

/// Whether a Kubernetes version (`major`, `minor` as reported by `/version`, e.g. `"1"`, `"29+"`) has native sidecars on by default.
pub fn supports_native_sidecars(major: &str, minor: &str) -> bool {
    is_at_least(major, minor, 29)
}

/// Whether a Kubernetes version has the preStop `sleep` action on by default (beta in 1.30).
pub fn supports_sleep_action(major: &str, minor: &str) -> bool {
    is_at_least(major, minor, 30)
}

fn is_at_least(major: &str, minor: &str, wanted_minor: u32) -> bool {
    let digits = |s: &str| -> Option<u32> {
        s.trim_end_matches(|c: char| !c.is_ascii_digit())
            .parse()
            .ok()
    };
    match (digits(major), digits(minor)) {
        (Some(major), Some(minor)) => major > 1 || (major == 1 && minor >= wanted_minor),
        _ => false,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn system_namespaces_and_the_webhooks_own_are_excluded() {
        let cfg = InjectionConfig::new("img", Some("healthbridge-system"));
        for ns in [
            "kube-system",
            "kube-public",
            "kube-node-lease",
            "healthbridge-system",
        ] {
            assert!(cfg.is_excluded(ns), "{ns}");
        }
        assert!(!cfg.is_excluded("default"));
    }

    #[test]
    fn native_sidecars_start_with_kubernetes_1_29() {
        assert!(supports_native_sidecars("1", "29"));
        assert!(supports_native_sidecars("1", "33+"));
        assert!(!supports_native_sidecars("1", "28"));
        assert!(supports_sleep_action("1", "30") && supports_sleep_action("1", "33+"));
        assert!(!supports_sleep_action("1", "29"));
        assert!(!supports_native_sidecars("", ""));
    }
}
