//! Access to the local e2e cluster: the kube client and the pinned kubectl/helm binaries.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, bail};
use k8s_openapi::api::apps::v1::Deployment;
use kube::Client;
use kube::api::{Api, ListParams};
use kube::config::{Config, KubeConfigOptions, Kubeconfig};

/// Where `e2e/cluster/up` writes the admin kubeconfig (see docs/architecture.md).
pub const DEFAULT_KUBECONFIG: &str = "/var/lib/healthbridge-e2e/admin.kubeconfig";
/// Namespace `e2e/run` installs healthbridge into.
pub const DEFAULT_RELEASE_NAMESPACE: &str = "healthbridge-system";

/// The cluster under test, with the paths the CLI tools need.
#[derive(Clone)]
pub struct Cluster {
    pub client: Client,
    pub kubeconfig: PathBuf,
    pub release_namespace: String,
}

impl Cluster {
    /// Connects with `KUBECONFIG` (default: the local cluster's admin kubeconfig).
    pub async fn connect() -> anyhow::Result<Self> {
        let kubeconfig = std::env::var_os("KUBECONFIG")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_KUBECONFIG));
        let file = Kubeconfig::read_from(&kubeconfig).with_context(|| {
            format!(
                "cannot read the kubeconfig {}: start the cluster with `just cluster-up` or set KUBECONFIG",
                kubeconfig.display()
            )
        })?;
        let config = Config::from_custom_kubeconfig(file, &KubeConfigOptions::default()).await?;
        let client = Client::try_from(config)?;
        let release_namespace = std::env::var("HB_E2E_RELEASE_NAMESPACE")
            .unwrap_or_else(|_| DEFAULT_RELEASE_NAMESPACE.to_owned());
        Ok(Self {
            client,
            kubeconfig,
            release_namespace,
        })
    }

    /// Runs kubectl against this cluster and returns its stdout; fails with stderr on a non-zero exit.
    pub fn kubectl(&self, args: &[&str]) -> anyhow::Result<String> {
        run_tool(&tool_path("kubectl"), &self.kubeconfig, args)
    }

    /// Runs helm against this cluster and returns its stdout.
    pub fn helm(&self, args: &[&str]) -> anyhow::Result<String> {
        run_tool(&tool_path("helm"), &self.kubeconfig, args)
    }

    /// The one Deployment of the release namespace: the webhook and its controller.
    pub async fn webhook_deployment(&self) -> anyhow::Result<Deployment> {
        let deployments: Api<Deployment> =
            Api::namespaced(self.client.clone(), &self.release_namespace);
        let mut list = deployments.list(&ListParams::default()).await?.items;
        match list.len() {
            1 => Ok(list.remove(0)),
            n => bail!(
                "expected exactly one Deployment (the webhook) in namespace {}, found {n}: is healthbridge installed (e2e/run)?",
                self.release_namespace
            ),
        }
    }
}

/// The pinned binaries built by e2e/cluster/build (`HB_BIN` overrides the directory).
pub fn tool_path(name: &str) -> PathBuf {
    let dir = std::env::var_os("HB_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap_or_default();
            home.join(".cache/healthbridge/bin")
        });
    dir.join(name)
}

fn run_tool(binary: &PathBuf, kubeconfig: &PathBuf, args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new(binary)
        .args(args)
        .env("KUBECONFIG", kubeconfig)
        .output()
        .with_context(|| {
            format!(
                "cannot run {}: build it with e2e/cluster/build",
                binary.display()
            )
        })?;
    if !output.status.success() {
        bail!(
            "{} {} failed ({}): {}",
            binary.display(),
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}
