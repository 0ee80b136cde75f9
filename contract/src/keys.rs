//! The annotation and label keys that make up healthbridge's contract with users, shared by the webhook and the controller.

/// Prefix of every healthbridge annotation; an unknown key under it is denied at admission.
pub const PREFIX: &str = "healthbridge.io/";

/// Pod annotation `"true"` opts in, `"false"` opts out (also out of a namespace-wide opt-in).
pub const INJECT: &str = "healthbridge.io/inject";
/// Namespace label (value `enabled`) that opts every pod of the namespace in.
pub const NAMESPACE_INJECT_LABEL: &str = "healthbridge.io/inject";
pub const NAMESPACE_INJECT_ENABLED: &str = "enabled";

/// Marker annotation set by the webhook on injected pods.
pub const STATUS: &str = "healthbridge.io/status";
pub const STATUS_INJECTED: &str = "injected";

/// Label set by the webhook; the controller's Service selects pods by it.
pub const GROUP_LABEL: &str = "healthbridge.io/group";
/// Label with the pod's own name, selected by per-pod Services (`service-scope: pod`); set by the controller.
pub const POD_LABEL: &str = "healthbridge.io/pod";

// Per-pod settings.
pub const AGENT_IMAGE: &str = "healthbridge.io/agent-image";
pub const PORT: &str = "healthbridge.io/port";
pub const TARGET_CONTAINER: &str = "healthbridge.io/target-container";
pub const STATE_OVERRIDE: &str = "healthbridge.io/state-override";
pub const ENDPOINTS: &str = "healthbridge.io/endpoints";
pub const TIMEOUT: &str = "healthbridge.io/timeout";
pub const EXEC: &str = "healthbridge.io/exec";
pub const TCP: &str = "healthbridge.io/tcp";
pub const UDP: &str = "healthbridge.io/udp";
pub const GRPC: &str = "healthbridge.io/grpc";
pub const UNHEALTHY_STATUS: &str = "healthbridge.io/unhealthy-status";
pub const CPU_REQUEST: &str = "healthbridge.io/cpu-request";
pub const CPU_LIMIT: &str = "healthbridge.io/cpu-limit";
pub const MEMORY_REQUEST: &str = "healthbridge.io/memory-request";
pub const MEMORY_LIMIT: &str = "healthbridge.io/memory-limit";
pub const NATIVE_SIDECAR: &str = "healthbridge.io/native-sidecar";
/// How long the app containers keep serving after deletion (a preStop sleep) while the agent answers unhealthy.
pub const DRAIN_DELAY: &str = "healthbridge.io/drain-delay";

// Read by the controller.
pub const SERVICE: &str = "healthbridge.io/service";
pub const NODE_PORT: &str = "healthbridge.io/node-port";
pub const TRAFFIC_POLICY: &str = "healthbridge.io/traffic-policy";
pub const SERVICE_SCOPE: &str = "healthbridge.io/service-scope";

/// Name of the injected container (in `containers` or, as a native sidecar, `initContainers`).
pub const AGENT_CONTAINER: &str = "healthbridge-agent";
/// Field manager for server-side apply.
pub const FIELD_MANAGER: &str = "healthbridge";

/// Label on every object the controller creates; its watches select on it.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
pub const MANAGED_BY: &str = "healthbridge";

// Annotations on the self-managed certificate Secret.
/// Unix time (seconds) at which the serving certificate in the Secret expires.
pub const CERT_NOT_AFTER: &str = "healthbridge.io/cert-not-after";
/// Unix time (seconds) at which the CA in the Secret expires.
pub const CA_NOT_AFTER: &str = "healthbridge.io/ca-not-after";
/// Comma-separated DNS names the serving certificate in the Secret is valid for.
pub const CERT_DNS_NAMES: &str = "healthbridge.io/cert-dns-names";
/// Unix time (seconds) until which the CA replaced by the last rotation (`ca-previous.crt`) stays in the caBundle.
pub const CA_PREVIOUS_UNTIL: &str = "healthbridge.io/ca-previous-until";
/// Set (to any value) by an operator to have the webhook replace the CA; removed once it has.
pub const ROTATE_CA: &str = "healthbridge.io/rotate-ca";
