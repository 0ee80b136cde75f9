//! The real agent binary under connection floods on loopback: 10,000 half-open connections, then (fresh agent) a
//! slowloris of 1,000, while a load balancer's `GET /health` keeps answering and memory stays within the chart's 32Mi.
//!
//! A normal request runs every 100 ms; the test fails if two in a row fail (a load balancer counts a backend down
//! only after several failed checks) or if the server still holds the attack's connections 15 s after its timeouts.
//!
//! `cargo test` runs the debug binary, whose idle RSS (≈20 MiB of mapped debug code) is far above the release
//! binary's (≈7 MiB), so what is checked is the growth under attack against the room a release agent has:
//! 32 MiB minus `RELEASE_IDLE_KIB`. The figures are printed (`--nocapture`).
#![allow(clippy::unwrap_used)]

use std::net::TcpListener as StdListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures::future::BoxFuture;
use healthbridge_runtime::flood::{
    Held, Probes, SLACK_FDS, half_open, http1_status, raise_fd_limit, rss_kib, slowloris,
    under_attack,
};
use tokio::net::TcpStream;

/// The agent's memory limit in the chart and in the webhook's injection defaults.
const MEMORY_LIMIT_KIB: u64 = 32 * 1024;
/// Idle RSS of the release agent (README, `just bench`), rounded up.
const RELEASE_IDLE_KIB: u64 = 8 * 1024;
const HALF_OPEN: usize = 10_000;
const SLOWLORIS: usize = 1_000;
/// File descriptors this test process keeps for itself beyond the attack's connections.
const FD_RESERVE: u64 = 200;
/// The default connection bound of the agent's listener.
const MAX_CONNECTIONS: usize = 512;
const PARTIAL_REQUEST: &[u8] = b"GET /health HTTP/1.1\r\nHost: x\r\n";

struct Agent {
    child: Child,
    port: u16,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Agent {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn connector(
        &self,
    ) -> impl Fn() -> BoxFuture<'static, std::io::Result<TcpStream>> + Clone + use<> {
        let port = self.port;
        move || Box::pin(TcpStream::connect(("127.0.0.1", port)))
    }

    /// Runs `attack` while probing `/health`; answers what the probes saw and the RSS growth over idle.
    async fn attacked<A: std::future::Future<Output = Held>>(
        &self,
        attack: A,
    ) -> (Held, Probes, u64) {
        let idle = rss_kib(self.pid()).unwrap();
        let port = self.port;
        let (held, probes, peak) =
            under_attack(self.pid(), 200, move || health(port), attack).await;
        assert!(rss_kib(self.pid()).is_some(), "the agent died under attack");
        eprintln!("agent RSS: idle {idle} KiB, peak {peak} KiB");
        (held, probes, peak.saturating_sub(idle))
    }
}

fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn start_agent() -> Agent {
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_healthbridge-agent"))
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
    let agent = Agent { child, port };
    let mut delay = Duration::from_millis(10);
    for _ in 0..40 {
        if health(port).await.is_ok_and(|status| status == 200) {
            return agent;
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(250));
    }
    panic!("the agent did not answer /health on port {port}");
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
    let fds = raise_fd_limit();
    let connections =
        HALF_OPEN.min(usize::try_from(fds.saturating_sub(FD_RESERVE)).unwrap_or(HALF_OPEN));
    let budget = MEMORY_LIMIT_KIB - RELEASE_IDLE_KIB;

    let agent = start_agent().await;
    let (half_open_held, half_open_probes, half_open_growth) = agent
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
    let (slowloris_held, slowloris_probes, slowloris_growth) = agent
        .attacked(slowloris(
            agent.pid(),
            SLOWLORIS,
            PARTIAL_REQUEST,
            Duration::from_secs(10),
            agent.connector(),
        ))
        .await;

    eprintln!(
        "agent RSS growth: {half_open_growth} KiB under {connections} half-open connections (fd limit {fds}), \
         {slowloris_growth} KiB under a slowloris of {SLOWLORIS}; budget {budget} KiB"
    );
    eprintln!(
        "GET /health under half-open connections: {}",
        half_open_probes.summary()
    );
    eprintln!(
        "GET /health under slowloris: {}",
        slowloris_probes.summary()
    );
    eprintln!(
        "connections the agent still held at the end: {} of {} half-open after 7 s (the rest closed {:?} later), \
         {} of {} slowloris after 10 s (the rest closed {:?} later)",
        half_open_held.held_by_server,
        half_open_held.opened,
        half_open_held.released_after,
        slowloris_held.held_by_server,
        slowloris_held.opened,
        slowloris_held.released_after,
    );
    assert!(
        half_open_held.held_by_server <= MAX_CONNECTIONS + SLACK_FDS
            && slowloris_held.held_by_server <= MAX_CONNECTIONS + SLACK_FDS,
        "the agent held more connections than its bound: {half_open_held:?}, {slowloris_held:?}"
    );
    assert!(
        half_open_held.released_after.is_some() && slowloris_held.released_after.is_some(),
        "the agent kept connections past its timeouts (not released within 15 s): {half_open_held:?}, {slowloris_held:?}"
    );
    assert!(
        half_open_growth < budget && slowloris_growth < budget,
        "the agent grew past the room its 32Mi limit leaves: {half_open_growth} KiB (half-open), \
         {slowloris_growth} KiB (slowloris), budget {budget} KiB"
    );
    for (attack, probes) in [
        ("half-open", &half_open_probes),
        ("slowloris", &slowloris_probes),
    ] {
        assert!(
            probes.longest_failure_streak < 2 && probes.answered.len() >= 20,
            "GET /health failed twice in a row (a load balancer would start counting the backend down) under the {attack} attack: {}",
            probes.summary()
        );
    }
}
