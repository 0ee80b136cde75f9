//! What makes a pod one the webhook injected: the agent container as the webhook writes it, with an allowed image and the port it serves.
//!
//! Admission (re-invocation, a copied pod) and the controller apply the same check, so a marker a pod author
//! wrote by hand never makes healthbridge publish a port the agent does not serve.

use std::collections::BTreeSet;
use std::fmt;

use k8s_openapi::api::core::v1::{Container, Pod};

use crate::keys;

/// The agent's listening port, as the webhook sets it in the agent container's env.
pub const PORT_ENV: &str = "HTTP_HEALTHCHECK_SIDECAR_PORT";
/// Where the agent image keeps its binary (its ENTRYPOINT); a volume mounted over it would run something else.
pub const AGENT_BINARY: &str = "/usr/local/bin/healthbridge-agent";

/// Image repositories whose images may run as the agent: the configured agent image's and any allowed extra ones
/// (a mirror, an older repository still running after an upgrade). Tags and digests are not compared, so an
/// upgrade of the agent's tag keeps old pods trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentImages {
    repositories: BTreeSet<String>,
}

impl AgentImages {
    /// The repository of `default_image` plus those of `allowed` (images or bare repositories).
    pub fn new<S: AsRef<str>>(default_image: &str, allowed: impl IntoIterator<Item = S>) -> Self {
        let repositories = std::iter::once(default_image.to_owned())
            .chain(allowed.into_iter().map(|image| image.as_ref().to_owned()))
            .map(|image| repository(image.trim()).to_owned())
            .filter(|repository| !repository.is_empty())
            .collect();
        Self { repositories }
    }

    /// True when `image` comes from one of the allowed repositories.
    pub fn allows(&self, image: &str) -> bool {
        self.repositories.contains(repository(image.trim()))
    }
}

impl fmt::Display for AgentImages {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list: Vec<&str> = self.repositories.iter().map(String::as_str).collect();
        f.write_str(&list.join(", "))
    }
}

/// The repository part of an image reference: without `@digest` and without `:tag` (a `:` followed by a `/`
/// belongs to a registry port, `registry:5000/agent`).
pub fn repository(image: &str) -> &str {
    let name = image.split_once('@').map_or(image, |(name, _)| name);
    match name.rsplit_once(':') {
        Some((repository, tag)) if !tag.contains('/') => repository,
        _ => name,
    }
}

/// The agent container of a pod that passed [`verify_agent`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerifiedAgent {
    /// The port the agent listens on: the only port healthbridge ever publishes for this pod.
    pub port: u16,
}

/// Why a pod is not one the webhook injected; each message says what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Untrusted {
    #[error(
        "it has no {container} container (in containers, or in initContainers with restartPolicy Always)"
    )]
    NoAgent { container: &'static str },
    #[error("it has more than one {container} container")]
    TwoAgents { container: &'static str },
    #[error(
        "its {container} container runs image {image:?}, which is not from an allowed agent repository ({allowed}); if another webhook rewrites images, add its repository to --allowed-agent-images"
    )]
    Image {
        container: &'static str,
        image: String,
        allowed: String,
    },
    #[error(
        "its {container} container sets command or args, which the webhook never does: the image's own entrypoint must run"
    )]
    Command { container: &'static str },
    #[error(
        "its {container} container mounts a volume at {path}, over the agent's binary {AGENT_BINARY}"
    )]
    MountOverBinary {
        container: &'static str,
        path: String,
    },
    #[error(
        "its {container} container has no literal {PORT_ENV} value naming the port it listens on"
    )]
    NoPort { container: &'static str },
    #[error(
        "its {container} container listens on {PORT_ENV}={port} but declares containerPort {declared}"
    )]
    PortMismatch {
        container: &'static str,
        port: u16,
        declared: String,
    },
    #[error(
        "the agent's port {port} is also declared by container {other:?}: healthbridge publishes only the agent's own port"
    )]
    PortOfAnotherContainer { port: u16, other: String },
}

/// Checks that `pod` carries the agent container exactly as the webhook injects it and returns the port it serves.
/// The port is read where the agent reads it (its env); the declared containerPort must agree and no other
/// container may declare it, so a Service built from it reaches the agent and nothing else.
pub fn verify_agent(pod: &Pod, images: &AgentImages) -> Result<VerifiedAgent, Untrusted> {
    AgentFacts::of(pod).verify(images)
}

/// What [`verify_agent`] looks at in a pod, and nothing else: the controller caches these few fields instead of
/// the pod's containers, and checks them exactly as admission checks a whole pod.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgentFacts {
    /// Containers (regular or init, sidecar or not) named like the agent.
    named: usize,
    /// Regular and sidecar containers named like the agent.
    runnable: usize,
    /// The first of those: the agent.
    agent: Option<AgentContainer>,
    /// The first port of the first container named like the agent (regular first, then init): the port
    /// `healthbridge.io/port` defaults to.
    pub declared_port: Option<u16>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct AgentContainer {
    image: String,
    runs_command: bool,
    mount_over_binary: Option<String>,
    port: Option<u16>,
    declared: Vec<i32>,
    /// Another container that declares `port` (containerPort or hostPort).
    port_taken_by: Option<String>,
}

impl AgentFacts {
    /// Reads the facts from a whole pod.
    pub fn of(pod: &Pod) -> Self {
        let container = keys::AGENT_CONTAINER;
        let Some(spec) = pod.spec.as_ref() else {
            return Self::default();
        };
        let all = || {
            spec.containers
                .iter()
                .chain(spec.init_containers.iter().flatten())
        };
        let runnable = || {
            spec.containers.iter().chain(
                spec.init_containers
                    .iter()
                    .flatten()
                    .filter(|c| c.restart_policy.as_deref() == Some("Always")),
            )
        };
        let agent = runnable().find(|c| c.name == container).map(|agent| {
            let port = listening_port(agent);
            AgentContainer {
                image: agent.image.clone().unwrap_or_default(),
                runs_command: agent.command.as_ref().is_some_and(|c| !c.is_empty())
                    || agent.args.as_ref().is_some_and(|a| !a.is_empty()),
                mount_over_binary: agent
                    .volume_mounts
                    .iter()
                    .flatten()
                    .find(|mount| covers_binary(&mount.mount_path))
                    .map(|mount| mount.mount_path.clone()),
                port,
                declared: agent
                    .ports
                    .iter()
                    .flatten()
                    .map(|p| p.container_port)
                    .collect(),
                port_taken_by: port.and_then(|port| {
                    all()
                        .filter(|c| c.name != container)
                        .find(|other| {
                            other.ports.iter().flatten().any(|p| {
                                p.container_port == i32::from(port)
                                    || p.host_port == Some(i32::from(port))
                            })
                        })
                        .map(|other| other.name.clone())
                }),
            }
        });
        Self {
            named: all().filter(|c| c.name == container).count(),
            runnable: runnable().filter(|c| c.name == container).count(),
            agent,
            declared_port: all()
                .find(|c| c.name == container)
                .and_then(|agent| agent.ports.as_ref()?.first())
                .and_then(|port| u16::try_from(port.container_port).ok())
                .filter(|port| *port != 0),
        }
    }

    /// The checks of [`verify_agent`], in its order.
    pub fn verify(&self, images: &AgentImages) -> Result<VerifiedAgent, Untrusted> {
        let container = keys::AGENT_CONTAINER;
        let agent = self
            .agent
            .as_ref()
            .ok_or(Untrusted::NoAgent { container })?;
        if self.runnable > 1 || self.named > 1 {
            return Err(Untrusted::TwoAgents { container });
        }
        if !images.allows(&agent.image) {
            return Err(Untrusted::Image {
                container,
                image: agent.image.clone(),
                allowed: images.to_string(),
            });
        }
        if agent.runs_command {
            return Err(Untrusted::Command { container });
        }
        if let Some(path) = &agent.mount_over_binary {
            return Err(Untrusted::MountOverBinary {
                container,
                path: path.clone(),
            });
        }
        let port = agent.port.ok_or(Untrusted::NoPort { container })?;
        if agent.declared != [i32::from(port)] {
            return Err(Untrusted::PortMismatch {
                container,
                port,
                declared: format!("{:?}", agent.declared),
            });
        }
        if let Some(other) = &agent.port_taken_by {
            return Err(Untrusted::PortOfAnotherContainer {
                port,
                other: other.clone(),
            });
        }
        Ok(VerifiedAgent { port })
    }
}

/// The last literal value of the port variable: Kubernetes lets a later entry of the same name win.
fn listening_port(agent: &Container) -> Option<u16> {
    let entry = agent.env.iter().flatten().rfind(|e| e.name == PORT_ENV)?;
    if entry.value_from.is_some() {
        return None;
    }
    entry
        .value
        .as_deref()?
        .trim()
        .parse::<u16>()
        .ok()
        .filter(|port| *port != 0)
}

/// True when a mount at `path` hides the agent binary (the path itself or one of its directories).
fn covers_binary(path: &str) -> bool {
    let path = path.trim_end_matches('/');
    path.is_empty()
        || AGENT_BINARY == path
        || AGENT_BINARY
            .strip_prefix(path)
            .is_some_and(|rest| rest.starts_with('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_repository_drops_tag_and_digest_but_keeps_a_registry_port() {
        assert_eq!(
            repository("docker.io/healthbridge/agent:0.1.0"),
            "docker.io/healthbridge/agent"
        );
        assert_eq!(
            repository("registry:5000/healthbridge/agent"),
            "registry:5000/healthbridge/agent"
        );
        assert_eq!(
            repository("registry:5000/agent:1@sha256:abc"),
            "registry:5000/agent"
        );
    }

    #[test]
    fn any_tag_of_an_allowed_repository_is_allowed_and_nothing_else() {
        let images = AgentImages::new(
            "docker.io/healthbridge/agent:0.2.0",
            ["mirror.example/agent"],
        );
        assert!(images.allows("docker.io/healthbridge/agent:0.1.0"));
        assert!(images.allows("mirror.example/agent:pinned"));
        assert!(!images.allows("docker.io/healthbridge/agent-evil:0.1.0"));
        assert!(!images.allows("docker.io/library/nginx"));
    }

    #[test]
    fn mounts_over_the_binary_or_its_directories_are_caught() {
        for path in ["/", "/usr", "/usr/local/bin/", AGENT_BINARY] {
            assert!(covers_binary(path), "{path}");
        }
        for path in [
            "/var/run/secrets/kubernetes.io/serviceaccount",
            "/usr/loc",
            "/tmp",
        ] {
            assert!(!covers_binary(path), "{path}");
        }
    }
}
