//! Serve-mode configuration: every setting is a flag and an `HTTP_HEALTHCHECK_SIDECAR_*` variable.

use std::time::Duration;

use clap::Args;
use http::StatusCode;

use crate::endpoints::EndpointArgs;
use crate::exec::ExecArgs;
use crate::listen::ListenArgs;
use crate::pod_status::Target;

/// Settings of the pod-status part of `serve`.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Port to listen on, on 0.0.0.0 and [::].
    #[arg(long, env = "HTTP_HEALTHCHECK_SIDECAR_PORT", default_value_t = 3000)]
    pub port: u16,

    /// The admin port and the published port's connection bounds.
    #[command(flatten)]
    pub listen: ListenArgs,

    /// Healthy iff this container is ready; unset: every app container of the pod must be ready.
    #[arg(long, env = "HTTP_HEALTHCHECK_SIDECAR_TARGET_CONTAINER")]
    pub target_container: Option<String>,

    /// The agent's own container, never counted.
    #[arg(
        long,
        env = "HTTP_HEALTHCHECK_SIDECAR_SELF_CONTAINER",
        default_value = "healthbridge-agent"
    )]
    pub self_container: String,

    /// Pod to watch; default `POD_NAME`, else `HOSTNAME`.
    #[arg(long, env = "HTTP_HEALTHCHECK_SIDECAR_TARGET_POD_OVERRIDE")]
    pub target_pod_override: Option<String>,

    /// The pod's own name (downward API `metadata.name`).
    #[arg(long, env = "POD_NAME", hide_env_values = true)]
    pub pod_name: Option<String>,

    /// Last resort for the pod name: the container's hostname.
    #[arg(long, env = "HOSTNAME", hide = true)]
    pub hostname: Option<String>,

    /// Namespace of the pod (downward API `metadata.namespace`); default: the service-account or kubeconfig namespace.
    #[arg(long = "namespace", env = "POD_NAMESPACE")]
    pub pod_namespace: Option<String>,

    /// `true`: always healthy, `false`: always unhealthy; neither touches the API.
    #[arg(
        long,
        env = "HTTP_HEALTHCHECK_SIDECAR_STATE_OVERRIDE",
        default_value = "",
        hide_default_value = true,
        value_parser = parse_state_override
    )]
    pub state_override: StateOverride,

    /// Status code of an unhealthy answer (500 reproduces the original sidecar's README).
    #[arg(long, env = "HTTP_HEALTHCHECK_SIDECAR_UNHEALTHY_STATUS", default_value = "503", value_parser = parse_unhealthy_status)]
    pub unhealthy_status: StatusCode,

    /// A watch broken for longer than this makes the pod status unknown, hence unhealthy (`30s`, `500ms`, `30`).
    #[arg(long, env = "HTTP_HEALTHCHECK_SIDECAR_MAX_STALENESS", default_value = "30s", value_parser = parse_staleness)]
    pub max_staleness: Duration,

    /// URLs and options for `/all`.
    #[command(flatten)]
    pub endpoints: EndpointArgs,

    /// Exec checks, each served at its own URL and included in `/all`.
    #[command(flatten)]
    pub exec: ExecArgs,

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

fn parse_state_override(value: &str) -> Result<StateOverride, String> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" => Ok(StateOverride::AlwaysHealthy),
        "false" => Ok(StateOverride::AlwaysUnhealthy),
        "" => Ok(StateOverride::FollowPod),
        _ => Err(format!(
            "HTTP_HEALTHCHECK_SIDECAR_STATE_OVERRIDE (--state-override) accepts `true` or `false`, got `{value}`; unset it to follow the pod status"
        )),
    }
}

fn parse_unhealthy_status(value: &str) -> Result<StatusCode, String> {
    let code: u16 = value.trim().parse().map_err(|_| {
        format!("HTTP_HEALTHCHECK_SIDECAR_UNHEALTHY_STATUS (--unhealthy-status) must be a number like 503, got `{value}`")
    })?;
    match StatusCode::from_u16(code) {
        Ok(status)
            if !status.is_success() && !status.is_informational() && !status.is_redirection() =>
        {
            Ok(status)
        }
        _ => Err(format!(
            "HTTP_HEALTHCHECK_SIDECAR_UNHEALTHY_STATUS (--unhealthy-status) must be an error status (400-599) so load balancers see a failure, got `{value}`"
        )),
    }
}

fn parse_staleness(value: &str) -> Result<Duration, String> {
    crate::duration::parse_duration(value)
        .map_err(|why| format!("HTTP_HEALTHCHECK_SIDECAR_MAX_STALENESS (--max-staleness): {why}"))
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
