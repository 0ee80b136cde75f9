//! One test's world: a fresh namespace, removed afterwards, with diagnostics printed when the test fails.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use k8s_openapi::api::core::v1::{Namespace, Pod, Service, ServiceAccount};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use serde_json::json;

use crate::cluster::Cluster;
use crate::fixtures::{
    AGENT_CONTAINER, APP_CONTAINER, DEMO_BINARY, DemoPod, example_path, is_ready,
};
use crate::poll::poll_until;

/// A test's namespace on the cluster, with the client scoped to it.
#[derive(Clone)]
pub struct Scenario {
    pub cluster: Cluster,
    pub namespace: String,
}

impl Scenario {
    /// Runs `body` in a new namespace named after `prefix`; prints diagnostics if it fails and
    /// deletes the namespace either way.
    pub async fn run<F, Fut>(prefix: &str, body: F) -> anyhow::Result<()>
    where
        F: FnOnce(Scenario) -> Fut,
        Fut: Future<Output = anyhow::Result<()>>,
    {
        Self::run_with_labels(prefix, BTreeMap::new(), body).await
    }

    /// Like [`Scenario::run`], with labels on the namespace (e.g. the namespace-wide opt-in).
    pub async fn run_with_labels<F, Fut>(
        prefix: &str,
        labels: BTreeMap<String, String>,
        body: F,
    ) -> anyhow::Result<()>
    where
        F: FnOnce(Scenario) -> Fut,
        Fut: Future<Output = anyhow::Result<()>>,
    {
        let cluster = Cluster::connect().await?;
        let scenario = Scenario::create(cluster, prefix, labels).await?;
        let outcome = body(scenario.clone()).await;
        if outcome.is_err() {
            scenario.print_diagnostics().await;
        }
        let cleanup = scenario.delete().await;
        outcome?;
        cleanup
    }

    async fn create(
        cluster: Cluster,
        prefix: &str,
        labels: BTreeMap<String, String>,
    ) -> anyhow::Result<Self> {
        let namespace = format!("e2e-{prefix}-{}", unique_suffix());
        let namespaces: Api<Namespace> = Api::all(cluster.client.clone());
        let object: Namespace = serde_json::from_value(json!({
            "metadata": { "name": namespace, "labels": labels },
        }))?;
        namespaces
            .create(&PostParams::default(), &object)
            .await
            .with_context(|| format!("cannot create namespace {namespace}"))?;
        // Pods are refused until the controller-manager has made the namespace's default ServiceAccount.
        let accounts: Api<ServiceAccount> = Api::namespaced(cluster.client.clone(), &namespace);
        poll_until(
            "the default ServiceAccount",
            Duration::from_secs(60),
            || async { Ok(accounts.get_opt("default").await?) },
        )
        .await?;
        Ok(Self { cluster, namespace })
    }

    async fn delete(&self) -> anyhow::Result<()> {
        let namespaces: Api<Namespace> = Api::all(self.cluster.client.clone());
        namespaces
            .delete(&self.namespace, &DeleteParams::background())
            .await
            .with_context(|| format!("cannot delete namespace {}", self.namespace))?;
        Ok(())
    }

    /// An API of a namespaced kind in this scenario's namespace.
    pub fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        Api::namespaced(self.cluster.client.clone(), &self.namespace)
    }

    /// `kubectl -n <namespace> …`
    pub fn kubectl(&self, args: &[&str]) -> anyhow::Result<String> {
        let mut all = vec!["-n", self.namespace.as_str()];
        all.extend_from_slice(args);
        self.cluster.kubectl(&all)
    }

    /// `kubectl -n <namespace> apply -f manifests/examples/<name>`, as the example's comment tells a user.
    pub fn apply_example(&self, name: &str) -> anyhow::Result<String> {
        let path = example_path(name);
        let path = path
            .to_str()
            .context("the repository's path is not UTF-8")?;
        self.kubectl(&["apply", "-f", path])
    }

    /// The nodePort of the health Service `<group>-healthbridge` the controller makes for a group.
    pub async fn health_node_port(&self, group: &str) -> anyhow::Result<u16> {
        let services: Api<Service> = self.api();
        let name = format!("{group}-healthbridge");
        poll_until(
            &format!("the Service {name} with a nodePort"),
            Duration::from_secs(60),
            || async {
                let service = services.get_opt(&name).await?;
                let port = service
                    .and_then(|service| service.spec)
                    .and_then(|spec| spec.ports)
                    .and_then(|ports| ports.into_iter().find_map(|port| port.node_port));
                Ok(port.map(u16::try_from).transpose()?)
            },
        )
        .await
    }

    /// Creates the pod and returns it as admitted (after every mutating webhook).
    pub async fn create_pod(&self, pod: &DemoPod) -> anyhow::Result<Pod> {
        let pods: Api<Pod> = self.api();
        pods.create(&PostParams::default(), &pod.pod()?)
            .await
            .with_context(|| format!("cannot create pod {}", pod.name))
    }

    /// Waits until the pod `name` satisfies `predicate`, described by `what` in the timeout error.
    pub async fn wait_for_pod(
        &self,
        name: &str,
        what: &str,
        timeout: Duration,
        predicate: impl Fn(&Pod) -> bool,
    ) -> anyhow::Result<Pod> {
        let pods: Api<Pod> = self.api();
        poll_until(&format!("pod {name} {what}"), timeout, || async {
            Ok(pods.get_opt(name).await?.filter(|pod| predicate(pod)))
        })
        .await
    }

    /// Waits for the first pod labelled `app=<app>` (the pods of a demo Deployment).
    pub async fn wait_for_pod_of(&self, app: &str, timeout: Duration) -> anyhow::Result<Pod> {
        let pods: Api<Pod> = self.api();
        let selector = ListParams::default().labels(&format!("app={app}"));
        poll_until(&format!("a pod of {app}"), timeout, || async {
            Ok(pods.list(&selector).await?.items.into_iter().next())
        })
        .await
    }

    /// Waits for a Ready pod among those matching the label `selector` (e.g. an example's pods).
    pub async fn wait_for_ready_pod(
        &self,
        selector: &str,
        timeout: Duration,
    ) -> anyhow::Result<Pod> {
        let pods: Api<Pod> = self.api();
        let list_params = ListParams::default().labels(selector);
        poll_until(&format!("a Ready pod with {selector}"), timeout, || async {
            Ok(pods
                .list(&list_params)
                .await?
                .items
                .into_iter()
                .find(is_ready))
        })
        .await
    }

    /// Makes the demo app of `pod` ready or unready through its marker file (`kubectl exec`).
    pub fn set_app_ready(&self, pod: &str, ready: bool) -> anyhow::Result<()> {
        self.set_container_ready(pod, APP_CONTAINER, ready)
    }

    /// Like [`Scenario::set_app_ready`] for a demo container with another name (pods with several).
    pub fn set_container_ready(
        &self,
        pod: &str,
        container: &str,
        ready: bool,
    ) -> anyhow::Result<()> {
        let command = if ready { "set-ready" } else { "rm-ready" };
        self.kubectl(&["exec", pod, "-c", container, "--", DEMO_BINARY, command])?;
        Ok(())
    }

    /// Prints what a reader needs to see why a test failed: pods, events, agent and webhook logs.
    pub async fn print_diagnostics(&self) {
        eprintln!("==== diagnostics for namespace {} ====", self.namespace);
        for args in [
            vec!["get", "pods,services,roles,rolebindings", "-o", "wide"],
            vec!["get", "events", "--sort-by=.lastTimestamp"],
            vec!["get", "pods", "-o", "yaml"],
        ] {
            print_command(&args.join(" "), self.kubectl(&args));
        }
        let pods: Api<Pod> = self.api();
        if let Ok(list) = pods.list(&ListParams::default()).await {
            for pod in list.items {
                let name = pod.metadata.name.unwrap_or_default();
                let args = ["logs", name.as_str(), "-c", AGENT_CONTAINER, "--tail=50"];
                print_command(&format!("agent logs of {name}"), self.kubectl(&args));
            }
        }
        let release = self.cluster.release_namespace.as_str();
        let args = [
            "-n",
            release,
            "logs",
            "--all-containers",
            "--prefix",
            "--tail=50",
            "-l",
            "app.kubernetes.io/name=healthbridge",
        ];
        print_command("webhook logs", self.cluster.kubectl(&args));
    }
}

fn print_command(title: &str, output: anyhow::Result<String>) {
    match output {
        Ok(text) => eprintln!("---- {title}\n{text}"),
        Err(error) => eprintln!("---- {title}: {error:#}"),
    }
}

fn unique_suffix() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{:x}{:x}", std::process::id() % 0xfff, nanos % 0xfffff)
}
