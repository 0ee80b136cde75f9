//! A loopback connection-flood client for the binaries' flood tests: half-open connections, slowloris, probes, RSS.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

/// Resident memory of a process in KiB (`VmRSS` of `/proc/<pid>/status`); `None` once it has exited.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Samples the RSS of `pid` every 50 ms until `stop`; the answer is the highest value seen (KiB).
pub fn sample_peak_rss(pid: u32, stop: CancellationToken) -> tokio::task::JoinHandle<u64> {
    tokio::spawn(async move {
        let mut peak = 0;
        loop {
            if let Some(rss) = rss_kib(pid) {
                peak = peak.max(rss);
            }
            tokio::select! {
                () = stop.cancelled() => return peak,
                () = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
        }
    })
}

/// Opens `count` connections (at most `parallel` connecting at once) and writes `first_bytes` on each;
/// returns those that connected. Each connect may take up to `connect_timeout` (a full backlog drops SYNs).
pub async fn open<S, C, F>(
    count: usize,
    parallel: usize,
    connect_timeout: Duration,
    first_bytes: &'static [u8],
    connect: C,
) -> Vec<S>
where
    S: AsyncWrite + Unpin + Send + 'static,
    C: Fn() -> F + Send + Sync + 'static,
    F: Future<Output = io::Result<S>> + Send + 'static,
{
    use futures::StreamExt;
    let connect = Arc::new(connect);
    futures::stream::iter(0..count)
        .map(|_| {
            let connect = Arc::clone(&connect);
            async move {
                let mut stream = tokio::time::timeout(connect_timeout, connect())
                    .await
                    .ok()?
                    .ok()?;
                if !first_bytes.is_empty() {
                    stream.write_all(first_bytes).await.ok()?;
                    stream.flush().await.ok()?;
                }
                Some(stream)
            }
        })
        .buffer_unordered(parallel)
        .filter_map(std::future::ready)
        .collect()
        .await
}

/// Writes one header byte on every connection each `period` until `stop` (slowloris);
/// answers how many connections were still writable at the end.
pub async fn trickle<S>(mut streams: Vec<S>, period: Duration, stop: CancellationToken) -> usize
where
    S: AsyncWrite + Unpin + Send,
{
    let mut open = vec![true; streams.len()];
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            () = tokio::time::sleep(period) => {}
        }
        for (stream, open) in streams.iter_mut().zip(open.iter_mut()) {
            if *open {
                let wrote = tokio::time::timeout(Duration::from_millis(20), async {
                    stream.write_all(b"X").await?;
                    stream.flush().await
                })
                .await;
                *open = matches!(wrote, Ok(Ok(())));
            }
        }
    }
    open.iter().filter(|open| **open).count()
}

/// Sends `request` (one HTTP/1.1 request with `Connection: close`) and answers the status code of the reply.
pub async fn http1_status<S>(mut stream: S, request: &[u8]) -> io::Result<u16>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    stream.write_all(request).await?;
    stream.flush().await?;
    let mut head = Vec::new();
    let mut buffer = [0_u8; 512];
    while !head.windows(2).any(|w| w == b"\r\n") {
        let read = stream.read(&mut buffer).await?;
        if read == 0 {
            break;
        }
        head.extend_from_slice(&buffer[..read]);
    }
    let line = String::from_utf8_lossy(&head);
    line.split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| io::Error::other(format!("no HTTP status line in {line:?}")))
}

/// What the normal requests made during an attack saw.
#[derive(Debug, Clone, Default)]
pub struct Probes {
    /// Latency of each answered request.
    pub answered: Vec<Duration>,
    /// Status codes other than the expected one, and errors, as text.
    pub failures: Vec<String>,
    /// Most failures in a row: a load balancer marks a backend down only after several (HAProxy `fall 3`).
    pub longest_failure_streak: usize,
}

impl Probes {
    /// `n answered, p50 … p99 … max … ms, k failed`.
    pub fn summary(&self) -> String {
        let mut sorted = self.answered.clone();
        sorted.sort();
        let at = |q: f64| {
            sorted
                .get(((sorted.len() as f64 - 1.0) * q).round() as usize)
                .map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0)
        };
        format!(
            "{} answered (p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms), {} failed (at most {} in a row){}",
            sorted.len(),
            at(0.5),
            at(0.99),
            at(1.0),
            self.failures.len(),
            self.longest_failure_streak,
            self.failures
                .first()
                .map(|f| format!(" (first: {f})"))
                .unwrap_or_default()
        )
    }
}

/// Runs `request` every `every` until `stop`, each bounded by `timeout`; `expected` is the healthy status code.
pub fn probe<R, F>(
    every: Duration,
    timeout: Duration,
    expected: u16,
    stop: CancellationToken,
    request: R,
) -> tokio::task::JoinHandle<Probes>
where
    R: Fn() -> F + Send + 'static,
    F: Future<Output = io::Result<u16>> + Send,
{
    tokio::spawn(async move {
        let mut probes = Probes::default();
        while !stop.is_cancelled() {
            let started = Instant::now();
            match tokio::time::timeout(timeout, request()).await {
                Ok(Ok(status)) if status == expected => probes.answered.push(started.elapsed()),
                Ok(Ok(status)) => probes.failures.push(format!("HTTP {status}")),
                Ok(Err(error)) => probes.failures.push(error.to_string()),
                Err(_) => probes
                    .failures
                    .push(format!("no answer within {timeout:?}")),
            }
            tokio::select! {
                () = stop.cancelled() => {}
                () = tokio::time::sleep(every) => {}
            }
        }
        probes
    })
}

/// Raises this process's soft open-file limit to its hard limit (children inherit it); answers the new soft limit.
pub fn raise_fd_limit() -> u64 {
    crate::fdlimit::raise_nofile()
}

/// Runs `attack` against the server process `pid` while `request` (a normal request) runs every 100 ms
/// and the RSS is sampled; answers what the normal requests saw and the peak RSS in KiB.
pub async fn under_attack<R, F, A, T>(
    pid: u32,
    expected: u16,
    request: R,
    attack: A,
) -> (T, Probes, u64)
where
    R: Fn() -> F + Send + 'static,
    F: Future<Output = io::Result<u16>> + Send,
    A: Future<Output = T>,
{
    let stop = CancellationToken::new();
    let rss = sample_peak_rss(pid, stop.clone());
    let probes = probe(
        Duration::from_millis(100),
        Duration::from_secs(2),
        expected,
        stop.clone(),
        request,
    );
    let outcome = attack.await;
    stop.cancel();
    let probes = probes.await.unwrap_or_default();
    let peak = rss.await.unwrap_or_default();
    (outcome, probes, peak)
}

/// File descriptors the process `pid` has open (its sockets among them); 0 once it has exited.
pub fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count)
}

/// What an attack's connections looked like at its end.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Held {
    /// Connections the attack tried to open.
    pub count: usize,
    /// How long it held them open before counting what the server still held.
    pub hold: Duration,
    /// Connections that connected (and took their first bytes).
    pub opened: usize,
    /// File descriptors the server had open at the end of the attack beyond those it had before: the attack's
    /// connections it still held. (Counted at the server: a connection the kernel completed but never queued
    /// for accept looks open to the client and costs the server nothing.)
    pub held_by_server: usize,
    /// How long after the end of the attack (connections still open on the client side) the server was back to
    /// at most `slack` extra descriptors; `None` if not within the settle time.
    pub released_after: Option<Duration>,
}

/// Polls (with backoff) until the server `pid` has at most `before + slack` descriptors open, for up to `settle`.
async fn released(pid: u32, before: usize, slack: usize, settle: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut delay = Duration::from_millis(20);
    loop {
        if open_fds(pid) <= before + slack {
            return Some(started.elapsed());
        }
        if started.elapsed() >= settle {
            return None;
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(500));
    }
}

/// Server descriptors a probe in flight or a lagging close may account for.
pub const SLACK_FDS: usize = 8;
/// How long after an attack the server's timeouts get to close what it still holds.
const SETTLE: Duration = Duration::from_secs(15);

/// Opens `count` TCP connections to the server `pid`, half silent and half with `partial` written, holds them
/// for `hold`, counts how many the server still holds, and waits (bounded) for the server to let them go.
pub async fn half_open<C, F>(
    pid: u32,
    count: usize,
    partial: &'static [u8],
    hold: Duration,
    connect: C,
) -> Held
where
    C: Fn() -> F + Clone + Send + Sync + 'static,
    F: Future<Output = io::Result<tokio::net::TcpStream>> + Send + 'static,
{
    let before = open_fds(pid);
    let timeout = Duration::from_secs(3);
    let silent = open(count / 2, 500, timeout, b"", connect.clone());
    let partial = open(count - count / 2, 500, timeout, partial, connect);
    let (silent, partial) = tokio::join!(silent, partial);
    tokio::time::sleep(hold).await;
    let held_by_server = open_fds(pid).saturating_sub(before);
    let released_after = released(pid, before, SLACK_FDS, SETTLE).await;
    Held {
        count,
        hold,
        opened: silent.len() + partial.len(),
        held_by_server,
        released_after,
    }
}

/// Opens `count` connections to the server `pid` with `start` written, then writes one byte on each every 2 s
/// for `hold`, counts how many the server still holds, and waits (bounded) for the server to let them go.
pub async fn slowloris<S, C, F>(
    pid: u32,
    count: usize,
    start: &'static [u8],
    hold: Duration,
    connect: C,
) -> Held
where
    S: AsyncWrite + Unpin + Send + 'static,
    C: Fn() -> F + Send + Sync + 'static,
    F: Future<Output = io::Result<S>> + Send + 'static,
{
    let before = open_fds(pid);
    let streams = open(count, 100, Duration::from_secs(3), start, connect).await;
    let opened = streams.len();
    let stop = CancellationToken::new();
    let trickling = tokio::spawn(trickle(streams, Duration::from_secs(2), stop.clone()));
    tokio::time::sleep(hold).await;
    let held_by_server = open_fds(pid).saturating_sub(before);
    let released_after = released(pid, before, SLACK_FDS, SETTLE).await;
    stop.cancel();
    let _ = trickling.await;
    Held {
        count,
        hold,
        opened,
        held_by_server,
        released_after,
    }
}

/// File descriptors this test process keeps for itself beyond an attack's connections.
const FD_RESERVE: u64 = 200;

/// How many half-open connections to open: `wanted`, or fewer when this process's open-file limit (raised to its
/// hard limit first) leaves less room; and that limit.
pub fn half_open_connections(wanted: usize) -> (usize, u64) {
    let fds = raise_fd_limit();
    let room = usize::try_from(fds.saturating_sub(FD_RESERVE)).unwrap_or(wanted);
    (wanted.min(room), fds)
}

/// Polls `request` with backoff (about 6 s in all) until it answers `expected`; false if it never does.
pub async fn answers<R, F>(expected: u16, request: R) -> bool
where
    R: Fn() -> F,
    F: Future<Output = io::Result<u16>>,
{
    let mut delay = Duration::from_millis(10);
    for _ in 0..40 {
        if request().await.is_ok_and(|status| status == expected) {
            return true;
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(250));
    }
    false
}

/// One attack as the server lived it.
#[derive(Debug, Clone)]
pub struct Attacked {
    pub held: Held,
    /// What the normal requests saw meanwhile.
    pub probes: Probes,
    /// Peak RSS during the attack over the idle RSS before it, in KiB.
    pub growth_kib: u64,
}

/// What a server under test must keep through a half-open flood and a slowloris, and how messages name it.
#[derive(Debug, Clone, Copy)]
pub struct FloodBounds {
    /// `agent`, `webhook`.
    pub server: &'static str,
    /// The normal request probed during the attacks: `GET /health`.
    pub request: &'static str,
    /// The memory limit of the server's container (the chart's), in KiB.
    pub memory_limit_kib: u64,
    /// Idle RSS of the release binary, rounded up: the debug binary's idle RSS is far above it, so what is
    /// checked is the growth under attack against the limit minus this.
    pub release_idle_kib: u64,
    /// The connection bound of the server's listener.
    pub max_connections: usize,
    /// What the slowloris speaks when it is not plain TCP: `TLS`.
    pub slowloris_over: Option<&'static str>,
}

impl FloodBounds {
    /// The RSS growth an attack may cause: the room a release server has under its memory limit.
    pub fn budget_kib(&self) -> u64 {
        self.memory_limit_kib - self.release_idle_kib
    }

    /// Runs `attack` against the server `pid` while `request` (the normal request, healthy when it answers
    /// `expected`) runs every 100 ms; panics if the server dies.
    pub async fn attacked<R, F, A>(
        &self,
        pid: u32,
        expected: u16,
        request: R,
        attack: A,
    ) -> Attacked
    where
        R: Fn() -> F + Send + 'static,
        F: Future<Output = io::Result<u16>> + Send,
        A: Future<Output = Held>,
    {
        let server = self.server;
        let idle = rss_kib(pid).unwrap_or_else(|| panic!("the {server} is not running"));
        let (held, probes, peak) = under_attack(pid, expected, request, attack).await;
        assert!(rss_kib(pid).is_some(), "the {server} died under attack");
        eprintln!("{server} RSS: idle {idle} KiB, peak {peak} KiB");
        Attacked {
            held,
            probes,
            growth_kib: peak.saturating_sub(idle),
        }
    }

    /// Prints what the two attacks did (`--nocapture`) and panics where the server broke a bound: it held more
    /// connections than its listener's bound, kept them past its timeouts, grew past its memory budget, or failed
    /// the normal request twice in a row (a load balancer counts a backend down only after several failures).
    pub fn check(&self, half_open: &Attacked, slowloris: &Attacked, fd_limit: u64) {
        let (server, request, budget) = (self.server, self.request, self.budget_kib());
        let limit_mi = self.memory_limit_kib / 1024;
        let (half_open_held, slowloris_held) = (&half_open.held, &slowloris.held);
        let (half_open_growth, slowloris_growth) = (half_open.growth_kib, slowloris.growth_kib);
        let over = self
            .slowloris_over
            .map(|transport| format!(" {transport} connections"))
            .unwrap_or_default();
        eprintln!(
            "{server} RSS growth: {half_open_growth} KiB under {} half-open connections (fd limit {fd_limit}), \
             {slowloris_growth} KiB under a slowloris of {}{over}; budget {budget} KiB",
            half_open_held.count, slowloris_held.count,
        );
        eprintln!(
            "{request} under half-open connections: {}",
            half_open.probes.summary()
        );
        eprintln!("{request} under slowloris: {}", slowloris.probes.summary());
        eprintln!(
            "connections the {server} still held at the end: {} of {} half-open after {} s (the rest closed {:?} later), \
             {} of {} slowloris after {} s (the rest closed {:?} later)",
            half_open_held.held_by_server,
            half_open_held.opened,
            half_open_held.hold.as_secs(),
            half_open_held.released_after,
            slowloris_held.held_by_server,
            slowloris_held.opened,
            slowloris_held.hold.as_secs(),
            slowloris_held.released_after,
        );
        assert!(
            half_open_held.held_by_server <= self.max_connections + SLACK_FDS
                && slowloris_held.held_by_server <= self.max_connections + SLACK_FDS,
            "the {server} held more connections than its bound: {half_open_held:?}, {slowloris_held:?}"
        );
        assert!(
            half_open_held.released_after.is_some() && slowloris_held.released_after.is_some(),
            "the {server} kept connections past its timeouts (not released within {} s): {half_open_held:?}, {slowloris_held:?}",
            SETTLE.as_secs()
        );
        assert!(
            half_open_growth < budget && slowloris_growth < budget,
            "the {server} grew past the room its {limit_mi}Mi limit leaves: {half_open_growth} KiB (half-open), \
             {slowloris_growth} KiB (slowloris), budget {budget} KiB"
        );
        for (attack, probes) in [
            ("half-open", &half_open.probes),
            ("slowloris", &slowloris.probes),
        ] {
            assert!(
                probes.longest_failure_streak < 2 && probes.answered.len() >= 20,
                "{request} failed twice in a row (a load balancer would start counting the backend down) under the {attack} attack: {}",
                probes.summary()
            );
        }
    }
}
