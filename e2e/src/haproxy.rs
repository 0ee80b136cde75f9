//! A real HAProxy (the Debian package) as the load balancer that knows nothing of Kubernetes.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::process::{Child, Command};

use crate::nodes::{OUTSIDE_NETNS, netns_path};
use crate::poll::poll_until;

pub const BACKEND: &str = "demo";
pub const SERVER: &str = "node";

/// One server of the backend: a node's traffic port, health-checked with `GET /health` on the
/// health Service's NodePort of the same node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Server {
    pub name: String,
    pub address: IpAddr,
    pub traffic_port: u16,
    pub health_port: u16,
}

impl Server {
    pub fn new(name: &str, address: IpAddr, traffic_port: u16, health_port: u16) -> Self {
        Self {
            name: name.to_owned(),
            address,
            traffic_port,
            health_port,
        }
    }
}

/// A server's row of `show stat`: its status (`UP`, `DOWN`, `UP 1/2`, …) and last check
/// (`L7OK`, `L7STS` for a failing status code, `L4TOUT`, `INI` before the first, …).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerState {
    pub status: String,
    pub check: String,
}

impl ServerState {
    /// UP after a check that passed, not only HAProxy's assumption before the first check.
    pub fn is_up(&self) -> bool {
        self.status.split_whitespace().next() == Some("UP") && self.last_check() == "L7OK"
    }

    /// DOWN after a check that failed.
    pub fn is_down(&self) -> bool {
        self.status.split_whitespace().next() == Some("DOWN")
    }

    /// The last check's result without the `* ` HAProxy puts before it while the next one runs.
    pub fn last_check(&self) -> &str {
        self.check.trim_start_matches("* ")
    }
}

/// The backend's servers by name.
pub type States = BTreeMap<String, ServerState>;

/// Whether `server` is UP after a passing check in `states`.
pub fn is_up(states: &States, server: &str) -> bool {
    states.get(server).is_some_and(ServerState::is_up)
}

/// Whether `server` is DOWN after a failing check in `states`.
pub fn is_down(states: &States, server: &str) -> bool {
    states.get(server).is_some_and(ServerState::is_down)
}

/// A running haproxy process whose only backend health-checks `GET /health` on NodePorts.
pub struct HaProxy {
    child: Child,
    dir: tempfile::TempDir,
}

impl HaProxy {
    /// Starts haproxy in this machine's network namespace (node A's) with one server, named
    /// [`SERVER`]: the traffic goes to the app's port, the check to the health NodePort.
    pub async fn start(server: Server) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let config = config_text(&dir.path().join("admin.sock"), &[server]);
        Self::spawn(dir, &config, None).await
    }

    /// Starts haproxy in the network namespace outside every node ([`OUTSIDE_NETNS`]) with these
    /// servers in one backend: there each node answers for its own pods, as for a real load balancer.
    pub async fn start_outside(servers: &[Server]) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let config = config_text(&dir.path().join("admin.sock"), servers);
        Self::spawn(dir, &config, Some(OUTSIDE_NETNS)).await
    }

    /// Runs `body` with [`HaProxy::start_outside`] for `servers`, and stops haproxy either way.
    pub async fn around_outside(
        servers: &[Server],
        body: impl AsyncFnOnce(&HaProxy) -> anyhow::Result<()>,
    ) -> anyhow::Result<()> {
        let haproxy = Self::start_outside(servers).await?;
        let outcome = body(&haproxy).await;
        haproxy.stop().await?;
        outcome
    }

    /// [`HaProxy::start_outside`] that also forwards the TCP connections it accepts on `frontend` (an address of
    /// the outside namespace) to the backend: the load balancer as clients see it.
    pub async fn start_outside_serving(
        servers: &[Server],
        frontend: SocketAddr,
    ) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let mut config = config_text(&dir.path().join("admin.sock"), servers);
        config.push_str(&frontend_text(frontend));
        Self::spawn(dir, &config, Some(OUTSIDE_NETNS)).await
    }

    /// Starts haproxy with a user's configuration (e.g. `manifests/examples/haproxy.cfg`), adding
    /// only the stats socket the test reads; its backend/server must be `demo`/`node`.
    pub async fn start_with_config(config: &str) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let config = with_stats_socket(config, &dir.path().join("admin.sock"))?;
        Self::spawn(dir, &config, None).await
    }

    async fn spawn(
        dir: tempfile::TempDir,
        config_text: &str,
        netns: Option<&str>,
    ) -> anyhow::Result<Self> {
        let config = dir.path().join("haproxy.cfg");
        std::fs::write(&config, config_text)?;
        let binary = std::env::var_os("HB_HAPROXY")
            .map(PathBuf::from)
            .unwrap_or_else(|| "haproxy".into());
        // nsenter execs haproxy in place, so killing the child kills haproxy.
        let mut command = match netns {
            Some(name) => {
                let path = netns_path(name);
                if !path.exists() {
                    bail!(
                        "the network namespace {} is missing: start the cluster with e2e/cluster/up",
                        path.display()
                    );
                }
                let mut command = Command::new("nsenter");
                command
                    .arg(format!("--net={}", path.display()))
                    .arg("--")
                    .arg(&binary);
                command
            }
            None => Command::new(&binary),
        };
        let child = command
            .arg("-db")
            .arg("-f")
            .arg(&config)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| {
                format!(
                    "cannot start {} (Debian package haproxy; scripts/deps installs it)",
                    binary.display()
                )
            })?;
        let haproxy = Self { child, dir };
        poll_until(
            "haproxy's stats socket",
            Duration::from_secs(10),
            || async { Ok(haproxy.states().await.ok()) },
        )
        .await?;
        Ok(haproxy)
    }

    /// The `status` column of `show stat` for the server [`SERVER`], e.g. `UP`, `DOWN`, `UP 1/2`.
    pub async fn server_status(&self) -> anyhow::Result<String> {
        let stats = self.command("show stat").await?;
        parse_server_status(&stats, BACKEND, SERVER)
    }

    /// Every server of the backend by name, from one `show stat`.
    pub async fn states(&self) -> anyhow::Result<States> {
        let stats = self.command("show stat").await?;
        parse_server_states(&stats, BACKEND)
    }

    /// Polls the servers' states with backoff until `wanted` holds; fails after `timeout` naming
    /// `what` and the last states seen.
    pub async fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        wanted: impl Fn(&States) -> bool,
    ) -> anyhow::Result<States> {
        let last = std::sync::Mutex::new(None);
        let outcome = poll_until(&format!("haproxy to see {what}"), timeout, || async {
            let states = self.states().await?;
            let done = wanted(&states);
            if let Ok(mut slot) = last.lock() {
                *slot = Some(states.clone());
            }
            Ok(done.then_some(states))
        })
        .await;
        let last = last.lock().ok().and_then(|mut slot| slot.take());
        outcome.with_context(|| format!("the servers' last states: {last:?}"))
    }

    /// Reads the servers' states every 100 ms for `window` and fails at the first reading for
    /// which `wanted` does not hold: a state that lasts, not one caught in passing.
    pub async fn hold(
        &self,
        what: &str,
        window: Duration,
        wanted: impl Fn(&States) -> bool,
    ) -> anyhow::Result<()> {
        let until = tokio::time::Instant::now() + window;
        let mut sampler = tokio::time::interval(Duration::from_millis(100));
        while tokio::time::Instant::now() < until {
            sampler.tick().await;
            let states = self.states().await?;
            if !wanted(&states) {
                bail!("haproxy should keep seeing {what} for {window:?}, it sees {states:?}");
            }
        }
        Ok(())
    }

    async fn command(&self, command: &str) -> anyhow::Result<String> {
        let mut stream = UnixStream::connect(self.dir.path().join("admin.sock")).await?;
        stream.write_all(format!("{command}\n").as_bytes()).await?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await?;
        Ok(answer)
    }

    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.child.kill().await?;
        Ok(())
    }
}

fn config_text(socket: &Path, servers: &[Server]) -> String {
    let mut config = format!(
        "global\n\
         \x20 stats socket {socket} mode 600 level admin\n\
         \x20 maxconn 64\n\
         defaults\n\
         \x20 mode tcp\n\
         \x20 timeout connect 1s\n\
         \x20 timeout client 5s\n\
         \x20 timeout server 5s\n\
         \x20 timeout check 1s\n\
         backend {BACKEND}\n\
         \x20 option httpchk GET /health\n\
         \x20 http-check expect status 200\n",
        socket = socket.display()
    );
    for server in servers {
        config.push_str(&format!(
            "  server {} {} check port {} inter 250ms fall 1 rise 1\n",
            server.name,
            SocketAddr::new(server.address, server.traffic_port),
            server.health_port
        ));
    }
    config
}

/// A TCP frontend on `bind` whose connections go to the backend's UP servers, each to one server (no retry on
/// another: a refused or cut connection is the client's failure, so a test sees every one).
fn frontend_text(bind: SocketAddr) -> String {
    format!(
        "frontend {BACKEND}-in\n\
         \x20 bind {bind}\n\
         \x20 default_backend {BACKEND}\n"
    )
}

/// The configuration with `stats socket <socket>` as the first line of its `global` section.
pub fn with_stats_socket(config: &str, socket: &Path) -> anyhow::Result<String> {
    let mut out = String::with_capacity(config.len() + 80);
    let mut added = false;
    for line in config.lines() {
        out.push_str(line);
        out.push('\n');
        if !added && line.trim() == "global" {
            out.push_str(&format!(
                "    stats socket {} mode 600 level admin\n",
                socket.display()
            ));
            added = true;
        }
    }
    if !added {
        bail!("the haproxy configuration has no `global` section to add the stats socket to");
    }
    Ok(out)
}

/// Finds the server's row in `show stat` CSV output and returns its `status` column.
pub fn parse_server_status(csv: &str, backend: &str, server: &str) -> anyhow::Result<String> {
    match parse_server_states(csv, backend)?.remove(server) {
        Some(state) => Ok(state.status),
        None => bail!("haproxy's show stat has no row for {backend}/{server}: {csv:?}"),
    }
}

/// The `status` and `check_status` columns of every server row of `backend` in `show stat`
/// CSV output (the `FRONTEND`/`BACKEND` summary rows left out).
pub fn parse_server_states(csv: &str, backend: &str) -> anyhow::Result<States> {
    let mut lines = csv.lines();
    let header = lines.next().unwrap_or_default().trim_start_matches("# ");
    let column = |wanted: &str| header.split(',').position(|name| name == wanted);
    let (Some(status_column), Some(check_column)) = (column("status"), column("check_status"))
    else {
        bail!("haproxy's show stat has no status or check_status column: {header:?}");
    };
    let mut states = BTreeMap::new();
    for line in lines {
        let fields: Vec<&str> = line.split(',').collect();
        let (Some(&proxy), Some(&server)) = (fields.first(), fields.get(1)) else {
            continue;
        };
        if proxy != backend || server == "BACKEND" || server == "FRONTEND" {
            continue;
        }
        let field = |index: usize| fields.get(index).copied().unwrap_or_default().to_owned();
        states.insert(
            server.to_owned(),
            ServerState {
                status: field(status_column),
                check: field(check_column),
            },
        );
    }
    Ok(states)
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATS: &str = "# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,wretr,wredis,status,weight,check_status\n\
        demo,node,0,0,0,0,,0,0,0,,0,,0,0,0,0,DOWN,1,L7STS\n\
        demo,node-b,0,0,0,0,,0,0,0,,0,,0,0,0,0,UP,1,* L7OK\n\
        demo,BACKEND,0,0,0,0,7,0,0,0,0,0,,0,0,0,0,DOWN,0,\n";

    #[test]
    fn the_status_column_of_the_server_row_is_read_from_show_stat() -> anyhow::Result<()> {
        assert_eq!(parse_server_status(STATS, "demo", "node")?, "DOWN");
        Ok(())
    }

    #[test]
    fn every_server_of_the_backend_is_read_with_its_last_check() -> anyhow::Result<()> {
        let states = parse_server_states(STATS, "demo")?;
        assert_eq!(
            states.keys().collect::<Vec<_>>(),
            ["node", "node-b"],
            "the BACKEND summary row is no server"
        );
        assert!(states["node"].is_down() && !states["node"].is_up());
        assert!(states["node-b"].is_up(), "{:?}", states["node-b"]);
        Ok(())
    }

    #[test]
    fn up_before_any_check_is_not_up() {
        let assumed = ServerState {
            status: "UP".to_owned(),
            check: "INI".to_owned(),
        };
        assert!(!assumed.is_up() && !assumed.is_down());
    }

    #[test]
    fn each_server_is_checked_on_its_own_address_and_health_port() {
        let config = config_text(
            Path::new("/run/x.sock"),
            &[
                Server::new("node-a", [10, 245, 0, 1].into(), 7000, 30083),
                Server::new("node-b", [10, 245, 0, 2].into(), 7000, 30083),
            ],
        );
        assert!(
            config.contains(
                "  server node-a 10.245.0.1:7000 check port 30083 inter 250ms fall 1 rise 1\n"
            ) && config.contains("  server node-b 10.245.0.2:7000 check port 30083 "),
            "{config}"
        );
    }

    #[test]
    fn the_frontend_sends_its_connections_to_the_checked_backend() {
        let text = frontend_text(SocketAddr::from(([10, 245, 0, 6], 17000)));
        assert_eq!(
            text,
            "frontend demo-in\n  bind 10.245.0.6:17000\n  default_backend demo\n"
        );
    }

    #[test]
    fn the_stats_socket_goes_into_the_global_section() -> anyhow::Result<()> {
        let config = with_stats_socket(
            "# lb\nglobal\n    maxconn 256\ndefaults\n",
            Path::new("/run/x.sock"),
        )?;
        assert_eq!(
            config,
            "# lb\nglobal\n    stats socket /run/x.sock mode 600 level admin\n    maxconn 256\ndefaults\n"
        );
        Ok(())
    }

    #[test]
    fn a_missing_server_row_is_an_error_naming_it() {
        let outcome = parse_server_status(STATS, "demo", "other");
        let message = outcome
            .err()
            .map(|error| error.to_string())
            .unwrap_or_default();
        assert!(message.contains("demo/other"), "{message:?}");
    }
}
