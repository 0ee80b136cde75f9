//! Serve-mode configuration: every setting is a flag and an `HTTP_HEALTHCHECK_SIDECAR_*` variable.

use std::time::Duration;

use clap::Args;
use healthbridge_contract::duration::parse_duration;
use healthbridge_contract::env;
use healthbridge_contract::value;
use http::StatusCode;

use crate::endpoints::EndpointArgs;
use crate::exec::{ExecArgs, ExecConfigError};
use crate::listen::ListenArgs;
use crate::pod_status::{OnStale, Target};
use crate::socket::{SocketArgs, SocketConfigError};

/// Settings of the pod-status part of `serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Port to listen on, on 0.0.0.0 and [::].
    #[arg(long, env = env::PORT, default_value_t = 3000, value_parser = setting(env::PORT, "--port", value::parse_port))]
    pub port: u16,

    /// The admin port and the published port's connection bounds.
    #[command(flatten)]
    pub listen: ListenArgs,

    /// Healthy iff this container is ready; unset: every app container of the pod must be ready.
    #[arg(long, env = env::TARGET_CONTAINER)]
    pub target_container: Option<String>,

    /// The agent's own container, never counted.
    #[arg(
        long,
        env = env::SELF_CONTAINER,
        default_value = "healthbridge-agent"
    )]
    pub self_container: String,

    /// Pod to watch; default `POD_NAME`, else `HOSTNAME`.
    #[arg(long, env = env::TARGET_POD_OVERRIDE)]
    pub target_pod_override: Option<String>,

    /// The pod's own name (downward API `metadata.name`).
    #[arg(long, env = env::POD_NAME, hide_env_values = true)]
    pub pod_name: Option<String>,

    /// Last resort for the pod name: the container's hostname.
    #[arg(long, env = env::HOSTNAME, hide = true)]
    pub hostname: Option<String>,

    /// Namespace of the pod (downward API `metadata.namespace`); default: the service-account or kubeconfig namespace.
    #[arg(long = "namespace", env = env::POD_NAMESPACE)]
    pub pod_namespace: Option<String>,

    /// `true`: always healthy, `false`: always unhealthy; neither touches the API.
    #[arg(
        long,
        env = env::STATE_OVERRIDE,
        default_value = "",
        hide_default_value = true,
        value_parser = parse_state_override
    )]
    pub state_override: StateOverride,

    /// Status code of an unhealthy answer (500 reproduces the original sidecar's README).
    #[arg(long, env = env::UNHEALTHY_STATUS, default_value = "503", value_parser = parse_unhealthy_status)]
    pub unhealthy_status: StatusCode,

    /// The pod status is stale once the API server has confirmed nothing for longer than this (`30s`, `500ms`, `30`).
    #[arg(long, env = env::MAX_STALENESS, default_value = "30s", value_parser = parse_staleness)]
    pub max_staleness: Duration,

    /// The answer while the pod status is stale: `unhealthy` ("pod status unknown since …") or `last-known` (the last answer, marked stale).
    #[arg(long, env = env::ON_STALE, default_value = "unhealthy", value_parser = parse_on_stale)]
    pub on_stale: OnStale,

    /// URLs and options for `/all`.
    #[command(flatten)]
    pub endpoints: EndpointArgs,

    /// Exec checks, each served at its own URL and included in `/all`.
    #[command(flatten)]
    pub exec: ExecArgs,

    /// TCP, UDP and gRPC checks, each served at its own URL and included in `/all`.
    #[command(flatten)]
    pub sockets: SocketArgs,

    /// The old aggregated checker's container args, `PORT TIMEOUT URL...`, accepted unchanged.
    #[arg(value_name = "PORT TIMEOUT URL", num_args = 0.., trailing_var_arg = true)]
    pub legacy: Vec<String>,
}

impl ServeArgs {
    /// The pod to watch: the override, else `POD_NAME`, else `HOSTNAME`; blanks count as unset.
    pub fn pod_name(&self) -> Option<&str> {
        [&self.target_pod_override, &self.pod_name, &self.hostname]
            .into_iter()
            .flatten()
            .map(|name| name.trim())
            .find(|name| !name.is_empty())
    }

    pub fn target(&self) -> Target {
        match self.target_container.as_deref().map(str::trim) {
            Some(name) if !name.is_empty() => Target::Container(name.to_owned()),
            _ => Target::AllAppContainers {
                except: self.self_container.clone(),
            },
        }
    }
}

/// Why the checks of a configuration cannot all be served.
#[derive(Debug, thiserror::Error)]
pub enum ChecksConfigError {
    #[error(transparent)]
    Exec(#[from] ExecConfigError),
    #[error(transparent)]
    Socket(#[from] SocketConfigError),
    #[error("--exec / --tcp / --udp / --grpc: {0}")]
    Paths(#[from] healthbridge_contract::socket::PathClash),
}

impl ServeArgs {
    /// Every exec and socket spec by the contract's rules, and no path taken twice across kinds: all the agent
    /// checks before it starts except whether exec programs exist.
    pub fn validate_check_specs(&self) -> Result<(), ChecksConfigError> {
        let exec = self.exec.validate_specs()?;
        let sockets = self.sockets.validate_specs()?;
        healthbridge_contract::socket::distinct_paths(
            exec.iter().map(|spec| ("exec", spec.path.as_str())).chain(
                sockets
                    .iter()
                    .map(|spec| (spec.kind.as_str(), spec.path.as_str())),
            ),
        )?;
        Ok(())
    }
}

/// `STATE_OVERRIDE`: a fixed answer, or (unset or empty, as the original sidecar read it) the pod's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StateOverride {
    FollowPod,
    AlwaysHealthy,
    AlwaysUnhealthy,
}

impl StateOverride {
    /// The fixed answer, if any.
    pub fn fixed(self) -> Option<bool> {
        match self {
            Self::FollowPod => None,
            Self::AlwaysHealthy => Some(true),
            Self::AlwaysUnhealthy => Some(false),
        }
    }
}

/// A clap value parser applying a contract rule; its error names the variable and the flag before the rule's own
/// message, which the webhook shows too (after the annotation) for the same value.
pub fn setting<T: 'static, E: std::fmt::Display + 'static>(
    variable: &'static str,
    flag: &'static str,
    rule: fn(&str) -> Result<T, E>,
) -> impl Fn(&str) -> Result<T, String> + Clone + Send + Sync + 'static {
    move |value| rule(value).map_err(|why| format!("{variable} ({flag}): {why}"))
}

fn parse_state_override(value: &str) -> Result<StateOverride, String> {
    let parse = setting(
        env::STATE_OVERRIDE,
        "--state-override",
        value::parse_state_override,
    );
    Ok(match parse(value)? {
        Some(true) => StateOverride::AlwaysHealthy,
        Some(false) => StateOverride::AlwaysUnhealthy,
        None => StateOverride::FollowPod,
    })
}

fn parse_unhealthy_status(value: &str) -> Result<StatusCode, String> {
    let parse = setting(
        env::UNHEALTHY_STATUS,
        "--unhealthy-status",
        value::parse_unhealthy_status,
    );
    let code = parse(value)?;
    StatusCode::from_u16(code).map_err(|e| format!("{}: {e}", env::UNHEALTHY_STATUS))
}

fn parse_on_stale(value: &str) -> Result<OnStale, String> {
    setting(env::ON_STALE, "--on-stale", value::parse_on_stale)(value)
}

fn parse_staleness(value: &str) -> Result<Duration, String> {
    setting(env::MAX_STALENESS, "--max-staleness", parse_duration)(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_override_accepts_true_and_false_in_any_case() {
        assert_eq!(
            parse_state_override("TRUE"),
            Ok(StateOverride::AlwaysHealthy)
        );
        assert_eq!(
            parse_state_override("false"),
            Ok(StateOverride::AlwaysUnhealthy)
        );
        assert_eq!(parse_state_override(""), Ok(StateOverride::FollowPod));
    }

    #[test]
    fn state_override_rejects_other_values_naming_the_variable_and_the_accepted_values() {
        let error = parse_state_override("yes").unwrap_err();
        assert!(
            error.contains("HTTP_HEALTHCHECK_SIDECAR_STATE_OVERRIDE"),
            "{error}"
        );
        assert!(error.contains("`true` or `false`"), "{error}");
    }

    #[test]
    fn unhealthy_status_must_be_an_error_code() {
        assert_eq!(
            parse_unhealthy_status("500"),
            Ok(StatusCode::INTERNAL_SERVER_ERROR)
        );
        assert!(parse_unhealthy_status("200").is_err());
        assert!(
            parse_unhealthy_status("abc")
                .unwrap_err()
                .contains("UNHEALTHY_STATUS")
        );
    }

    #[test]
    fn on_stale_accepts_its_two_modes_and_names_them_when_rejecting() {
        assert_eq!(parse_on_stale("unhealthy"), Ok(OnStale::Unhealthy));
        assert_eq!(parse_on_stale(" Last-Known "), Ok(OnStale::LastKnown));
        let error = parse_on_stale("stale").unwrap_err();
        assert!(
            error.contains("HTTP_HEALTHCHECK_SIDECAR_ON_STALE"),
            "{error}"
        );
        assert!(error.contains("`last-known`"), "{error}");
    }

    #[test]
    fn staleness_accepts_bare_seconds_and_units() {
        assert_eq!(parse_staleness("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_staleness("500ms"), Ok(Duration::from_millis(500)));
        assert!(
            parse_staleness("soon")
                .unwrap_err()
                .contains("MAX_STALENESS")
        );
    }
}
