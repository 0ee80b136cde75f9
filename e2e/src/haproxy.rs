//! A real HAProxy (the Debian package) as the load balancer that knows nothing of Kubernetes.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::process::{Child, Command};

use crate::poll::poll_until;

pub const BACKEND: &str = "demo";
pub const SERVER: &str = "node";

/// A running haproxy process whose only backend health-checks `GET /health` on a NodePort.
pub struct HaProxy {
    child: Child,
    dir: tempfile::TempDir,
}

impl HaProxy {
    /// Starts haproxy with `server node 127.0.0.1:<traffic_port> check port <health_port>`: the
    /// traffic goes to the app's port, the check to the health endpoint's NodePort.
    pub async fn start(traffic_port: u16, health_port: u16) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let socket = dir.path().join("admin.sock");
        let config = config_text(&socket, traffic_port, health_port);
        Self::spawn(dir, &config).await
    }

    /// Starts haproxy with a user's configuration (e.g. `manifests/examples/haproxy.cfg`), adding
    /// only the stats socket the test reads; its backend/server must be `demo`/`node`.
    pub async fn start_with_config(config: &str) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let config = with_stats_socket(config, &dir.path().join("admin.sock"))?;
        Self::spawn(dir, &config).await
    }

    async fn spawn(dir: tempfile::TempDir, config_text: &str) -> anyhow::Result<Self> {
        let config = dir.path().join("haproxy.cfg");
        std::fs::write(&config, config_text)?;
        let binary = std::env::var_os("HB_HAPROXY")
            .map(PathBuf::from)
            .unwrap_or_else(|| "haproxy".into());
        let child = Command::new(&binary)
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
            || async { Ok(haproxy.server_status().await.ok()) },
        )
        .await?;
        Ok(haproxy)
    }

    /// The `status` column of `show stat` for the backend's server, e.g. `UP`, `DOWN`, `UP 1/2`.
    pub async fn server_status(&self) -> anyhow::Result<String> {
        let stats = self.command("show stat").await?;
        parse_server_status(&stats, BACKEND, SERVER)
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

fn config_text(socket: &Path, traffic_port: u16, health_port: u16) -> String {
    format!(
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
         \x20 http-check expect status 200\n\
         \x20 server {SERVER} 127.0.0.1:{traffic_port} check port {health_port} inter 250ms fall 1 rise 1\n",
        socket = socket.display()
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
    let mut lines = csv.lines();
    let header = lines.next().unwrap_or_default().trim_start_matches("# ");
    let Some(status_column) = header.split(',').position(|name| name == "status") else {
        bail!("haproxy's show stat has no status column: {header:?}");
    };
    for line in lines {
        let fields: Vec<&str> = line.split(',').collect();
        if fields.first() == Some(&backend)
            && fields.get(1) == Some(&server)
            && let Some(status) = fields.get(status_column)
        {
            return Ok((*status).to_owned());
        }
    }
    bail!("haproxy's show stat has no row for {backend}/{server}: {csv:?}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATS: &str = "# pxname,svname,qcur,qmax,scur,smax,slim,stot,bin,bout,dreq,dresp,ereq,econ,eresp,wretr,wredis,status,weight\n\
        demo,node,0,0,0,0,,0,0,0,,0,,0,0,0,0,DOWN,1\n\
        demo,BACKEND,0,0,0,0,7,0,0,0,0,0,,0,0,0,0,DOWN,0\n";

    #[test]
    fn the_status_column_of_the_server_row_is_read_from_show_stat() -> anyhow::Result<()> {
        assert_eq!(parse_server_status(STATS, "demo", "node")?, "DOWN");
        Ok(())
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
