//! The native-sidecar decision kept current from the nodes: a watch on Nodes keeps each one's kubelet version
//! (nothing else of the Node), and `auto` makes native sidecars only while the lowest is ≥ 1.29.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures::TryStreamExt;
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::{lowest_kubelet, native_sidecars_supported};
use crate::metrics::Metrics;

/// Whether the cluster runs native sidecars now: read by every admission, written by [`follow_nodes`].
#[derive(Debug, Clone)]
pub struct SidecarSupport(Arc<AtomicBool>);

impl SidecarSupport {
    /// A fixed answer (`serve`, which has no API server, and tests).
    pub fn fixed(native: bool) -> Self {
        Self(Arc::new(AtomicBool::new(native)))
    }

    pub fn get(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    fn set(&self, native: bool) {
        self.0.store(native, Ordering::Relaxed);
    }
}

/// The kubelet version of every node, as the watch has reported them.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct KubeletVersions {
    by_node: BTreeMap<String, String>,
    /// A (re-)list in progress: it replaces `by_node` whole when done, so deleted nodes do not linger.
    relisting: Option<BTreeMap<String, String>>,
    listed: bool,
}

impl KubeletVersions {
    /// Takes one watch event; returns whether the versions may have changed (a list finished or a node changed).
    pub fn apply(&mut self, event: watcher::Event<Node>) -> bool {
        match event {
            watcher::Event::Init => {
                self.relisting = Some(BTreeMap::new());
                false
            }
            watcher::Event::InitApply(node) => {
                if let (Some(relisting), Some((name, version))) =
                    (self.relisting.as_mut(), name_and_version(&node))
                {
                    relisting.insert(name, version);
                }
                false
            }
            watcher::Event::InitDone => {
                self.by_node = self.relisting.take().unwrap_or_default();
                self.listed = true;
                true
            }
            watcher::Event::Apply(node) => match name_and_version(&node) {
                Some((name, version)) => {
                    self.by_node.insert(name, version.clone()) != Some(version)
                }
                None => false,
            },
            watcher::Event::Delete(node) => node
                .metadata
                .name
                .is_some_and(|name| self.by_node.remove(&name).is_some()),
        }
    }

    /// The lowest kubelet version, `Some(None)` for no nodes; `None` until the first list has completed.
    pub fn lowest(&self) -> Option<Option<(u32, u32)>> {
        self.listed
            .then(|| lowest_kubelet(self.by_node.values().map(String::as_str)))
    }
}

fn name_and_version(node: &Node) -> Option<(String, String)> {
    let name = node.metadata.name.clone()?;
    let version = node
        .status
        .as_ref()
        .and_then(|status| status.node_info.as_ref())
        .map(|info| info.kubelet_version.clone())
        .unwrap_or_default();
    Some((name, version))
}

/// Keeps `support` current from the nodes until `shutdown`. `apiserver` is whether the API server's version
/// allows native sidecars (`None`: unknown). Until the nodes have been listed, and for as long as they cannot be,
/// the answer is the safe one, a regular container, with a warning and `healthbridge_webhook_node_versions_known 0`.
/// `first` is sent once the first decision from the nodes is made (or the first attempt failed).
pub async fn follow_nodes(
    nodes: Api<Node>,
    apiserver: Option<bool>,
    support: SidecarSupport,
    metrics: Arc<Metrics>,
    first: watch::Sender<bool>,
    shutdown: CancellationToken,
) {
    let events = watcher(nodes, watcher::Config::default()).default_backoff();
    let mut events = std::pin::pin!(events);
    let mut versions = KubeletVersions::default();
    let mut decided: Option<bool> = None;
    metrics.set_node_versions_known(false);
    loop {
        let event = tokio::select! {
            () = shutdown.cancelled() => return,
            event = events.try_next() => event,
        };
        match event {
            Ok(Some(event)) => {
                if !versions.apply(event) {
                    continue;
                }
            }
            Ok(None) => return,
            Err(error) => {
                if versions.lowest().is_none() {
                    tracing::warn!(%error, "cannot list the nodes' kubelet versions; injecting the agent as a regular container (not a native sidecar) until they can be read");
                    support.set(false);
                    metrics.set_native_sidecars(false);
                    first.send_replace(true);
                } else {
                    tracing::warn!(%error, "watching the nodes failed; keeping the last native-sidecar decision while it retries");
                }
                continue;
            }
        }
        let lowest = versions.lowest();
        let native = native_sidecars_supported(apiserver, lowest);
        support.set(native);
        metrics.set_native_sidecars(native);
        metrics.set_node_versions_known(lowest.is_some());
        if decided != Some(native) {
            let lowest_kubelet = lowest
                .flatten()
                .map(|(major, minor)| format!("{major}.{minor}"));
            tracing::info!(
                native,
                lowest_kubelet,
                nodes = versions.by_node.len(),
                "native-sidecar decision (auto) from the nodes' kubelet versions"
            );
            decided = Some(native);
        }
        first.send_replace(true);
    }
}

/// How long `run` waits for the first decision from the nodes before it starts admitting (with the safe choice).
pub const FIRST_DECISION_TIMEOUT: Duration = Duration::from_secs(10);

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn node(name: &str, kubelet: &str) -> Node {
        serde_json::from_value(serde_json::json!({
            "metadata": { "name": name },
            "status": { "nodeInfo": {
                "kubeletVersion": kubelet, "architecture": "amd64", "bootID": "", "containerRuntimeVersion": "",
                "kernelVersion": "", "kubeProxyVersion": "", "machineID": "", "operatingSystem": "linux",
                "osImage": "", "systemUUID": ""
            } }
        }))
        .unwrap()
    }

    #[test]
    fn nothing_is_known_until_the_first_list_completes() {
        let mut versions = KubeletVersions::default();
        assert!(!versions.apply(watcher::Event::Init));
        assert!(!versions.apply(watcher::Event::InitApply(node("a", "v1.33.1"))));
        assert_eq!(versions.lowest(), None);
        assert!(versions.apply(watcher::Event::InitDone));
        assert_eq!(versions.lowest(), Some(Some((1, 33))));
    }

    #[test]
    fn a_joining_old_node_lowers_the_version_and_its_removal_raises_it_again() {
        let mut versions = KubeletVersions::default();
        versions.apply(watcher::Event::Init);
        versions.apply(watcher::Event::InitApply(node("a", "v1.33.1")));
        versions.apply(watcher::Event::InitDone);
        assert!(versions.apply(watcher::Event::Apply(node("b", "v1.28.15"))));
        assert_eq!(versions.lowest(), Some(Some((1, 28))));
        assert!(
            !versions.apply(watcher::Event::Apply(node("b", "v1.28.15"))),
            "a status update of the same version changes nothing"
        );
        assert!(versions.apply(watcher::Event::Delete(node("b", "v1.28.15"))));
        assert_eq!(versions.lowest(), Some(Some((1, 33))));
    }

    #[test]
    fn a_relist_forgets_nodes_deleted_while_the_watch_was_down() {
        let mut versions = KubeletVersions::default();
        versions.apply(watcher::Event::Init);
        versions.apply(watcher::Event::InitApply(node("old", "v1.28.15")));
        versions.apply(watcher::Event::InitApply(node("new", "v1.33.1")));
        versions.apply(watcher::Event::InitDone);
        versions.apply(watcher::Event::Init);
        versions.apply(watcher::Event::InitApply(node("new", "v1.33.1")));
        assert_eq!(
            versions.lowest(),
            Some(Some((1, 28))),
            "the old list holds until the new one is complete"
        );
        versions.apply(watcher::Event::InitDone);
        assert_eq!(versions.lowest(), Some(Some((1, 33))));
    }
}
