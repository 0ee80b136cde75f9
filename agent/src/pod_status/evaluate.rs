//! Decides whether a pod is healthy from its spec and status alone: no IO, no clock.

use k8s_openapi::api::core::v1::{Container, ContainerStatus, Pod};

use crate::report::{CheckResult, Report};

/// The pod's answer: a `pod` check, then one `container:<name>` check per counted container.
pub type Health = Report;

/// Which containers decide the pod's health.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Healthy iff this container (app container or native sidecar) is ready.
    Container(String),
    /// Healthy iff every app container and native sidecar is ready, except the agent's own container.
    AllAppContainers { except: String },
}

/// The answer when the pod itself cannot be found.
pub fn missing_pod(name: &str, namespace: &str) -> Health {
    Report::new(vec![CheckResult::fail(
        "pod",
        format!("pod \"{name}\" not found in namespace \"{namespace}\""),
    )])
}

pub fn evaluate(pod: &Pod, target: &Target) -> Health {
    let mut checks = vec![pod_check(pod)];
    let counted = counted_containers(pod);
    match target {
        Target::Container(wanted) => {
            // The original sidecar matched names case-insensitively; an exact match still wins.
            let found = counted
                .iter()
                .find(|c| c.name == *wanted)
                .or_else(|| counted.iter().find(|c| c.name.eq_ignore_ascii_case(wanted)));
            match found {
                Some(container) => checks.push(container_check(pod, container)),
                None => checks.push(CheckResult::fail(
                    format!("container:{wanted}"),
                    format!(
                        "container \"{wanted}\" is not in the pod (containers: {})",
                        names(&counted)
                    ),
                )),
            }
        }
        Target::AllAppContainers { except } => {
            let app: Vec<_> = counted.iter().filter(|c| c.name != *except).collect();
            if app.is_empty() {
                checks.push(CheckResult::fail(
                    "containers",
                    format!(
                        "the pod has no container to check besides \"{except}\"; set HTTP_HEALTHCHECK_SIDECAR_TARGET_CONTAINER or HTTP_HEALTHCHECK_SIDECAR_SELF_CONTAINER"
                    ),
                ));
            }
            checks.extend(
                app.into_iter()
                    .map(|container| container_check(pod, container)),
            );
        }
    }
    Report::new(checks)
}

fn pod_check(pod: &Pod) -> CheckResult {
    if let Some(deleted) = &pod.metadata.deletion_timestamp {
        return CheckResult::fail(
            "pod",
            format!("pod is terminating (deletion requested for {})", deleted.0),
        );
    }
    match pod.status.as_ref().and_then(|s| s.phase.as_deref()) {
        Some(phase @ ("Failed" | "Succeeded")) => {
            CheckResult::fail("pod", format!("pod phase is {phase}"))
        }
        Some(phase) => CheckResult::pass("pod", format!("phase {phase}")),
        None => CheckResult::pass("pod", "exists"),
    }
}

/// App containers and native sidecars (init containers that keep running); ordinary init containers finish and don't count.
fn counted_containers(pod: &Pod) -> Vec<&Container> {
    let Some(spec) = &pod.spec else {
        return Vec::new();
    };
    let native_sidecars = spec
        .init_containers
        .iter()
        .flatten()
        .filter(|c| c.restart_policy.as_deref() == Some("Always"));
    native_sidecars.chain(spec.containers.iter()).collect()
}

fn names(containers: &[&Container]) -> String {
    if containers.is_empty() {
        return "none".to_owned();
    }
    containers
        .iter()
        .map(|c| c.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn container_check(pod: &Pod, container: &Container) -> CheckResult {
    let name = format!("container:{}", container.name);
    let status = pod.status.as_ref().and_then(|status| {
        let all = status
            .container_statuses
            .iter()
            .flatten()
            .chain(status.init_container_statuses.iter().flatten());
        all.clone().find(|s| s.name == container.name)
    });
    match status {
        None => CheckResult::fail(name, "no status reported yet"),
        Some(status) if status.ready => CheckResult::pass(name, "ready"),
        Some(status) => CheckResult::fail(name, not_ready_reason(status)),
    }
}

fn not_ready_reason(status: &ContainerStatus) -> String {
    let state = status.state.as_ref();
    if let Some(waiting) = state.and_then(|s| s.waiting.as_ref()) {
        let reason = waiting.reason.as_deref().unwrap_or("waiting");
        return with_message(
            format!("not ready: waiting ({reason})"),
            waiting.message.as_deref(),
        );
    }
    if let Some(terminated) = state.and_then(|s| s.terminated.as_ref()) {
        let reason = terminated.reason.as_deref().unwrap_or("terminated");
        return with_message(
            format!(
                "not ready: terminated ({reason}, exit code {})",
                terminated.exit_code
            ),
            terminated.message.as_deref(),
        );
    }
    if state.and_then(|s| s.running.as_ref()).is_some() {
        return if status.started == Some(false) {
            "not ready: running, startup probe not passed yet".to_owned()
        } else {
            "not ready: running, readiness probe failing".to_owned()
        };
    }
    "not ready".to_owned()
}

fn with_message(line: String, message: Option<&str>) -> String {
    match message.map(|m| m.lines().next().unwrap_or("").trim()) {
        Some(first) if !first.is_empty() => format!("{line}: {first}"),
        _ => line,
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{
        ContainerState, ContainerStateRunning, ContainerStateWaiting, PodSpec, PodStatus,
    };
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    use super::*;

    struct PodBuilder(Pod);

    fn pod() -> PodBuilder {
        PodBuilder(Pod {
            metadata: Default::default(),
            spec: Some(PodSpec::default()),
            status: Some(PodStatus {
                phase: Some("Running".into()),
                ..Default::default()
            }),
        })
    }

    impl PodBuilder {
        fn spec(&mut self) -> &mut PodSpec {
            self.0.spec.get_or_insert_with(Default::default)
        }

        fn statuses(&mut self) -> &mut Vec<ContainerStatus> {
            self.0
                .status
                .get_or_insert_with(Default::default)
                .container_statuses
                .get_or_insert_with(Vec::new)
        }

        fn with_container(mut self, name: &str) -> Self {
            self.spec().containers.push(Container {
                name: name.into(),
                ..Default::default()
            });
            self
        }

        fn with_init_container(mut self, name: &str) -> Self {
            self.spec()
                .init_containers
                .get_or_insert_with(Vec::new)
                .push(Container {
                    name: name.into(),
                    ..Default::default()
                });
            self
        }

        fn with_native_sidecar(mut self, name: &str) -> Self {
            self.spec()
                .init_containers
                .get_or_insert_with(Vec::new)
                .push(Container {
                    name: name.into(),
                    restart_policy: Some("Always".into()),
                    ..Default::default()
                });
            self
        }

        fn ready(self, name: &str) -> Self {
            self.status_of(name, true, running())
        }

        fn not_ready(self, name: &str) -> Self {
            self.status_of(name, false, running())
        }

        fn waiting(self, name: &str, reason: &str) -> Self {
            let state = ContainerState {
                waiting: Some(ContainerStateWaiting {
                    reason: Some(reason.into()),
                    message: None,
                }),
                ..Default::default()
            };
            self.status_of(name, false, state)
        }

        fn init_status(mut self, name: &str, ready: bool) -> Self {
            let status = ContainerStatus {
                name: name.into(),
                ready,
                state: Some(running()),
                ..Default::default()
            };
            self.0
                .status
                .get_or_insert_with(Default::default)
                .init_container_statuses
                .get_or_insert_with(Vec::new)
                .push(status);
            self
        }

        fn status_of(mut self, name: &str, ready: bool, state: ContainerState) -> Self {
            self.statuses().push(ContainerStatus {
                name: name.into(),
                ready,
                state: Some(state),
                ..Default::default()
            });
            self
        }

        fn terminating(mut self) -> Self {
            self.0.metadata.deletion_timestamp = Some(Time(Default::default()));
            self
        }

        fn without_status(mut self) -> Self {
            self.0.status = None;
            self
        }
    }

    fn running() -> ContainerState {
        ContainerState {
            running: Some(ContainerStateRunning::default()),
            ..Default::default()
        }
    }

    fn all_but_agent() -> Target {
        Target::AllAppContainers {
            except: "healthbridge-agent".into(),
        }
    }

    fn container(name: &str) -> Target {
        Target::Container(name.into())
    }

    fn first_failure(health: &Health) -> String {
        health
            .failures()
            .next()
            .map(|c| format!("{}: {}", c.name, c.reason))
            .unwrap_or_default()
    }

    #[test]
    fn table() {
        let cases: Vec<(&str, PodBuilder, Target, bool)> = vec![
            (
                "all app containers ready",
                pod().with_container("app").ready("app"),
                all_but_agent(),
                true,
            ),
            (
                "an app container not ready",
                pod().with_container("app").not_ready("app"),
                all_but_agent(),
                false,
            ),
            (
                "the agent itself is never counted, even when it is not ready",
                pod()
                    .with_container("app")
                    .with_container("healthbridge-agent")
                    .ready("app")
                    .not_ready("healthbridge-agent"),
                all_but_agent(),
                true,
            ),
            (
                "target container ready",
                pod()
                    .with_container("app")
                    .with_container("db")
                    .ready("app")
                    .not_ready("db"),
                container("app"),
                true,
            ),
            (
                "target container not ready",
                pod()
                    .with_container("app")
                    .with_container("db")
                    .ready("db")
                    .not_ready("app"),
                container("app"),
                false,
            ),
            (
                "target container matched in any case",
                pod().with_container("app").ready("app"),
                container("APP"),
                true,
            ),
            (
                "target container missing",
                pod().with_container("app").ready("app"),
                container("web"),
                false,
            ),
            (
                "native sidecar not ready makes the pod unhealthy",
                pod()
                    .with_native_sidecar("mesh")
                    .with_container("app")
                    .ready("app")
                    .init_status("mesh", false),
                all_but_agent(),
                false,
            ),
            (
                "native sidecar ready counts like an app container",
                pod()
                    .with_native_sidecar("mesh")
                    .with_container("app")
                    .ready("app")
                    .init_status("mesh", true),
                all_but_agent(),
                true,
            ),
            (
                "a finished ordinary init container does not count",
                pod()
                    .with_init_container("migrate")
                    .with_container("app")
                    .ready("app")
                    .init_status("migrate", false),
                all_but_agent(),
                true,
            ),
            (
                "native sidecar as the target",
                pod().with_native_sidecar("mesh").init_status("mesh", true),
                container("mesh"),
                true,
            ),
            (
                "terminating pod with ready containers",
                pod().with_container("app").ready("app").terminating(),
                all_but_agent(),
                false,
            ),
            (
                "empty status",
                pod().with_container("app").without_status(),
                all_but_agent(),
                false,
            ),
            (
                "no containers besides the agent",
                pod()
                    .with_container("healthbridge-agent")
                    .ready("healthbridge-agent"),
                all_but_agent(),
                false,
            ),
        ];
        for (case, pod, target, healthy) in cases {
            let health = evaluate(&pod.0, &target);
            assert_eq!(health.healthy(), healthy, "{case}: {health:?}");
        }
    }

    #[test]
    fn a_waiting_container_says_why() {
        let health = evaluate(
            &pod()
                .with_container("app")
                .waiting("app", "CrashLoopBackOff")
                .0,
            &all_but_agent(),
        );
        assert_eq!(
            first_failure(&health),
            "container:app: not ready: waiting (CrashLoopBackOff)"
        );
    }

    #[test]
    fn a_terminating_pod_says_so() {
        let health = evaluate(
            &pod().with_container("app").ready("app").terminating().0,
            &all_but_agent(),
        );
        assert!(
            first_failure(&health).starts_with("pod: pod is terminating"),
            "{health:?}"
        );
    }

    #[test]
    fn a_missing_target_lists_the_containers_there_are() {
        let health = evaluate(
            &pod().with_container("app").ready("app").0,
            &container("web"),
        );
        assert_eq!(
            first_failure(&health),
            "container:web: container \"web\" is not in the pod (containers: app)"
        );
    }

    #[test]
    fn a_missing_pod_is_unhealthy_with_its_name() {
        let health = missing_pod("web-0", "shop");
        assert!(!health.healthy());
        assert_eq!(
            first_failure(&health),
            "pod: pod \"web-0\" not found in namespace \"shop\""
        );
    }

    #[test]
    fn every_counted_container_is_listed() {
        let health = evaluate(
            &pod()
                .with_native_sidecar("mesh")
                .with_container("app")
                .with_container("healthbridge-agent")
                .0,
            &all_but_agent(),
        );
        let names: Vec<_> = health.checks.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["pod", "container:mesh", "container:app"]);
    }
}
