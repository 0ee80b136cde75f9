//! Durations as the older tools wrote them: bare seconds (`3`), or with a unit (`3s`, `500ms`, `1m`, `1.5s`).

use std::time::Duration;

use thiserror::Error;

use crate::value::shorten;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DurationError {
    #[error(
        "empty duration: give a number of seconds like `3`, or a value with a unit like `3s`, `500ms`, `1m`"
    )]
    Empty,
    #[error(
        "`{0}` is not a duration: give a number of seconds like `3`, or a value with a unit like `3s`, `500ms`, `1m`"
    )]
    Invalid(String),
    #[error("`{input}` has an unknown unit `{unit}`: use one of ms, s, m, h")]
    UnknownUnit { input: String, unit: String },
    #[error("`{0}` is too large for a duration")]
    TooLarge(String),
    #[error("`{0}` is zero: give a positive duration such as `3`, `3s` or `500ms`")]
    Zero(String),
}

/// Parses `3` (seconds, the old tools' form), `3s`, `500ms`, `1m`, `2h`, `1.5s`; whitespace around is ignored.
pub fn parse_duration(input: &str) -> Result<Duration, DurationError> {
    let text = input.trim();
    let input = &shorten(input);
    if text.is_empty() {
        return Err(DurationError::Empty);
    }
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    if number.is_empty() {
        return Err(DurationError::Invalid(input.to_owned()));
    }
    let value: f64 = number
        .parse()
        .map_err(|_| DurationError::Invalid(input.to_owned()))?;
    let seconds_per_unit = match unit.trim() {
        "" | "s" | "sec" | "secs" => 1.0,
        "ms" => 0.001,
        "us" | "µs" => 0.000_001,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        other => {
            return Err(DurationError::UnknownUnit {
                input: input.to_owned(),
                unit: other.to_owned(),
            });
        }
    };
    Duration::try_from_secs_f64(value * seconds_per_unit)
        .map_err(|_| DurationError::TooLarge(input.to_owned()))
}

/// [`parse_duration`], refusing zero: for timeouts and periods.
pub fn parse_positive_duration(input: &str) -> Result<Duration, DurationError> {
    let duration = parse_duration(input)?;
    if duration.is_zero() {
        return Err(DurationError::Zero(shorten(input)));
    }
    Ok(duration)
}

/// Shows a duration the way `parse_duration` reads it back (`3s`, `500ms`), for messages and `--help` defaults.
pub fn format_duration(duration: Duration) -> String {
    // Whole seconds only when nothing is below them: 4.0001s is not "4s".
    if duration.subsec_nanos() == 0 && !duration.is_zero() {
        format!("{}s", duration.as_secs())
    } else if duration.subsec_nanos().is_multiple_of(1_000_000) {
        format!("{}ms", duration.as_millis())
    } else {
        format!("{}us", duration.as_micros())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn bare_numbers_are_seconds_like_the_old_tools() {
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration(" 5 "), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
    }

    #[test]
    fn units_are_understood() {
        assert_eq!(parse_duration("3s"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("2h"), Ok(Duration::from_secs(7200)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("250us"), Ok(Duration::from_micros(250)));
    }

    #[test]
    fn garbage_is_an_error_that_shows_the_accepted_forms() {
        assert_eq!(parse_duration(""), Err(DurationError::Empty));
        assert_eq!(
            parse_duration("abc"),
            Err(DurationError::Invalid("abc".into()))
        );
        assert_eq!(
            parse_duration("-3s"),
            Err(DurationError::Invalid("-3s".into()))
        );
        assert_eq!(
            parse_duration("1.2.3s"),
            Err(DurationError::Invalid("1.2.3s".into()))
        );
        assert!(
            parse_duration("x")
                .unwrap_err()
                .to_string()
                .contains("500ms")
        );
    }

    #[test]
    fn unknown_units_are_named() {
        let err = parse_duration("3d").unwrap_err();
        assert_eq!(
            err,
            DurationError::UnknownUnit {
                input: "3d".into(),
                unit: "d".into()
            }
        );
        assert!(err.to_string().contains("ms, s, m, h"));
    }

    #[test]
    fn absurdly_large_values_are_rejected() {
        assert_eq!(
            parse_duration("1e400"),
            Err(DurationError::UnknownUnit {
                input: "1e400".into(),
                unit: "e400".into()
            })
        );
        let huge = "9".repeat(30) + "h";
        assert_eq!(
            parse_duration(&huge),
            Err(DurationError::TooLarge(huge.clone()))
        );
    }

    #[test]
    fn humantime_compounds_are_not_durations_here() {
        assert!(matches!(
            parse_duration("1min 30s"),
            Err(DurationError::UnknownUnit { .. })
        ));
        assert!(parse_duration("1m30s").is_err());
    }

    #[test]
    fn a_positive_duration_refuses_zero_in_any_spelling() {
        for zero in ["0", "0s", "0ms", "0.0"] {
            assert_eq!(
                parse_positive_duration(zero),
                Err(DurationError::Zero(zero.into()))
            );
        }
        assert_eq!(parse_positive_duration("1ms"), Ok(Duration::from_millis(1)));
    }

    #[test]
    fn formatting_round_trips() {
        for text in ["3s", "500ms", "1500ms", "60s", "250us"] {
            assert_eq!(format_duration(parse_duration(text).unwrap()), text);
        }
    }

    // Found by the `duration` fuzz target: 4.000101s was shown as "4s".
    #[test]
    fn a_fraction_below_the_millisecond_is_shown() {
        let duration = Duration::from_micros(4_000_101);
        assert_eq!(format_duration(duration), "4000101us");
        assert_eq!(parse_duration(&format_duration(duration)), Ok(duration));
        assert_eq!(format_duration(Duration::from_micros(4_001_000)), "4001ms");
    }
}
