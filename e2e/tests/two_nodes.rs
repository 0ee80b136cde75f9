//! The load balancer's per-node view on two real nodes: a real HAProxy outside both nodes has
//! each node as a server of one backend (`option httpchk GET /health` on the node's address
//! and the pinned health NodePort), and the stats socket says which nodes it sends traffic to.
//!
//! Each test pins its own NodePort (30083, 30084, 30086); the drain of node B is a binary of
//! its own (two_nodes_drain.rs) because a cordoned node would change where these pods go.

use std::time::Duration;

use anyhow::{Context, ensure};
use healthbridge_e2e::fixtures::{describe, is_ready};
use healthbridge_e2e::haproxy::{HaProxy, Server, States, is_down, is_up};
use healthbridge_e2e::nodes::node_name;
use healthbridge_e2e::poll::poll_until;
use healthbridge_e2e::{Node, Scenario, demo_pod};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;
use tokio::time::Instant;

const STARTUP: Duration = Duration::from_secs(180);
/// Long enough for kube-proxy, the agent's watch and a few HAProxy checks to catch up.
const SETTLE: Duration = Duration::from_secs(60);
/// The demo's echo port: the traffic HAProxy would balance, not what it checks.
const TRAFFIC_PORT: u16 = 7000;
/// How often the tests read HAProxy's stats while something changes (its checks run every 250 ms).
const SAMPLE: Duration = Duration::from_millis(100);
/// How long a state must last to count: 8 of HAProxy's checks.
const HOLD: Duration = Duration::from_secs(2);

const MOVE_NODE_PORT: u16 = 30083;
const DAEMONSET_NODE_PORT: u16 = 30084;
const CLUSTER_NODE_PORT: u16 = 30086;

/// Both nodes as servers of one backend, each checked on its own address.
fn servers(a: &Node, b: &Node, health_port: u16) -> [Server; 2] {
    [a, b].map(|node| Server::new(&node.name, node.address, TRAFFIC_PORT, health_port))
}

fn up_and_down<'a>(up: &'a Node, down: &'a Node) -> impl Fn(&States) -> bool + 'a {
    move |states| is_up(states, &up.name) && is_down(states, &down.name)
}

async fn pods_of(s: &Scenario, app: &str) -> anyhow::Result<Vec<Pod>> {
    let pods: Api<Pod> = s.api();
    Ok(pods
        .list(&ListParams::default().labels(&format!("app={app}")))
        .await?
        .items)
}

async fn pod_on(s: &Scenario, app: &str, node: &Node) -> anyhow::Result<Pod> {
    let pods = pods_of(s, app).await?;
    pods.into_iter()
        .find(|pod| node_name(pod) == Some(node.name.as_str()))
        .with_context(|| format!("no pod of {app} on {}", node.name))
}

#[tokio::test]
async fn a_pod_pinned_to_node_a_makes_only_a_up_and_moving_it_to_b_moves_the_up()
-> anyhow::Result<()> {
    Scenario::run("two-move", |s| async move {
        let (a, b) = Node::both(&s.cluster).await?;
        let app = demo_pod("mover")
            .opted_in()
            .with_node_port(MOVE_NODE_PORT)
            .on_node(&a.name);
        let deployments: Api<Deployment> = s.api();
        deployments
            .create(&PostParams::default(), &app.deployment(1)?)
            .await?;
        s.kubectl(&["rollout", "status", "deployment/mover", "--timeout=3m"])?;

        HaProxy::around_outside(&servers(&a, &b, MOVE_NODE_PORT), async |haproxy| {
                // 1. Only the node with the ready pod is in the backend.
                haproxy
                    .wait_for("node A UP and node B DOWN", SETTLE, up_and_down(&a, &b))
                    .await?;

                // 2. A new node selector rolls the pod over to B (surge first: maxUnavailable 0).
                let patch = json!({ "spec": { "template": { "spec": {
                    "nodeSelector": { "kubernetes.io/hostname": b.name },
                }}}});
                s.kubectl(&["patch", "deployment", "mover", "--type=merge", "-p", &patch.to_string()])?;
                let moved = Instant::now();
                let mut both_down_since: Option<Instant> = None;
                let mut longest_both_down = Duration::ZERO;
                let mut new_pod_seen: Option<Instant> = None;
                let mut new_pod_start: Option<Duration> = None;
                let mut last = States::new();
                loop {
                    ensure!(
                        moved.elapsed() < STARTUP,
                        "the pod did not move within {STARTUP:?}: haproxy's last states {last:?}"
                    );
                    last = haproxy.states().await?;
                    let now = Instant::now();
                    if is_down(&last, &a.name) && !is_up(&last, &b.name) {
                        let since = *both_down_since.get_or_insert(now);
                        longest_both_down = longest_both_down.max(now - since);
                    } else {
                        both_down_since = None;
                    }
                    if new_pod_start.is_none() {
                        let on_b = pods_of(&s, "mover")
                            .await?
                            .into_iter()
                            .find(|pod| node_name(pod) == Some(b.name.as_str()));
                        if let Some(pod) = on_b {
                            let seen = *new_pod_seen.get_or_insert(now);
                            if is_ready(&pod) {
                                new_pod_start = Some(now - seen);
                            }
                        }
                    }
                    if new_pod_start.is_some() && up_and_down(&b, &a)(&last) {
                        break;
                    }
                    tokio::time::sleep(SAMPLE).await;
                }
                let pod_start = new_pod_start.context("the new pod's start was not measured")?;
                // The old pod's 503 while it terminates is DOWN too: A must stay DOWN once it is gone.
                poll_until("the old pod on node A to be gone", SETTLE, || async {
                    let pods = pods_of(&s, "mover").await?;
                    Ok(pods
                        .iter()
                        .all(|pod| node_name(pod) != Some(a.name.as_str()))
                        .then_some(()))
                })
                .await?;
                haproxy
                    .hold("node B UP and node A DOWN", HOLD, up_and_down(&b, &a))
                    .await?;
                eprintln!(
                    "moved to {}: A DOWN and B UP after {:?}; the new pod started in {pod_start:?}; both DOWN at most {longest_both_down:?}",
                    b.name,
                    moved.elapsed()
                );
                ensure!(
                    longest_both_down <= pod_start,
                    "both nodes were DOWN for {longest_both_down:?}, longer than one pod start ({pod_start:?})"
                );
                Ok(())
        })
        .await
    })
    .await
}

#[tokio::test]
async fn a_daemonset_keeps_both_nodes_up_and_an_unready_app_takes_out_only_its_node()
-> anyhow::Result<()> {
    Scenario::run("two-ds", |s| async move {
        let (a, b) = Node::both(&s.cluster).await?;
        let app = demo_pod("everywhere")
            .opted_in()
            .with_node_port(DAEMONSET_NODE_PORT);
        let daemon_sets: Api<DaemonSet> = s.api();
        daemon_sets
            .create(&PostParams::default(), &app.daemon_set()?)
            .await?;
        s.kubectl(&["rollout", "status", "daemonset/everywhere", "--timeout=3m"])?;
        let on_b = pod_on(&s, "everywhere", &b).await?;
        let on_b = on_b.metadata.name.context("a pod without a name")?;

        HaProxy::around_outside(&servers(&a, &b, DAEMONSET_NODE_PORT), async |haproxy| {
            let both_up = |states: &States| is_up(states, &a.name) && is_up(states, &b.name);
            haproxy.wait_for("both nodes UP", SETTLE, both_up).await?;

            s.set_app_ready(&on_b, false)?;
            let started = Instant::now();
            let mut last = haproxy.states().await?;
            while !is_down(&last, &b.name) {
                ensure!(
                    is_up(&last, &a.name),
                    "node A left the backend while only B's app turned unready: {last:?}"
                );
                ensure!(
                    started.elapsed() < SETTLE,
                    "node B stayed in the backend with its app unready: {last:?}"
                );
                tokio::time::sleep(SAMPLE).await;
                last = haproxy.states().await?;
            }
            haproxy
                .hold("node A UP and node B DOWN", HOLD, up_and_down(&a, &b))
                .await?;
            eprintln!(
                "node B DOWN {:?} after its app turned unready; node A stayed UP",
                started.elapsed()
            );

            s.set_app_ready(&on_b, true)?;
            haproxy
                .wait_for("both nodes UP again", SETTLE, both_up)
                .await?;
            Ok(())
        })
        .await
    })
    .await
}

#[tokio::test]
async fn with_traffic_policy_cluster_both_nodes_answer_for_the_one_pod() -> anyhow::Result<()> {
    Scenario::run("two-cluster", |s| async move {
        let (a, b) = Node::both(&s.cluster).await?;
        let app = demo_pod("anywhere")
            .opted_in()
            .with_node_port(CLUSTER_NODE_PORT)
            .annotated("healthbridge.io/traffic-policy", "Cluster")
            .on_node(&a.name);
        let deployments: Api<Deployment> = s.api();
        deployments
            .create(&PostParams::default(), &app.deployment(1)?)
            .await?;
        s.kubectl(&["rollout", "status", "deployment/anywhere", "--timeout=3m"])?;
        let services: Api<Service> = s.api();
        let policy = services
            .get("anywhere-healthbridge")
            .await?
            .spec
            .and_then(|spec| spec.external_traffic_policy);
        ensure!(
            policy.as_deref() == Some("Cluster"),
            "the health Service has externalTrafficPolicy {policy:?}, the annotation asks for Cluster"
        );
        let pod = pod_on(&s, "anywhere", &a).await?;
        let name = pod.metadata.name.clone().context("a pod without a name")?;

        HaProxy::around_outside(&servers(&a, &b, CLUSTER_NODE_PORT), async |haproxy| {
                // Node B has no pod, yet forwards the check to A's: every node answers for it.
                let both_up = |states: &States| is_up(states, &a.name) && is_up(states, &b.name);
                haproxy
                    .wait_for("both nodes UP for the one pod on A", SETTLE, both_up)
                    .await
                    .with_context(|| describe(&pod))?;
                // And every node answers with that pod's health: unready, both leave.
                s.set_app_ready(&name, false)?;
                let both_down = |states: &States| is_down(states, &a.name) && is_down(states, &b.name);
                haproxy.wait_for("both nodes DOWN for the one unready pod", SETTLE, both_down).await?;
                s.set_app_ready(&name, true)?;
                haproxy.wait_for("both nodes UP again", SETTLE, both_up).await?;
                Ok(())
        })
        .await
    })
    .await
}
