//! Test support for the controller: pod fixture builders and an in-process fake API server answering a mock client.
#![allow(dead_code, clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use k8s_openapi::api::core::v1::{Container, ContainerPort, EnvVar, Pod, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use k8s_openapi::jiff::Timestamp;
use kube::client::Body;
use serde_json::{Value, json};

use healthbridge_webhook::keys;
use healthbridge_webhook::trust::{AgentImages, PORT_ENV};

pub mod world;

/// A pod under construction: `pod("web-1").in_namespace("shop").injected().in_group("web").build()`.
pub struct PodBuilder {
    pod: Pod,
}

pub fn pod(name: &str) -> PodBuilder {
    PodBuilder {
        pod: Pod {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                namespace: Some("shop".to_owned()),
                uid: Some(format!("uid-{name}")),
                creation_timestamp: Some(Time(Timestamp::from_second(1_700_000_000).unwrap())),
                ..ObjectMeta::default()
            },
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "app".to_owned(),
                    ..Container::default()
                }],
                ..PodSpec::default()
            }),
            status: None,
        },
    }
}

impl PodBuilder {
    pub fn in_namespace(mut self, namespace: &str) -> Self {
        self.pod.metadata.namespace = Some(namespace.to_owned());
        self
    }

    pub fn with_annotation(mut self, key: &str, value: &str) -> Self {
        self.pod
            .metadata
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(key.to_owned(), value.to_owned());
        self
    }

    pub fn with_label(mut self, key: &str, value: &str) -> Self {
        self.pod
            .metadata
            .labels
            .get_or_insert_with(BTreeMap::new)
            .insert(key.to_owned(), value.to_owned());
        self
    }

    /// What the webhook leaves on a pod it injected: the marker and the agent container with its port.
    pub fn injected(self) -> Self {
        self.injected_on_port(13000)
    }

    /// [`Self::injected`] with the agent listening on `port`.
    pub fn injected_on_port(self, port: u16) -> Self {
        self.with_marker()
            .with_agent(agent_container(AGENT_IMAGE, port))
    }

    /// The annotations the webhook writes, without any agent container: what a pod author can forge.
    pub fn with_marker(self) -> Self {
        self.with_annotation(keys::INJECT, "true")
            .with_annotation(keys::STATUS, keys::STATUS_INJECTED)
    }

    /// Adds `agent` as a native sidecar.
    pub fn with_agent(mut self, agent: Container) -> Self {
        if let Some(spec) = self.pod.spec.as_mut() {
            spec.init_containers
                .get_or_insert_with(Vec::new)
                .push(agent);
        }
        self
    }

    /// The app container declares `port`, as an app serving on it does.
    pub fn app_on_port(mut self, port: u16) -> Self {
        if let Some(app) = self
            .pod
            .spec
            .as_mut()
            .and_then(|spec| spec.containers.first_mut())
        {
            app.ports = Some(vec![ContainerPort {
                container_port: i32::from(port),
                ..ContainerPort::default()
            }]);
        }
        self
    }

    pub fn in_group(self, group: &str) -> Self {
        self.with_label(keys::GROUP_LABEL, group)
    }

    pub fn with_service_account(mut self, name: &str) -> Self {
        if let Some(spec) = self.pod.spec.as_mut() {
            spec.service_account_name = Some(name.to_owned());
        }
        self
    }

    pub fn created_at(mut self, second: i64) -> Self {
        self.pod.metadata.creation_timestamp = Some(Time(Timestamp::from_second(second).unwrap()));
        self
    }

    pub fn owned_by(mut self, kind: &str, name: &str) -> Self {
        self.pod.metadata.owner_references = Some(vec![owner(kind, name, true)]);
        self
    }

    pub fn build(self) -> Pod {
        self.pod
    }
}

/// The agent image the tests' controller trusts.
pub const AGENT_IMAGE: &str = "docker.io/healthbridge/agent:0.1.0";

/// The images the tests' controller trusts: [`AGENT_IMAGE`]'s repository.
pub fn agent_images() -> AgentImages {
    AgentImages::new(AGENT_IMAGE, std::iter::empty::<&str>())
}

/// The agent container as the webhook injects it, listening on `port`.
pub fn agent_container(image: &str, port: u16) -> Container {
    Container {
        name: keys::AGENT_CONTAINER.to_owned(),
        image: Some(image.to_owned()),
        restart_policy: Some("Always".to_owned()),
        ports: Some(vec![ContainerPort {
            name: Some("healthbridge".to_owned()),
            container_port: i32::from(port),
            protocol: Some("TCP".to_owned()),
            ..ContainerPort::default()
        }]),
        env: Some(vec![EnvVar {
            name: PORT_ENV.to_owned(),
            value: Some(port.to_string()),
            ..EnvVar::default()
        }]),
        ..Container::default()
    }
}

/// An ownerReference as Kubernetes controllers write them.
pub fn owner(kind: &str, name: &str, controller: bool) -> OwnerReference {
    OwnerReference {
        api_version: "apps/v1".to_owned(),
        kind: kind.to_owned(),
        name: name.to_owned(),
        uid: format!("uid-{name}"),
        controller: Some(controller),
        block_owner_deletion: Some(true),
    }
}

/// A request the fake API server received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: Method,
    pub path: String,
    pub query: String,
    pub body: Value,
}

impl Recorded {
    pub fn is_write(&self) -> bool {
        self.method != Method::GET
    }

    pub fn is_event(&self) -> bool {
        self.path.contains("/events")
    }
}

/// What the fake API server answers: a status and a JSON body.
pub type Responder = dyn Fn(&Recorded) -> (StatusCode, Value) + Send + Sync;

/// A kube client whose requests are answered in-process by `respond`, and the log of those requests.
pub fn fake_api(
    respond: impl Fn(&Recorded) -> (StatusCode, Value) + Send + Sync + 'static,
) -> (kube::Client, Arc<Mutex<Vec<Recorded>>>) {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let log = Arc::new(Mutex::new(Vec::new()));
    let recorded = log.clone();
    tokio::spawn(async move {
        while let Some((request, send)) = handle.next_request().await {
            let (parts, body) = request.into_parts();
            let bytes = body
                .collect()
                .await
                .map(|collected| collected.to_bytes())
                .unwrap_or_default();
            let request = Recorded {
                method: parts.method.clone(),
                path: parts.uri.path().to_owned(),
                query: parts.uri.query().unwrap_or_default().to_owned(),
                body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            };
            let (status, answer) = respond(&request);
            recorded.lock().unwrap().push(request);
            let response = Response::builder()
                .status(status)
                .header("content-type", "application/json")
                .body(Body::from(serde_json::to_vec(&answer).unwrap()))
                .unwrap();
            send.send_response(response);
        }
    });
    (kube::Client::new(service, "default"), log)
}

/// A Kubernetes `Status` error body.
pub fn status(code: u16, reason: &str, message: &str) -> (StatusCode, Value) {
    (
        StatusCode::from_u16(code).unwrap(),
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code, "reason": reason, "message": message}),
    )
}

/// Answers like an API server that accepts everything: applies and events echo their body (a Service gets
/// nodePort 30001 unless one was pinned), ReplicaSets belong to a Deployment named like them minus the hash.
pub fn accepting(request: &Recorded) -> (StatusCode, Value) {
    match request.method {
        Method::PATCH if request.path.contains("/services/") => {
            let mut body = request.body.clone();
            if body["spec"]["ports"][0]["nodePort"].is_null() {
                body["spec"]["ports"][0]["nodePort"] = json!(30001);
            }
            (StatusCode::OK, body)
        }
        Method::PATCH | Method::POST | Method::PUT => (StatusCode::CREATED, request.body.clone()),
        Method::DELETE => (
            StatusCode::OK,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Success"}),
        ),
        Method::GET if request.path.contains("/replicasets/") => {
            let name = request.path.rsplit('/').next().unwrap_or_default();
            let deployment = name.rsplit_once('-').map_or(name, |(head, _)| head);
            (
                StatusCode::OK,
                json!({
                    "apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
                    "metadata": {"name": name, "namespace": "shop", "uid": format!("uid-{name}"),
                        "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": deployment,
                            "uid": format!("uid-{deployment}"), "controller": true, "blockOwnerDeletion": true}]}
                }),
            )
        }
        _ => status(404, "NotFound", "not found"),
    }
}
