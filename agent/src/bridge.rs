//! The exec-to-HTTP bridge's command line (`exechealthz -cmd "ls /tmp/test" -port 8080 -period 2s -latency 5s
//! -url /healthz`), translated into `serve` flags before clap reads them: one place maps the old tool onto exec checks.

use std::ffi::{OsStr, OsString};
use std::path::Path;
use std::time::Duration;

use healthbridge_contract::duration::format_duration;
use thiserror::Error;

/// The old tool's binary name; a copy or symlink of the agent with this name speaks its command line.
pub const BRIDGE_BINARY_NAME: &str = "exechealthz";
/// The old tool's port, used when neither `-port` nor `HTTP_HEALTHCHECK_SIDECAR_PORT` says otherwise.
pub const BRIDGE_DEFAULT_PORT: u16 = 8080;
/// The old tool's command and URL when none is given.
const DEFAULT_COMMAND: &str = "echo healthz";
const DEFAULT_URL: &str = "/healthz";

/// Flags only the bridge has: one of them (in either dash spelling) makes a command line the bridge's.
const BRIDGE_ONLY: [&str; 5] = ["cmd", "url", "period", "latency", "quiet"];
/// Flags that take no value (`-quiet`, `-quiet=false`), as Go's boolean flags.
const BOOLEAN: [&str; 2] = ["quiet", "version"];

/// A bridge command line that cannot be mapped.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum BridgeError {
    #[error("-{0} needs a value, e.g. -cmd \"ls /tmp/test\" -url /healthz")]
    MissingValue(String),
    #[error(
        "{cmds} -cmd and {urls} -url given: give one -url per -cmd (they pair up in order), or a single -cmd for /healthz"
    )]
    Unpaired { cmds: usize, urls: usize },
    #[error("-url `{0}` must start with /, e.g. -url /healthz")]
    BadUrl(String),
    #[error("-{flag}={value}: use true or false")]
    BadBool { flag: String, value: String },
}

/// True when the process is called `exechealthz` or its arguments use a flag only the bridge has.
pub fn invoked_as_bridge(args: &[OsString]) -> bool {
    let named = args
        .first()
        .and_then(|a| Path::new(a).file_name())
        .is_some_and(|name| name == OsStr::new(BRIDGE_BINARY_NAME));
    named
        || args
            .iter()
            .skip(1)
            .any(|arg| flag_name(arg).is_some_and(|(name, _)| BRIDGE_ONLY.contains(&name.as_str())))
}

/// `-name`, `--name`, `-name=value` → (`name`, value); `None` for anything else (values, `-`, `--`).
fn flag_name(arg: &OsStr) -> Option<(String, Option<String>)> {
    let text = arg.to_str()?;
    let flag = text.strip_prefix("--").or_else(|| text.strip_prefix('-'))?;
    if flag.is_empty() || flag.starts_with('-') {
        return None;
    }
    Some(match flag.split_once('=') {
        Some((name, value)) => (name.to_owned(), Some(value.to_owned())),
        None => (flag.to_owned(), None),
    })
}

/// The `serve` arguments for a bridge command line: `-cmd`/`-url` pairs become `--exec URL=COMMAND`, `-period`
/// the exec period, `-latency` the maximum result age, `-port` the port (else 8080 unless `port_from_env`),
/// `-quiet` warnings and errors only, and exec URLs answer the bridge's bodies. Any other argument (one of the
/// agent's own flags) is passed on unchanged.
pub fn translate(args: &[OsString], port_from_env: bool) -> Result<Vec<OsString>, BridgeError> {
    let mut out: Vec<OsString> = args.first().cloned().into_iter().collect();
    let (mut cmds, mut urls) = (Vec::new(), Vec::new());
    let mut port_given = false;
    let mut rest = args.iter().skip(1);
    while let Some(arg) = rest.next() {
        let Some((name, inline)) = flag_name(arg).filter(|(name, _)| known(name)) else {
            out.push(arg.clone());
            continue;
        };
        if BOOLEAN.contains(&name.as_str()) {
            let on = match inline.as_deref() {
                None | Some("true" | "1" | "t" | "T" | "TRUE" | "True") => true,
                Some("false" | "0" | "f" | "F" | "FALSE" | "False") => false,
                Some(other) => {
                    return Err(BridgeError::BadBool {
                        flag: name,
                        value: other.to_owned(),
                    });
                }
            };
            if on {
                out.push(format!("--{name}").into());
            }
            continue;
        }
        let value = match inline {
            Some(value) => value,
            None => rest
                .next()
                .map(|v| v.to_string_lossy().into_owned())
                .ok_or_else(|| BridgeError::MissingValue(name.clone()))?,
        };
        match name.as_str() {
            "cmd" => cmds.push(value),
            "url" => urls.push(value),
            "port" => {
                port_given = true;
                out.extend(["--port".into(), value.into()]);
            }
            "period" => out.extend(["--exec-period".into(), go_duration(&value).into()]),
            "latency" => out.extend(["--exec-max-age".into(), go_duration(&value).into()]),
            _ => out.push(arg.clone()),
        }
    }
    if urls.is_empty() {
        urls.push(DEFAULT_URL.to_owned());
    }
    if cmds.is_empty() {
        cmds.push(DEFAULT_COMMAND.to_owned());
    }
    if cmds.len() != urls.len() {
        return Err(BridgeError::Unpaired {
            cmds: cmds.len(),
            urls: urls.len(),
        });
    }
    for (cmd, url) in cmds.iter().zip(&urls) {
        if !url.starts_with('/') {
            return Err(BridgeError::BadUrl(url.clone()));
        }
        out.push(format!("--exec={url}={cmd}").into());
    }
    if !port_given && !port_from_env {
        out.extend(["--port".into(), BRIDGE_DEFAULT_PORT.to_string().into()]);
    }
    out.extend(["--exec-answer".into(), "bridge".into()]);
    Ok(out)
}

fn known(name: &str) -> bool {
    BRIDGE_ONLY.contains(&name) || name == "port" || name == "version"
}

/// A Go duration (`2s`, `10ms`, `1m30s`, `1h`) in the agent's spelling; anything else unchanged, for the agent's
/// own parser (which also takes bare seconds) to accept or name.
fn go_duration(value: &str) -> String {
    let mut total = Duration::ZERO;
    let mut rest = value.trim();
    if rest.is_empty() {
        return value.to_owned();
    }
    while !rest.is_empty() {
        let number_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, tail) = rest.split_at(number_end);
        let unit_end = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_end);
        let scale = match unit {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return value.to_owned(),
        };
        let Ok(number) = number.parse::<f64>() else {
            return value.to_owned();
        };
        let Ok(part) = Duration::try_from_secs_f64(number * scale) else {
            return value.to_owned();
        };
        total = total.saturating_add(part);
        rest = tail;
    }
    format_duration(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    fn translated(args: &[&str]) -> Vec<String> {
        translate(&argv(args), false)
            .unwrap()
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect()
    }

    #[test]
    fn the_readme_invocation_becomes_exec_flags_on_port_8080() {
        assert_eq!(
            translated(&[
                "healthbridge-agent",
                "-cmd",
                "ls /tmp/test",
                "-port",
                "8080",
                "-period",
                "2s",
                "-latency",
                "5s",
                "-url",
                "/healthz",
            ]),
            [
                "healthbridge-agent",
                "--port",
                "8080",
                "--exec-period",
                "2s",
                "--exec-max-age",
                "5s",
                "--exec=/healthz=ls /tmp/test",
                "--exec-answer",
                "bridge"
            ]
        );
    }

    #[test]
    fn double_dashes_equals_signs_and_pairs_are_read_like_go_flags() {
        let args = translated(&[
            "exechealthz",
            "--cmd=ls /tmp/test1",
            "--url=/healthz1",
            "--cmd=ls /tmp/test2",
            "--url=/healthz2",
            "-quiet",
        ]);
        assert_eq!(
            args[1..],
            [
                "--quiet",
                "--exec=/healthz1=ls /tmp/test1",
                "--exec=/healthz2=ls /tmp/test2",
                "--port",
                "8080",
                "--exec-answer",
                "bridge"
            ]
        );
    }

    #[test]
    fn the_old_defaults_apply() {
        let args = translated(&["exechealthz"]);
        assert!(args.contains(&"--exec=/healthz=echo healthz".to_owned()));
        let from_env = translate(&argv(&["exechealthz", "-cmd=true"]), true).unwrap();
        assert!(
            !from_env.contains(&OsString::from("--port")),
            "{from_env:?}"
        );
    }

    #[test]
    fn go_durations_are_converted() {
        assert_eq!(go_duration("10ms"), "10ms");
        assert_eq!(go_duration("1m30s"), "90s");
        assert_eq!(go_duration("1h"), "3600s");
        assert_eq!(go_duration("3"), "3");
        assert_eq!(go_duration("soon"), "soon");
    }

    #[test]
    fn the_bridge_is_recognised_by_name_or_by_its_flags() {
        assert!(invoked_as_bridge(&argv(&["/exechealthz"])));
        assert!(invoked_as_bridge(&argv(&[
            "healthbridge-agent",
            "-cmd=true"
        ])));
        assert!(invoked_as_bridge(&argv(&[
            "healthbridge-agent",
            "--cmd",
            "x"
        ])));
        assert!(!invoked_as_bridge(&argv(&[
            "healthbridge-agent",
            "--port",
            "3000"
        ])));
        assert!(!invoked_as_bridge(&argv(&[
            "healthbridge-agent",
            "--exec",
            "/a=ls -cmd"
        ])));
    }

    #[test]
    fn mistakes_are_named() {
        let err = |args: &[&str]| translate(&argv(args), false).unwrap_err().to_string();
        assert!(err(&["exechealthz", "-cmd", "a", "-cmd", "b"]).contains("2 -cmd and 1 -url"));
        assert!(err(&["exechealthz", "-url", "healthz"]).contains("must start with /"));
        assert!(err(&["exechealthz", "-cmd"]).contains("-cmd needs a value"));
        assert!(err(&["exechealthz", "-quiet=maybe"]).contains("true or false"));
    }
}
