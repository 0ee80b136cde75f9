//! Every file of `manifests/examples/` applied as a user would (`kubectl apply -n NS -f FILE`),
//! and checked for what its comments promise, so the examples stay true.
//!
//! The examples pin NodePorts (30013 and 30700 for the UDP DaemonSet, 30014 for the pinned
//! Deployment) and haproxy.cfg binds 127.0.0.1:17000 and 17001: each example is used by exactly
//! one test of this binary, and no other test uses these ports. `just up` (e2e/demo-up) runs the
//! pinned example in the namespace `demo`; that test then checks the running one (see below).
//!
//! The examples' comments say `127.0.0.1`: that is node A's address here, and from a node itself
//! kube-proxy sends even a Local NodePort's traffic to every endpoint, so it reaches a pod on
//! either node. Each node answering for its own pods only is what two_nodes.rs shows.

use std::time::Duration;

use anyhow::{Context, bail, ensure};
use healthbridge_e2e::echo::{tcp_on_loopback, udp_on_loopback};
use healthbridge_e2e::fixtures::{GROUP_LABEL, example_path, is_ready, label};
use healthbridge_e2e::haproxy::HaProxy;
use healthbridge_e2e::http::{Answer, get_on_loopback, status_on_loopback};
use healthbridge_e2e::poll::{poll_until, when};
use healthbridge_e2e::{Cluster, Scenario};
use k8s_openapi::api::core::v1::{Namespace, Pod, Service};
use kube::api::{Api, ListParams};

const STARTUP: Duration = Duration::from_secs(120);
/// Long enough for kube-proxy, the agent's watch and an exec period to catch up.
const SETTLE: Duration = Duration::from_secs(60);

/// Ports pinned in udp-daemonset.yaml and haproxy.cfg.
const UDP_HEALTH_NODE_PORT: u16 = 30013;
const UDP_TRAFFIC_NODE_PORT: u16 = 30700;
const HAPROXY_FRONTEND: u16 = 17000;
/// Port pinned in pinned-nodeport-deployment.yaml, and the namespace `just up` runs it in.
const PINNED_NODE_PORT: u16 = 30014;
const DEMO_UP_NAMESPACE: &str = "demo";

/// Polls `GET <path>` on the loopback port until the answer satisfies `wanted`.
async fn wait_for_answer(
    port: u16,
    path: &str,
    what: &str,
    wanted: impl Fn(&Answer) -> bool,
) -> anyhow::Result<Answer> {
    poll_until(
        &format!("GET 127.0.0.1:{port}{path} to answer {what}"),
        SETTLE,
        || async { Ok(when(get_on_loopback(port, path).await?, &wanted)) },
    )
    .await
}

/// The nodePort of the health Service the controller made for the pod's group.
async fn health_port_of(s: &Scenario, pod: &Pod) -> anyhow::Result<u16> {
    let group = label(pod, GROUP_LABEL)
        .context("the example's pod has no group label: was it injected?")?;
    s.health_node_port(group).await
}

fn pod_name(pod: &Pod) -> anyhow::Result<String> {
    pod.metadata.name.clone().context("a pod without a name")
}

async fn wait_for_haproxy_server(haproxy: &HaProxy, wanted: &str) -> anyhow::Result<String> {
    poll_until(
        &format!("haproxy to see the server {wanted}"),
        SETTLE,
        || async {
            Ok(when(haproxy.server_status().await?, |status| {
                status.split_whitespace().next() == Some(wanted)
            }))
        },
    )
    .await
}

/// The names of the UDP DaemonSet's pods, one per node.
async fn daemon_set_pods(s: &Scenario) -> anyhow::Result<Vec<String>> {
    let pods: Api<Pod> = s.api();
    let list = pods
        .list(&ListParams::default().labels("app.kubernetes.io/name=demo-udp"))
        .await?;
    list.items.iter().map(pod_name).collect()
}

#[tokio::test]
async fn the_udp_daemonset_echoes_on_its_node_port_and_the_example_haproxy_follows_its_health()
-> anyhow::Result<()> {
    Scenario::run("ex-udp", |s| async move {
        let pinned = [UDP_HEALTH_NODE_PORT, UDP_TRAFFIC_NODE_PORT];
        let holders = live_holders_of_node_ports(&s.cluster, &pinned).await?;
        ensure!(
            holders.is_empty(),
            "nodePorts {pinned:?}, pinned by udp-daemonset.yaml, are held by {holders:?}: free them to run this test"
        );
        s.apply_example("udp-daemonset.yaml")?;
        s.kubectl(&["rollout", "status", "daemonset/demo-udp", "--timeout=3m"])?;
        let pod = s
            .wait_for_ready_pod("app.kubernetes.io/name=demo-udp", STARTUP)
            .await?;
        let health_port = health_port_of(&s, &pod).await?;
        ensure!(
            health_port == UDP_HEALTH_NODE_PORT,
            "the DaemonSet's health Service has nodePort {health_port}, the example pins {UDP_HEALTH_NODE_PORT}"
        );

        // The service itself: a UDP datagram to the node's data NodePort comes back.
        let payload = b"hello through the udp node port";
        poll_until(
            &format!("a UDP echo through 127.0.0.1:{UDP_TRAFFIC_NODE_PORT}"),
            SETTLE,
            || async {
                Ok(when(udp_on_loopback(UDP_TRAFFIC_NODE_PORT, payload).await?, |echo| {
                    echo.as_slice() == payload
                }))
            },
        )
        .await?;

        // The load balancer that knows nothing of Kubernetes, with the example's own configuration.
        let config = std::fs::read_to_string(example_path("haproxy.cfg"))?;
        let haproxy = HaProxy::start_with_config(&config).await?;
        let outcome = async {
            wait_for_haproxy_server(&haproxy, "UP").await?;
            let payload = b"hello through haproxy";
            let echo = tcp_on_loopback(HAPROXY_FRONTEND, payload).await?;
            ensure!(
                echo == payload,
                "haproxy's frontend 127.0.0.1:{HAPROXY_FRONTEND} echoed {:?}",
                String::from_utf8_lossy(&echo)
            );
            // The example's comment: rm-ready makes that node answer 503, and haproxy takes it out.
            // Its check of 127.0.0.1 may reach the pod of any node (see above): make them all unready.
            // With `fall 1` one 503 takes the server DOWN, and a check may reach either node's pod: the health
            // check can only be asked once the API server says both are unready (the agents follow it).
            let pods = daemon_set_pods(&s).await?;
            for name in &pods {
                s.set_app_ready(name, false)?;
            }
            for name in &pods {
                s.wait_for_pod(name, "to be unready", SETTLE, |pod| !is_ready(pod))
                    .await?;
            }
            wait_for_haproxy_server(&haproxy, "DOWN").await?;
            // Within seconds, not at the agents' next GET round (12-15 s): their watches bring the change. Ten
            // 503s in a row, since each check lands on either node's pod.
            poll_until(
                "the node's health check to answer 503 ten times in a row with every app unready",
                Duration::from_secs(3),
                || async {
                    for _ in 0..10 {
                        let answer = get_on_loopback(UDP_HEALTH_NODE_PORT, "/health").await?;
                        if answer.status != 503 {
                            return Ok(None);
                        }
                    }
                    Ok(Some(()))
                },
            )
            .await?;
            for name in &pods {
                s.set_app_ready(name, true)?;
            }
            wait_for_haproxy_server(&haproxy, "UP").await?;
            anyhow::Ok(())
        }
        .await;
        haproxy.stop().await?;
        outcome
    })
    .await
}

#[tokio::test]
async fn the_all_endpoints_pod_answers_200_with_both_up_and_503_naming_the_failing_one()
-> anyhow::Result<()> {
    Scenario::run("ex-all", |s| async move {
        s.apply_example("all-endpoints-pod.yaml")?;
        let pod = s
            .wait_for_ready_pod("app.kubernetes.io/name=demo-all", STARTUP)
            .await?;
        let port = health_port_of(&s, &pod).await?;

        wait_for_answer(port, "/all", "200", |answer| answer.status == 200).await?;

        s.set_container_ready("demo-all", "app-b", false)?;
        let failing = wait_for_answer(port, "/all", "503", |answer| answer.status == 503).await?;
        // The published port names an endpoint by its position in healthbridge.io/endpoints, never by URL.
        ensure!(
            failing.body.contains("endpoint:2")
                && !failing.body.contains("endpoint:1")
                && !failing.body.contains("127.0.0.1"),
            "the 503 of /all should name app-b's endpoint (the second) and only it, without its URL: {:?}",
            failing.body
        );

        s.set_container_ready("demo-all", "app-b", true)?;
        wait_for_answer(port, "/all", "200 again", |answer| answer.status == 200).await?;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn the_exec_check_pod_serves_its_commands_result() -> anyhow::Result<()> {
    Scenario::run("ex-exec", |s| async move {
        s.apply_example("exec-check-pod.yaml")?;
        let pod = s
            .wait_for_ready_pod("app.kubernetes.io/name=demo-exec", STARTUP)
            .await?;
        let port = health_port_of(&s, &pod).await?;

        // Before the command's first run the URL says "no result yet"; a run before the app
        // listens fails. Either way a 503 names the check, and the started app makes it 200.
        let first = poll_until(
            &format!("any answer from GET 127.0.0.1:{port}/demo"),
            SETTLE,
            || async { Ok(Some(get_on_loopback(port, "/demo").await?)) },
        )
        .await?;
        ensure!(
            first.status == 200 || (first.status == 503 && first.body.contains("/demo")),
            "the first answer of /demo is neither 200 nor a 503 naming the check: {first:?}"
        );
        wait_for_answer(port, "/demo", "200", |answer| answer.status == 200).await?;

        s.set_app_ready("demo-exec", false)?;
        let failing = wait_for_answer(port, "/demo", "503", |answer| answer.status == 503).await?;
        ensure!(
            failing.body.contains("/demo"),
            "the 503 of /demo should name the failing check: {:?}",
            failing.body
        );

        s.set_app_ready("demo-exec", true)?;
        wait_for_answer(port, "/demo", "200 again", |answer| answer.status == 200).await?;
        Ok(())
    })
    .await
}

/// Namespaces whose Services hold the pinned nodePort right now.
async fn holders_of_node_port(
    cluster: &Cluster,
    port: u16,
) -> anyhow::Result<Vec<(String, String)>> {
    let services: Api<Service> = Api::all(cluster.client.clone());
    Ok(services
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|service| {
            service
                .spec
                .iter()
                .flat_map(|spec| spec.ports.iter().flatten())
                .any(|p| p.node_port == Some(i32::from(port)))
        })
        .map(|service| {
            (
                service.metadata.namespace.unwrap_or_default(),
                service.metadata.name.unwrap_or_default(),
            )
        })
        .collect())
}

/// The holders of `ports` once no earlier run's namespace that is being deleted still holds one:
/// namespaces go in the background, and a back-to-back run would otherwise meet its own leftovers.
async fn live_holders_of_node_ports(
    cluster: &Cluster,
    ports: &[u16],
) -> anyhow::Result<Vec<(String, String)>> {
    let namespaces: Api<Namespace> = Api::all(cluster.client.clone());
    poll_until(
        &format!("nodePorts {ports:?} to be released by namespaces being deleted"),
        STARTUP,
        || async {
            let mut holders = Vec::new();
            for port in ports {
                holders.extend(holders_of_node_port(cluster, *port).await?);
            }
            for (namespace, _) in &holders {
                let terminating = namespaces
                    .get_opt(namespace)
                    .await?
                    .is_none_or(|ns| ns.metadata.deletion_timestamp.is_some());
                if terminating {
                    return Ok(None);
                }
            }
            Ok(Some(holders))
        },
    )
    .await
}

/// The health Service of demo-pinned in `namespace`: nodePort, owner kinds and uid.
async fn pinned_service(
    cluster: &Cluster,
    namespace: &str,
) -> anyhow::Result<(u16, String, String)> {
    let services: Api<Service> = Api::namespaced(cluster.client.clone(), namespace);
    let service = poll_until("the Service demo-pinned-healthbridge", SETTLE, || async {
        Ok(services.get_opt("demo-pinned-healthbridge").await?)
    })
    .await?;
    let node_ports: Vec<i32> = service
        .spec
        .iter()
        .flat_map(|spec| spec.ports.iter().flatten())
        .filter_map(|p| p.node_port)
        .collect();
    let [node_port] = node_ports.as_slice() else {
        bail!("demo-pinned-healthbridge has nodePorts {node_ports:?}, expected exactly one");
    };
    let owner = service
        .metadata
        .owner_references
        .iter()
        .flatten()
        .map(|owner| owner.kind.clone())
        .collect::<Vec<_>>()
        .join(",");
    Ok((
        u16::try_from(*node_port)?,
        owner,
        service.metadata.uid.unwrap_or_default(),
    ))
}

#[tokio::test]
async fn the_pinned_deployment_keeps_exactly_its_node_port_across_a_rollout() -> anyhow::Result<()>
{
    Scenario::run("ex-pinned", |s| async move {
        let holders = live_holders_of_node_ports(&s.cluster, &[PINNED_NODE_PORT]).await?;
        let demo_up = (DEMO_UP_NAMESPACE.to_owned(), "demo-pinned-healthbridge".to_owned());
        if holders == [demo_up] {
            // `just up` runs this very example in `demo`: a second copy could only conflict, so
            // check the running one without touching it.
            let (node_port, owner, _) = pinned_service(&s.cluster, DEMO_UP_NAMESPACE).await?;
            ensure!(
                node_port == PINNED_NODE_PORT && owner == "Deployment",
                "just up's demo-pinned Service has nodePort {node_port} owned by {owner:?}, expected {PINNED_NODE_PORT} owned by the Deployment"
            );
            wait_for_answer(PINNED_NODE_PORT, "/health", "200", |a| a.status == 200).await?;
            eprintln!("the pinned example runs in namespace {DEMO_UP_NAMESPACE} (just up): checked that one");
            return Ok(());
        }
        ensure!(
            holders.is_empty(),
            "nodePort {PINNED_NODE_PORT}, pinned by pinned-nodeport-deployment.yaml, is held by {holders:?}: free it to run this test"
        );

        s.apply_example("pinned-nodeport-deployment.yaml")?;
        s.kubectl(&["rollout", "status", "deployment/demo-pinned", "--timeout=3m"])?;
        let (node_port, owner, uid) = pinned_service(&s.cluster, &s.namespace).await?;
        ensure!(
            node_port == PINNED_NODE_PORT,
            "the Service got nodePort {node_port}, the example pins {PINNED_NODE_PORT}"
        );
        ensure!(
            owner == "Deployment",
            "the Service is owned by {owner:?}, the example promises the Deployment (so it outlives ReplicaSets)"
        );
        wait_for_answer(PINNED_NODE_PORT, "/health", "200", |a| a.status == 200).await?;

        s.kubectl(&["rollout", "restart", "deployment/demo-pinned"])?;
        s.kubectl(&["rollout", "status", "deployment/demo-pinned", "--timeout=3m"])?;
        let (after_port, _, after_uid) = pinned_service(&s.cluster, &s.namespace).await?;
        ensure!(
            after_port == PINNED_NODE_PORT && after_uid == uid,
            "after a rollout the Service has nodePort {after_port} (uid {after_uid}), expected the same Service (uid {uid}) on {PINNED_NODE_PORT}"
        );
        poll_until("GET /health to say 200 after the rollout", SETTLE, || async {
            Ok(when(status_on_loopback(PINNED_NODE_PORT, "/health").await?, |status| *status == 200))
        })
        .await?;
        Ok(())
    })
    .await
}
