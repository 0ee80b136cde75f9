//! The drain delay: how long the app containers keep serving after their pod is deleted, while the agent already answers
//! the unhealthy status, so the load balancer takes the pod out before the app stops.

use thiserror::Error;

use crate::duration::{DurationError, parse_positive_duration};
use crate::value::shorten;

/// Longest delay accepted: the kubelet kills every container at the pod's grace period anyway, and a delay of hours is
/// a typo, not a drain.
pub const MAX_DRAIN_DELAY_SECONDS: u32 = 3600;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DrainDelayError {
    #[error(transparent)]
    Duration(#[from] DurationError),
    #[error(
        "`{0}` is not a whole number of seconds: the preStop sleep counts whole seconds; use e.g. `10s` or `1m`"
    )]
    NotWholeSeconds(String),
    #[error(
        "`{0}` is longer than {MAX_DRAIN_DELAY_SECONDS}s: a drain takes a load balancer's `fall × inter`, seconds, not hours"
    )]
    TooLong(String),
}

/// `10s`, `1m`, `15` (seconds): a positive whole number of seconds up to [`MAX_DRAIN_DELAY_SECONDS`].
pub fn parse_drain_delay(value: &str) -> Result<u32, DrainDelayError> {
    let delay = parse_positive_duration(value)?;
    if delay.subsec_nanos() != 0 {
        return Err(DrainDelayError::NotWholeSeconds(shorten(value)));
    }
    u32::try_from(delay.as_secs())
        .ok()
        .filter(|seconds| *seconds <= MAX_DRAIN_DELAY_SECONDS)
        .ok_or_else(|| DrainDelayError::TooLong(shorten(value)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_seconds_in_any_unit_are_a_delay() {
        assert_eq!(parse_drain_delay("10s"), Ok(10));
        assert_eq!(parse_drain_delay("1m"), Ok(60));
        assert_eq!(parse_drain_delay(" 15 "), Ok(15));
        assert_eq!(parse_drain_delay("1h"), Ok(3600));
    }

    #[test]
    fn fractions_zero_and_hours_are_refused_with_what_is_accepted() {
        let message = |v: &str| parse_drain_delay(v).unwrap_err().to_string();
        assert!(
            message("1.5s").contains("whole number of seconds"),
            "{}",
            message("1.5s")
        );
        assert!(message("500ms").contains("whole number of seconds"));
        assert!(message("0s").contains("zero"));
        assert!(message("2h").contains("longer than 3600s"));
        assert!(message("soon").contains("is not a duration"));
    }
}
