//! The injection decision and its one RFC 6902 patch, computed from the pod alone (pure, no IO).

use std::fmt;

use healthbridge_contract::env;
use healthbridge_contract::quantity::{Quantity, parse_quantity};
use json_patch::{AddOperation, Patch, PatchOperation};
use jsonptr::PointerBuf;
use k8s_openapi::api::core::v1::{Container, Pod};
use serde_json::{Value, json};

use crate::annotations::{self, InvalidAnnotation, PodSettings};
use crate::config::InjectionConfig;
use crate::group::{default_group_of, group_of};
use crate::keys;
use crate::trust::verify_agent;

/// Which webhook entry called us, i.e. how the pod opts in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OptIn {
    /// `POST /mutate`: the pod must carry `healthbridge.io/inject: "true"`.
    Annotation,
    /// `POST /mutate-namespace`: the namespace is labelled; the pod may opt out with `"false"`.
    Namespace,
}

/// What the admission request tells beyond the pod itself.
#[derive(Debug, Clone, Copy)]
pub struct AdmissionContext<'a> {
    /// Namespace of the request (a new pod's own `metadata.namespace` is often empty).
    pub namespace: &'a str,
    pub opt_in: OptIn,
    /// Whether the cluster runs native sidecars (Kubernetes ≥ 1.29); used by `nativeSidecar: auto`.
    pub cluster_supports_native_sidecar: bool,
    /// Whether the cluster has the preStop `sleep` action (Kubernetes ≥ 1.30); needed by `drain-delay`.
    pub cluster_supports_sleep_action: bool,
}

/// Why a pod is admitted unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
    NotOptedIn,
    OptedOut,
    ExcludedNamespace,
    AlreadyInjected,
}

impl SkipReason {
    /// Short label used in metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::NotOptedIn => "not_opted_in",
            Self::OptedOut => "opted_out",
            Self::ExcludedNamespace => "excluded_namespace",
            Self::AlreadyInjected => "already_injected",
        }
    }
}

/// What to do with an admissible pod.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    Inject {
        patch: Patch,
        group: String,
        warnings: Vec<String>,
    },
    Skip {
        reason: SkipReason,
        warnings: Vec<String>,
    },
}

/// Why a pod is refused; the message says what to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DenyReason {
    #[error("{}", join(.0))]
    InvalidAnnotations(Vec<InvalidAnnotation>),
    #[error(
        "the healthbridge agent's port {port} is already declared by container {container:?} (port {port_name:?}); set the annotation {annotation} to a free port"
    )]
    PortCollision {
        port: u16,
        container: String,
        port_name: String,
        annotation: &'static str,
    },
    #[error("annotation {annotation}: {name:?} is not a container of this pod; expected one of: {}", .known.join(", "))]
    UnknownTargetContainer {
        annotation: &'static str,
        name: String,
        known: Vec<String>,
    },
    #[error(
        "annotation {annotation}=injected is written by the healthbridge webhook only, and this pod was not injected by it: {reason}; remove the annotation (and any healthbridge.io/group label) and opt in with {}: \"true\"",
        keys::INJECT
    )]
    ForgedMarker {
        annotation: &'static str,
        reason: String,
    },
    #[error(
        "label {label} is set by healthbridge only (the webhook and controller select pods by it): remove it from the pod (template); to name the group use the annotation {}",
        keys::SERVICE
    )]
    ReservedLabel { label: &'static str },
    #[error(
        "annotation {annotation}: {image:?} is not from an allowed agent image repository ({allowed}); use one of them, or ask the cluster admin to add the repository to the webhook's --allowed-agent-images"
    )]
    AgentImageNotAllowed {
        annotation: &'static str,
        image: String,
        allowed: String,
    },
    #[error(
        "the agent's {resource} request {request} is above its limit {limit}; lower {request_key} or raise {limit_key}"
    )]
    RequestAboveLimit {
        resource: &'static str,
        request: String,
        limit: String,
        request_key: &'static str,
        limit_key: &'static str,
    },
    #[error(
        "annotation {annotation}: {delay}s is not shorter than the pod's terminationGracePeriodSeconds ({grace}s), so the kubelet would kill the app before it stops on its own; lower the delay or raise terminationGracePeriodSeconds (the delay plus the app's own shutdown time must fit)"
    )]
    DrainDelayNotBelowGracePeriod {
        annotation: &'static str,
        delay: u32,
        grace: i64,
    },
}

fn join(invalid: &[InvalidAnnotation]) -> String {
    invalid
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

impl DenyReason {
    /// Short label used in metrics and logs.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::InvalidAnnotations(_) => "invalid_annotation",
            Self::PortCollision { .. } => "port_collision",
            Self::UnknownTargetContainer { .. } => "unknown_target_container",
            Self::RequestAboveLimit { .. } => "request_above_limit",
            Self::ForgedMarker { .. } => "forged_marker",
            Self::ReservedLabel { .. } => "reserved_label",
            Self::AgentImageNotAllowed { .. } => "agent_image_not_allowed",
            Self::DrainDelayNotBelowGracePeriod { .. } => "drain_delay_not_below_grace_period",
        }
    }
}

/// Name of the projected token volume added when the pod has none the agent can use.
pub const TOKEN_VOLUME: &str = "healthbridge-agent-token";
/// Where Kubernetes clients look for the service-account token.
pub const TOKEN_MOUNT_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// Name of the agent's container port.
pub const PORT_NAME: &str = "healthbridge";
/// The uid/gid the agent image runs as.
const AGENT_UID: i64 = 65532;
/// The pod's grace period when it sets none (the API server's default).
const DEFAULT_GRACE_PERIOD_SECONDS: i64 = 30;

/// Decides whether and how to inject the agent into `pod`; the cost depends only on the
/// number of containers, ports and volumes, never on env vars or other pod content.
pub fn patch_for(
    pod: &Pod,
    cfg: &InjectionConfig,
    ctx: &AdmissionContext<'_>,
) -> Result<Decision, DenyReason> {
    let namespace = pod
        .metadata
        .namespace
        .as_deref()
        .filter(|ns| !ns.is_empty())
        .unwrap_or(ctx.namespace);
    // The request's namespace is the one the API server stands for; the object's may say otherwise. Either excluded is enough.
    if cfg.is_excluded(namespace) || cfg.is_excluded(ctx.namespace) {
        return Ok(skip(SkipReason::ExcludedNamespace, Vec::new()));
    }
    let settings = annotations::parse(pod.metadata.annotations.as_ref(), cfg.node_port_range)
        .map_err(DenyReason::InvalidAnnotations)?;
    if settings.marked_injected {
        // Our own re-invocation (or a copy of an injected pod) carries the agent exactly as we inject it; a marker
        // without that is a pod author's attempt to have the controller publish a port for an uninjected pod.
        return match injected_as_we_inject(pod, cfg) {
            Ok(()) => Ok(skip(SkipReason::AlreadyInjected, Vec::new())),
            Err(reason) => Err(DenyReason::ForgedMarker {
                annotation: keys::STATUS,
                reason,
            }),
        };
    }
    if has_agent_container(pod) {
        return Ok(skip(SkipReason::AlreadyInjected, Vec::new()));
    }
    if let Some(label) = [keys::GROUP_LABEL, keys::POD_LABEL]
        .into_iter()
        .find(|label| {
            pod.metadata
                .labels
                .as_ref()
                .is_some_and(|l| l.contains_key(*label))
        })
    {
        return Err(DenyReason::ReservedLabel { label });
    }
    let mut warnings = settings.warnings.clone();
    match (ctx.opt_in, settings.inject) {
        (_, Some(false)) => return Ok(skip(SkipReason::OptedOut, warnings)),
        (OptIn::Annotation, None) => {
            if has_settings(pod) {
                warnings.push(format!(
                    "healthbridge.io/* settings are present but the pod is not opted in: add the annotation {}: \"true\"",
                    keys::INJECT
                ));
            }
            return Ok(skip(SkipReason::NotOptedIn, warnings));
        }
        _ => {}
    }

    let spec = pod.spec.as_ref();
    let containers = spec.map(|s| s.containers.as_slice()).unwrap_or_default();
    let init_containers = spec
        .and_then(|s| s.init_containers.as_deref())
        .unwrap_or_default();
    let port = settings.port.unwrap_or(cfg.agent_port);
    check_port_free(port, containers.iter().chain(init_containers))?;
    if let Some(target) = &settings.target_container {
        let sidecars = init_containers
            .iter()
            .filter(|c| c.restart_policy.as_deref() == Some("Always"));
        let known: Vec<String> = containers
            .iter()
            .chain(sidecars)
            .map(|c| c.name.clone())
            .collect();
        if !known.contains(target) {
            return Err(DenyReason::UnknownTargetContainer {
                annotation: keys::TARGET_CONTAINER,
                name: target.clone(),
                known,
            });
        }
    }
    if let Some(image) = &settings.agent_image
        && !cfg.agent_images.allows(image)
    {
        return Err(DenyReason::AgentImageNotAllowed {
            annotation: keys::AGENT_IMAGE,
            image: image.clone(),
            allowed: cfg.agent_images.to_string(),
        });
    }
    let resources = resources(&settings, cfg)?;
    if let Some(claimed) = claimed_group(pod) {
        warnings.push(format!(
            "{}={claimed:?}: a group belongs to one workload; if pods of another owner already hold group {claimed:?}, the controller leaves its Service unchanged and reports GroupClaimed on this pod, naming that owner",
            keys::SERVICE
        ));
    }

    let host_network = spec.and_then(|s| s.host_network).unwrap_or(false);
    if host_network {
        warnings.push(format!(
            "the pod uses hostNetwork: the healthbridge agent binds port {port} on the node itself; change {} if it is taken there",
            keys::PORT
        ));
    }
    let native = settings
        .native_sidecar
        .unwrap_or_else(|| cfg.use_native_sidecar(ctx.cluster_supports_native_sidecar));
    let restart_policy = spec
        .and_then(|s| s.restart_policy.as_deref())
        .unwrap_or("Always");
    if !native && restart_policy != "Always" {
        warnings.push(format!(
            "the agent is a regular container, so this restartPolicy {restart_policy} pod does not complete while the agent runs; set {}: \"true\" on Kubernetes ≥ 1.29",
            keys::NATIVE_SIDECAR
        ));
    }

    let existing_token_volume = spec
        .and_then(|s| s.volumes.as_deref())
        .unwrap_or_default()
        .iter()
        .find(|v| v.name.starts_with("kube-api-access-") && v.projected.is_some())
        .map(|v| v.name.clone());
    let token_volume = existing_token_volume
        .clone()
        .unwrap_or_else(|| TOKEN_VOLUME.to_owned());

    let drain = match settings.drain_delay {
        Some(delay) => drain_delay(pod, delay, ctx, &mut warnings)?,
        None => Drain::default(),
    };

    let group = group_of(pod);
    let mut agent = agent_container(&settings, cfg, port, resources, native, &token_volume);
    // A regular-container agent gets its SIGTERM with the app's: it waits as long, so the load balancer reads the
    // unhealthy status for the whole delay. A native sidecar is stopped only after every app container has exited.
    if let (Some(pre_stop), false) = (&drain.pre_stop, native) {
        agent["lifecycle"] = json!({ "preStop": pre_stop });
    }
    let mut ops = Vec::with_capacity(4 + drain.ops.len());
    ops.extend(drain.ops);
    add_to_map(
        &mut ops,
        "annotations",
        pod.metadata.annotations.is_some(),
        keys::STATUS,
        json!(keys::STATUS_INJECTED),
    );
    add_to_map(
        &mut ops,
        "labels",
        pod.metadata.labels.is_some(),
        keys::GROUP_LABEL,
        json!(group),
    );
    if native {
        append(
            &mut ops,
            "initContainers",
            spec.and_then(|s| s.init_containers.as_ref()).is_some(),
            agent,
        );
    } else {
        append(&mut ops, "containers", spec.is_some(), agent);
    }
    if existing_token_volume.is_none() {
        let volumes_exist = spec.and_then(|s| s.volumes.as_ref()).is_some();
        append(&mut ops, "volumes", volumes_exist, token_volume_spec());
    }
    Ok(Decision::Inject {
        patch: Patch(ops),
        group,
        warnings,
    })
}

/// What `drain-delay` adds: a preStop sleep on every app container that has no preStop hook of its own.
#[derive(Default)]
struct Drain {
    ops: Vec<PatchOperation>,
    /// The hook, when the cluster can run it; also given to a regular-container agent.
    pre_stop: Option<Value>,
}

/// The app containers keep serving for `delay` after deletion while the agent, which sees the deletion on its watch,
/// already answers the unhealthy status: the load balancer takes the pod out (`fall × inter`) before the app stops.
fn drain_delay(
    pod: &Pod,
    delay: u32,
    ctx: &AdmissionContext<'_>,
    warnings: &mut Vec<String>,
) -> Result<Drain, DenyReason> {
    let spec = pod.spec.as_ref();
    let grace = spec
        .and_then(|s| s.termination_grace_period_seconds)
        .unwrap_or(DEFAULT_GRACE_PERIOD_SECONDS);
    if i64::from(delay) >= grace {
        return Err(DenyReason::DrainDelayNotBelowGracePeriod {
            annotation: keys::DRAIN_DELAY,
            delay,
            grace,
        });
    }
    if !ctx.cluster_supports_sleep_action {
        warnings.push(format!(
            "{}: this cluster has no preStop sleep action (Kubernetes ≥ 1.30), and an app image may have no `sleep` to run, so no delay was added; give the app containers a preStop hook that waits {delay}s",
            keys::DRAIN_DELAY
        ));
        return Ok(Drain::default());
    }
    let pre_stop = json!({ "sleep": { "seconds": delay } });
    let mut ops = Vec::new();
    for (index, container) in spec
        .map(|s| s.containers.as_slice())
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        let index = index.to_string();
        match &container.lifecycle {
            Some(lifecycle) if lifecycle.pre_stop.is_some() => warnings.push(format!(
                "{}: container {:?} has its own preStop hook, which runs instead of the {delay}s sleep; make it keep the app serving for {delay}s",
                keys::DRAIN_DELAY,
                container.name
            )),
            Some(_) => add(
                &mut ops,
                PointerBuf::from_tokens(["spec", "containers", &index, "lifecycle", "preStop"]),
                pre_stop.clone(),
            ),
            None => add(
                &mut ops,
                PointerBuf::from_tokens(["spec", "containers", &index, "lifecycle"]),
                json!({ "preStop": pre_stop }),
            ),
        }
    }
    Ok(Drain {
        ops,
        pre_stop: Some(pre_stop),
    })
}

fn skip(reason: SkipReason, warnings: Vec<String>) -> Decision {
    Decision::Skip { reason, warnings }
}

/// Whether a pod that carries the marker has the agent as we inject it, in the group we would give it.
fn injected_as_we_inject(pod: &Pod, cfg: &InjectionConfig) -> Result<(), String> {
    verify_agent(pod, &cfg.agent_images).map_err(|untrusted| untrusted.to_string())?;
    let label = pod
        .metadata
        .labels
        .as_ref()
        .and_then(|labels| labels.get(keys::GROUP_LABEL));
    let group = group_of(pod);
    match label {
        Some(label) if *label == group => Ok(()),
        Some(label) => Err(format!(
            "its label {}={label:?} is not the group {group:?} the webhook gives it",
            keys::GROUP_LABEL
        )),
        None => Err(format!("it has no {} label", keys::GROUP_LABEL)),
    }
}

/// The group a pod asks for with `healthbridge.io/service` when it differs from its own workload's.
fn claimed_group(pod: &Pod) -> Option<String> {
    pod.metadata.annotations.as_ref()?.get(keys::SERVICE)?;
    let claimed = group_of(pod);
    (claimed != default_group_of(pod)).then_some(claimed)
}

fn has_agent_container(pod: &Pod) -> bool {
    let Some(spec) = &pod.spec else { return false };
    spec.containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .any(|c| c.name == keys::AGENT_CONTAINER)
}

fn has_settings(pod: &Pod) -> bool {
    pod.metadata
        .annotations
        .iter()
        .flatten()
        .any(|(k, _)| k.starts_with(keys::PREFIX) && k != keys::STATUS)
}

fn check_port_free<'a>(
    port: u16,
    containers: impl Iterator<Item = &'a Container>,
) -> Result<(), DenyReason> {
    for container in containers {
        for declared in container.ports.iter().flatten() {
            if declared.container_port == i32::from(port)
                || declared.host_port == Some(i32::from(port))
            {
                return Err(DenyReason::PortCollision {
                    port,
                    container: container.name.clone(),
                    port_name: declared
                        .name
                        .clone()
                        .unwrap_or_else(|| declared.container_port.to_string()),
                    annotation: keys::PORT,
                });
            }
        }
    }
    Ok(())
}

fn resources(settings: &PodSettings, cfg: &InjectionConfig) -> Result<Value, DenyReason> {
    let defaults = &cfg.resources;
    let text = |q: &Option<Quantity>| q.as_ref().map(|q| q.text.clone());
    let cpu_request = text(&settings.cpu_request).unwrap_or_else(|| defaults.cpu_request.clone());
    let cpu_limit = text(&settings.cpu_limit).or_else(|| defaults.cpu_limit.clone());
    let memory_request =
        text(&settings.memory_request).unwrap_or_else(|| defaults.memory_request.clone());
    let memory_limit =
        text(&settings.memory_limit).unwrap_or_else(|| defaults.memory_limit.clone());
    // The defaults come from flags checked by the same rule; a value that does not parse is not compared.
    let above = |request: &str, limit: &str| match (parse_quantity(request), parse_quantity(limit))
    {
        (Ok(r), Ok(l)) => r.value > l.value,
        _ => false,
    };
    if let Some(limit) = &cpu_limit
        && above(&cpu_request, limit)
    {
        return Err(DenyReason::RequestAboveLimit {
            resource: "cpu",
            request: cpu_request,
            limit: limit.clone(),
            request_key: keys::CPU_REQUEST,
            limit_key: keys::CPU_LIMIT,
        });
    }
    if above(&memory_request, &memory_limit) {
        return Err(DenyReason::RequestAboveLimit {
            resource: "memory",
            request: memory_request,
            limit: memory_limit,
            request_key: keys::MEMORY_REQUEST,
            limit_key: keys::MEMORY_LIMIT,
        });
    }
    let mut limits = json!({ "memory": memory_limit });
    if let Some(cpu_limit) = cpu_limit {
        limits["cpu"] = json!(cpu_limit);
    }
    Ok(json!({ "requests": { "cpu": cpu_request, "memory": memory_request }, "limits": limits }))
}

fn agent_container(
    settings: &PodSettings,
    cfg: &InjectionConfig,
    port: u16,
    resources: Value,
    native: bool,
    token_volume: &str,
) -> Value {
    let mut env = vec![
        json!({ "name": env::POD_NAME, "valueFrom": { "fieldRef": { "fieldPath": "metadata.name" } } }),
        json!({ "name": env::POD_NAMESPACE, "valueFrom": { "fieldRef": { "fieldPath": "metadata.namespace" } } }),
        json!({ "name": env::PORT, "value": port.to_string() }),
    ];
    let optional = [
        (env::TARGET_CONTAINER, settings.target_container.clone()),
        (
            env::STATE_OVERRIDE,
            settings.state_override.map(|b| b.to_string()),
        ),
        (env::ENDPOINTS, settings.endpoints.clone()),
        (env::TIMEOUT, settings.timeout.clone()),
        (env::EXEC, settings.exec.clone()),
        (env::TCP, settings.tcp.clone()),
        (env::UDP, settings.udp.clone()),
        (env::GRPC, settings.grpc.clone()),
        (
            env::UNHEALTHY_STATUS,
            settings.unhealthy_status.map(|s| s.to_string()),
        ),
    ];
    env.extend(
        optional
            .into_iter()
            .filter_map(|(name, value)| value.map(|value| json!({ "name": name, "value": value }))),
    );
    let probe = |period: u16| {
        json!({
            "httpGet": { "path": "/self", "port": port },
            "periodSeconds": period,
            "timeoutSeconds": 1,
            "failureThreshold": 3
        })
    };
    let mut container = json!({
        "name": keys::AGENT_CONTAINER,
        "image": settings.agent_image.as_deref().unwrap_or(&cfg.agent_image),
        "imagePullPolicy": "IfNotPresent",
        "ports": [{ "name": PORT_NAME, "containerPort": port, "protocol": "TCP" }],
        "env": env,
        "resources": resources,
        "readinessProbe": probe(5),
        "livenessProbe": probe(10),
        "securityContext": {
            "runAsNonRoot": true,
            "runAsUser": AGENT_UID,
            "runAsGroup": AGENT_UID,
            "readOnlyRootFilesystem": true,
            "allowPrivilegeEscalation": false,
            "privileged": false,
            "capabilities": { "drop": ["ALL"] },
            "seccompProfile": { "type": "RuntimeDefault" }
        },
        "terminationMessagePolicy": "FallbackToLogsOnError",
        "volumeMounts": [{ "name": token_volume, "mountPath": TOKEN_MOUNT_PATH, "readOnly": true }]
    });
    if native {
        container["restartPolicy"] = json!("Always");
    }
    container
}

/// The token volume the agent needs when the pod has no service-account token of its own,
/// mounted only into the agent so the app stays without one.
fn token_volume_spec() -> Value {
    json!({
        "name": TOKEN_VOLUME,
        "projected": {
            "defaultMode": 0o444,
            "sources": [
                { "serviceAccountToken": { "path": "token", "expirationSeconds": 3607 } },
                { "configMap": { "name": "kube-root-ca.crt", "items": [{ "key": "ca.crt", "path": "ca.crt" }] } },
                { "downwardAPI": { "items": [{ "path": "namespace", "fieldRef": { "apiVersion": "v1", "fieldPath": "metadata.namespace" } }] } }
            ]
        }
    })
}

fn add(ops: &mut Vec<PatchOperation>, path: PointerBuf, value: Value) {
    ops.push(PatchOperation::Add(AddOperation { path, value }));
}

/// Sets `/metadata/<map>/<key>`, creating the map first when the pod has none.
fn add_to_map(ops: &mut Vec<PatchOperation>, map: &str, exists: bool, key: &str, value: Value) {
    if exists {
        add(ops, PointerBuf::from_tokens(["metadata", map, key]), value);
    } else {
        add(
            ops,
            PointerBuf::from_tokens(["metadata", map]),
            json!({ key: value }),
        );
    }
}

/// Appends to `/spec/<list>`, creating the list first when the pod has none.
fn append(ops: &mut Vec<PatchOperation>, list: &str, exists: bool, value: Value) {
    if exists {
        add(ops, PointerBuf::from_tokens(["spec", list, "-"]), value);
    } else {
        add(ops, PointerBuf::from_tokens(["spec", list]), json!([value]));
    }
}

impl fmt::Display for SkipReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
