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

/// The first Kubernetes minor with native sidecars (`SidecarContainers`) on by default, in the API server and the kubelet.
pub const NATIVE_SIDECAR_MINOR: (u32, u32) = (1, 29);

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
        (Some(major), Some(minor)) => (major, minor) >= (1, wanted_minor),
        _ => false,
    }
}

/// Major and minor of a version as a kubelet reports it (`status.nodeInfo.kubeletVersion`: `v1.28.15`,
/// `v1.30.2+k3s1`, `v1.29.6-eks-1552ad0`); `None` when it is not of that form.
pub fn major_minor(version: &str) -> Option<(u32, u32)> {
    let mut parts = version.trim().trim_start_matches('v').split('.');
    let major = parts.next()?.parse().ok()?;
    let minor: String = parts
        .next()?
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    Some((major, minor.parse().ok()?))
}

/// The lowest of the nodes' kubelet versions; a version that does not parse counts as the lowest of all (`(0, 0)`),
/// since nothing says it runs native sidecars. `None` for no nodes.
pub fn lowest_kubelet<'a>(
    kubelet_versions: impl IntoIterator<Item = &'a str>,
) -> Option<(u32, u32)> {
    kubelet_versions
        .into_iter()
        .map(|version| major_minor(version).unwrap_or((0, 0)))
        .min()
}

/// Whether `auto` makes native sidecars: only when the API server (if its version is known) and the kubelet of
/// every node are ≥ 1.29, since a 1.29 API server accepts a native sidecar that a 1.28 kubelet never starts,
/// leaving the pod in Init. `kubelets` is `None` when the nodes cannot be read: the safe choice, a regular container.
/// No nodes at all leaves it to the API server (the decision is made again as nodes join).
pub fn native_sidecars_supported(
    apiserver: Option<bool>,
    kubelets: Option<Option<(u32, u32)>>,
) -> bool {
    match kubelets {
        None => false,
        Some(None) => apiserver.unwrap_or(true),
        Some(Some(lowest)) => apiserver.unwrap_or(true) && lowest >= NATIVE_SIDECAR_MINOR,
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

    #[test]
    fn kubelet_versions_read_as_major_and_minor_whatever_the_distribution_appends() {
        assert_eq!(major_minor("v1.28.15"), Some((1, 28)));
        assert_eq!(major_minor("v1.30.2+k3s1"), Some((1, 30)));
        assert_eq!(major_minor("v1.29.6-eks-1552ad0"), Some((1, 29)));
        assert_eq!(major_minor("1.31"), Some((1, 31)));
        assert_eq!(major_minor("v1"), None);
        assert_eq!(major_minor("unknown"), None);
    }

    #[test]
    fn the_lowest_kubelet_decides_and_an_unreadable_one_counts_as_old() {
        assert_eq!(
            lowest_kubelet(["v1.33.1", "v1.28.15", "v1.30.0"]),
            Some((1, 28))
        );
        assert_eq!(lowest_kubelet(["v1.33.1", "garbage"]), Some((0, 0)));
        assert_eq!(lowest_kubelet([]), None);
    }

    #[test]
    fn native_sidecars_need_the_api_server_and_every_kubelet_at_1_29() {
        let decide = |apiserver, kubelets: Option<&[&str]>| {
            native_sidecars_supported(
                apiserver,
                kubelets.map(|k| lowest_kubelet(k.iter().copied())),
            )
        };
        assert!(decide(Some(true), Some(&["v1.29.0", "v1.33.1"])));
        assert!(
            !decide(Some(true), Some(&["v1.29.0", "v1.28.15"])),
            "a 1.28 kubelet among 1.29 ones"
        );
        assert!(
            !decide(Some(false), Some(&["v1.29.0"])),
            "a 1.28 API server"
        );
        assert!(
            decide(None, Some(&["v1.30.0"])),
            "kubelets are never newer than the API server"
        );
        assert!(
            !decide(Some(true), None),
            "nodes unreadable: the safe choice"
        );
        assert!(
            decide(Some(true), Some(&[])),
            "no node yet: the API server says"
        );
        assert!(!decide(Some(false), Some(&[])));
    }
}
