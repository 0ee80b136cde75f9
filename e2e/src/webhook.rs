//! The installed webhook: (re)installing the chart with other values and back, its pods, and the certificate each
//! one serves (read over TLS from the pod's address, as the API server sees it).

use std::net::IpAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};

use crate::Cluster;
use crate::admission::{dry_run_create, is_injected};
use crate::fixtures::repo_path;
use crate::poll::poll_until;

/// The release e2e/install installs; with the default fullname every object is named after it.
pub const RELEASE: &str = "healthbridge";
/// Labels of the webhook's pods.
pub const WEBHOOK_PODS: &str = "app.kubernetes.io/name=healthbridge";
/// The webhook's TLS port in its pods (chart value webhook.port).
pub const WEBHOOK_PORT: u16 = 8443;

/// The chart in this checkout.
pub fn chart() -> anyhow::Result<String> {
    let path = repo_path("charts/healthbridge");
    path.to_str()
        .map(str::to_owned)
        .context("the repository's path is not UTF-8")
}

/// `helm upgrade --install` of the release with the chart's defaults plus `args` (`--set …`), `--reset-values` so
/// that nothing an earlier upgrade set stays, waiting for the roll.
pub fn install_with(cluster: &Cluster, args: &[&str]) -> anyhow::Result<()> {
    let chart = chart()?;
    let mut all = vec![
        "upgrade",
        "--install",
        RELEASE,
        &chart,
        "--namespace",
        &cluster.release_namespace,
        "--create-namespace",
        "--reset-values",
        "--wait",
        "--timeout",
        "5m",
    ];
    all.extend_from_slice(args);
    cluster.helm(&all)?;
    Ok(())
}

/// What e2e/install does, with `--reset-values`: a bare `helm upgrade` would reuse the values a test changed.
pub fn install_with_default_values(cluster: &Cluster) -> anyhow::Result<()> {
    install_with(cluster, &[])
}

/// Puts the default install back when dropped (a failed assertion, a panic), so the test binaries after this one
/// still find healthbridge as e2e/install left it.
pub struct RestoreInstallOnDrop {
    cluster: Cluster,
    armed: bool,
}

impl RestoreInstallOnDrop {
    pub fn new(cluster: Cluster) -> Self {
        Self {
            cluster,
            armed: true,
        }
    }

    /// Restores now, reporting the outcome.
    pub fn restore(mut self) -> anyhow::Result<()> {
        self.armed = false;
        install_with_default_values(&self.cluster)
    }
}

impl Drop for RestoreInstallOnDrop {
    fn drop(&mut self) {
        if self.armed
            && let Err(error) = install_with_default_values(&self.cluster)
        {
            eprintln!("could not restore the healthbridge install: {error:#}");
        }
    }
}

/// The webhook's pods.
pub async fn webhook_pods(cluster: &Cluster) -> anyhow::Result<Vec<Pod>> {
    let pods: Api<Pod> = Api::namespaced(cluster.client.clone(), &cluster.release_namespace);
    Ok(pods
        .list(&ListParams::default().labels(WEBHOOK_PODS))
        .await?
        .items)
}

/// Waits until a dry-run create in `pods`' namespace comes back injected (the API server has taken up a new
/// caBundle and the webhook serves a matching certificate).
pub async fn wait_until_injecting(pods: &Api<Pod>, timeout: Duration) -> anyhow::Result<()> {
    poll_until("the webhook to inject a dry-run pod", timeout, || async {
        Ok(dry_run_create(pods, "injecting")
            .await
            .ok()
            .filter(is_injected)
            .map(|_| ()))
    })
    .await
}

/// The SHA-256 fingerprint (`openssl x509 -fingerprint`) of a PEM certificate.
pub fn fingerprint(pem: &[u8]) -> anyhow::Result<String> {
    openssl(&["x509", "-noout", "-fingerprint", "-sha256"], pem)
}

/// The fingerprint of the certificate served on `address:port` (`openssl s_client`, SNI the Service name).
pub fn served_fingerprint(address: IpAddr, port: u16, server_name: &str) -> anyhow::Result<String> {
    let connect = match address {
        IpAddr::V4(v4) => format!("{v4}:{port}"),
        IpAddr::V6(v6) => format!("[{v6}]:{port}"),
    };
    let chain = openssl(
        &["s_client", "-connect", &connect, "-servername", server_name],
        b"",
    )?;
    fingerprint(chain.as_bytes())
}

/// The fingerprints each webhook pod serves now, by pod name (pods without an address or a ready answer skipped).
pub async fn served_by_each_pod(
    cluster: &Cluster,
    server_name: &str,
) -> anyhow::Result<Vec<(String, String)>> {
    let mut served = Vec::new();
    for pod in webhook_pods(cluster).await? {
        if pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let name = pod.metadata.name.clone().unwrap_or_default();
        let Some(ip) = pod.status.as_ref().and_then(|s| s.pod_ip.as_deref()) else {
            continue;
        };
        let address: IpAddr = ip
            .parse()
            .with_context(|| format!("pod {name} has IP {ip}"))?;
        served.push((
            name,
            served_fingerprint(address, WEBHOOK_PORT, server_name)?,
        ));
    }
    Ok(served)
}

fn openssl(args: &[&str], input: &[u8]) -> anyhow::Result<String> {
    use std::io::Write;
    // A pod address that went away must not hang the poll: s_client gets 10 s (coreutils' timeout).
    let mut child = Command::new("timeout")
        .arg("10")
        .arg("openssl")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("openssl (Debian package openssl) must be installed")?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(input)?;
    }
    let output = child.wait_with_output()?;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() && !args.contains(&"s_client") {
        bail!(
            "openssl {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    if args.contains(&"s_client") && !stdout.contains("BEGIN CERTIFICATE") {
        bail!(
            "openssl {args:?} got no certificate: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(stdout.trim().to_owned())
}
