//! The cluster's nodes as an outside load balancer knows them: a name and the address it checks.

use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::{Context, bail};
use k8s_openapi::api::core::v1::{Node as NodeObject, Pod};
use kube::Api;

use crate::cluster::Cluster;

/// The node in this machine's own network namespace (e2e/cluster/up); its NodePorts also answer
/// on 127.0.0.1.
pub const NODE_A: &str = "node-a";
/// The node in the network namespace `hb-node-b` (`HB_NODES=2`, which `just e2e` uses).
pub const NODE_B: &str = "node-b";
/// The network namespace that is no node, where a load balancer sees each node answer for its
/// own pods: from a node itself kube-proxy sends a Local NodePort's traffic to every endpoint.
pub const OUTSIDE_NETNS: &str = "hb-outside";
/// The outside namespace's address (e2e/cluster/lib.sh `HB_OUTSIDE_IP`): a load balancer's frontend binds here,
/// and this machine reaches it over the nodes' bridge, as a client of the load balancer.
pub const OUTSIDE_ADDRESS: [u8; 4] = [10, 245, 0, 6];

/// A node by name and InternalIP, the address its NodePorts answer on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub name: String,
    pub address: IpAddr,
}

impl Node {
    /// Looks the node up; fails naming how to start it when the cluster lacks it.
    pub async fn get(cluster: &Cluster, name: &str) -> anyhow::Result<Self> {
        let nodes: Api<NodeObject> = Api::all(cluster.client.clone());
        let Some(node) = nodes.get_opt(name).await? else {
            bail!(
                "the cluster has no node {name}: the two-node tests need `HB_NODES=2 e2e/cluster/up` (`just e2e` starts it)"
            );
        };
        let address = node
            .status
            .iter()
            .flat_map(|status| status.addresses.iter().flatten())
            .find(|address| address.type_ == "InternalIP")
            .with_context(|| format!("node {name} reports no InternalIP"))?
            .address
            .parse()
            .with_context(|| format!("node {name}'s InternalIP is not an IP address"))?;
        Ok(Self {
            name: name.to_owned(),
            address,
        })
    }

    /// Both nodes of the two-node cluster, A then B.
    pub async fn both(cluster: &Cluster) -> anyhow::Result<(Self, Self)> {
        Ok((
            Self::get(cluster, NODE_A).await?,
            Self::get(cluster, NODE_B).await?,
        ))
    }
}

/// The address of the node a pod runs on (`status.hostIP`, the node's InternalIP).
pub fn host_address(pod: &Pod) -> anyhow::Result<IpAddr> {
    let name = pod.metadata.name.as_deref().unwrap_or("?");
    pod.status
        .as_ref()
        .and_then(|status| status.host_ip.as_deref())
        .with_context(|| format!("pod {name} has no hostIP yet: is it scheduled and started?"))?
        .parse()
        .with_context(|| format!("pod {name}'s hostIP is not an IP address"))
}

/// The node a pod is scheduled to, if any.
pub fn node_name(pod: &Pod) -> Option<&str> {
    pod.spec.as_ref()?.node_name.as_deref()
}

/// The path `ip netns` gives a named network namespace, for `nsenter --net=`.
pub fn netns_path(name: &str) -> PathBuf {
    PathBuf::from("/run/netns").join(name)
}
