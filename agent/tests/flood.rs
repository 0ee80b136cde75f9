//! The real agent binary under connection floods on loopback: 10,000 half-open connections, then (fresh agent) a
//! slowloris of 1,000, while a load balancer's `GET /health` keeps answering and memory stays within the chart's 32Mi.
//!
//! A normal request runs every 100 ms; the test fails if two in a row fail (a load balancer counts a backend down
//! only after several failed checks) or if the server still holds the attack's connections 15 s after its timeouts.
//!
//! `cargo test` runs the debug binary, whose idle RSS (≈20 MiB of mapped debug code) is far above the release
//! binary's (≈7 MiB), so what is checked is the growth under attack against the room a release agent has:
//! 32 MiB minus `BOUNDS.release_idle_kib`. The figures are printed (`--nocapture`).
#![allow(clippy::unwrap_used)]

mod process_support;

use std::process::Stdio;
use std::time::Duration;

use futures::future::BoxFuture;
use healthbridge_runtime::flood::{
    Attacked, FloodBounds, Held, answers, half_open, half_open_connections, http1_status, slowloris,
};
use process_support::{KilledOnDrop, agent, free_port};
use tokio::net::TcpStream;

const BOUNDS: FloodBounds = FloodBounds {
    server: "agent",
    request: "GET /health",
    // The agent's memory limit in the chart and in the webhook's injection defaults.
    memory_limit_kib: 32 * 1024,
    // Idle RSS of the release agent (README, `just bench`), rounded up.
    release_idle_kib: 8 * 1024,
    // The default connection bound of the agent's listener.
    max_connections: 512,
    slowloris_over: None,
};
const HALF_OPEN: usize = 10_000;
const SLOWLORIS: usize = 1_000;
const PARTIAL_REQUEST: &[u8] = b"GET /health HTTP/1.1\r\nHost: x\r\n";

struct Agent {
    process: KilledOnDrop,
    port: u16,
}

impl Agent {
    fn pid(&self) -> u32 {
        self.process.0.id()
    }

    fn connector(
        &self,
    ) -> impl Fn() -> BoxFuture<'static, std::io::Result<TcpStream>> + Clone + use<> {
        let port = self.port;
        move || Box::pin(TcpStream::connect(("127.0.0.1", port)))
    }

    /// Runs `attack` while probing `/health`.
    async fn attacked<A: std::future::Future<Output = Held>>(&self, attack: A) -> Attacked {
        let port = self.port;
        BOUNDS
            .attacked(self.pid(), 200, move || health(port), attack)
            .await
    }
}

async fn start_agent() -> Agent {
    let port = free_port();
    let child = agent()
        .env_clear()
        .env("HTTP_HEALTHCHECK_SIDECAR_PORT", port.to_string())
        .env(
            "HTTP_HEALTHCHECK_SIDECAR_ADMIN_PORT",
            free_port().to_string(),
        )
        .env("HTTP_HEALTHCHECK_SIDECAR_STATE_OVERRIDE", "true")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Agent {
        process: KilledOnDrop(child),
        port,
    };
    assert!(
        answers(200, || health(port)).await,
        "the agent did not answer /health on port {port}"
    );
    started
}

async fn health(port: u16) -> std::io::Result<u16> {
    let stream = TcpStream::connect(("127.0.0.1", port)).await?;
    http1_status(
        stream,
        b"GET /health HTTP/1.1\r\nHost: lb\r\nConnection: close\r\n\r\n",
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_answers_health_within_its_memory_limit_under_half_open_connections_and_slowloris()
 {
    let (connections, fds) = half_open_connections(HALF_OPEN);

    let agent = start_agent().await;
    let half_open_attack = agent
        .attacked(half_open(
            agent.pid(),
            connections,
            PARTIAL_REQUEST,
            Duration::from_secs(7),
            agent.connector(),
        ))
        .await;
    drop(agent);

    let agent = start_agent().await;
    let slowloris_attack = agent
        .attacked(slowloris(
            agent.pid(),
            SLOWLORIS,
            PARTIAL_REQUEST,
            Duration::from_secs(10),
            agent.connector(),
        ))
        .await;

    BOUNDS.check(&half_open_attack, &slowloris_attack, fds);
}
