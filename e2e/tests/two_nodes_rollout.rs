//! A rolling update under a steady client load through the outside HAProxy loses no connection: with
//! `healthbridge.io/drain-delay`, each old pod's app keeps serving while its agent already answers 503, so HAProxy
//! takes the node out before the app stops; the new pod's node comes back when its agent answers 200.
//!
//! A binary of its own (cargo runs test binaries one after another): the rollout moves pods between both nodes.
//! NodePorts 30087 (health) and 30088 (the app's own Service, Local like the health one).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, ensure};
use healthbridge_e2e::haproxy::{HaProxy, Server, States, is_up};
use healthbridge_e2e::nodes::OUTSIDE_ADDRESS;
use healthbridge_e2e::{Node, Scenario, demo_pod};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, PostParams};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};

const HEALTH_NODE_PORT: u16 = 30087;
const APP_NODE_PORT: u16 = 30088;
const FRONTEND_PORT: u16 = 17088;
/// Longer than HAProxy's `fall 1 × inter 250ms` plus a check's own second, shorter than the pods' 10 s grace period.
const DRAIN_DELAY: &str = "4s";
const SETTLE: Duration = Duration::from_secs(60);
/// One connection's bound: connect, one line out, its echo back.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
/// The client's pace: about 40 connections a second, each a new one through HAProxy to a node.
const PACE: Duration = Duration::from_millis(25);

/// What the steady client saw.
#[derive(Debug, Default)]
struct Load {
    ok: u64,
    failed: Vec<String>,
}

/// One request: a new TCP connection through the load balancer, a line, its echo.
async fn echo_once(frontend: SocketAddr, n: u64) -> anyhow::Result<()> {
    let line = format!("rollout {n}\n");
    timeout(REQUEST_TIMEOUT, async {
        let mut stream = TcpStream::connect(frontend).await.context("connect")?;
        stream.write_all(line.as_bytes()).await.context("write")?;
        let mut echoed = vec![0; line.len()];
        stream
            .read_exact(&mut echoed)
            .await
            .context("read the echo")?;
        ensure!(
            echoed == line.as_bytes(),
            "echoed {:?}",
            String::from_utf8_lossy(&echoed)
        );
        Ok(())
    })
    .await
    .context("timed out")?
}

/// Connects, sends and reads back one line after another until `stop`, counting what failed and how.
async fn steady_load(frontend: SocketAddr, stop: Arc<AtomicBool>) -> Load {
    let mut load = Load::default();
    let started = Instant::now();
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        match echo_once(frontend, n).await {
            Ok(()) => load.ok += 1,
            Err(error) => load
                .failed
                .push(format!("{:?}: {error:#}", started.elapsed())),
        }
        tokio::time::sleep(PACE).await;
    }
    load
}

// kubectl runs blocking on the test's thread: the client needs a worker of its own meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_update_with_a_drain_delay_loses_no_connection_of_a_steady_client()
-> anyhow::Result<()> {
    Scenario::run("two-rollout", |s| async move {
        let (a, b) = Node::both(&s.cluster).await?;
        let app = demo_pod("rolled")
            .opted_in()
            .with_node_port(HEALTH_NODE_PORT)
            .annotated("healthbridge.io/drain-delay", DRAIN_DELAY)
            .one_per_node();
        let mut deployment = app.deployment(2)?;
        // One pod per node and no surge: each step stops an old pod first, so its node drains, then starts the new one there.
        let spec = deployment.spec.as_mut().context("deployment spec")?;
        spec.strategy = Some(serde_json::from_value(json!({
            "type": "RollingUpdate",
            "rollingUpdate": { "maxSurge": 0, "maxUnavailable": 1 },
        }))?);
        spec.min_ready_seconds = Some(2);
        let deployments: Api<Deployment> = s.api();
        deployments.create(&PostParams::default(), &deployment).await?;
        // The app's own Service, Local as the health one: a node forwards only to its own pods.
        let services: Api<Service> = s.api();
        let service = serde_json::from_value(json!({
            "metadata": { "name": "rolled-app" },
            "spec": {
                "type": "NodePort",
                "externalTrafficPolicy": "Local",
                "selector": { "app": "rolled" },
                "ports": [{ "name": "echo", "protocol": "TCP", "port": 7000, "targetPort": 7000, "nodePort": APP_NODE_PORT }],
            },
        }))?;
        services.create(&PostParams::default(), &service).await?;
        s.kubectl(&["rollout", "status", "deployment/rolled", "--timeout=3m"])?;

        let frontend = SocketAddr::from((OUTSIDE_ADDRESS, FRONTEND_PORT));
        let servers = [&a, &b].map(|node| Server::new(&node.name, node.address, APP_NODE_PORT, HEALTH_NODE_PORT));
        let haproxy = HaProxy::start_outside_serving(&servers, frontend).await?;
        let outcome = async {
            let both_up = |states: &States| is_up(states, &a.name) && is_up(states, &b.name);
            haproxy.wait_for("both nodes UP", SETTLE, both_up).await?;
            echo_once(frontend, 0).await.context("the load balancer does not pass a connection before the rollout")?;

            let stop = Arc::new(AtomicBool::new(false));
            let client = tokio::spawn(steady_load(frontend, stop.clone()));
            s.kubectl(&["rollout", "restart", "deployment/rolled"])?;
            let rolled = s.kubectl(&["rollout", "status", "deployment/rolled", "--timeout=3m"]);
            // The last old pod still drains after the rollout reports done; the client keeps going until both are back.
            let back = haproxy.wait_for("both nodes UP after the rollout", SETTLE, both_up).await;
            stop.store(true, Ordering::Relaxed);
            let load = client.await?;
            rolled?;
            back?;
            eprintln!(
                "rolling update through HAProxy: {} connections passed, {} failed",
                load.ok,
                load.failed.len()
            );
            ensure!(load.ok > 100, "the client made too few connections to prove anything: {load:?}");
            ensure!(
                load.failed.is_empty(),
                "{} of {} connections failed during the rolling update (time since the load started: error): {:#?}",
                load.failed.len(),
                load.ok + load.failed.len() as u64,
                load.failed
            );
            Ok(())
        }
        .await;
        haproxy.stop().await?;
        outcome
    })
    .await
}
