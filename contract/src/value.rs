//! Small values shared by several settings: booleans, ports, the unhealthy status, the state override, and how a
//! user's value is quoted back in a message.

use thiserror::Error;

/// Longest piece of a user's value quoted back in a message.
pub const MAX_QUOTED: usize = 80;

/// `value`, cut to [`MAX_QUOTED`] bytes (on a character boundary) with `…` when longer.
pub fn shorten(value: &str) -> String {
    if value.len() <= MAX_QUOTED {
        return value.to_owned();
    }
    let mut end = MAX_QUOTED;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &value[..end])
}

/// A value outside what a setting accepts; the message quotes it and says what is accepted.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ValueError {
    #[error("`{0}` is not accepted: use `true` or `false`")]
    Bool(String),
    #[error("`{0}` is not a port: use a number from 1 to 65535")]
    Port(String),
    #[error("`{0}` is not a number like 503")]
    StatusNotANumber(String),
    #[error(
        "`{0}` is not an error status: use an HTTP status code from 400 to 599 so load balancers see a failure"
    )]
    StatusNotAnError(String),
    #[error(
        "`{0}` is not accepted: use `true` or `false`, or leave it unset to follow the pod status"
    )]
    StateOverride(String),
    #[error(
        "`{0}` is not accepted: use `unhealthy` (the default: drain what the API cannot confirm) or `last-known` (keep the last answer, marked stale)"
    )]
    OnStale(String),
}

/// What the agent answers while the API server has confirmed nothing for longer than the maximum staleness.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum OnStale {
    /// The unhealthy status, "pod status unknown since …": the load balancer drains what nobody can vouch for.
    #[default]
    Unhealthy,
    /// The last answer, marked stale: a control-plane outage does not take every backend out at once.
    LastKnown,
}

/// `unhealthy` or `last-known`, in any case.
pub fn parse_on_stale(value: &str) -> Result<OnStale, ValueError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "unhealthy" => Ok(OnStale::Unhealthy),
        "last-known" => Ok(OnStale::LastKnown),
        _ => Err(ValueError::OnStale(shorten(value))),
    }
}

/// `true` or `false`, exactly (surrounding whitespace ignored).
pub fn parse_bool(value: &str) -> Result<bool, ValueError> {
    match value.trim() {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(ValueError::Bool(shorten(value))),
    }
}

/// A TCP port from 1 to 65535.
pub fn parse_port(value: &str) -> Result<u16, ValueError> {
    value
        .trim()
        .parse::<u16>()
        .ok()
        .filter(|port| *port != 0)
        .ok_or_else(|| ValueError::Port(shorten(value)))
}

/// Status codes an unhealthy answer may carry: errors only, so every load balancer counts it as a failure.
pub const UNHEALTHY_STATUS_RANGE: std::ops::RangeInclusive<u16> = 400..=599;

/// The status code of an unhealthy answer, 400-599.
pub fn parse_unhealthy_status(value: &str) -> Result<u16, ValueError> {
    let code: u16 = value
        .trim()
        .parse()
        .map_err(|_| ValueError::StatusNotANumber(shorten(value)))?;
    if UNHEALTHY_STATUS_RANGE.contains(&code) {
        Ok(code)
    } else {
        Err(ValueError::StatusNotAnError(shorten(value)))
    }
}

/// `STATE_OVERRIDE`: `Some(true)` always healthy, `Some(false)` always unhealthy (any case), `None` (empty, as the
/// original sidecar read it) follows the pod.
pub fn parse_state_override(value: &str) -> Result<Option<bool>, ValueError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" => Ok(Some(true)),
        "false" => Ok(Some(false)),
        "" => Ok(None),
        _ => Err(ValueError::StateOverride(shorten(value))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_1_to_65535() {
        assert_eq!(parse_port(" 8080 "), Ok(8080));
        for bad in ["0", "65536", "-1", "http", ""] {
            assert!(parse_port(bad).is_err(), "{bad}");
        }
        assert!(
            parse_port("0")
                .unwrap_err()
                .to_string()
                .contains("1 to 65535")
        );
    }

    #[test]
    fn the_unhealthy_status_is_an_error_code() {
        assert_eq!(parse_unhealthy_status("500"), Ok(500));
        assert_eq!(parse_unhealthy_status("599"), Ok(599));
        for bad in ["200", "302", "600", "999"] {
            assert_eq!(
                parse_unhealthy_status(bad),
                Err(ValueError::StatusNotAnError(bad.into()))
            );
        }
        assert!(
            parse_unhealthy_status("abc")
                .unwrap_err()
                .to_string()
                .contains("503")
        );
    }

    #[test]
    fn the_state_override_is_true_false_or_empty_in_any_case() {
        assert_eq!(parse_state_override("TRUE"), Ok(Some(true)));
        assert_eq!(parse_state_override("false"), Ok(Some(false)));
        assert_eq!(parse_state_override(" "), Ok(None));
        assert!(
            parse_state_override("yes")
                .unwrap_err()
                .to_string()
                .contains("`true` or `false`")
        );
    }

    #[test]
    fn long_values_are_shortened_on_a_character_boundary() {
        let long = "é".repeat(100);
        let short = shorten(&long);
        assert!(short.len() <= MAX_QUOTED + '…'.len_utf8());
        assert!(short.ends_with('…'));
        assert_eq!(shorten("short"), "short");
    }
}
