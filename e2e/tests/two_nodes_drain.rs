//! `kubectl drain` of node B as the outside load balancer sees it: B leaves the backend while its
//! pod still exists (the agent answers 503 from the deletion on), and node A stays in.
//!
//! A test binary of its own: the drain cordons node B, and cargo runs test binaries one after
//! another, so no other test meets the cordoned node. Node B is uncordoned afterwards, also when
//! the test fails (drop guard). NodePort 30085.

use std::time::Duration;

use anyhow::{Context, ensure};
use healthbridge_e2e::haproxy::{HaProxy, Server, States, is_down, is_up};
use healthbridge_e2e::nodes::node_name;
use healthbridge_e2e::{Cluster, Node, Scenario, demo_pod};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams, PostParams};
use tokio::time::Instant;

const NODE_PORT: u16 = 30085;
const TRAFFIC_PORT: u16 = 7000;
const SETTLE: Duration = Duration::from_secs(60);
/// The drain's bound: eviction, the pod's grace period (10 s) and the kubelet's cleanup.
const DRAIN: Duration = Duration::from_secs(120);
/// How often the test reads HAProxy's stats and the pod during the drain (checks run every 250 ms).
const SAMPLE: Duration = Duration::from_millis(50);
/// How long the final state must last to count: 8 of HAProxy's checks.
const HOLD: Duration = Duration::from_secs(2);

/// Uncordons the node when dropped, so a failed test leaves no cordoned node behind.
struct Uncordon {
    cluster: Cluster,
    node: String,
}

impl Drop for Uncordon {
    fn drop(&mut self) {
        if let Err(error) = self.cluster.kubectl(&["uncordon", &self.node]) {
            eprintln!("cannot uncordon {}: {error:#}", self.node);
        }
    }
}

#[tokio::test]
async fn draining_node_b_takes_it_out_before_its_pod_is_gone_and_node_a_stays_up()
-> anyhow::Result<()> {
    Scenario::run("two-drain", |s| async move {
        let (a, b) = Node::both(&s.cluster).await?;
        // One pod on each node; the evicted one cannot come back to A (anti-affinity) or B (cordoned).
        let app = demo_pod("drained")
            .opted_in()
            .with_node_port(NODE_PORT)
            .one_per_node();
        let deployments: Api<Deployment> = s.api();
        deployments
            .create(&PostParams::default(), &app.deployment(2)?)
            .await?;
        s.kubectl(&["rollout", "status", "deployment/drained", "--timeout=3m"])?;
        let pods: Api<Pod> = s.api();
        let on_b = pods
            .list(&ListParams::default().labels("app=drained"))
            .await?
            .items
            .into_iter()
            .find(|pod| node_name(pod) == Some(b.name.as_str()))
            .and_then(|pod| pod.metadata.name)
            .context("no pod of drained on node B")?;

        let servers = [&a, &b].map(|node| Server::new(&node.name, node.address, TRAFFIC_PORT, NODE_PORT));
        HaProxy::around_outside(&servers, async |haproxy| {
            let both_up = |states: &States| is_up(states, &a.name) && is_up(states, &b.name);
            haproxy.wait_for("both nodes UP", SETTLE, both_up).await?;

            let _uncordon = Uncordon {
                cluster: s.cluster.clone(),
                node: b.name.clone(),
            };
            // Only this test's pods: the cluster is shared with the webhook, whose PDB would
            // (rightly) hold a full drain. Cordon and eviction are kubectl drain's own.
            let cluster = s.cluster.clone();
            let (node, selector) = (b.name.clone(), "app=drained".to_owned());
            let drain = tokio::task::spawn_blocking(move || {
                cluster.kubectl(&[
                    "drain",
                    &node,
                    "--pod-selector",
                    &selector,
                    "--ignore-daemonsets",
                    "--delete-emptydir-data",
                    "--timeout=2m",
                ])
            });

            let started = Instant::now();
            let mut b_down_at: Option<Duration> = None;
            let mut gone_at: Option<Duration> = None;
            while b_down_at.is_none() || gone_at.is_none() {
                ensure!(
                    started.elapsed() < DRAIN,
                    "within {DRAIN:?} of the drain: node B DOWN after {b_down_at:?}, its pod gone after {gone_at:?}"
                );
                let states = haproxy.states().await?;
                ensure!(is_up(&states, &a.name), "node A left the backend while B was drained: {states:?}");
                if b_down_at.is_none() && is_down(&states, &b.name) {
                    b_down_at = Some(started.elapsed());
                }
                if gone_at.is_none() && pods.get_opt(&on_b).await?.is_none() {
                    gone_at = Some(started.elapsed());
                }
                tokio::time::sleep(SAMPLE).await;
            }
            let (b_down_at, gone_at) = (b_down_at.unwrap_or_default(), gone_at.unwrap_or_default());
            eprintln!("drain of {}: node B DOWN after {b_down_at:?}, its pod gone after {gone_at:?}", b.name);
            ensure!(
                b_down_at < gone_at,
                "node B left the backend only after its pod was gone ({b_down_at:?} vs {gone_at:?}): no drain window for the load balancer"
            );
            drain.await?.context("kubectl drain")?;
            // With B's pod gone, B must stay out (no local endpoint), A in.
            haproxy
                .hold("node A UP and node B DOWN after the drain", HOLD, |states| {
                    is_up(states, &a.name) && is_down(states, &b.name)
                })
                .await?;
            Ok(())
        })
        .await
    })
    .await
}
