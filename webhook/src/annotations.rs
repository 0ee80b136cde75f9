//! Parsing and validation of every `healthbridge.io/*` pod annotation: bad input is denied with what is accepted.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use crate::group::is_label_value;
use crate::keys;

/// Every annotation key a pod may carry, with what its value must look like.
pub const KNOWN: &[(&str, &str)] = &[
    (keys::INJECT, "\"true\" or \"false\""),
    (keys::STATUS, "\"injected\" (set by the webhook)"),
    (
        keys::AGENT_IMAGE,
        "a container image reference without spaces",
    ),
    (keys::PORT, "a port number from 1 to 65535"),
    (
        keys::TARGET_CONTAINER,
        "the name of one of the pod's containers",
    ),
    (keys::STATE_OVERRIDE, "\"true\" or \"false\""),
    (
        keys::ENDPOINTS,
        "http:// or https:// URLs separated by commas or whitespace",
    ),
    (keys::TIMEOUT, "a positive duration such as 3, 3s or 500ms"),
    (keys::EXEC, "lines of URL=COMMAND, e.g. /db=pg_isready"),
    (
        keys::UNHEALTHY_STATUS,
        "an HTTP status code from 400 to 599",
    ),
    (
        keys::CPU_REQUEST,
        "a Kubernetes quantity such as 10m or 0.1",
    ),
    (keys::CPU_LIMIT, "a Kubernetes quantity such as 100m or 1"),
    (keys::MEMORY_REQUEST, "a Kubernetes quantity such as 16Mi"),
    (keys::MEMORY_LIMIT, "a Kubernetes quantity such as 32Mi"),
    (keys::NATIVE_SIDECAR, "\"true\" or \"false\""),
    (
        keys::SERVICE,
        "a label value: at most 63 of a-z, A-Z, 0-9, '-', '_', '.', starting and ending alphanumeric",
    ),
    (
        keys::NODE_PORT,
        "a port number from 1 to 65535 (usually 30000-32767)",
    ),
    (keys::TRAFFIC_POLICY, "\"Local\" or \"Cluster\""),
    (keys::SERVICE_SCOPE, "\"group\" or \"pod\""),
];

/// Longest piece of a user's value quoted back in a message.
const MAX_QUOTED: usize = 80;

/// One annotation whose key or value healthbridge does not accept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidAnnotation {
    pub key: String,
    pub value: String,
    /// What would be accepted instead.
    pub accepted: String,
}

impl fmt::Display for InvalidAnnotation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "annotation {}: {:?} is not accepted; expected {}",
            self.key,
            quote(&self.value),
            self.accepted
        )
    }
}

fn quote(value: &str) -> String {
    if value.len() <= MAX_QUOTED {
        return value.to_owned();
    }
    let mut end = MAX_QUOTED;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &value[..end])
}

/// The healthbridge settings of one pod, all values checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodSettings {
    pub inject: Option<bool>,
    pub marked_injected: bool,
    pub agent_image: Option<String>,
    pub port: Option<u16>,
    pub target_container: Option<String>,
    pub state_override: Option<bool>,
    /// Endpoint URLs joined by commas, the agent's format.
    pub endpoints: Option<String>,
    pub timeout: Option<String>,
    pub exec: Option<String>,
    pub unhealthy_status: Option<u16>,
    pub cpu_request: Option<String>,
    pub cpu_limit: Option<String>,
    pub memory_request: Option<String>,
    pub memory_limit: Option<String>,
    pub native_sidecar: Option<bool>,
    /// Harmless oddities, returned to the user as admission warnings.
    pub warnings: Vec<String>,
}

/// Reads every `healthbridge.io/*` annotation; all invalid ones are reported together.
pub fn parse(
    annotations: Option<&BTreeMap<String, String>>,
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
        if let Err(accepted) = apply(&mut settings, key, value) {
            invalid.push(InvalidAnnotation {
                key: key.clone(),
                value: value.clone(),
                accepted,
            });
        }
    }
    if invalid.is_empty() {
        Ok(settings)
    } else {
        Err(invalid)
    }
}

/// Records one annotation into `settings`; `Err` carries what would be accepted.
fn apply(settings: &mut PodSettings, key: &str, value: &str) -> Result<(), String> {
    let accepted = || {
        KNOWN
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, a)| (*a).to_owned())
            .unwrap_or_default()
    };
    let v = value.trim();
    match key {
        keys::INJECT => settings.inject = Some(parse_bool(v).ok_or_else(accepted)?),
        keys::STATUS => {
            if v == keys::STATUS_INJECTED {
                settings.marked_injected = true;
            } else {
                settings.warnings.push(format!(
                    "{key}: {:?} is not a healthbridge status; the webhook sets it to \"injected\"",
                    quote(value)
                ));
            }
        }
        keys::AGENT_IMAGE => {
            if v.is_empty() || v.chars().any(char::is_whitespace) {
                return Err(accepted());
            }
            settings.agent_image = Some(v.to_owned());
        }
        keys::PORT => settings.port = Some(parse_port(v).ok_or_else(accepted)?),
        keys::TARGET_CONTAINER => {
            if v.is_empty() {
                return Err(accepted());
            }
            settings.target_container = Some(v.to_owned());
        }
        keys::STATE_OVERRIDE => settings.state_override = Some(parse_bool(v).ok_or_else(accepted)?),
        keys::ENDPOINTS => {
            let urls: Vec<&str> = v
                .split(|c: char| c == ',' || c.is_whitespace())
                .filter(|u| !u.is_empty())
                .collect();
            let all_http = urls.iter().all(|u| {
                u.strip_prefix("http://")
                    .or_else(|| u.strip_prefix("https://"))
                    .is_some_and(|rest| !rest.is_empty())
            });
            if urls.is_empty() || !all_http {
                return Err(accepted());
            }
            settings.endpoints = Some(urls.join(","));
        }
        keys::TIMEOUT => {
            parse_duration(v)
                .filter(|d| !d.is_zero())
                .ok_or_else(accepted)?;
            settings.timeout = Some(v.to_owned());
        }
        keys::EXEC => {
            let mut lines = 0;
            for line in v.lines().map(str::trim).filter(|l| !l.is_empty()) {
                let command = match line.split_once('=') {
                    Some((url, command)) if url.starts_with('/') => command,
                    _ => line,
                };
                if command.trim().is_empty() {
                    return Err(accepted());
                }
                lines += 1;
            }
            if lines == 0 {
                return Err(accepted());
            }
            settings.warnings.push(format!(
                "{key}: exec checks run inside the healthbridge-agent container, not in the app's container"
            ));
            settings.exec = Some(v.to_owned());
        }
        keys::UNHEALTHY_STATUS => {
            let status: u16 = v
                .parse()
                .ok()
                .filter(|s| (400..=599).contains(s))
                .ok_or_else(accepted)?;
            settings.unhealthy_status = Some(status);
        }
        keys::CPU_REQUEST => settings.cpu_request = Some(parse_quantity(v).ok_or_else(accepted)?),
        keys::CPU_LIMIT => settings.cpu_limit = Some(parse_quantity(v).ok_or_else(accepted)?),
        keys::MEMORY_REQUEST => {
            settings.memory_request = Some(parse_quantity(v).ok_or_else(accepted)?)
        }
        keys::MEMORY_LIMIT => settings.memory_limit = Some(parse_quantity(v).ok_or_else(accepted)?),
        keys::NATIVE_SIDECAR => settings.native_sidecar = Some(parse_bool(v).ok_or_else(accepted)?),
        keys::SERVICE => {
            if v.is_empty() || !is_label_value(v) {
                return Err(accepted());
            }
        }
        keys::NODE_PORT => {
            let port = parse_port(v).ok_or_else(accepted)?;
            if !(30000..=32767).contains(&port) {
                settings.warnings.push(format!(
                    "{key}: {port} is outside the default NodePort range 30000-32767; it works only if the cluster's range includes it"
                ));
            }
        }
        keys::TRAFFIC_POLICY => {
            if !matches!(v, "Local" | "Cluster") {
                return Err(accepted());
            }
        }
        keys::SERVICE_SCOPE => {
            if !matches!(v, "group" | "pod") {
                return Err(accepted());
            }
        }
        _ => return Err(unknown_key_hint()),
    }
    Ok(())
}

fn unknown_key_hint() -> String {
    let names: Vec<&str> = KNOWN
        .iter()
        .map(|(k, _)| k.trim_start_matches(keys::PREFIX))
        .collect();
    format!(
        "no such healthbridge annotation; known keys under {}: {}",
        keys::PREFIX,
        names.join(", ")
    )
}

fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "true" => Some(true),
        "false" => Some(false),
        _ => None,
    }
}

fn parse_port(v: &str) -> Option<u16> {
    v.parse::<u16>().ok().filter(|p| *p != 0)
}

/// A duration the agent accepts: whole seconds (`3`) or humantime (`3s`, `500ms`).
pub fn parse_duration(v: &str) -> Option<Duration> {
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    humantime::parse_duration(v).ok()
}

/// Checks the Kubernetes quantity syntax (`<number><suffix>`), returning the value unchanged.
pub fn parse_quantity(v: &str) -> Option<String> {
    const SUFFIXES: &[&str] = &[
        "", "n", "u", "m", "k", "M", "G", "T", "P", "E", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei",
    ];
    let number_end = v
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(v.len());
    let (number, suffix) = v.split_at(number_end);
    let valid_number = !number.is_empty()
        && number != "."
        && number.matches('.').count() <= 1
        && number.parse::<f64>().is_ok_and(|n| n > 0.0);
    let valid_suffix = SUFFIXES.contains(&suffix)
        || suffix
            .strip_prefix(['e', 'E'])
            .is_some_and(|exp| exp.trim_start_matches(['+', '-']).parse::<u32>().is_ok());
    (valid_number && valid_suffix).then(|| v.to_owned())
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

    fn denial(pairs: &[(&str, &str)]) -> String {
        let invalid = parse(Some(&annotations(pairs))).unwrap_err();
        invalid
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    }

    #[test]
    fn valid_settings_are_read() {
        let s = parse(Some(&annotations(&[
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
        ])))
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
        assert_eq!(s.memory_limit.as_deref(), Some("64Mi"));
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
        assert!(denial(&[(keys::TIMEOUT, "soon")]).contains("3s or 500ms"));
        assert!(denial(&[(keys::TIMEOUT, "0s")]).contains("positive duration"));
        assert!(denial(&[(keys::STATE_OVERRIDE, "yes")]).contains("\"true\" or \"false\""));
        assert!(denial(&[(keys::CPU_LIMIT, "lots")]).contains("quantity"));
        assert!(denial(&[(keys::ENDPOINTS, "localhost:80")]).contains("http://"));
        assert!(denial(&[(keys::UNHEALTHY_STATUS, "200")]).contains("400 to 599"));
    }

    #[test]
    fn every_invalid_annotation_is_reported_at_once() {
        let invalid = parse(Some(&annotations(&[
            (keys::PORT, "0"),
            (keys::TIMEOUT, "x"),
        ])))
        .unwrap_err();
        assert_eq!(invalid.len(), 2);
    }

    #[test]
    fn exec_checks_and_odd_node_ports_only_warn() {
        let s = parse(Some(&annotations(&[
            (keys::EXEC, "/db=pg_isready\n/cache=redis-cli ping"),
            (keys::NODE_PORT, "8080"),
        ])))
        .unwrap();
        assert_eq!(s.warnings.len(), 2, "{:?}", s.warnings);
    }

    #[test]
    fn long_values_are_quoted_shortened() {
        let msg = denial(&[(keys::PORT, &"9".repeat(500))]);
        assert!(msg.len() < 400, "{msg}");
    }

    #[test]
    fn quantities_follow_kubernetes_syntax() {
        for ok in ["10m", "0.5", "16Mi", "1e3", "2Gi"] {
            assert!(parse_quantity(ok).is_some(), "{ok}");
        }
        for bad in ["", "m", "1.2.3", "10 m", "-1", "5XB"] {
            assert!(parse_quantity(bad).is_none(), "{bad}");
        }
    }
}
