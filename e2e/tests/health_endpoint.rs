//! The health endpoint as a load balancer sees it: `GET /health` on the pinned NodePort of the
//! pod's node (its InternalIP; with two nodes either may run the pod).

use std::net::IpAddr;
use std::time::Duration;

use anyhow::{Context, ensure};
use healthbridge_e2e::fixtures::{condition, is_ready};
use healthbridge_e2e::http::status_at;
use healthbridge_e2e::nodes::host_address;
use healthbridge_e2e::poll::{poll_until, when};
use healthbridge_e2e::{Scenario, demo_pod};
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{Api, DeleteParams};

const NODE_PORT: u16 = 30081;
/// How fast the agent must turn a readiness change into its answer (issue: "503 within 2 s").
const REACTION: Duration = Duration::from_secs(2);
const STARTUP: Duration = Duration::from_secs(120);

async fn health(node: IpAddr) -> anyhow::Result<u16> {
    status_at(node, NODE_PORT, "/health").await
}

#[tokio::test]
async fn the_node_port_answers_with_the_apps_readiness_and_drains_on_deletion() -> anyhow::Result<()>
{
    Scenario::run("health", |s| async move {
        s.create_pod(&demo_pod("web").opted_in().with_node_port(NODE_PORT))
            .await?;

        let services: Api<Service> = s.api();
        let service = poll_until(
            "the Service web-healthbridge",
            Duration::from_secs(60),
            || async { Ok(services.get_opt("web-healthbridge").await?) },
        )
        .await?;
        let spec = service.spec.context("the Service has no spec")?;
        ensure!(
            spec.type_.as_deref() == Some("NodePort"),
            "the Service is of type {:?}, expected NodePort",
            spec.type_
        );
        let node_ports: Vec<i32> = spec
            .ports
            .iter()
            .flatten()
            .filter_map(|p| p.node_port)
            .collect();
        ensure!(
            node_ports == [i32::from(NODE_PORT)],
            "the Service's nodePorts are {node_ports:?}, expected the pinned {NODE_PORT}"
        );

        let pod = s
            .wait_for_pod("web", "to be Ready", STARTUP, is_ready)
            .await?;
        let node = host_address(&pod)?;
        poll_until(
            "GET /health on the NodePort to say 200",
            Duration::from_secs(60),
            || async { Ok(when(health(node).await?, |status| *status == 200)) },
        )
        .await?;

        // Unready: the kubelet's probe notices the missing file; from then the agent has REACTION to say 503.
        s.set_app_ready("web", false)?;
        s.wait_for_pod("web", "to turn unready", Duration::from_secs(30), |pod| {
            condition(pod, "Ready") == Some("False")
        })
        .await?;
        poll_until(
            "GET /health to say 503 after the pod turned unready",
            REACTION,
            || async { Ok(when(health(node).await?, |status| *status == 503)) },
        )
        .await
        // A refused connection here means the Service dropped the unready pod from its endpoints.
        .context("an unready pod must stay behind the health Service (publishNotReadyAddresses) so it can say 503")?;

        s.set_app_ready("web", true)?;
        poll_until(
            "GET /health to say 200 again",
            Duration::from_secs(30),
            || async { Ok(when(health(node).await?, |status| *status == 200)) },
        )
        .await?;

        // Deletion: the endpoint must answer 503 while the pod still exists, before it stops answering.
        let pods: Api<Pod> = s.api();
        pods.delete("web", &DeleteParams::default()).await?;
        let first_change = poll_until(
            "GET /health to stop saying 200 after deletion",
            Duration::from_secs(30),
            || async {
                Ok(match health(node).await {
                    Ok(200) => None,
                    other => Some(other.map_err(|error| format!("{error:#}"))),
                })
            },
        )
        .await?;
        let still_there = pods.get_opt("web").await?.is_some();
        ensure!(
            first_change == Ok(503),
            "after deletion the first answer other than 200 was {first_change:?}, expected 503"
        );
        ensure!(
            still_there,
            "the pod was gone by the time /health said 503: no drain window for the load balancer"
        );
        Ok(())
    })
    .await
}
