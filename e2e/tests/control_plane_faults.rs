//! The agent's answer when the control plane fails for real: a stopped kube-apiserver (the kernel accepts, nobody
//! answers), a killed one (refused), and a dead etcd behind a live API server. Each time the NodePort answers 503
//! "pod status unknown since …" within the bound and a real HAProxy marks the server DOWN; once the control plane
//! is back, 200 and UP again. The control plane is restored whatever happens, by a guard that also acts on drop.
//! (Its own test binary: cargo runs test binaries one after another, so no other test sees the API down.)

use std::ffi::OsString;
use std::fs::OpenOptions;
use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::ffi::OsStringExt;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use healthbridge_e2e::fixtures::{AGENT_CONTAINER, APP_CONTAINER, is_ready};
use healthbridge_e2e::haproxy::{HaProxy, SERVER, Server};
use healthbridge_e2e::http::{Answer, get_on_loopback};
use healthbridge_e2e::poll::poll_until;
use healthbridge_e2e::{Cluster, Scenario, demo_pod};
use k8s_openapi::api::core::v1::{Pod, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Api, PostParams};
use serde_json::{Value, json};
use tokio::time::Instant;

const POD: &str = "steady";
const NODE_PORT: u16 = 30083;
/// Only a GET of the pod (answered from etcd) confirms the agent's answer, so every fault here, a dead etcd behind
/// a live API server included, turns the answer unknown within MAX_STALENESS (docs/agent.md, "Control-plane faults").
const MAX_STALENESS: Duration = Duration::from_secs(3);
/// What the issue allows on top of the documented worst case: scheduling, the poll, HAProxy's 250 ms check.
const SLACK: Duration = Duration::from_secs(2);
/// How long a restarted control plane may take to be ready again, and the agent to answer 200 after that.
const RESTART_TIMEOUT: Duration = Duration::from_secs(120);
const RECOVERY_TIMEOUT: Duration = Duration::from_secs(15);

/// Where e2e/cluster/up keeps its daemons' PID files and logs (e2e/cluster/lib.sh).
const PIDS: &str = "/run/healthbridge-e2e/pids";
fn logs_dir() -> PathBuf {
    std::env::var_os("HB_STATE")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/lib/healthbridge-e2e"))
        .join("logs")
}

/// A daemon started by e2e/cluster/up, with the command line to start it again.
#[derive(Debug, Clone)]
struct Daemon {
    name: &'static str,
    pid: u32,
    argv: Vec<OsString>,
}

impl Daemon {
    fn find(name: &'static str) -> anyhow::Result<Self> {
        let pid_file = PathBuf::from(PIDS).join(format!("{name}.pid"));
        let pid: u32 = std::fs::read_to_string(&pid_file)
            .with_context(|| format!("cannot read {}: is the e2e cluster up?", pid_file.display()))?
            .trim()
            .parse()
            .with_context(|| format!("{} holds no PID", pid_file.display()))?;
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))
            .with_context(|| format!("{name} (pid {pid}) is not running"))?;
        let argv: Vec<OsString> = cmdline
            .split(|byte| *byte == 0)
            .filter(|arg| !arg.is_empty())
            .map(|arg| OsString::from_vec(arg.to_vec()))
            .collect();
        // A recycled PID belongs to someone else: the command line must name our binary (as lib.sh checks).
        ensure!(
            argv.first()
                .is_some_and(|binary| binary.to_string_lossy().ends_with(name)),
            "pid {pid} of {} is not {name}: {argv:?}",
            pid_file.display()
        );
        Ok(Self { name, pid, argv })
    }

    fn signal(&self, signal: &str) -> anyhow::Result<()> {
        let status = Command::new("kill")
            .args([signal, &self.pid.to_string()])
            .status()
            .context("cannot run kill")?;
        ensure!(
            status.success(),
            "kill {signal} {} ({}) failed",
            self.pid,
            self.name
        );
        Ok(())
    }

    fn alive(&self) -> bool {
        PathBuf::from(format!("/proc/{}", self.pid)).exists()
    }

    /// Starts the daemon again with its old command line, detached, logging where e2e/cluster/up logs it,
    /// and records the new PID so that e2e/cluster/down stops it.
    fn start_again(&mut self) -> anyhow::Result<()> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(logs_dir().join(format!("{}.log", self.name)))?;
        let child = Command::new(&self.argv[0])
            .args(&self.argv[1..])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            // Its own process group: the test harness ending must not take the control plane with it.
            .process_group(0)
            .spawn()
            .with_context(|| format!("cannot start {} again", self.name))?;
        self.pid = child.id();
        std::fs::write(
            PathBuf::from(PIDS).join(format!("{}.pid", self.name)),
            format!("{}\n", self.pid),
        )?;
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FaultKind {
    /// `kill -STOP kube-apiserver`: connections are accepted by the kernel, nothing is answered.
    StoppedApiServer,
    /// `kill -KILL kube-apiserver`: connections are refused.
    KilledApiServer,
    /// etcd stopped: the API server is up but cannot read.
    StoppedEtcd,
}

/// A fault in the control plane that is undone by `restore`, or on drop if the test fails first.
struct Fault {
    kind: FaultKind,
    daemon: Daemon,
    restored: bool,
}

impl Fault {
    fn inject(kind: FaultKind) -> anyhow::Result<Self> {
        let name = match kind {
            FaultKind::StoppedApiServer | FaultKind::KilledApiServer => "kube-apiserver",
            FaultKind::StoppedEtcd => "etcd",
        };
        let daemon = Daemon::find(name)?;
        let mut fault = Self {
            kind,
            daemon,
            restored: false,
        };
        let signal = match kind {
            FaultKind::StoppedApiServer => "-STOP",
            FaultKind::KilledApiServer => "-KILL",
            FaultKind::StoppedEtcd => "-TERM",
        };
        if let Err(error) = fault.daemon.signal(signal) {
            fault.restored = true;
            return Err(error);
        }
        Ok(fault)
    }

    fn restore(&mut self) -> anyhow::Result<()> {
        if self.restored {
            return Ok(());
        }
        self.restored = true;
        match self.kind {
            FaultKind::StoppedApiServer => self.daemon.signal("-CONT"),
            FaultKind::KilledApiServer | FaultKind::StoppedEtcd => {
                // A daemon that is still shutting down holds its ports: wait for it to be gone (bounded).
                let deadline = std::time::Instant::now() + Duration::from_secs(30);
                let mut delay = Duration::from_millis(20);
                while self.daemon.alive() {
                    if std::time::Instant::now() > deadline {
                        self.daemon.signal("-KILL")?;
                    }
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(Duration::from_millis(500));
                }
                self.daemon.start_again()
            }
        }
    }
}

impl Drop for Fault {
    fn drop(&mut self) {
        if let Err(error) = self.restore() {
            eprintln!(
                "cannot restore the control plane after {:?}: {error:#}; run e2e/cluster/up to repair it",
                self.kind
            );
        }
    }
}

/// The agent as a hand-written sidecar: the webhook has no annotation for MAX_STALENESS.
fn agent_container() -> Value {
    json!({
        "name": AGENT_CONTAINER,
        "image": format!("docker.io/healthbridge/agent:{}", env!("CARGO_PKG_VERSION")),
        "imagePullPolicy": "Never",
        "env": [
            { "name": "POD_NAME", "valueFrom": { "fieldRef": { "fieldPath": "metadata.name" } } },
            { "name": "POD_NAMESPACE", "valueFrom": { "fieldRef": { "fieldPath": "metadata.namespace" } } },
            { "name": "HTTP_HEALTHCHECK_SIDECAR_TARGET_CONTAINER", "value": APP_CONTAINER },
            { "name": "HTTP_HEALTHCHECK_SIDECAR_MAX_STALENESS", "value": format!("{}s", MAX_STALENESS.as_secs()) },
        ],
        "ports": [{ "name": "health", "containerPort": 3000 }],
        "readinessProbe": { "httpGet": { "path": "/self", "port": "health" }, "periodSeconds": 1 },
        "securityContext": {
            "allowPrivilegeEscalation": false,
            "readOnlyRootFilesystem": true,
            "capabilities": { "drop": ["ALL"] },
        },
    })
}

/// The service account, Role and RoleBinding the controller would make, the pod, and a NodePort for its agent.
async fn deploy(s: &Scenario) -> anyhow::Result<()> {
    let account = format!("{POD}-agent");
    let accounts: Api<ServiceAccount> = s.api();
    accounts
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({ "metadata": { "name": account } }))?,
        )
        .await?;
    let roles: Api<Role> = s.api();
    roles
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": { "name": account },
                "rules": [{ "apiGroups": [""], "resources": ["pods"], "resourceNames": [POD],
                            "verbs": ["get", "list", "watch"] }],
            }))?,
        )
        .await?;
    let bindings: Api<RoleBinding> = s.api();
    bindings
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": { "name": account },
                "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": account },
                "subjects": [{ "kind": "ServiceAccount", "name": account, "namespace": s.namespace }],
            }))?,
        )
        .await?;
    let mut pod = serde_json::to_value(demo_pod(POD).with_service_account(&account).pod()?)?;
    pod["spec"]["containers"]
        .as_array_mut()
        .context("the demo pod has no containers")?
        .push(agent_container());
    let pods: Api<Pod> = s.api();
    pods.create(&PostParams::default(), &serde_json::from_value(pod)?)
        .await?;
    let services: Api<Service> = s.api();
    services
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": { "name": format!("{POD}-health") },
                "spec": {
                    "type": "NodePort",
                    "selector": { "app": POD },
                    "publishNotReadyAddresses": true,
                    "ports": [{ "name": "health", "port": 3000, "targetPort": 3000, "nodePort": NODE_PORT }],
                },
            }))?,
        )
        .await?;
    Ok(())
}

/// Polls `GET /health` on the NodePort (50 ms doubling to 200 ms, so the measurement is fine-grained) until
/// `wanted`; the time from `since` to the first wanted answer, or an error past `since + within`.
async fn health_until(
    what: &str,
    since: Instant,
    within: Duration,
    wanted: impl Fn(&Answer) -> bool,
) -> anyhow::Result<Duration> {
    let mut delay = Duration::from_millis(50);
    loop {
        let last = match get_on_loopback(NODE_PORT, "/health").await {
            Ok(answer) if wanted(&answer) => return Ok(since.elapsed()),
            Ok(answer) => format!("{answer:?}"),
            Err(error) => format!("{error:#}"),
        };
        if since.elapsed() > within {
            bail!("{what}: not within {within:?}; last answer {last}");
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(200));
    }
}

async fn haproxy_until(
    haproxy: &HaProxy,
    wanted: &str,
    since: Instant,
    within: Duration,
) -> anyhow::Result<Duration> {
    poll_until(
        &format!("haproxy to see the server {wanted}"),
        within.saturating_sub(since.elapsed()),
        || async {
            let status = haproxy.server_status().await?;
            Ok((status.split_whitespace().next() == Some(wanted)).then(|| since.elapsed()))
        },
    )
    .await
}

/// The published port names only the failing check; the stale header says why (the reason is on the admin port).
fn unknown(answer: &Answer) -> bool {
    answer.status == 503 && answer.body.contains("pod") && answer.stale_seconds.is_some()
}

fn ok(answer: &Answer) -> bool {
    answer.status == 200
}

/// The API server answers `/readyz` again (after a restart or a CONT).
async fn control_plane_ready(cluster: &Cluster) -> anyhow::Result<()> {
    poll_until("kube-apiserver /readyz", RESTART_TIMEOUT, || async {
        Ok(cluster
            .kubectl(&["get", "--raw", "/readyz"])
            .ok()
            .map(|_| ()))
    })
    .await
}

/// One fault from injection to recovery; returns (fault → 503, fault → DOWN, ready → 200, ready → UP).
async fn fault_and_recovery(
    s: &Scenario,
    haproxy: &HaProxy,
    kind: FaultKind,
    bound: Duration,
) -> anyhow::Result<[Duration; 4]> {
    let mut fault = Fault::inject(kind)?;
    let fault_at = Instant::now();
    let detected = async {
        let to_unknown = health_until("503 unknown since", fault_at, bound, unknown).await?;
        let to_down =
            haproxy_until(haproxy, "DOWN", fault_at, bound + Duration::from_secs(1)).await?;
        anyhow::Ok((to_unknown, to_down))
    }
    .await;
    // Restore before judging: the control plane comes back whatever the outcome.
    let restored = fault.restore();
    let ready = control_plane_ready(&s.cluster).await;
    let (to_unknown, to_down) = detected.with_context(|| format!("during {kind:?}"))?;
    restored?;
    ready?;
    let ready_at = Instant::now();
    let to_ok = health_until("200 after the restore", ready_at, RECOVERY_TIMEOUT, ok).await?;
    let to_up = haproxy_until(haproxy, "UP", ready_at, RECOVERY_TIMEOUT).await?;
    eprintln!(
        "measured {kind:?} (MAX_STALENESS {MAX_STALENESS:?}): fault→503 {to_unknown:?}, fault→DOWN {to_down:?}, \
         API ready→200 {to_ok:?}, API ready→UP {to_up:?}"
    );
    Ok([to_unknown, to_down, to_ok, to_up])
}

#[tokio::test]
async fn the_node_port_answers_503_within_the_bound_while_the_control_plane_is_down_and_200_after()
-> anyhow::Result<()> {
    Scenario::run("control-plane", |s| async move {
        deploy(&s).await?;
        s.wait_for_pod(POD, "to be Ready", Duration::from_secs(120), is_ready)
            .await?;
        health_until("the first 200", Instant::now(), Duration::from_secs(60), ok).await?;
        // The hand-written Service has the Cluster policy: the loopback NodePort reaches the pod on either node.
        let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let haproxy = HaProxy::start(Server::new(SERVER, loopback, NODE_PORT, NODE_PORT)).await?;
        let outcome = async {
            haproxy_until(&haproxy, "UP", Instant::now(), Duration::from_secs(30)).await?;
            // Each fault stops the GETs: the last confirmed contact is at most the fault itself.
            let bound = MAX_STALENESS + SLACK;
            fault_and_recovery(&s, &haproxy, FaultKind::StoppedApiServer, bound).await?;
            fault_and_recovery(&s, &haproxy, FaultKind::KilledApiServer, bound).await?;
            // A live API server over a dead etcd keeps its watch cache serving, but a GET needs etcd.
            fault_and_recovery(&s, &haproxy, FaultKind::StoppedEtcd, bound).await?;
            // Leave the pod as the other tests expect the cluster: Ready, reported by a kubelet that is back.
            s.wait_for_pod(
                POD,
                "to be Ready after the faults",
                RESTART_TIMEOUT,
                is_ready,
            )
            .await?;
            anyhow::Ok(())
        }
        .await;
        haproxy.stop().await?;
        outcome
    })
    .await
}
