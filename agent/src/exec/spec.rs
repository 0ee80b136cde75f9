//! Exec-check configuration: `URL=COMMAND` specs, reserved paths, timing, and how each command is started.

use std::path::{Path, PathBuf};
use std::time::Duration;

use healthbridge_contract::duration::{format_duration, parse_duration};
use healthbridge_contract::env;
use healthbridge_contract::exec as contract;
pub use healthbridge_contract::exec::{DEFAULT_PATH, ExecSpec, ExecSpecError, RESERVED_PATHS};
use thiserror::Error;

use crate::config::setting;
/// Characters that need a shell to mean what the user wrote.
const SHELL_SYNTAX: &[char] = &[
    '|', '&', ';', '<', '>', '(', ')', '$', '`', '\\', '"', '\'', '*', '?', '[', ']', '#', '~',
    '{', '}', '\n',
];

/// Exec-check flags, each also an `HTTP_HEALTHCHECK_SIDECAR_` variable.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct ExecArgs {
    /// `URL=COMMAND`, e.g. `/healthz='ls /tmp/test'`; repeatable. A lone command is served at /healthz.
    /// The variable holds one `URL=COMMAND` per line.
    #[arg(
        long = "exec",
        env = env::EXEC,
        value_name = "URL=COMMAND"
    )]
    pub exec: Vec<String>,
    /// How often each command runs: `2s`, `500ms`, `2`.
    #[arg(long, env = env::EXEC_PERIOD, default_value = "2s", value_parser = setting(env::EXEC_PERIOD, "--exec-period", parse_duration))]
    pub exec_period: Duration,
    /// A result older than this is unhealthy.
    #[arg(long, env = env::EXEC_MAX_AGE, default_value = "30s", value_parser = setting(env::EXEC_MAX_AGE, "--exec-max-age", parse_duration))]
    pub exec_max_age: Duration,
    /// A run taking longer is killed with its whole process group and counts as failed (default: the period).
    #[arg(long, env = env::EXEC_TIMEOUT, value_parser = setting(env::EXEC_TIMEOUT, "--exec-timeout", parse_duration))]
    pub exec_timeout: Option<Duration>,
    /// What an exec URL answers on the published port: `short` (`ok: <url>` / `unhealthy: <url>`, no output) or
    /// `bridge` (the exec bridge's `ok`, or the last result with its output and time: keep that port private).
    #[arg(long, env = env::EXEC_ANSWER, value_enum, default_value_t)]
    pub exec_answer: ExecAnswer,
}

/// The body of an exec URL on the published port.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ExecAnswer {
    /// `ok: <url>` or `unhealthy: <url>`: command output never leaves the pod through the published port.
    #[default]
    Short,
    /// The exec-to-HTTP bridge's bodies: `ok`, or `Healthz probe on <url> error: Result of last exec: <output>,
    /// at <time>, error <end>` (output escaped).
    Bridge,
}

impl Default for ExecArgs {
    fn default() -> Self {
        Self {
            exec: Vec::new(),
            exec_period: Duration::from_secs(2),
            exec_max_age: Duration::from_secs(30),
            exec_timeout: None,
            exec_answer: ExecAnswer::Short,
        }
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ExecConfigError {
    /// The contract's rules for a spec: empty command, bad, reserved or duplicate path.
    #[error("--exec / HTTP_HEALTHCHECK_SIDECAR_EXEC {0}")]
    Spec(#[from] ExecSpecError),
    #[error("--exec / HTTP_HEALTHCHECK_SIDECAR_EXEC `{spec}`: program `{program}` {why}")]
    Program {
        spec: String,
        program: String,
        why: String,
    },
    #[error(
        "--exec / HTTP_HEALTHCHECK_SIDECAR_EXEC `{spec}`: the command uses shell syntax but no `sh` was found in PATH; install a shell or call the program directly"
    )]
    NoShell { spec: String },
    #[error("--exec-period / HTTP_HEALTHCHECK_SIDECAR_EXEC_PERIOD must be more than 0")]
    ZeroPeriod,
    #[error("--exec-timeout / HTTP_HEALTHCHECK_SIDECAR_EXEC_TIMEOUT must be more than 0")]
    ZeroTimeout,
    #[error(
        "--exec-max-age ({max_age}) is shorter than --exec-period ({period}): every result would be stale before the next run; raise HTTP_HEALTHCHECK_SIDECAR_EXEC_MAX_AGE"
    )]
    MaxAgeBelowPeriod { max_age: String, period: String },
}

/// How a command is started: directly when it is a plain word list, else through `sh -c`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invocation {
    Direct { program: PathBuf, args: Vec<String> },
    Shell { shell: PathBuf, script: String },
}

/// One configured check, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecCheck {
    pub path: String,
    pub command: String,
    pub invocation: Invocation,
}

/// All exec checks with their timing, validated and ready to spawn.
#[derive(Debug, Clone)]
pub struct ExecChecks {
    pub checks: Vec<ExecCheck>,
    pub period: Duration,
    pub max_age: Duration,
    pub timeout: Duration,
    pub answer: ExecAnswer,
}

impl ExecArgs {
    /// Every `URL=COMMAND` spec, one per flag or per line of the variable.
    pub fn specs(&self) -> impl Iterator<Item = &str> {
        self.exec.iter().flat_map(|v| contract::spec_lines(v))
    }

    /// Parses every spec and checks that each program can run, so mistakes stop the start-up.
    pub fn validate(&self) -> Result<ExecChecks, ExecConfigError> {
        self.validate_with_path(
            std::env::var_os("PATH")
                .as_deref()
                .and_then(|p| p.to_str())
                .unwrap_or("/usr/bin:/bin"),
        )
    }

    /// Everything [`Self::validate`] checks except whether the programs exist, which only the agent's own
    /// container can tell: the timing and every spec.
    pub fn validate_specs(&self) -> Result<Vec<ExecSpec>, ExecConfigError> {
        if self.exec_period.is_zero() {
            return Err(ExecConfigError::ZeroPeriod);
        }
        let timeout = self.exec_timeout.unwrap_or(self.exec_period);
        if timeout.is_zero() {
            return Err(ExecConfigError::ZeroTimeout);
        }
        if self.exec_max_age < self.exec_period {
            return Err(ExecConfigError::MaxAgeBelowPeriod {
                max_age: format_duration(self.exec_max_age),
                period: format_duration(self.exec_period),
            });
        }
        Ok(contract::parse_specs(self.specs())?)
    }

    fn validate_with_path(&self, search_path: &str) -> Result<ExecChecks, ExecConfigError> {
        let specs = self.validate_specs()?;
        let checks = specs
            .into_iter()
            .map(|ExecSpec { path, command }| {
                let invocation = plan(&format!("{path}={command}"), &command, search_path)?;
                Ok(ExecCheck {
                    path,
                    command,
                    invocation,
                })
            })
            .collect::<Result<Vec<_>, ExecConfigError>>()?;
        Ok(ExecChecks {
            checks,
            period: self.exec_period,
            max_age: self.exec_max_age,
            timeout: self.exec_timeout.unwrap_or(self.exec_period),
            answer: self.exec_answer,
        })
    }
}

fn plan(spec: &str, command: &str, search_path: &str) -> Result<Invocation, ExecConfigError> {
    let words: Vec<&str> = command.split_whitespace().collect();
    let needs_shell =
        command.contains(SHELL_SYNTAX) || words.first().is_some_and(|w| w.contains('='));
    if needs_shell {
        let shell = find_program("sh", search_path).map_err(|_| ExecConfigError::NoShell {
            spec: spec.to_owned(),
        })?;
        return Ok(Invocation::Shell {
            shell,
            script: command.to_owned(),
        });
    }
    let (program, args) = words
        .split_first()
        .ok_or_else(|| ExecSpecError::EmptyCommand {
            spec: spec.to_owned(),
        })?;
    let program_path =
        find_program(program, search_path).map_err(|why| ExecConfigError::Program {
            spec: spec.to_owned(),
            program: (*program).to_owned(),
            why,
        })?;
    Ok(Invocation::Direct {
        program: program_path,
        args: args.iter().map(|a| (*a).to_owned()).collect(),
    })
}

fn find_program(program: &str, search_path: &str) -> Result<PathBuf, String> {
    if program.contains('/') {
        let path = PathBuf::from(program);
        return executable(&path).map(|()| path);
    }
    search_path
        .split(':')
        .filter(|dir| !dir.is_empty())
        .map(|dir| Path::new(dir).join(program))
        .find(|candidate| executable(candidate).is_ok())
        .ok_or_else(|| format!("was not found in PATH ({search_path})"))
}

fn executable(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot be used: {e}"))?;
    if !meta.is_file() {
        return Err("is not a file".to_owned());
    }
    if meta.permissions().mode() & 0o111 == 0 {
        return Err("is not executable (chmod +x it)".to_owned());
    }
    Ok(())
}

impl ExecArgs {
    pub fn is_empty(&self) -> bool {
        self.specs().next().is_none()
    }
}

impl ExecChecks {
    pub fn new(args: &ExecArgs) -> Result<Self, ExecConfigError> {
        args.validate()
    }

    pub fn is_empty(&self) -> bool {
        self.checks.is_empty()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const PATH: &str = "/usr/bin:/bin";

    fn args(specs: &[&str]) -> ExecArgs {
        ExecArgs {
            exec: specs.iter().map(|s| (*s).to_owned()).collect(),
            ..ExecArgs::default()
        }
    }

    fn paths_and_commands(checks: &ExecChecks) -> Vec<(&str, &str)> {
        checks
            .checks
            .iter()
            .map(|c| (c.path.as_str(), c.command.as_str()))
            .collect()
    }

    #[test]
    fn url_command_pairs_from_flags_and_lines() {
        let checks = args(&[
            "/healthz=ls /tmp",
            "/ready='test -d /tmp'\n/live=\"true\"\n\n",
        ])
        .validate_with_path(PATH)
        .unwrap();
        assert_eq!(
            paths_and_commands(&checks),
            [
                ("/healthz", "ls /tmp"),
                ("/ready", "test -d /tmp"),
                ("/live", "true")
            ]
        );
    }

    #[test]
    fn a_lone_command_is_served_at_healthz() {
        let checks = args(&["ls /tmp/test"]).validate_with_path(PATH).unwrap();
        assert_eq!(paths_and_commands(&checks), [("/healthz", "ls /tmp/test")]);
        let checks = args(&["/bin/ls --color=never /tmp"])
            .validate_with_path(PATH)
            .unwrap();
        assert_eq!(
            paths_and_commands(&checks),
            [("/healthz", "/bin/ls --color=never /tmp")]
        );
    }

    #[test]
    fn plain_commands_run_directly_and_shell_syntax_through_sh() {
        let checks = args(&["/a=ls /tmp", "/b=ls /tmp | grep x", "/c=FOO=1 true"])
            .validate_with_path(PATH)
            .unwrap();
        assert!(
            matches!(&checks.checks[0].invocation, Invocation::Direct { program, args } if program.ends_with("ls") && args == &["/tmp"])
        );
        assert!(
            matches!(&checks.checks[1].invocation, Invocation::Shell { script, .. } if script == "ls /tmp | grep x")
        );
        assert!(matches!(
            &checks.checks[2].invocation,
            Invocation::Shell { .. }
        ));
    }

    #[test]
    fn a_missing_program_is_a_start_up_error() {
        let err = args(&["/x=no-such-program-hb --flag"])
            .validate_with_path(PATH)
            .unwrap_err();
        assert!(
            matches!(&err, ExecConfigError::Program { program, .. } if program == "no-such-program-hb")
        );
        assert!(
            err.to_string()
                .contains("was not found in PATH (/usr/bin:/bin)"),
            "{err}"
        );
        let err = args(&["/x=/nonexistent/check"])
            .validate_with_path(PATH)
            .unwrap_err()
            .to_string();
        assert!(err.contains("`/nonexistent/check` cannot be used"), "{err}");
    }

    #[test]
    fn a_non_executable_file_is_a_start_up_error() {
        let file = tempfile::NamedTempFile::new().unwrap();
        let spec = format!("/x={}", file.path().display());
        let err = args(&[&spec])
            .validate_with_path(PATH)
            .unwrap_err()
            .to_string();
        assert!(err.contains("is not executable"), "{err}");
    }

    #[test]
    fn shell_syntax_without_a_shell_is_a_start_up_error() {
        let err = args(&["/x=ls | wc"])
            .validate_with_path("/nonexistent")
            .unwrap_err();
        assert!(matches!(err, ExecConfigError::NoShell { .. }), "{err}");
    }

    #[test]
    fn bad_duplicate_and_reserved_paths_are_rejected() {
        assert!(matches!(
            args(&["/x="]).validate_with_path(PATH),
            Err(ExecConfigError::Spec(ExecSpecError::EmptyCommand { .. }))
        ));
        assert!(matches!(
            args(&["/a=true", "/a=false"]).validate_with_path(PATH),
            Err(ExecConfigError::Spec(ExecSpecError::DuplicatePath { .. }))
        ));
        assert!(matches!(
            args(&["/all=true"]).validate_with_path(PATH),
            Err(ExecConfigError::Spec(ExecSpecError::ReservedPath { .. }))
        ));
        assert!(matches!(
            args(&["/a?b=true"]).validate_with_path(PATH),
            Err(ExecConfigError::Spec(ExecSpecError::BadPath { .. }))
        ));
    }

    #[test]
    fn timing_is_checked() {
        let zero_period = ExecArgs {
            exec_period: Duration::ZERO,
            ..args(&["true"])
        };
        assert_eq!(
            zero_period.validate_with_path(PATH).unwrap_err(),
            ExecConfigError::ZeroPeriod
        );
        let zero_timeout = ExecArgs {
            exec_timeout: Some(Duration::ZERO),
            ..args(&["true"])
        };
        assert_eq!(
            zero_timeout.validate_with_path(PATH).unwrap_err(),
            ExecConfigError::ZeroTimeout
        );
        let short_age = ExecArgs {
            exec_max_age: Duration::from_secs(1),
            ..args(&["true"])
        };
        assert!(
            short_age
                .validate_with_path(PATH)
                .unwrap_err()
                .to_string()
                .contains("(1s) is shorter than --exec-period (2s)")
        );
        let defaults = args(&["true"]).validate_with_path(PATH).unwrap();
        assert_eq!(
            defaults.timeout,
            Duration::from_secs(2),
            "the timeout defaults to the period"
        );
    }
}
