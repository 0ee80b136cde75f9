//! Pure functions from a pod to the Role, RoleBinding and Service it should have, and the check that observed objects already match.

use std::collections::BTreeMap;

pub use healthbridge_contract::service::{NodePortRange, ServiceScope, TrafficPolicy};
use healthbridge_contract::service::{
    ServiceValueError, parse_node_port, parse_scope, parse_traffic_policy,
};
use healthbridge_contract::value::parse_port;
use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde_json::Value;

use super::cached::{PodMarks, PodView};
use super::names::{agent_rbac_name, object_name, pod_service_name, short_hash};
use crate::keys;

/// The agent's port when neither its container nor `healthbridge.io/port` says otherwise.
pub use crate::config::DEFAULT_AGENT_PORT;
/// Name of the Service port, so users can refer to it by name.
pub const SERVICE_PORT_NAME: &str = "health";

/// True when the webhook injected the agent (marker annotation present).
pub fn is_injected(pod: &impl PodMarks) -> bool {
    pod.annotation(keys::STATUS) == Some(keys::STATUS_INJECTED)
}

/// True when the pod asked for the agent by annotation but the webhook did not inject it
/// (the webhook was down and `failurePolicy: Ignore` let the pod through).
pub fn is_uninjected(pod: &impl PodMarks) -> bool {
    pod.annotation(keys::INJECT) == Some("true")
        && !is_injected(pod)
        && pod.meta().deletion_timestamp.is_none()
}

/// What the controller needs to know about a pod that the API server has named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodIdentity {
    pub name: String,
    pub namespace: String,
    pub uid: String,
    pub service_account: String,
}

/// Why a pod cannot be reconciled yet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("the pod has no {0} yet; it is reconciled once the API server assigns one")]
    Missing(&'static str),
}

/// The pod's name, namespace, UID and ServiceAccount (`default` when unset, as the API server defaults it).
pub fn pod_identity(pod: &impl PodView) -> Result<PodIdentity, IdentityError> {
    let meta = pod.meta();
    Ok(PodIdentity {
        name: meta.name.clone().ok_or(IdentityError::Missing("name"))?,
        namespace: meta
            .namespace
            .clone()
            .ok_or(IdentityError::Missing("namespace"))?,
        uid: meta.uid.clone().ok_or(IdentityError::Missing("uid"))?,
        service_account: pod
            .service_account_name()
            .filter(|name| !name.is_empty())
            .unwrap_or("default")
            .to_owned(),
    })
}

/// Labels on every object the controller creates.
fn managed_labels(extra: impl IntoIterator<Item = (String, String)>) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::from([(
        keys::MANAGED_BY_LABEL.to_owned(),
        keys::MANAGED_BY.to_owned(),
    )]);
    labels.extend(extra);
    labels
}

/// Owner reference to the pod: Kubernetes deletes the object with the pod.
/// `blockOwnerDeletion` stays false: setting it would need `update` on `pods/finalizers`.
pub fn pod_owner_reference(pod: &PodIdentity) -> OwnerReference {
    OwnerReference {
        api_version: "v1".to_owned(),
        kind: "Pod".to_owned(),
        name: pod.name.clone(),
        uid: pod.uid.clone(),
        controller: Some(true),
        block_owner_deletion: Some(false),
    }
}

/// Annotation naming the ServiceAccount an agent Role or RoleBinding is for (what housekeeping groups them by).
pub const SERVICE_ACCOUNT_ANNOTATION: &str = "healthbridge.io/service-account";

/// Pod names per agent Role. Pod names are at most 253 characters, so a full Role stays near 1 MB, under etcd's
/// default request limit of 1.5 MiB (`--max-request-bytes`); more pods of one ServiceAccount get more Roles.
pub const MAX_NAMES_PER_ROLE: usize = 4_000;

/// One agent Role and the RoleBinding of it to the ServiceAccount.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentRbac {
    pub role: Role,
    pub binding: RoleBinding,
}

/// The Roles letting the agents of `service_account` in `namespace` read their pods (`get`, `list`, `watch` on
/// exactly these names), each bound to that ServiceAccount only. Names are sorted and cut into chunks of
/// [`MAX_NAMES_PER_ROLE`] (`<sa>-healthbridge-agent`, `-agent-1`, …), so the same pods always give the same objects.
/// `list`/`watch` are authorised by name because the agent lists and watches with `metadata.name=<pod>`.
/// No owner: no single pod owns them; the controller deletes them after their last pod.
pub fn desired_agent_rbac<'a>(
    namespace: &str,
    service_account: &str,
    pod_names: impl IntoIterator<Item = &'a str>,
) -> Vec<AgentRbac> {
    let names: std::collections::BTreeSet<&str> = pod_names.into_iter().collect();
    let names: Vec<&str> = names.into_iter().collect();
    names
        .chunks(MAX_NAMES_PER_ROLE)
        .enumerate()
        .map(|(chunk, names)| {
            let name = agent_rbac_name(service_account, chunk);
            let metadata = ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(namespace.to_owned()),
                labels: Some(managed_labels([])),
                annotations: Some(BTreeMap::from([(
                    SERVICE_ACCOUNT_ANNOTATION.to_owned(),
                    service_account.to_owned(),
                )])),
                ..ObjectMeta::default()
            };
            AgentRbac {
                role: Role {
                    metadata: metadata.clone(),
                    rules: Some(vec![PolicyRule {
                        api_groups: Some(vec![String::new()]),
                        resources: Some(vec!["pods".to_owned()]),
                        resource_names: Some(names.iter().map(|name| (*name).to_owned()).collect()),
                        verbs: vec!["get".to_owned(), "list".to_owned(), "watch".to_owned()],
                        ..PolicyRule::default()
                    }]),
                },
                binding: RoleBinding {
                    metadata,
                    role_ref: RoleRef {
                        api_group: "rbac.authorization.k8s.io".to_owned(),
                        kind: "Role".to_owned(),
                        name,
                    },
                    subjects: Some(vec![Subject {
                        kind: "ServiceAccount".to_owned(),
                        name: service_account.to_owned(),
                        namespace: Some(namespace.to_owned()),
                        api_group: None,
                    }]),
                },
            }
        })
        .collect()
}

/// The pod names an agent Role grants (empty for any other Role).
pub fn granted_pods(role: &Role) -> &[String] {
    match role.rules.as_deref() {
        Some([rule]) => rule.resource_names.as_deref().unwrap_or_default(),
        _ => &[],
    }
}

/// The Service settings a pod asks for with its annotations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceSettings {
    pub port: u16,
    pub node_port: Option<u16>,
    pub traffic_policy: TrafficPolicy,
    pub scope: ServiceScope,
}

/// A bad Service annotation: names the key, then the contract's message (the webhook's denial says the same).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SettingsError {
    #[error("annotation {key}: {why}")]
    Port {
        key: &'static str,
        why: ServiceValueError,
    },
    #[error("annotation {key}: {why}")]
    NodePort {
        key: &'static str,
        why: ServiceValueError,
    },
    #[error("annotation {key}: {why}")]
    TrafficPolicy {
        key: &'static str,
        why: ServiceValueError,
    },
    #[error("annotation {key}: {why}")]
    Scope {
        key: &'static str,
        why: ServiceValueError,
    },
}

impl SettingsError {
    /// The annotation to change.
    pub fn key(&self) -> &'static str {
        match self {
            Self::Port { key, .. }
            | Self::NodePort { key, .. }
            | Self::TrafficPolicy { key, .. }
            | Self::Scope { key, .. } => key,
        }
    }
}

/// Reads the Service annotations; the port comes from the injected agent container first (the truth), then
/// `healthbridge.io/port`, then the default.
pub fn service_settings(
    pod: &impl PodView,
    range: NodePortRange,
) -> Result<ServiceSettings, SettingsError> {
    let port = match pod.agent_facts().declared_port {
        Some(port) => port,
        None => match pod.annotation(keys::PORT) {
            Some(value) => parse_port(value).map_err(|why| SettingsError::Port {
                key: keys::PORT,
                why: why.into(),
            })?,
            None => DEFAULT_AGENT_PORT,
        },
    };
    let node_port = pod
        .annotation(keys::NODE_PORT)
        .map(|value| {
            parse_node_port(value, range).map_err(|why| SettingsError::NodePort {
                key: keys::NODE_PORT,
                why,
            })
        })
        .transpose()?;
    let traffic_policy = pod
        .annotation(keys::TRAFFIC_POLICY)
        .map(|value| {
            parse_traffic_policy(value).map_err(|why| SettingsError::TrafficPolicy {
                key: keys::TRAFFIC_POLICY,
                why,
            })
        })
        .transpose()?
        .unwrap_or_default();
    let scope = pod
        .annotation(keys::SERVICE_SCOPE)
        .map(|value| {
            parse_scope(value).map_err(|why| SettingsError::Scope {
                key: keys::SERVICE_SCOPE,
                why,
            })
        })
        .transpose()?
        .unwrap_or_default();
    Ok(ServiceSettings {
        port,
        node_port,
        traffic_policy,
        scope,
    })
}

/// Value of the per-pod label `healthbridge.io/pod`: the pod name, shortened with a hash when longer than a label value may be.
pub fn pod_label_value(pod_name: &str) -> String {
    const MAX_LABEL_VALUE: usize = 63;
    if pod_name.len() <= MAX_LABEL_VALUE {
        return pod_name.to_owned();
    }
    let hash = short_hash(pod_name);
    let head = pod_name[..MAX_LABEL_VALUE - hash.len() - 1].trim_end_matches(['-', '.']);
    format!("{head}-{hash}")
}

/// First step of finding the top-level workload that owns a pod's group Service.
#[derive(Debug, Clone, PartialEq)]
pub enum WorkloadOwner {
    /// The owner is known: a DaemonSet or StatefulSet, or none (bare pods, Jobs, unknown controllers).
    Resolved(Option<OwnerReference>),
    /// The pod belongs to this ReplicaSet; its own controller (a Deployment, usually) is the workload.
    ViaReplicaSet(OwnerReference),
}

fn controller_of(refs: &[OwnerReference]) -> Option<&OwnerReference> {
    refs.iter().find(|owner| owner.controller == Some(true))
}

fn as_service_owner(owner: &OwnerReference) -> OwnerReference {
    // Not `controller`: the workload's own controller must stay the only one that claims the Service's pods.
    OwnerReference {
        controller: Some(false),
        block_owner_deletion: Some(false),
        ..owner.clone()
    }
}

/// The workload owning a pod, from the pod's ownerReferences.
pub fn workload_owner(pod_owners: &[OwnerReference]) -> WorkloadOwner {
    match controller_of(pod_owners) {
        Some(owner) if owner.api_version == "apps/v1" && owner.kind == "ReplicaSet" => {
            WorkloadOwner::ViaReplicaSet(owner.clone())
        }
        Some(owner)
            if owner.api_version == "apps/v1"
                && matches!(owner.kind.as_str(), "DaemonSet" | "StatefulSet") =>
        {
            WorkloadOwner::Resolved(Some(as_service_owner(owner)))
        }
        _ => WorkloadOwner::Resolved(None),
    }
}

/// The workload behind a ReplicaSet: its Deployment, or the ReplicaSet itself when nothing controls it.
pub fn replica_set_owner(
    replica_set: &OwnerReference,
    replica_set_owners: &[OwnerReference],
) -> OwnerReference {
    match controller_of(replica_set_owners) {
        Some(owner) if owner.api_version == "apps/v1" && owner.kind == "Deployment" => {
            as_service_owner(owner)
        }
        _ => as_service_owner(replica_set),
    }
}

/// Which Service a pod belongs to, what it selects and who owns it.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceTarget {
    pub name: String,
    pub namespace: String,
    pub selector: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
    pub owner: Option<OwnerReference>,
}

/// Why a pod gets no Service.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error(
        "the pod has no {label} label, which the webhook sets on injection: re-create the pod so the webhook sees it"
    )]
    NoGroup { label: &'static str },
}

/// The Service for a pod: per group (owned by the workload, or by nobody and then garbage-collected by the
/// controller) or, with `service-scope: pod`, per pod (owned by the pod, selecting the per-pod label).
pub fn service_target(
    pod: &impl PodMarks,
    identity: &PodIdentity,
    scope: ServiceScope,
    workload: Option<OwnerReference>,
) -> Result<ServiceTarget, TargetError> {
    match scope {
        ServiceScope::Pod => {
            let selector =
                BTreeMap::from([(keys::POD_LABEL.to_owned(), pod_label_value(&identity.name))]);
            Ok(ServiceTarget {
                name: pod_service_name(&identity.name),
                namespace: identity.namespace.clone(),
                labels: managed_labels(selector.clone()),
                selector,
                owner: Some(pod_owner_reference(identity)),
            })
        }
        ServiceScope::Group => {
            let group = pod
                .label(keys::GROUP_LABEL)
                .filter(|group| !group.is_empty())
                .ok_or(TargetError::NoGroup {
                    label: keys::GROUP_LABEL,
                })?;
            let selector = BTreeMap::from([(keys::GROUP_LABEL.to_owned(), group.to_owned())]);
            Ok(ServiceTarget {
                name: object_name(group),
                namespace: identity.namespace.clone(),
                labels: managed_labels(selector.clone()),
                selector,
                owner: workload,
            })
        }
    }
}

/// The NodePort Service for a target with the given settings.
pub fn desired_service(target: &ServiceTarget, settings: &ServiceSettings) -> Service {
    let port = i32::from(settings.port);
    Service {
        metadata: ObjectMeta {
            name: Some(target.name.clone()),
            namespace: Some(target.namespace.clone()),
            labels: Some(target.labels.clone()),
            owner_references: target.owner.clone().map(|owner| vec![owner]),
            ..ObjectMeta::default()
        },
        spec: Some(ServiceSpec {
            type_: Some("NodePort".to_owned()),
            selector: Some(target.selector.clone()),
            external_traffic_policy: Some(settings.traffic_policy.as_str().to_owned()),
            // The agent must stay reachable while its pod is unready: that is exactly when the load balancer
            // needs its 503 (and a draining pod's), not a refused connection.
            publish_not_ready_addresses: Some(true),
            ports: Some(vec![ServicePort {
                name: Some(SERVICE_PORT_NAME.to_owned()),
                protocol: Some("TCP".to_owned()),
                port,
                target_port: Some(IntOrString::Int(port)),
                node_port: settings.node_port.map(i32::from),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

/// Keys whose whole value must be equal: a user-added rule, subject or selector key changes what the object
/// grants or selects, and server-side apply replaces these atomically anyway.
const STRICT_KEYS: [&str; 4] = ["rules", "subjects", "selector", "roleRef"];

/// True when every field of `desired` is present with the same value in `observed`. Fields the API server or
/// other managers add are ignored; list items are matched anywhere in the observed list (others may append
/// ports or owners), except under [`STRICT_KEYS`].
pub fn is_subset(desired: &Value, observed: &Value) -> bool {
    match (desired, observed) {
        (Value::Object(want), Value::Object(have)) => {
            want.iter().all(|(key, value)| match have.get(key) {
                Some(seen) if STRICT_KEYS.contains(&key.as_str()) => value == seen,
                Some(seen) => is_subset(value, seen),
                None => value.is_null(),
            })
        }
        (Value::Array(want), Value::Array(have)) => want
            .iter()
            .all(|item| have.iter().any(|seen| is_subset(item, seen))),
        _ => desired == observed,
    }
}

/// True when applying `desired` would change `observed` (or there is nothing yet).
pub fn needs_apply<T: serde::Serialize>(desired: &T, observed: Option<&T>) -> bool {
    let Some(observed) = observed else {
        return true;
    };
    match (
        serde_json::to_value(desired),
        serde_json::to_value(observed),
    ) {
        (Ok(desired), Ok(observed)) => !is_subset(&desired, &observed),
        _ => true,
    }
}
