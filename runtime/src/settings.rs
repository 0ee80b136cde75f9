//! Rules for the listener settings both binaries take, each with the one-line message that names the setting.

/// The largest connection bound a listener accepts: beyond it the bound no longer protects the memory limit.
pub const MOST_CONNECTIONS: usize = 1_000_000;

/// A connection bound from 1 to [`MOST_CONNECTIONS`]; the error names `setting` (`VARIABLE (--flag)`).
pub fn parse_max_connections(value: &str, setting: &str) -> Result<usize, String> {
    match value.trim().parse::<usize>() {
        Ok(n) if (1..=MOST_CONNECTIONS).contains(&n) => Ok(n),
        _ => Err(format!(
            "{setting} must be a number from 1 to {MOST_CONNECTIONS}, got `{value}`"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_bound_is_a_number_from_one_to_a_million() {
        assert_eq!(parse_max_connections(" 64 ", "LIMIT (--limit)"), Ok(64));
        assert_eq!(
            parse_max_connections("1000000", "LIMIT (--limit)"),
            Ok(1_000_000)
        );
        for bad in ["0", "1000001", "many", ""] {
            assert_eq!(
                parse_max_connections(bad, "LIMIT (--limit)"),
                Err(format!(
                    "LIMIT (--limit) must be a number from 1 to 1000000, got `{bad}`"
                ))
            );
        }
    }
}
