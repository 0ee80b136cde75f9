//! Exec-check specs: `URL=COMMAND` lines, the path a lone command gets, and the paths the agent keeps for itself.
//! Whether the program exists is checked by the agent at start-up: only its own container can tell.

use std::collections::BTreeSet;

use thiserror::Error;

use crate::value::shorten;

/// Where a command given without a URL is served, as in the older exec bridge.
pub const DEFAULT_PATH: &str = "/healthz";
/// Routes of the agent itself that an exec check cannot take.
pub const RESERVED_PATHS: [&str; 4] = ["/health", "/all", "/self", "/metrics"];

/// One `URL=COMMAND`, split and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecSpec {
    pub path: String,
    pub command: String,
}

/// A spec the agent cannot serve.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ExecSpecError {
    #[error("`{spec}`: the command is empty; write it like /healthz='ls /tmp/test'")]
    EmptyCommand { spec: String },
    #[error(
        "`{spec}`: the URL `{path}` must be a path starting with / and without spaces, `?` or `#`"
    )]
    BadPath { spec: String, path: String },
    #[error("`{spec}`: {path} is the agent's own route; pick another path such as /healthz")]
    ReservedPath { spec: String, path: String },
    #[error("{path} is given twice; every check needs its own path")]
    DuplicatePath { path: String },
    #[error("no check given: write lines of URL=COMMAND, e.g. /db=pg_isready")]
    Empty,
}

/// The specs of one value: one per non-blank line.
pub fn spec_lines(value: &str) -> impl Iterator<Item = &str> {
    value.lines().filter(|line| !line.trim().is_empty())
}

/// Splits `URL=COMMAND`; a spec whose part before `=` is not a path is a lone command for [`DEFAULT_PATH`].
pub fn split_spec(spec: &str) -> Result<ExecSpec, ExecSpecError> {
    let trimmed = spec.trim();
    let (path, command) = match trimmed.split_once('=') {
        Some((path, command)) if path.starts_with('/') && !path.contains(char::is_whitespace) => {
            (path, command)
        }
        _ => (DEFAULT_PATH, trimmed),
    };
    let command = unquote(command.trim());
    // `/x=' '` unquotes to blanks: no program to run.
    if command.trim().is_empty() {
        return Err(ExecSpecError::EmptyCommand {
            spec: shorten(spec),
        });
    }
    if path.contains(['?', '#']) {
        return Err(ExecSpecError::BadPath {
            spec: shorten(spec),
            path: shorten(path),
        });
    }
    if RESERVED_PATHS.contains(&path) {
        return Err(ExecSpecError::ReservedPath {
            spec: shorten(spec),
            path: path.to_owned(),
        });
    }
    Ok(ExecSpec {
        path: path.to_owned(),
        command: command.to_owned(),
    })
}

/// `/x='ls /tmp'` reaches the agent with the quotes when it comes from a manifest's env value rather than a shell.
fn unquote(command: &str) -> &str {
    for quote in ['\'', '"'] {
        if let Some(inner) = command
            .strip_prefix(quote)
            .and_then(|c| c.strip_suffix(quote))
            && !inner.contains(quote)
        {
            return inner;
        }
    }
    command
}

/// Every spec split and checked, each path once (none at all is fine: no exec checks).
pub fn parse_specs<'a>(
    specs: impl IntoIterator<Item = &'a str>,
) -> Result<Vec<ExecSpec>, ExecSpecError> {
    let mut seen = BTreeSet::new();
    let mut parsed = Vec::new();
    for spec in specs {
        let spec = split_spec(spec)?;
        if !seen.insert(spec.path.clone()) {
            return Err(ExecSpecError::DuplicatePath { path: spec.path });
        }
        parsed.push(spec);
    }
    Ok(parsed)
}

/// The specs of one value (lines), of which there must be at least one.
pub fn parse_spec_lines(value: &str) -> Result<Vec<ExecSpec>, ExecSpecError> {
    let specs = parse_specs(spec_lines(value))?;
    if specs.is_empty() {
        return Err(ExecSpecError::Empty);
    }
    Ok(specs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(value: &str) -> Vec<(String, String)> {
        parse_spec_lines(value)
            .unwrap()
            .into_iter()
            .map(|spec| (spec.path, spec.command))
            .collect()
    }

    #[test]
    fn url_command_pairs_quotes_and_lone_commands() {
        assert_eq!(
            pairs("/ready='test -d /tmp'\n\n/live=\"true\"\nls /tmp --color=never"),
            [
                ("/ready".into(), "test -d /tmp".into()),
                ("/live".into(), "true".into()),
                ("/healthz".into(), "ls /tmp --color=never".into()),
            ]
        );
    }

    #[test]
    fn the_agents_own_routes_are_reserved() {
        for path in RESERVED_PATHS {
            assert!(matches!(
                split_spec(&format!("{path}=true")),
                Err(ExecSpecError::ReservedPath { .. })
            ));
        }
        let error = split_spec("/health=true").unwrap_err().to_string();
        assert!(
            error.contains("/health is the agent's own route"),
            "{error}"
        );
    }

    #[test]
    fn empty_commands_bad_and_duplicate_paths_are_refused() {
        for empty in ["/x=", "/x=' '", "\"\""] {
            assert!(
                matches!(split_spec(empty), Err(ExecSpecError::EmptyCommand { .. })),
                "{empty}"
            );
        }
        assert!(matches!(
            split_spec("/a?b=true"),
            Err(ExecSpecError::BadPath { .. })
        ));
        assert_eq!(
            parse_spec_lines("/a=true\n/a=false"),
            Err(ExecSpecError::DuplicatePath { path: "/a".into() })
        );
        assert_eq!(parse_spec_lines("\n \n"), Err(ExecSpecError::Empty));
    }
}
