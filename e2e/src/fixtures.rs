//! Builders for the demo workload the tests deploy, and questions about the pods that come back.

use std::collections::BTreeMap;
use std::path::PathBuf;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::Pod;
use serde_json::{Value, json};

/// The injected container's name (docs/architecture.md).
pub const AGENT_CONTAINER: &str = "healthbridge-agent";
pub const INJECT: &str = "healthbridge.io/inject";
pub const STATUS: &str = "healthbridge.io/status";
pub const GROUP_LABEL: &str = "healthbridge.io/group";
pub const NODE_PORT: &str = "healthbridge.io/node-port";
/// The demo app's container in every test pod.
pub const APP_CONTAINER: &str = "app";
/// Where scripts/images puts the demo binary in its image.
pub const DEMO_BINARY: &str = "/usr/local/bin/healthbridge-demo";
/// The well-known label every kubelet puts on its Node: its name.
pub const HOSTNAME_LABEL: &str = "kubernetes.io/hostname";

/// A file of this repository (the chart, the examples), found from the e2e crate's own directory.
pub fn repo_path(relative: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(relative)
}

/// A file of `manifests/examples/`, which the examples test applies as a user would.
pub fn example_path(name: &str) -> PathBuf {
    repo_path("manifests/examples").join(name)
}

/// The demo image imported by e2e/run; tagged with the workspace version like every image of ours.
pub fn demo_image() -> String {
    format!("docker.io/healthbridge/demo:{}", env!("CARGO_PKG_VERSION"))
}

/// A demo pod (echo server whose readiness is a marker file) to be customised.
pub fn demo_pod(name: &str) -> DemoPod {
    DemoPod {
        name: name.to_owned(),
        annotations: BTreeMap::new(),
        labels: BTreeMap::from([("app".to_owned(), name.to_owned())]),
        service_account: None,
        node: None,
        one_per_node: false,
    }
}

#[derive(Debug, Clone)]
pub struct DemoPod {
    pub name: String,
    annotations: BTreeMap<String, String>,
    labels: BTreeMap<String, String>,
    service_account: Option<String>,
    node: Option<String>,
    one_per_node: bool,
}

impl DemoPod {
    pub fn annotated(mut self, key: &str, value: &str) -> Self {
        self.annotations.insert(key.to_owned(), value.to_owned());
        self
    }

    /// Opts the pod in with `healthbridge.io/inject: "true"`.
    pub fn opted_in(self) -> Self {
        self.annotated(INJECT, "true")
    }

    /// Opts the pod out with `healthbridge.io/inject: "false"`.
    pub fn opted_out(self) -> Self {
        self.annotated(INJECT, "false")
    }

    /// Pins the nodePort of the health Service with `healthbridge.io/node-port`.
    pub fn with_node_port(self, port: u16) -> Self {
        self.annotated(NODE_PORT, &port.to_string())
    }

    pub fn with_service_account(mut self, name: &str) -> Self {
        self.service_account = Some(name.to_owned());
        self
    }

    /// Schedules the pods on the node `name` only (a `kubernetes.io/hostname` node selector).
    pub fn on_node(mut self, name: &str) -> Self {
        self.node = Some(name.to_owned());
        self
    }

    /// At most one pod of this app per node (required pod anti-affinity on the hostname).
    pub fn one_per_node(mut self) -> Self {
        self.one_per_node = true;
        self
    }

    fn template(&self) -> Value {
        let mut spec = json!({
            "dnsPolicy": "Default",
            "terminationGracePeriodSeconds": 10,
            "securityContext": { "runAsNonRoot": true, "runAsUser": 65532, "runAsGroup": 65532 },
            "containers": [{
                "name": APP_CONTAINER,
                "image": demo_image(),
                "imagePullPolicy": "Never",
                "ports": [
                    { "name": "echo-tcp", "containerPort": 7000, "protocol": "TCP" },
                    { "name": "echo-udp", "containerPort": 7000, "protocol": "UDP" },
                ],
                // The image has no shell: the demo binary itself checks its marker file.
                "readinessProbe": {
                    "exec": { "command": [DEMO_BINARY, "check-ready"] },
                    "periodSeconds": 1,
                    "failureThreshold": 1,
                    "successThreshold": 1,
                },
                "securityContext": {
                    "allowPrivilegeEscalation": false,
                    "readOnlyRootFilesystem": true,
                    "capabilities": { "drop": ["ALL"] },
                },
                "volumeMounts": [{ "name": "tmp", "mountPath": "/tmp" }],
            }],
            "volumes": [{ "name": "tmp", "emptyDir": {} }],
        });
        if let Some(account) = &self.service_account {
            spec["serviceAccountName"] = json!(account);
        }
        if let Some(node) = &self.node {
            spec["nodeSelector"] = json!({ HOSTNAME_LABEL: node });
        }
        if self.one_per_node {
            spec["affinity"] = json!({ "podAntiAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": [{
                    "labelSelector": { "matchLabels": { "app": self.name } },
                    "topologyKey": HOSTNAME_LABEL,
                }],
            }});
        }
        json!({
            "metadata": { "labels": self.labels, "annotations": self.annotations },
            "spec": spec,
        })
    }

    pub fn pod(&self) -> anyhow::Result<Pod> {
        let mut pod = self.template();
        pod["metadata"]["name"] = json!(self.name);
        Ok(serde_json::from_value(pod)?)
    }

    pub fn deployment(&self, replicas: i32) -> anyhow::Result<Deployment> {
        Ok(serde_json::from_value(json!({
            "metadata": { "name": self.name },
            "spec": {
                "replicas": replicas,
                "selector": { "matchLabels": { "app": self.name } },
                "template": self.template(),
            },
        }))?)
    }

    /// A DaemonSet of the pod: one on every node.
    pub fn daemon_set(&self) -> anyhow::Result<DaemonSet> {
        Ok(serde_json::from_value(json!({
            "metadata": { "name": self.name },
            "spec": {
                "selector": { "matchLabels": { "app": self.name } },
                "template": self.template(),
            },
        }))?)
    }
}

/// True if the webhook added its agent, as a native sidecar or as a regular container.
pub fn has_agent(pod: &Pod) -> bool {
    let Some(spec) = &pod.spec else { return false };
    let in_containers = spec.containers.iter().any(|c| c.name == AGENT_CONTAINER);
    let in_init = spec
        .init_containers
        .iter()
        .flatten()
        .any(|c| c.name == AGENT_CONTAINER && c.restart_policy.as_deref() == Some("Always"));
    in_containers || in_init
}

pub fn annotation<'a>(pod: &'a Pod, key: &str) -> Option<&'a str> {
    pod.metadata
        .annotations
        .as_ref()?
        .get(key)
        .map(String::as_str)
}

pub fn label<'a>(pod: &'a Pod, key: &str) -> Option<&'a str> {
    pod.metadata.labels.as_ref()?.get(key).map(String::as_str)
}

/// True if the pod reports the Ready condition True.
pub fn is_ready(pod: &Pod) -> bool {
    condition(pod, "Ready") == Some("True")
}

pub fn condition<'a>(pod: &'a Pod, kind: &str) -> Option<&'a str> {
    let conditions = pod.status.as_ref()?.conditions.as_ref()?;
    conditions
        .iter()
        .find(|c| c.type_ == kind)
        .map(|c| c.status.as_str())
}

/// A one-line summary of a pod for assertion messages.
pub fn describe(pod: &Pod) -> String {
    let containers: Vec<&str> = pod
        .spec
        .iter()
        .flat_map(|s| {
            s.init_containers
                .iter()
                .flatten()
                .chain(s.containers.iter())
        })
        .map(|c| c.name.as_str())
        .collect();
    format!(
        "pod {} (containers {:?}, annotations {:?}, labels {:?})",
        pod.metadata.name.as_deref().unwrap_or("?"),
        containers,
        pod.metadata.annotations,
        pod.metadata.labels
    )
}
