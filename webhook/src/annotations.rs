//! Validation of every `healthbridge.io/*` pod annotation by the contract's rules (the ones the agent and the
//! controller apply): bad input is denied with what is wrong and what is accepted.

use std::collections::BTreeMap;
use std::fmt;

use healthbridge_contract::drain::parse_drain_delay;
use healthbridge_contract::duration::parse_positive_duration;
use healthbridge_contract::quantity::{Quantity, parse_quantity};
use healthbridge_contract::service::{
    NodePortRange, ServiceValueError, parse_node_port, parse_scope, parse_traffic_policy,
};
use healthbridge_contract::socket::{self, SocketKind};
use healthbridge_contract::value::{
    parse_bool, parse_port, parse_state_override, parse_unhealthy_status, shorten,
};
use healthbridge_contract::{endpoint, exec};

use crate::group::is_label_value;
use crate::keys;

/// Every annotation key a pod may carry.
pub const KNOWN: [&str; 23] = [
    keys::INJECT,
    keys::STATUS,
    keys::AGENT_IMAGE,
    keys::PORT,
    keys::TARGET_CONTAINER,
    keys::STATE_OVERRIDE,
    keys::ENDPOINTS,
    keys::TIMEOUT,
    keys::EXEC,
    keys::TCP,
    keys::UDP,
    keys::GRPC,
    keys::UNHEALTHY_STATUS,
    keys::CPU_REQUEST,
    keys::CPU_LIMIT,
    keys::MEMORY_REQUEST,
    keys::MEMORY_LIMIT,
    keys::NATIVE_SIDECAR,
    keys::DRAIN_DELAY,
    keys::SERVICE,
    keys::NODE_PORT,
    keys::TRAFFIC_POLICY,
    keys::SERVICE_SCOPE,
];

/// One annotation whose key or value healthbridge does not accept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidAnnotation {
    pub key: String,
    pub value: String,
    /// What is wrong and what would be accepted: for agent settings, the agent's own message for the value.
    pub why: String,
}

impl fmt::Display for InvalidAnnotation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "annotation {}: {}", self.key, self.why)
    }
}

/// The healthbridge settings of one pod, all values checked by the rules the agent applies to them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PodSettings {
    pub inject: Option<bool>,
    pub marked_injected: bool,
    pub agent_image: Option<String>,
    pub port: Option<u16>,
    pub target_container: Option<String>,
    pub state_override: Option<bool>,
    /// Endpoint URLs joined by commas, the agent's format.
    pub endpoints: Option<String>,
    /// As written (trimmed): the agent reads it with the same parser.
    pub timeout: Option<String>,
    /// `URL=COMMAND` lines as written (trimmed).
    pub exec: Option<String>,
    /// Socket checks, `PATH=URL` lines as written (trimmed), by kind.
    pub tcp: Option<String>,
    pub udp: Option<String>,
    pub grpc: Option<String>,
    pub unhealthy_status: Option<u16>,
    pub cpu_request: Option<Quantity>,
    pub cpu_limit: Option<Quantity>,
    pub memory_request: Option<Quantity>,
    pub memory_limit: Option<Quantity>,
    pub native_sidecar: Option<bool>,
    /// Seconds the app containers keep serving after deletion (a preStop sleep).
    pub drain_delay: Option<u32>,
    /// Harmless oddities, returned to the user as admission warnings.
    pub warnings: Vec<String>,
}

/// Reads every `healthbridge.io/*` annotation; all invalid ones are reported together. `node_ports` is the
/// NodePort range the controller allows.
pub fn parse(
    annotations: Option<&BTreeMap<String, String>>,
    node_ports: NodePortRange,
) -> Result<PodSettings, Vec<InvalidAnnotation>> {
    let mut settings = PodSettings::default();
    let mut invalid = Vec::new();
    let Some(annotations) = annotations else {
        return Ok(settings);
    };
    for (key, value) in annotations.range(keys::PREFIX.to_owned()..) {
        if !key.starts_with(keys::PREFIX) {
            break;
        }
        if let Err(why) = apply(&mut settings, key, value, node_ports) {
            invalid.push(InvalidAnnotation {
                key: key.clone(),
                value: value.clone(),
                why,
            });
        }
    }
    if invalid.is_empty()
        && let Err(clash) = distinct_check_paths(&settings)
    {
        invalid.push(clash);
    }
    if invalid.is_empty() {
        Ok(settings)
    } else {
        Err(invalid)
    }
}

/// Records one annotation into `settings`; `Err` says what is wrong and what would be accepted.
fn apply(
    settings: &mut PodSettings,
    key: &str,
    value: &str,
    node_ports: NodePortRange,
) -> Result<(), String> {
    let why = |error: &dyn fmt::Display| error.to_string();
    let expected =
        |accepted: &str| format!("`{}` is not accepted: expected {accepted}", shorten(value));
    let v = value.trim();
    match key {
        keys::INJECT => settings.inject = Some(parse_bool(v).map_err(|e| why(&e))?),
        keys::STATUS => {
            if v == keys::STATUS_INJECTED {
                settings.marked_injected = true;
            } else {
                settings.warnings.push(format!(
                    "{key}: `{}` is not a healthbridge status; the webhook sets it to \"injected\"",
                    shorten(value)
                ));
            }
        }
        keys::AGENT_IMAGE => {
            if v.is_empty() || v.chars().any(char::is_whitespace) {
                return Err(expected("a container image reference without spaces"));
            }
            settings.agent_image = Some(v.to_owned());
        }
        keys::PORT => settings.port = Some(parse_port(v).map_err(|e| why(&e))?),
        keys::TARGET_CONTAINER => {
            if v.is_empty() {
                return Err(expected("the name of one of the pod's containers"));
            }
            settings.target_container = Some(v.to_owned());
        }
        keys::STATE_OVERRIDE => {
            settings.state_override = parse_state_override(v).map_err(|e| why(&e))?;
        }
        keys::ENDPOINTS => {
            endpoint::parse_urls(v).map_err(|e| why(&e))?;
            settings.endpoints = Some(endpoint::split_urls(v).collect::<Vec<_>>().join(","));
        }
        keys::TIMEOUT => {
            parse_positive_duration(v).map_err(|e| why(&e))?;
            settings.timeout = Some(v.to_owned());
        }
        keys::EXEC => {
            exec::parse_spec_lines(v).map_err(|e| why(&e))?;
            settings.warnings.push(format!(
                "{key}: exec checks run inside the healthbridge-agent container, not in the app's container"
            ));
            settings.exec = Some(v.to_owned());
        }
        keys::TCP | keys::UDP | keys::GRPC => {
            let kind = socket_kind(key);
            socket::parse_spec_lines(kind, v).map_err(|e| why(&e))?;
            let slot = match kind {
                SocketKind::Tcp => &mut settings.tcp,
                SocketKind::Udp => &mut settings.udp,
                SocketKind::Grpc => &mut settings.grpc,
            };
            *slot = Some(v.to_owned());
        }
        keys::UNHEALTHY_STATUS => {
            settings.unhealthy_status = Some(parse_unhealthy_status(v).map_err(|e| why(&e))?);
        }
        keys::CPU_REQUEST => settings.cpu_request = Some(parse_quantity(v).map_err(|e| why(&e))?),
        keys::CPU_LIMIT => settings.cpu_limit = Some(parse_quantity(v).map_err(|e| why(&e))?),
        keys::MEMORY_REQUEST => {
            settings.memory_request = Some(parse_quantity(v).map_err(|e| why(&e))?);
        }
        keys::MEMORY_LIMIT => {
            settings.memory_limit = Some(parse_quantity(v).map_err(|e| why(&e))?);
        }
        keys::NATIVE_SIDECAR => settings.native_sidecar = Some(parse_bool(v).map_err(|e| why(&e))?),
        keys::DRAIN_DELAY => {
            settings.drain_delay = Some(parse_drain_delay(v).map_err(|e| why(&e))?)
        }
        keys::SERVICE => {
            if v.is_empty() || !is_label_value(v) {
                return Err(expected(
                    "a label value: at most 63 of a-z, A-Z, 0-9, '-', '_', '.', starting and ending alphanumeric",
                ));
            }
        }
        keys::NODE_PORT => match parse_node_port(v, node_ports) {
            Ok(_) => {}
            // The pod runs; the controller reports the Service it cannot make.
            Err(outside @ ServiceValueError::OutsideRange { .. }) => {
                settings.warnings.push(format!(
                    "{key}: {outside}; until then the controller makes no Service for this pod"
                ));
            }
            Err(error) => return Err(why(&error)),
        },
        keys::TRAFFIC_POLICY => {
            parse_traffic_policy(v).map_err(|e| why(&e))?;
        }
        keys::SERVICE_SCOPE => {
            parse_scope(v).map_err(|e| why(&e))?;
        }
        _ => return Err(unknown_key_hint()),
    }
    Ok(())
}

fn socket_kind(key: &str) -> SocketKind {
    match key {
        keys::UDP => SocketKind::Udp,
        keys::GRPC => SocketKind::Grpc,
        _ => SocketKind::Tcp,
    }
}

/// No path served by two checks across `exec`, `tcp`, `udp` and `grpc` (each already valid on its own): the
/// clash is reported on the later annotation.
fn distinct_check_paths(settings: &PodSettings) -> Result<(), InvalidAnnotation> {
    let exec = settings
        .exec
        .as_deref()
        .map(|v| exec::parse_spec_lines(v).unwrap_or_default())
        .unwrap_or_default();
    let mut paths: Vec<(&str, &str, String)> = exec
        .into_iter()
        .map(|spec| (keys::EXEC, "exec", spec.path))
        .collect();
    for (key, value) in [
        (keys::TCP, &settings.tcp),
        (keys::UDP, &settings.udp),
        (keys::GRPC, &settings.grpc),
    ] {
        let kind = socket_kind(key);
        if let Some(value) = value {
            for spec in socket::parse_spec_lines(kind, value).unwrap_or_default() {
                paths.push((key, kind.as_str(), spec.path));
            }
        }
    }
    let clash = socket::distinct_paths(paths.iter().map(|(_, kind, path)| (*kind, path.as_str())));
    match clash {
        Ok(()) => Ok(()),
        Err(clash) => {
            let key = paths
                .iter()
                .rev()
                .find(|(_, kind, path)| *kind == clash.second && *path == clash.path)
                .map_or(keys::EXEC, |(key, _, _)| *key);
            let value = match key {
                keys::TCP => settings.tcp.clone(),
                keys::UDP => settings.udp.clone(),
                keys::GRPC => settings.grpc.clone(),
                _ => settings.exec.clone(),
            };
            Err(InvalidAnnotation {
                key: key.to_owned(),
                value: value.unwrap_or_default(),
                why: clash.to_string(),
            })
        }
    }
}

fn unknown_key_hint() -> String {
    let names: Vec<&str> = KNOWN
        .iter()
        .map(|k| k.trim_start_matches(keys::PREFIX))
        .collect();
    format!(
        "no such healthbridge annotation; known keys under {}: {}",
        keys::PREFIX,
        names.join(", ")
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn annotations(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect()
    }

    fn settings(pairs: &[(&str, &str)]) -> Result<PodSettings, Vec<InvalidAnnotation>> {
        parse(Some(&annotations(pairs)), NodePortRange::default())
    }

    fn denial(pairs: &[(&str, &str)]) -> String {
        settings(pairs)
            .unwrap_err()
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    }

    #[test]
    fn valid_settings_are_read() {
        let s = settings(&[
            (keys::INJECT, "true"),
            (keys::PORT, "14000"),
            (
                keys::ENDPOINTS,
                "http://localhost:8080/ready, https://db:5432/health",
            ),
            (keys::TIMEOUT, "500ms"),
            (keys::STATE_OVERRIDE, "false"),
            (keys::UNHEALTHY_STATUS, "500"),
            (keys::MEMORY_LIMIT, "64Mi"),
            ("other.io/x", "ignored"),
        ])
        .unwrap();
        assert_eq!(s.inject, Some(true));
        assert_eq!(s.port, Some(14000));
        assert_eq!(
            s.endpoints.as_deref(),
            Some("http://localhost:8080/ready,https://db:5432/health")
        );
        assert_eq!(s.timeout.as_deref(), Some("500ms"));
        assert_eq!(s.state_override, Some(false));
        assert_eq!(s.unhealthy_status, Some(500));
        assert_eq!(s.memory_limit.map(|q| q.text).as_deref(), Some("64Mi"));
        assert!(s.warnings.is_empty());
    }

    #[test]
    fn a_port_out_of_range_is_denied_naming_key_value_and_range() {
        let msg = denial(&[(keys::PORT, "70000")]);
        assert!(msg.contains("healthbridge.io/port"), "{msg}");
        assert!(msg.contains("70000"), "{msg}");
        assert!(msg.contains("1 to 65535"), "{msg}");
    }

    #[test]
    fn an_unknown_key_is_denied_listing_the_known_ones() {
        let msg = denial(&[("healthbridge.io/injet", "true")]);
        assert!(msg.contains("healthbridge.io/injet"), "{msg}");
        assert!(msg.contains("inject, status, agent-image"), "{msg}");
    }

    #[test]
    fn bad_durations_booleans_and_quantities_are_denied() {
        assert!(denial(&[(keys::TIMEOUT, "soon")]).contains("`3s`, `500ms`"));
        assert!(denial(&[(keys::TIMEOUT, "0s")]).contains("positive duration"));
        assert!(denial(&[(keys::STATE_OVERRIDE, "yes")]).contains("`true` or `false`"));
        assert!(denial(&[(keys::CPU_LIMIT, "lots")]).contains("quantity"));
        assert!(denial(&[(keys::ENDPOINTS, "localhost:80")]).contains("http://"));
        assert!(denial(&[(keys::UNHEALTHY_STATUS, "200")]).contains("400 to 599"));
    }

    #[test]
    fn values_the_agent_would_refuse_are_denied_with_the_agents_reason() {
        let msg = denial(&[(keys::EXEC, "/health=true")]);
        assert!(
            msg.contains("healthbridge.io/exec")
                && msg.contains("/health is the agent's own route"),
            "{msg}"
        );
        let msg = denial(&[(keys::TIMEOUT, "1min 30s")]);
        assert!(
            msg.contains("healthbridge.io/timeout") && msg.contains("unknown unit"),
            "{msg}"
        );
        assert!(denial(&[(keys::EXEC, "/a=true\n/a=false")]).contains("given twice"));
        assert!(denial(&[(keys::ENDPOINTS, "http://:80/x")]).contains("no host"));
    }

    #[test]
    fn every_invalid_annotation_is_reported_at_once() {
        let invalid = settings(&[(keys::PORT, "0"), (keys::TIMEOUT, "x")]).unwrap_err();
        assert_eq!(invalid.len(), 2);
    }

    #[test]
    fn exec_checks_and_node_ports_outside_the_range_only_warn() {
        let s = settings(&[
            (keys::EXEC, "/db=pg_isready\n/cache=redis-cli ping"),
            (keys::NODE_PORT, "8080"),
        ])
        .unwrap();
        assert_eq!(s.warnings.len(), 2, "{:?}", s.warnings);
        assert!(s.warnings[1].contains("30000-32767"), "{:?}", s.warnings);
        let wide = parse(
            Some(&annotations(&[(keys::NODE_PORT, "8080")])),
            "1-65535".parse().unwrap(),
        )
        .unwrap();
        assert!(wide.warnings.is_empty(), "{:?}", wide.warnings);
    }

    #[test]
    fn socket_checks_are_read_and_their_paths_shared_with_no_other_check() {
        let s = settings(&[
            (keys::TCP, "/db=tcp://127.0.0.1:5432"),
            (keys::GRPC, "/api=grpcs://localhost:8443/shop.Cart"),
            (keys::UDP, r"/dns=udp://127.0.0.1:53?send=\x00"),
        ])
        .unwrap();
        assert_eq!(s.tcp.as_deref(), Some("/db=tcp://127.0.0.1:5432"));
        assert!(
            denial(&[(keys::TCP, "/db=udp://h:1")]).contains("annotation healthbridge.io/tcp: ")
        );
        assert!(denial(&[(keys::UDP, "/dns=udp://h:53")]).contains("needs a request"));
        let clash = denial(&[(keys::EXEC, "/db=true"), (keys::TCP, "/db=tcp://h:1")]);
        assert!(
            clash.contains("annotation healthbridge.io/tcp: /db is taken by both the exec check and the tcp check"),
            "{clash}"
        );
    }

    #[test]
    fn long_values_are_quoted_shortened() {
        let msg = denial(&[(keys::PORT, &"9".repeat(500))]);
        assert!(msg.len() < 400, "{msg}");
    }
}
