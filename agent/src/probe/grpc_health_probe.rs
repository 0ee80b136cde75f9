//! The `grpc_health_probe` drop-in: that tool's single-dash flags read as Go's `flag` package reads them, its
//! argument checks and its exit codes (1 invalid arguments, 2 connection failure, 3 RPC failure, 4 not SERVING),
//! over the agent's own gRPC health client and TLS verifier.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{CommandFactory, Parser};
use healthbridge_contract::duration::format_duration;
use healthbridge_contract::socket::split_host_port;
use healthbridge_contract::value::shorten;
use http::HeaderValue;
use tokio::time::Instant;
use tonic::metadata::{
    AsciiMetadataKey, AsciiMetadataValue, BinaryMetadataKey, MetadataMap, MetadataValue,
};

use crate::socket::grpc::{self, CallFailure, GrpcProbe};
use crate::tls::ClientTlsArgs;

/// The name under which a copy or symlink of the binary behaves as grpc_health_probe.
pub const BINARY_NAME: &str = "grpc_health_probe";

/// grpc_health_probe's exit codes, which scripts and probes written for it may check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Serving = 0,
    InvalidArguments = 1,
    ConnectionFailure = 2,
    RpcFailure = 3,
    Unhealthy = 4,
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> Self {
        ExitCode::from(exit as u8)
    }
}

/// grpc_health_probe's flags, in its spelling and with its defaults.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "grpc_health_probe",
    about = "grpc_health_probe's command line: one grpc.health.v1.Health/Check call; exit 0 SERVING, 1 invalid arguments, 2 connection failure, 3 RPC failure, 4 not SERVING",
    disable_version_flag = true,
    args_override_self = true
)]
pub struct GrpcHealthProbeArgs {
    /// (required) HOST:PORT to connect to; `:PORT` is 127.0.0.1:PORT.
    #[arg(long, default_value = "", hide_default_value = true)]
    pub addr: String,
    /// Service name to check ("": the server as a whole).
    #[arg(long, default_value = "", hide_default_value = true)]
    pub service: String,
    /// User-Agent header of the call.
    #[arg(long, default_value = "grpc_health_probe")]
    pub user_agent: String,
    /// Timeout for establishing the connection (TCP, TLS, HTTP/2): a Go duration such as 1s, 500ms, 1m30s.
    #[arg(long, default_value = "1s", value_parser = go_duration)]
    pub connect_timeout: Duration,
    /// Timeout for the health call: a Go duration.
    #[arg(long, default_value = "1s", value_parser = go_duration)]
    pub rpc_timeout: Duration,
    /// Extra call header (gRPC metadata) as `name: value`; repeatable.
    #[arg(long, value_name = "NAME: VALUE")]
    pub rpc_header: Vec<String>,
    /// Use TLS (default: plaintext h2c).
    #[arg(long, value_parser = go_bool, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false")]
    pub tls: bool,
    /// (with -tls) Do not verify the server certificate (INSECURE).
    #[arg(long, value_parser = go_bool, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false")]
    pub tls_no_verify: bool,
    /// (with -tls) PEM file of CA certificates to trust, besides the compiled-in web roots.
    #[arg(
        long,
        default_value = "",
        hide_default_value = true,
        value_name = "FILE"
    )]
    pub tls_ca_cert: String,
    /// (with -tls) Client certificate for mTLS (needs -tls-client-key).
    #[arg(
        long,
        default_value = "",
        hide_default_value = true,
        value_name = "FILE"
    )]
    pub tls_client_cert: String,
    /// (with -tls) Client private key for mTLS (needs -tls-client-cert).
    #[arg(
        long,
        default_value = "",
        hide_default_value = true,
        value_name = "FILE"
    )]
    pub tls_client_key: String,
    /// (with -tls) Name to verify the server certificate against instead of the host of -addr.
    #[arg(
        long,
        default_value = "",
        hide_default_value = true,
        value_name = "NAME"
    )]
    pub tls_server_name: String,
    /// Verbose logs on stderr.
    #[arg(long = "v", value_parser = go_bool, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false")]
    pub verbose: bool,
    /// Not supported: ALTS.
    #[arg(long, hide = true, value_parser = go_bool, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false")]
    pub alts: bool,
    /// Not supported: SPIFFE workload API.
    #[arg(long, hide = true, value_parser = go_bool, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false")]
    pub spiffe: bool,
    /// Not supported: gzip compression.
    #[arg(long, hide = true, value_parser = go_bool, num_args = 0..=1, require_equals = true, default_missing_value = "true", default_value = "false")]
    pub gzip: bool,
}

/// A Go duration (`1s`, `500ms`, `1m30s`, `1.5s`, `300us`, `2h`), read by humantime, which takes them all.
fn go_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| {
        format!(
            "`{}` is not a duration ({e}): write it as Go does, e.g. 1s, 500ms or 1m30s",
            shorten(text)
        )
    })
}

/// A Go boolean flag value, as `strconv.ParseBool` takes them.
fn go_bool(text: &str) -> Result<bool, String> {
    match text {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Ok(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Ok(false),
        _ => Err(format!(
            "`{}` is not a boolean: write -flag, -flag=true or -flag=false",
            shorten(text)
        )),
    }
}

/// True when the file name of the program is `grpc_health_probe`.
fn named_grpc_health_probe(args: &[OsString]) -> bool {
    args.first()
        .and_then(|a| Path::new(a).file_name())
        .is_some_and(|name| name == OsStr::new(BINARY_NAME))
}

/// True for `-addr`, `--addr`, `-addr=…` and `--addr=…`.
fn is_addr_flag(arg: &OsStr) -> bool {
    let Some(text) = arg.to_str() else {
        return false;
    };
    let name = text
        .strip_prefix("--")
        .or_else(|| text.strip_prefix('-'))
        .map(|flag| flag.split_once('=').map_or(flag, |(name, _)| name));
    name == Some("addr")
}

/// grpc_health_probe's arguments, program name first, when this process is one: the binary is called
/// `grpc_health_probe`, or the probe (`healthbridge-agent probe`, `healthbridge-probe`) was given `-addr`.
pub fn argv(args: &[OsString]) -> Option<Vec<OsString>> {
    if named_grpc_health_probe(args) {
        return Some(args.to_vec());
    }
    let probe_args = super::probe_argv(args)?;
    probe_args
        .iter()
        .skip(1)
        .take_while(|arg| *arg != "--")
        .any(|arg| is_addr_flag(arg))
        .then_some(probe_args)
}

/// A command line read the way Go's `flag` package reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoCommandLine {
    /// The flags in clap's spelling: `--name=value`, `--name` for a boolean, `--help`.
    pub flags: Vec<OsString>,
    /// What follows the flags (from the first argument that is not a flag, or after `--`); Go leaves it unread.
    pub ignored: Vec<OsString>,
}

/// Reads `args` (program name first) as Go's `flag` package does: `-name` or `--name`, `-name=value` or
/// `-name value` (a value may start with `-`), booleans only as `-name` or `-name=BOOL`; reading stops at `--` or
/// at the first argument that is not a flag. `Err` names an unknown flag.
pub fn read_go_flags(args: impl IntoIterator<Item = OsString>) -> Result<GoCommandLine, String> {
    let command = GrpcHealthProbeArgs::command();
    let known = |name: &str| {
        command
            .get_arguments()
            .find(|arg| arg.get_long() == Some(name))
    };
    let mut args = args.into_iter();
    let mut flags: Vec<OsString> = args.next().into_iter().collect();
    let mut ignored = Vec::new();
    while let Some(arg) = args.next() {
        let Some(text) = arg.to_str() else {
            ignored.push(arg);
            break;
        };
        if text == "--" {
            break;
        }
        let Some(flag) = text
            .strip_prefix("--")
            .or_else(|| text.strip_prefix('-'))
            .filter(|flag| !flag.is_empty())
        else {
            ignored.push(arg);
            break;
        };
        let (name, value) = match flag.split_once('=') {
            Some((name, value)) => (name, Some(value)),
            None => (flag, None),
        };
        if name == "h" || name == "help" {
            flags.push("--help".into());
            continue;
        }
        let Some(definition) = known(name).filter(|_| !name.is_empty() && !name.starts_with('-'))
        else {
            return Err(format!("flag provided but not defined: -{}", shorten(name)));
        };
        // The booleans are the flags whose value is optional (`-tls` or `-tls=false`).
        let is_boolean = definition
            .get_num_args()
            .is_some_and(|range| range.min_values() == 0);
        let value = match value {
            Some(value) => Some(OsString::from(value)),
            None if is_boolean => None,
            // Go takes the next argument as the value, whatever it looks like.
            None => args.next(),
        };
        flags.push(match value {
            Some(value) => {
                let mut flag = OsString::from(format!("--{name}="));
                flag.push(value);
                flag
            }
            None => OsString::from(format!("--{name}")),
        });
    }
    ignored.extend(args);
    Ok(GoCommandLine { flags, ignored })
}

/// Parses grpc_health_probe's command line (program name first). `Err` is the exit code once help or what is
/// wrong has been printed: 0 for help, 1 for invalid arguments.
pub fn parse_args(
    args: impl IntoIterator<Item = OsString>,
) -> Result<GrpcHealthProbeArgs, ExitCode> {
    let line = match read_go_flags(args) {
        Ok(line) => line,
        Err(error) => {
            eprintln!("error: {error} (see -h)");
            return Err(Exit::InvalidArguments.into());
        }
    };
    if let Some(first) = line.ignored.first() {
        eprintln!(
            "grpc_health_probe: ignoring `{}` and what follows: flags end at the first argument that is not one",
            shorten(&first.to_string_lossy())
        );
    }
    match GrpcHealthProbeArgs::try_parse_from(&line.flags) {
        Ok(parsed) => Ok(parsed),
        Err(err) if err.kind() == clap::error::ErrorKind::DisplayHelp => {
            // In the spelling grpc_health_probe documents (Go reads both).
            print!("{}", err.render().to_string().replace("--", "-"));
            Err(ExitCode::SUCCESS)
        }
        Err(err) => {
            let text = err.to_string();
            let first = text
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("invalid arguments")
                .trim_start_matches("error: ")
                // Shown in the spelling the user wrote.
                .replace("'--", "'-");
            eprintln!("error: {first} (see -h)");
            Err(Exit::InvalidArguments.into())
        }
    }
}

/// A checked command line, ready to run.
#[derive(Debug, Clone)]
pub struct Plan {
    pub host: String,
    pub port: u16,
    pub tls: Option<ClientTlsArgs>,
    pub service: String,
    pub user_agent: HeaderValue,
    pub metadata: MetadataMap,
    pub connect_timeout: Duration,
    pub rpc_timeout: Duration,
    pub verbose: bool,
}

impl GrpcHealthProbeArgs {
    /// Checks the flags as grpc_health_probe does (and what it would only find out later, such as a bad header);
    /// `Err` is the one line to print, exit 1.
    pub fn plan(&self) -> Result<Plan, String> {
        for (given, flag, why) in [
            (
                self.alts,
                "-alts",
                "ALTS works only between Google Cloud workloads; use -tls",
            ),
            (
                self.spiffe,
                "-spiffe",
                "give the SVID files (e.g. written by spiffe-helper) with -tls -tls-ca-cert -tls-client-cert -tls-client-key",
            ),
            (
                self.gzip,
                "-gzip",
                "a health answer is a few bytes and every server takes it uncompressed; drop -gzip",
            ),
        ] {
            if given {
                return Err(format!(
                    "{flag} is not supported by this grpc_health_probe: {why}"
                ));
            }
        }
        if self.addr.is_empty() {
            return Err(
                "-addr not specified: give the server as -addr=HOST:PORT, e.g. -addr=:50051"
                    .to_owned(),
            );
        }
        for (flag, timeout) in [
            ("-connect-timeout", self.connect_timeout),
            ("-rpc-timeout", self.rpc_timeout),
        ] {
            if timeout.is_zero() {
                return Err(format!(
                    "{flag} must be greater than zero (specified: {})",
                    format_duration(timeout)
                ));
            }
        }
        let given = |value: &str| !value.is_empty();
        let needs_tls = [
            (self.tls_no_verify, "-tls-no-verify"),
            (given(&self.tls_ca_cert), "-tls-ca-cert"),
            (given(&self.tls_client_cert), "-tls-client-cert"),
            (given(&self.tls_server_name), "-tls-server-name"),
        ];
        if !self.tls
            && let Some((_, flag)) = needs_tls.iter().find(|(set, _)| *set)
        {
            return Err(format!(
                "specified {flag} without specifying -tls: add -tls, or drop {flag}"
            ));
        }
        match (given(&self.tls_client_cert), given(&self.tls_client_key)) {
            (true, false) => {
                return Err("specified -tls-client-cert without specifying -tls-client-key: give both for mTLS".to_owned());
            }
            (false, true) => {
                return Err("specified -tls-client-key without specifying -tls-client-cert: give both for mTLS".to_owned());
            }
            _ => {}
        }
        if self.tls_no_verify && given(&self.tls_ca_cert) {
            return Err("cannot specify -tls-ca-cert with -tls-no-verify (the CA would not be used): drop one".to_owned());
        }
        if self.tls_no_verify && given(&self.tls_server_name) {
            return Err("cannot specify -tls-server-name with -tls-no-verify (the name would not be used): drop one".to_owned());
        }
        let (host, port) = address(&self.addr)?;
        let path = |value: &str| given(value).then(|| PathBuf::from(value));
        let tls = self.tls.then(|| ClientTlsArgs {
            ca_cert: path(&self.tls_ca_cert),
            client_cert: path(&self.tls_client_cert),
            client_key: path(&self.tls_client_key),
            server_name: given(&self.tls_server_name).then(|| self.tls_server_name.clone()),
            insecure_skip_verify: self.tls_no_verify,
        });
        let user_agent = HeaderValue::from_str(&self.user_agent).map_err(|_| {
            format!(
                "-user-agent `{}` cannot be an HTTP header value: use visible ASCII",
                shorten(&self.user_agent)
            )
        })?;
        let mut metadata = MetadataMap::new();
        for header in &self.rpc_header {
            add_rpc_header(&mut metadata, header)?;
        }
        Ok(Plan {
            host,
            port,
            tls,
            service: self.service.clone(),
            user_agent,
            metadata,
            connect_timeout: self.connect_timeout,
            rpc_timeout: self.rpc_timeout,
            verbose: self.verbose,
        })
    }
}

/// `-addr` as grpc-go dials it: `HOST:PORT`, `[V6]:PORT`, `:PORT` (this host), optionally after `dns:///` or
/// `passthrough:///`; the host and port by the contract's rule for socket URLs.
fn address(addr: &str) -> Result<(String, u16), String> {
    let bare = addr
        .strip_prefix("dns:///")
        .or_else(|| addr.strip_prefix("passthrough:///"))
        .unwrap_or(addr);
    if bare.starts_with("unix:") || bare.starts_with("unix-abstract:") {
        return Err(format!(
            "-addr `{}`: unix sockets are not supported; give HOST:PORT",
            shorten(addr)
        ));
    }
    // Go dials `:PORT` on this host; 127.0.0.1 reaches a server listening on any IPv4 or dual-stack address.
    let local;
    let authority = if bare.starts_with(':') {
        local = format!("127.0.0.1{bare}");
        &local
    } else {
        bare
    };
    split_host_port(authority).map_err(|why| format!("-addr `{}`: {why}", shorten(addr)))
}

/// One `-rpc-header 'name: value'`: the name lower-cased as gRPC metadata is, the value without leading spaces;
/// a `-bin` name takes the value's bytes (sent base64-encoded).
fn add_rpc_header(metadata: &mut MetadataMap, header: &str) -> Result<(), String> {
    let bad = |why: &str| {
        format!(
            "-rpc-header `{}` {why}: write it like -rpc-header='authorization: Bearer TOKEN'",
            shorten(header)
        )
    };
    let (name, value) = header
        .split_once(':')
        .ok_or_else(|| bad("is not `name: value`"))?;
    let name = name.to_ascii_lowercase();
    let value = value.trim_start();
    if name.ends_with("-bin") {
        let key = BinaryMetadataKey::from_bytes(name.as_bytes())
            .map_err(|_| bad("has a name that cannot be a header"))?;
        metadata.append_bin(key, MetadataValue::from_bytes(value.as_bytes()));
    } else {
        let key = AsciiMetadataKey::from_bytes(name.as_bytes())
            .map_err(|_| bad("has a name that cannot be a header"))?;
        let value = AsciiMetadataValue::try_from(value)
            .map_err(|_| bad("has a value that cannot be a header (use visible ASCII)"))?;
        metadata.append(key, value);
    }
    Ok(())
}

/// What one run decided: the exit code and the line grpc_health_probe would print for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub exit: Exit,
    pub message: String,
}

/// Runs grpc_health_probe's check on a single-threaded runtime; every outcome is one line on stderr, as it
/// prints them (`status: SERVING` included).
pub fn check(args: &GrpcHealthProbeArgs) -> ExitCode {
    let plan = match args.plan() {
        Ok(plan) => plan,
        Err(error) => {
            eprintln!("error: {error}");
            return Exit::InvalidArguments.into();
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start: {e}");
            return Exit::ConnectionFailure.into();
        }
    };
    let outcome = runtime.block_on(run(&plan, &args.addr));
    eprintln!("{}", outcome.message);
    outcome.exit.into()
}

/// Connects within -connect-timeout, then calls within -rpc-timeout; `addr` as given, for messages.
pub async fn run(plan: &Plan, addr: &str) -> Outcome {
    let outcome = |exit, message: String| Outcome { exit, message };
    let verbose = |line: String| {
        if plan.verbose {
            eprintln!("{line}");
        }
    };
    verbose(format!(
        "parsed options: addr={addr} service={:?} connect-timeout={} rpc-timeout={} tls={} headers={}",
        plan.service,
        format_duration(plan.connect_timeout),
        format_duration(plan.rpc_timeout),
        plan.tls.is_some(),
        plan.metadata.len()
    ));
    let tls = match plan.tls.clone().unwrap_or_default().load() {
        Ok(tls) => tls,
        Err(e) => {
            return outcome(
                Exit::InvalidArguments,
                format!(
                    "error: failed to initialize tls credentials: {}",
                    as_go_flags(&e.to_string())
                ),
            );
        }
    };
    let probe = GrpcProbe::for_target(
        &plan.host,
        plan.port,
        plan.tls.is_some(),
        &plan.service,
        &tls,
    )
    .with_user_agent(plan.user_agent.clone())
    .with_metadata(plan.metadata.clone());
    verbose("establishing connection".to_owned());
    let connecting = Instant::now();
    let mut connection = match probe.connect(plan.connect_timeout).await {
        Ok(connection) => connection,
        Err(failure) => return connection_failure(&failure, addr, plan),
    };
    let connect_took = connecting.elapsed();
    verbose(format!(
        "connection established (took {})",
        rounded(connect_took)
    ));
    let calling = Instant::now();
    let answer = probe.ask(&mut connection, plan.rpc_timeout).await;
    let rpc_took = calling.elapsed();
    match answer {
        Ok(status) if grpc::is_serving(status) => {
            verbose(format!(
                "time elapsed: connect={} rpc={}",
                rounded(connect_took),
                rounded(rpc_took)
            ));
            outcome(Exit::Serving, "status: SERVING".to_owned())
        }
        Ok(status) => outcome(
            Exit::Unhealthy,
            format!(
                "service unhealthy (responded with {:?})",
                grpc::status_name(status)
            ),
        ),
        Err(failure) if failure.is_connection() => connection_failure(&failure, addr, plan),
        Err(CallFailure::NoAnswer(_))
        | Err(CallFailure::Status {
            code: tonic::Code::DeadlineExceeded,
            ..
        }) => outcome(
            Exit::RpcFailure,
            format!(
                "timeout: health rpc did not complete within {}",
                format_duration(plan.rpc_timeout)
            ),
        ),
        Err(CallFailure::Status {
            code: tonic::Code::Unimplemented,
            message,
        }) => outcome(
            Exit::RpcFailure,
            format!(
                "error: this server does not implement the grpc health protocol (grpc.health.v1.Health): UNIMPLEMENTED{}",
                if message.is_empty() {
                    String::new()
                } else {
                    format!(": {message}")
                }
            ),
        ),
        Err(failure) => outcome(
            Exit::RpcFailure,
            format!(
                "error: health rpc failed: {}",
                failure.describe(&plan.service)
            ),
        ),
    }
}

fn connection_failure(failure: &CallFailure, addr: &str, plan: &Plan) -> Outcome {
    let message = match failure {
        CallFailure::ConnectTimeout(_) => format!(
            "timeout: failed to connect service {addr:?} within {}",
            format_duration(plan.connect_timeout)
        ),
        CallFailure::Unreachable(why) => format!(
            "error: failed to connect service at {addr:?}: {}",
            as_go_flags(why)
        ),
        other => format!(
            "error: failed to connect service at {addr:?}: {}",
            as_go_flags(&other.describe(&plan.service))
        ),
    };
    Outcome {
        exit: Exit::ConnectionFailure,
        message,
    }
}

/// The agent's TLS messages name its own flags; in this mode they name grpc_health_probe's.
fn as_go_flags(message: &str) -> String {
    message
        .replace(" / HTTP_HEALTHCHECK_SIDECAR_TLS_CA_CERT", "")
        .replace(" / HTTP_HEALTHCHECK_SIDECAR_TLS_SERVER_NAME", "")
        .replace(" (HTTP_HEALTHCHECK_SIDECAR_TLS_CLIENT_CERT/_KEY)", "")
        .replace("--ca-cert", "-tls-ca-cert")
        .replace("--client-cert", "-tls-client-cert")
        .replace("--client-key", "-tls-client-key")
        .replace("--server-name", "-tls-server-name")
        .replace("--insecure-skip-verify", "-tls-no-verify")
}

/// A time taken, to the millisecond (or microsecond below one).
fn rounded(took: Duration) -> String {
    if took >= Duration::from_millis(1) {
        format_duration(Duration::from_millis(took.as_millis() as u64))
    } else {
        format_duration(Duration::from_micros(took.as_micros() as u64))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn os(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    fn read(args: &[&str]) -> GoCommandLine {
        read_go_flags(os(&[&["grpc_health_probe"], args].concat())).unwrap()
    }

    fn parse(args: &[&str]) -> Result<GrpcHealthProbeArgs, String> {
        let line = read_go_flags(os(&[&["grpc_health_probe"], args].concat()))?;
        GrpcHealthProbeArgs::try_parse_from(&line.flags).map_err(|e| e.to_string())
    }

    fn plan(args: &[&str]) -> Result<Plan, String> {
        parse(args)?.plan()
    }

    #[test]
    fn the_flag_definitions_are_consistent() {
        GrpcHealthProbeArgs::command().debug_assert();
    }

    #[test]
    fn go_flag_spellings_become_one_clap_spelling() {
        assert_eq!(
            read(&[
                "-addr=:1",
                "--service",
                "x",
                "-tls",
                "-connect-timeout",
                "-1s",
                "-v=false"
            ])
            .flags,
            os(&[
                "grpc_health_probe",
                "--addr=:1",
                "--service=x",
                "--tls",
                "--connect-timeout=-1s",
                "--v=false"
            ])
        );
        assert_eq!(read(&["-h"]).flags, os(&["grpc_health_probe", "--help"]));
    }

    #[test]
    fn flags_end_at_the_first_argument_that_is_not_one_as_in_go() {
        let line = read(&["-addr=:1", "-tls", "true", "-service=x"]);
        assert_eq!(line.flags, os(&["grpc_health_probe", "--addr=:1", "--tls"]));
        assert_eq!(line.ignored, os(&["true", "-service=x"]));
        let line = read(&["-addr=:1", "--", "-tls"]);
        assert_eq!(line.flags, os(&["grpc_health_probe", "--addr=:1"]));
        assert_eq!(line.ignored, os(&["-tls"]));
    }

    #[test]
    fn an_unknown_flag_is_named_as_go_names_it() {
        assert_eq!(
            read_go_flags(os(&["grpc_health_probe", "-adr=:1"])).unwrap_err(),
            "flag provided but not defined: -adr"
        );
        assert!(read_go_flags(os(&["grpc_health_probe", "---addr=:1"])).is_err());
    }

    #[test]
    fn defaults_are_grpc_health_probes() {
        let args = parse(&["-addr=localhost:50051"]).unwrap();
        assert_eq!(args.connect_timeout, Duration::from_secs(1));
        assert_eq!(args.rpc_timeout, Duration::from_secs(1));
        assert_eq!(args.user_agent, "grpc_health_probe");
        assert_eq!(args.service, "");
        assert!(!args.tls && !args.tls_no_verify && !args.verbose);
    }

    #[test]
    fn go_durations_and_booleans_are_read_as_go_writes_them() {
        let args = parse(&[
            "-addr=h:1",
            "-connect-timeout=1m30s",
            "-rpc-timeout",
            "500ms",
            "-tls=T",
            "-v=1",
        ])
        .unwrap();
        assert_eq!(args.connect_timeout, Duration::from_secs(90));
        assert_eq!(args.rpc_timeout, Duration::from_millis(500));
        assert!(args.tls && args.verbose);
        assert_eq!(
            parse(&["-addr=h:1", "-rpc-timeout=1.5s"])
                .unwrap()
                .rpc_timeout,
            Duration::from_millis(1500)
        );
        assert!(!parse(&["-addr=h:1", "-tls=false"]).unwrap().tls);
        let soon = parse(&["-addr=h:1", "-rpc-timeout=soon"]).unwrap_err();
        assert!(soon.contains("1m30s"), "{soon}");
        let maybe = parse(&["-addr=h:1", "-tls=maybe"]).unwrap_err();
        assert!(maybe.contains("-flag=true"), "{maybe}");
    }

    #[test]
    fn a_flag_given_twice_takes_the_last_value_and_headers_add_up() {
        let args = parse(&[
            "-addr=a:1",
            "-addr=b:2",
            "-rpc-header=x-a: 1",
            "-rpc-header",
            "X-B:  two",
        ])
        .unwrap();
        assert_eq!(args.addr, "b:2");
        let plan = args.plan().unwrap();
        assert_eq!(plan.metadata.get("x-a").unwrap().to_str().unwrap(), "1");
        assert_eq!(plan.metadata.get("x-b").unwrap().to_str().unwrap(), "two");
        let binary = plan_of(&["-addr=a:1", "-rpc-header=trace-bin: \u{1}"]);
        assert_eq!(
            binary
                .metadata
                .get_bin("trace-bin")
                .unwrap()
                .to_bytes()
                .unwrap(),
            &b"\x01"[..]
        );
    }

    fn plan_of(args: &[&str]) -> Plan {
        plan(args).unwrap()
    }

    #[test]
    fn addresses_are_read_as_grpc_go_dials_them() {
        let at = |addr: &str| {
            let plan = plan_of(&[&format!("-addr={addr}")]);
            (plan.host, plan.port)
        };
        assert_eq!(at(":5000"), ("127.0.0.1".into(), 5000));
        assert_eq!(at("localhost:5000"), ("localhost".into(), 5000));
        assert_eq!(at("[::1]:5000"), ("::1".into(), 5000));
        assert_eq!(at("dns:///app.svc:443"), ("app.svc".into(), 443));
        for (addr, why) in [
            ("localhost", "has no port"),
            ("h:0", "1 to 65535"),
            ("unix:///run/app.sock", "unix sockets are not supported"),
            ("h:1/x", "is not a port"),
        ] {
            let error = plan(&[&format!("-addr={addr}")]).unwrap_err();
            assert!(
                error.starts_with(&format!("-addr `{addr}`")) && error.contains(why),
                "{addr}: {error}"
            );
        }
    }

    #[test]
    fn invalid_combinations_are_refused_as_grpc_health_probe_refuses_them() {
        for (args, starts) in [
            (&[][..], "-addr not specified"),
            (
                &["-addr=h:1", "-connect-timeout=0s"][..],
                "-connect-timeout must be greater than zero",
            ),
            (
                &["-addr=h:1", "-rpc-timeout=0ms"][..],
                "-rpc-timeout must be greater than zero",
            ),
            (
                &["-addr=h:1", "-tls-no-verify"][..],
                "specified -tls-no-verify without specifying -tls",
            ),
            (
                &["-addr=h:1", "-tls-ca-cert=ca.pem"][..],
                "specified -tls-ca-cert without specifying -tls",
            ),
            (
                &[
                    "-addr=h:1",
                    "-tls-client-cert=c.pem",
                    "-tls-client-key=k.pem",
                ][..],
                "specified -tls-client-cert without specifying -tls",
            ),
            (
                &["-addr=h:1", "-tls-server-name=app"][..],
                "specified -tls-server-name without specifying -tls",
            ),
            (
                &["-addr=h:1", "-tls", "-tls-client-cert=c.pem"][..],
                "specified -tls-client-cert without specifying -tls-client-key",
            ),
            (
                &["-addr=h:1", "-tls", "-tls-client-key=k.pem"][..],
                "specified -tls-client-key without specifying -tls-client-cert",
            ),
            (
                &["-addr=h:1", "-tls", "-tls-no-verify", "-tls-ca-cert=ca.pem"][..],
                "cannot specify -tls-ca-cert with -tls-no-verify",
            ),
            (
                &[
                    "-addr=h:1",
                    "-tls",
                    "-tls-no-verify",
                    "-tls-server-name=app",
                ][..],
                "cannot specify -tls-server-name with -tls-no-verify",
            ),
            (
                &["-addr=h:1", "-rpc-header=novalue"][..],
                "-rpc-header `novalue` is not `name: value`",
            ),
            (
                &["-addr=h:1", "-rpc-header=bad name: x"][..],
                "-rpc-header `bad name: x` has a name",
            ),
            (&["-addr=h:1", "-user-agent=a\u{7f}"][..], "-user-agent"),
        ] {
            let error = plan(args).unwrap_err();
            assert!(error.starts_with(starts), "{args:?}: {error}");
        }
    }

    #[test]
    fn unsupported_flags_say_so_and_what_to_do_instead() {
        for flag in ["-alts", "-spiffe", "-gzip"] {
            let error = plan(&["-addr=h:1", flag]).unwrap_err();
            assert!(
                error.starts_with(&format!("{flag} is not supported")),
                "{error}"
            );
        }
        assert!(plan(&["-addr=h:1", "-gzip=false"]).is_ok());
    }

    #[test]
    fn tls_flags_become_the_agents_tls_settings() {
        let plan = plan_of(&[
            "-addr=h:1",
            "-tls",
            "-tls-ca-cert=ca.pem",
            "-tls-client-cert=c.pem",
            "-tls-client-key=k.pem",
            "-tls-server-name=app.local",
        ]);
        assert_eq!(
            plan.tls,
            Some(ClientTlsArgs {
                ca_cert: Some("ca.pem".into()),
                client_cert: Some("c.pem".into()),
                client_key: Some("k.pem".into()),
                server_name: Some("app.local".into()),
                insecure_skip_verify: false,
            })
        );
        assert_eq!(plan_of(&["-addr=h:1"]).tls, None);
        assert_eq!(
            plan_of(&["-addr=h:1", "-tls", "-tls-no-verify", "-tls-ca-cert="]).tls,
            Some(ClientTlsArgs {
                insecure_skip_verify: true,
                ..ClientTlsArgs::default()
            }),
            "an empty value is no value, as in Go"
        );
    }

    #[test]
    fn the_drop_in_is_recognised_by_name_or_by_addr() {
        let argv = |args: &[&str]| argv(&os(args));
        assert_eq!(
            argv(&["/bin/grpc_health_probe", "-addr=:1"]),
            Some(os(&["/bin/grpc_health_probe", "-addr=:1"]))
        );
        assert_eq!(
            argv(&["healthbridge-agent", "probe", "-service=x", "-addr", ":1"]),
            Some(os(&["probe", "-service=x", "-addr", ":1"]))
        );
        assert_eq!(
            argv(&["/healthbridge-probe", "--addr=:1"]),
            Some(os(&["/healthbridge-probe", "--addr=:1"]))
        );
        assert_eq!(
            argv(&["healthbridge-agent", "probe", "--url=grpc://h:1"]),
            None
        );
        assert_eq!(
            argv(&["healthbridge-agent", "-addr=:1"]),
            None,
            "not a probe"
        );
        assert_eq!(
            argv(&["healthbridge-agent", "probe", "--", "-addr=:1"]),
            None
        );
    }

    #[test]
    fn tls_messages_name_this_modes_flags() {
        assert_eq!(
            as_go_flags("give that CA with --ca-cert / HTTP_HEALTHCHECK_SIDECAR_TLS_CA_CERT"),
            "give that CA with -tls-ca-cert"
        );
        assert_eq!(
            as_go_flags(
                "give --client-cert and --client-key (HTTP_HEALTHCHECK_SIDECAR_TLS_CLIENT_CERT/_KEY)"
            ),
            "give -tls-client-cert and -tls-client-key"
        );
    }
}
