//! A real HAProxy, configured with `option httpchk GET /health` on the NodePort of the pod's
//! node, follows the pod's readiness.

use std::time::Duration;

use healthbridge_e2e::fixtures::is_ready;
use healthbridge_e2e::haproxy::{HaProxy, SERVER, Server};
use healthbridge_e2e::nodes::host_address;
use healthbridge_e2e::poll::{poll_until, when};
use healthbridge_e2e::{Scenario, demo_pod};

const NODE_PORT: u16 = 30082;
/// The demo's echo port: the traffic HAProxy would balance (UDP/TCP), not what it checks.
const TRAFFIC_PORT: u16 = 7000;

async fn wait_for_server(haproxy: &HaProxy, wanted: &str) -> anyhow::Result<String> {
    poll_until(
        &format!("haproxy to see the server {wanted}"),
        Duration::from_secs(60),
        || async {
            Ok(when(haproxy.server_status().await?, |status| {
                status.split_whitespace().next() == Some(wanted)
            }))
        },
    )
    .await
}

#[tokio::test]
async fn haproxy_marks_the_server_up_and_down_with_the_pods_readiness() -> anyhow::Result<()> {
    Scenario::run("haproxy", |s| async move {
        s.create_pod(&demo_pod("udp-echo").opted_in().with_node_port(NODE_PORT))
            .await?;
        let pod = s
            .wait_for_pod(
                "udp-echo",
                "to be Ready",
                Duration::from_secs(120),
                is_ready,
            )
            .await?;

        // The server is the pod's node, wherever the scheduler put it.
        let node = host_address(&pod)?;
        let haproxy = HaProxy::start(Server::new(SERVER, node, TRAFFIC_PORT, NODE_PORT)).await?;
        let outcome = async {
            wait_for_server(&haproxy, "UP").await?;
            s.set_app_ready("udp-echo", false)?;
            wait_for_server(&haproxy, "DOWN").await?;
            s.set_app_ready("udp-echo", true)?;
            wait_for_server(&haproxy, "UP").await?;
            anyhow::Ok(())
        }
        .await;
        haproxy.stop().await?;
        outcome
    })
    .await
}
