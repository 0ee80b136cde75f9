//! `probe`: a one-shot HTTP(S) or gRPC health check for exec probes in scratch images, compatible with the older
//! probe's flags (and, in [`grpc_health_probe`], with that tool's).

pub mod grpc_health_probe;

use std::ffi::{OsStr, OsString};
use std::future::Future;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use clap::{CommandFactory, Parser};
use healthbridge_contract::socket::{self, SocketKind, SocketSpec};
use http::{HeaderValue, Request, StatusCode, Uri, header};
use http_body_util::Empty;
use hyper::body::Bytes;
use tokio::time::Instant;
use tower::ServiceExt;

use crate::cause;
use crate::duration::{format_duration, parse_duration};
use crate::socket::grpc::{self, CallFailure, GrpcProbe};
use crate::tls::ClientTlsArgs;

/// The name under which a copy or symlink of the binary behaves as `healthbridge-agent probe`.
pub const PROBE_BINARY_NAME: &str = "healthbridge-probe";

/// Flags the older probe knew, in Go's single-dash spelling; `-path=x` is rewritten to `--path=x`.
const LEGACY_FLAGS: [&str; 4] = ["path", "host", "statusPort", "retry"];

/// Why the probe says what it says; the process exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeExit {
    Healthy = 0,
    BadArguments = 2,
    CouldNotConnect = 3,
    Unhealthy = 4,
}

impl From<ProbeExit> for ExitCode {
    fn from(exit: ProbeExit) -> Self {
        ExitCode::from(exit as u8)
    }
}

/// The probe's User-Agent, on HTTP requests and gRPC calls alike.
const USER_AGENT: &str = concat!("healthbridge-probe/", env!("CARGO_PKG_VERSION"));

/// One HTTP(S) request or gRPC health call to a local (or given) URL; exit 0 healthy, 2 bad arguments, 3 could not
/// connect, 4 unhealthy.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "healthbridge-probe",
    version,
    about = "One HTTP(S) or gRPC health check for exec probes: exit 0 healthy, 2 bad arguments, 3 could not connect (DNS, TCP, TLS), 4 answered but unhealthy",
    after_help = "Called as grpc_health_probe, or given -addr, it takes grpc_health_probe's flags and exit codes instead (see -addr=x -h)."
)]
pub struct ProbeArgs {
    /// Full URL to check: https://localhost:8443/ready, or gRPC health grpc://localhost:50051[/SERVICE] (h2c) and
    /// grpcs://… (TLS). Alternative to --path/--host/--statusPort.
    #[arg(long, conflicts_with_all = ["path", "status_port"])]
    pub url: Option<String>,
    /// Path to check (old flag `-path`; `ready` and `/ready` mean the same).
    #[arg(long)]
    pub path: Option<String>,
    /// Host to connect to (old flag `-host`).
    #[arg(long, default_value = "localhost")]
    pub host: String,
    /// Port to connect to (old flag `-statusPort`).
    #[arg(long = "statusPort", alias = "status-port", value_name = "PORT")]
    pub status_port: Option<u16>,
    /// Use https:// when the URL is built from --host/--statusPort/--path.
    #[arg(long)]
    pub tls: bool,
    /// Extra attempts after the first (old flag `-retry`, same meaning).
    #[arg(long, visible_alias = "retry", default_value_t = 0)]
    pub retries: u32,
    /// Healthy only with exactly this HTTP status (default: any 2xx).
    #[arg(long, value_name = "CODE", value_parser = clap::value_parser!(u16).range(100..=599))]
    pub expect_status: Option<u16>,
    /// Timeout of each attempt (connect + answer): `1s`, `500ms`, `2`; a gRPC URL's `?timeout=` wins.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Give up once this much time has passed, whatever --retries says.
    #[arg(long, value_parser = parse_duration)]
    pub deadline: Option<Duration>,
    #[command(flatten)]
    pub tls_args: ClientTlsArgs,
}

/// True when this process was started as `healthbridge-probe`, or as `healthbridge-agent probe …`.
pub fn invoked_as_probe(args: &[OsString]) -> bool {
    let named = args
        .first()
        .and_then(|a| Path::new(a).file_name())
        .is_some_and(|name| name == OsStr::new(PROBE_BINARY_NAME));
    named || args.get(1).is_some_and(|a| a == "probe")
}

/// The probe's own arguments when this process is a probe (`healthbridge-probe …` or `healthbridge-agent probe …`):
/// as a subcommand, `probe` takes the place of the program name so clap sees only the probe's own flags.
pub fn probe_argv(args: &[OsString]) -> Option<Vec<OsString>> {
    if !invoked_as_probe(args) {
        return None;
    }
    let named = args
        .first()
        .and_then(|a| Path::new(a).file_name())
        .is_some_and(|name| name == OsStr::new(PROBE_BINARY_NAME));
    Some(if named {
        args.to_vec()
    } else {
        args.get(1..).map(<[OsString]>::to_vec).unwrap_or_default()
    })
}

/// Rewrites Go-style `-flag`/`-flag=value` (one dash) to `--flag`, for every long flag the probe knows.
pub fn normalize_legacy_flags(args: impl IntoIterator<Item = OsString>) -> Vec<OsString> {
    let long_names: Vec<String> = ProbeArgs::command()
        .get_arguments()
        .flat_map(|arg| arg.get_long_and_visible_aliases().unwrap_or_default())
        .map(str::to_owned)
        .chain(LEGACY_FLAGS.iter().map(|s| (*s).to_owned()))
        .collect();
    args.into_iter()
        .map(|arg| {
            let Some(text) = arg.to_str() else { return arg };
            let Some(flag) = text.strip_prefix('-').filter(|rest| !rest.starts_with('-')) else {
                return arg;
            };
            let name = flag.split_once('=').map_or(flag, |(name, _)| name);
            if name.len() > 1 && long_names.iter().any(|known| known == name) {
                OsString::from(format!("-{text}"))
            } else {
                arg
            }
        })
        .collect()
}

/// What one probe run decided, with the one line that says why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub exit: ProbeExit,
    pub message: String,
}

/// What the probe checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// An HTTP(S) URL: healthy on the expected status.
    Http(Uri),
    /// A gRPC health target by the contract's rule for `grpc://`/`grpcs://`: healthy on SERVING.
    Grpc(SocketSpec),
}

/// True for a URL the gRPC rule decides on (`grpc:`/`grpcs:`, in any case, so a misspelt one gets its message).
fn is_grpc_url(url: &str) -> bool {
    url.trim_start().split_once(':').is_some_and(|(scheme, _)| {
        scheme.eq_ignore_ascii_case("grpc") || scheme.eq_ignore_ascii_case("grpcs")
    })
}

impl ProbeArgs {
    /// What to check: --url as given (HTTP(S), or gRPC by the contract's rule for gRPC targets), or an HTTP(S) URL
    /// built the old way from host, port and path.
    pub fn target(&self) -> Result<Target, String> {
        if let Some(url) = self.url.as_deref().filter(|url| is_grpc_url(url)) {
            if self.expect_status.is_some() {
                return Err(
                    "--expect-status is for HTTP: a gRPC health check is healthy only when the server answers SERVING; drop it"
                        .to_owned(),
                );
            }
            return socket::parse_target(SocketKind::Grpc, url)
                .map(Target::Grpc)
                .map_err(|e| e.to_string());
        }
        if let Some(url) = &self.url
            && let Some((scheme, _)) = url.split_once("://")
            && !["http", "https"]
                .iter()
                .any(|known| scheme.eq_ignore_ascii_case(known))
        {
            return Err(format!(
                "`{}` is not a usable URL: scheme `{}` is not supported; the probe checks http://, https://, grpc:// and grpcs:// URLs",
                healthbridge_contract::value::shorten(url),
                healthbridge_contract::value::shorten(scheme)
            ));
        }
        self.http_target().map(Target::Http)
    }

    /// The HTTP(S) URL: --url as given, or built the old way from host, port and path.
    fn http_target(&self) -> Result<Uri, String> {
        let (text, built_from) = match (&self.url, self.status_port) {
            (Some(url), _) => (url.clone(), None),
            (None, Some(port)) => {
                let path = self.path.as_deref().unwrap_or("/");
                let path = if path.starts_with('/') { path.to_owned() } else { format!("/{path}") };
                let host = if self.host.contains(':') && !self.host.starts_with('[') { format!("[{}]", self.host) } else { self.host.clone() };
                let scheme = if self.tls { "https" } else { "http" };
                (format!("{scheme}://{host}:{port}{path}"), Some(port))
            }
            (None, None) => return Err("give --url URL, or --statusPort PORT (with --path and --host) like the older probe".to_owned()),
        };
        // The contract's rule for endpoint URLs: http or https, with a host that is not empty (`-host=` is not one).
        let uri = healthbridge_contract::endpoint::parse_url(&text).map_err(|e| e.to_string())?;
        // A --host holding URL syntax (`a#`, `a/b`, `user@a`) would aim the check at another host or port.
        if let Some(port) = built_from {
            let bare = |host: &str| {
                host.trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_owned()
            };
            if uri.port_u16() != Some(port) || uri.host().map(bare) != Some(bare(&self.host)) {
                return Err(format!(
                    "--host `{}` is not a host name or IP address; give one like localhost, 10.0.0.1 or ::1",
                    healthbridge_contract::value::shorten(&self.host)
                ));
            }
        }
        Ok(uri)
    }

    fn expected(&self, status: StatusCode) -> bool {
        match self.expect_status {
            Some(code) => status.as_u16() == code,
            None => status.is_success(),
        }
    }

    fn describe_expectation(&self) -> String {
        self.expect_status
            .map_or_else(|| "2xx".to_owned(), |code| code.to_string())
    }
}

/// Parses the probe's flags (old single-dash spellings too); `args` starts with the program name (`probe` or the
/// binary's path). `Err` is the exit code once help, the version or what is wrong has been printed.
pub fn parse_args(args: impl IntoIterator<Item = OsString>) -> Result<ProbeArgs, ExitCode> {
    let args = normalize_legacy_flags(args);
    match ProbeArgs::try_parse_from(&args) {
        Ok(parsed) => Ok(parsed),
        Err(err)
            if matches!(
                err.kind(),
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion
            ) =>
        {
            let _ = err.print();
            Err(ExitCode::SUCCESS)
        }
        Err(err) => {
            let text = err.to_string();
            let first = text
                .lines()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("bad arguments");
            eprintln!(
                "healthbridge-probe: {} (see --help)",
                first.trim_start_matches("error: ")
            );
            Err(ProbeExit::BadArguments.into())
        }
    }
}

/// Runs the probe on a single-threaded runtime (it starts and finishes in milliseconds) and says why on stderr
/// when not healthy.
pub fn check(args: &ProbeArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("healthbridge-probe: cannot start: {e}");
            return ProbeExit::CouldNotConnect.into();
        }
    };
    let verdict = runtime.block_on(run(args));
    if verdict.exit != ProbeExit::Healthy {
        eprintln!("healthbridge-probe: {}", verdict.message);
    }
    verdict.exit.into()
}

/// Runs the attempts: exponential backoff with jitter between them, all within --deadline.
pub async fn run(args: &ProbeArgs) -> Verdict {
    let bad = |message: String| Verdict {
        exit: ProbeExit::BadArguments,
        message,
    };
    let target = match args.target() {
        Ok(target) => target,
        Err(message) => return bad(message),
    };
    if args.timeout.is_zero() {
        return bad("--timeout must be more than 0".to_owned());
    }
    let tls = match args.tls_args.load() {
        Ok(tls) => tls,
        Err(e) => return bad(e.to_string()),
    };
    match target {
        Target::Http(uri) => {
            let connector = tls.http1_connector();
            let connector = &connector;
            let uri = &uri;
            retry(args, args.timeout, move |limit| {
                attempt_http(connector, uri, limit, args)
            })
            .await
        }
        Target::Grpc(spec) => {
            let probe =
                GrpcProbe::new(&spec, &tls).with_user_agent(HeaderValue::from_static(USER_AGENT));
            let (probe, url) = (&probe, spec.url.as_str());
            retry(args, spec.timeout.unwrap_or(args.timeout), move |limit| {
                attempt_grpc(probe, url, limit)
            })
            .await
        }
    }
}

/// `attempt_within(limit)` until healthy or out of attempts, with `timeout` per attempt (less near the deadline).
async fn retry<F, Fut>(args: &ProbeArgs, timeout: Duration, mut attempt_within: F) -> Verdict
where
    F: FnMut(Duration) -> Fut,
    Fut: Future<Output = Verdict>,
{
    let started = Instant::now();
    let deadline = args.deadline.map(|d| started + d);
    let attempts = args.retries.saturating_add(1);
    let mut backoff = Duration::from_millis(100);
    let mut attempt = 1;
    loop {
        let per_try = match deadline {
            Some(deadline) => timeout.min(deadline.saturating_duration_since(Instant::now())),
            None => timeout,
        };
        let verdict = attempt_within(per_try).await;
        if verdict.exit == ProbeExit::Healthy || attempt >= attempts {
            return with_attempts(verdict, attempt);
        }
        // Full jitter between half and all of the backoff, so many pods probing at once do not stay in step.
        let pause = backoff.mul_f64(0.5 + fastrand::f64() / 2.0);
        if deadline.is_some_and(|deadline| Instant::now() + pause >= deadline) {
            let mut verdict = with_attempts(verdict, attempt);
            verdict.message.push_str(&format!(
                "; --deadline {} reached",
                format_duration(args.deadline.unwrap_or_default())
            ));
            return verdict;
        }
        tokio::time::sleep(pause).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
        attempt += 1;
    }
}

fn with_attempts(mut verdict: Verdict, attempts: u32) -> Verdict {
    if attempts > 1 {
        verdict
            .message
            .push_str(&format!(" (after {attempts} attempts)"));
    }
    verdict
}

/// One gRPC health call on a new connection, within `timeout` for connect and answer together.
async fn attempt_grpc(probe: &GrpcProbe, url: &str, timeout: Duration) -> Verdict {
    let started = Instant::now();
    let answer = match probe.connect(timeout).await {
        Ok(mut connection) => {
            probe
                .ask(&mut connection, timeout.saturating_sub(started.elapsed()))
                .await
        }
        Err(failure) => Err(failure),
    };
    let verdict = |exit, why: String| Verdict {
        exit,
        message: format!("{url}: {why}"),
    };
    match answer {
        Ok(status) if grpc::is_serving(status) => verdict(ProbeExit::Healthy, "SERVING".to_owned()),
        Ok(status) => verdict(
            ProbeExit::Unhealthy,
            format!("status {} (expected SERVING)", grpc::status_name(status)),
        ),
        Err(CallFailure::NoAnswer(_)) => verdict(
            ProbeExit::Unhealthy,
            format!(
                "connected but no answer within {}",
                format_duration(timeout)
            ),
        ),
        Err(failure) if failure.is_connection() => verdict(
            ProbeExit::CouldNotConnect,
            failure.describe(probe.service()),
        ),
        Err(failure) => verdict(ProbeExit::Unhealthy, failure.describe(probe.service())),
    }
}

async fn attempt_http(
    connector: &hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    uri: &Uri,
    timeout: Duration,
    args: &ProbeArgs,
) -> Verdict {
    let started = Instant::now();
    let cannot_connect = |why: String| Verdict {
        exit: ProbeExit::CouldNotConnect,
        message: format!("{uri}: cannot connect: {why}"),
    };
    let stream = match tokio::time::timeout(timeout, connector.clone().oneshot(uri.clone())).await {
        Err(_) => {
            return cannot_connect(format!("no connection within {}", format_duration(timeout)));
        }
        Ok(Err(e)) => return cannot_connect(cause::explained(e.as_ref())),
        Ok(Ok(stream)) => stream,
    };
    let remaining = timeout.saturating_sub(started.elapsed());
    let unhealthy = |why: String| Verdict {
        exit: ProbeExit::Unhealthy,
        message: format!("{uri}: {why}"),
    };
    let exchange = async {
        let (mut sender, connection) = hyper::client::conn::http1::handshake(stream).await?;
        let driver = tokio::spawn(connection);
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        let authority = uri.authority().map_or("", |a| a.as_str()).to_owned();
        let request = Request::get(path)
            .header(header::HOST, authority)
            .header(header::USER_AGENT, USER_AGENT)
            .body(Empty::<Bytes>::new())
            .unwrap_or_default();
        let response = sender.send_request(request).await;
        driver.abort();
        response.map(|r| r.status())
    };
    match tokio::time::timeout(remaining, exchange).await {
        Err(_) => unhealthy(format!(
            "connected but no answer within {}",
            format_duration(timeout)
        )),
        // With TLS 1.3 a rejected client certificate shows only on the first request: still a TLS failure.
        Ok(Err(e)) if crate::tls::explain(&e).is_some() => cannot_connect(cause::explained(&e)),
        Ok(Err(e)) => unhealthy(format!(
            "connected but the request failed: {}",
            cause::explained(&e)
        )),
        Ok(Ok(status)) if args.expected(status) => Verdict {
            exit: ProbeExit::Healthy,
            message: format!("{uri}: HTTP {}", status.as_u16()),
        },
        Ok(Ok(status)) => unhealthy(format!(
            "HTTP {} (expected {})",
            status.as_u16(),
            args.describe_expectation()
        )),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<ProbeArgs, clap::Error> {
        let argv = std::iter::once("healthbridge-probe")
            .chain(args.iter().copied())
            .map(OsString::from);
        ProbeArgs::try_parse_from(normalize_legacy_flags(argv))
    }

    fn target(args: &[&str]) -> String {
        match parse(args).unwrap().target().unwrap() {
            Target::Http(uri) => uri.to_string(),
            Target::Grpc(spec) => panic!("{args:?} is a gRPC target: {spec:?}"),
        }
    }

    fn grpc_target(url: &str) -> Result<SocketSpec, String> {
        match parse(&["--url", url]).unwrap().target()? {
            Target::Grpc(spec) => Ok(spec),
            Target::Http(uri) => panic!("{url} is an HTTP target: {uri}"),
        }
    }

    #[test]
    fn the_old_flags_build_the_old_url_without_the_double_slash() {
        assert_eq!(
            target(&["-path=ready", "-statusPort=8080"]),
            "http://localhost:8080/ready"
        );
        assert_eq!(
            target(&["-path=/ready", "-statusPort=8080"]),
            "http://localhost:8080/ready"
        );
        assert_eq!(
            target(&["-path", "live", "-statusPort", "9090", "-host", "127.0.0.1"]),
            "http://127.0.0.1:9090/live"
        );
        assert_eq!(
            target(&["--path=ready", "--status-port=8080", "--tls"]),
            "https://localhost:8080/ready"
        );
        assert_eq!(
            target(&["-statusPort=8080", "-host=::1"]),
            "http://[::1]:8080/"
        );
    }

    #[test]
    fn the_old_retry_flag_means_extra_attempts() {
        assert_eq!(parse(&["-statusPort=1", "-retry=3"]).unwrap().retries, 3);
        assert_eq!(
            parse(&["-statusPort=1", "--retries", "2"]).unwrap().retries,
            2
        );
        assert_eq!(parse(&["-statusPort=1"]).unwrap().retries, 0);
    }

    #[test]
    fn a_url_is_taken_as_given() {
        assert_eq!(
            target(&["--url", "https://app.local:8443/healthz?full=1"]),
            "https://app.local:8443/healthz?full=1"
        );
        assert_eq!(
            target(&["-url=http://127.0.0.1:1/x"]),
            "http://127.0.0.1:1/x"
        );
        assert_eq!(target(&["--url=HTTP://a/"]), "http://a/");
    }

    #[test]
    fn defaults_are_one_second_and_any_2xx() {
        let args = parse(&["-statusPort=1"]).unwrap();
        assert_eq!(args.timeout, Duration::from_secs(1));
        assert!(args.expected(StatusCode::NO_CONTENT));
        assert!(!args.expected(StatusCode::MOVED_PERMANENTLY));
        let exact = parse(&["-statusPort=1", "--expect-status", "200"]).unwrap();
        assert!(exact.expected(StatusCode::OK) && !exact.expected(StatusCode::NO_CONTENT));
    }

    #[test]
    fn bad_arguments_are_errors() {
        assert!(parse(&["-statusPort=http"]).is_err());
        assert!(parse(&["-statusPort=70000"]).is_err());
        assert!(parse(&["--timeout=soon", "-statusPort=1"]).is_err());
        assert!(parse(&["--expect-status=42", "-statusPort=1"]).is_err());
        assert!(
            parse(&["--url=http://x/", "-statusPort=1"]).is_err(),
            "--url conflicts with the old flags"
        );
        assert!(parse(&["-bogus"]).is_err());
        assert!(
            parse(&[])
                .unwrap()
                .target()
                .unwrap_err()
                .contains("give --url")
        );
        let ftp = parse(&["--url=ftp://x/"]).unwrap().target().unwrap_err();
        assert!(
            ftp.ends_with("the probe checks http://, https://, grpc:// and grpcs:// URLs"),
            "{ftp}"
        );
        assert!(parse(&["--url=localhost:8080"]).unwrap().target().is_err());
    }

    #[test]
    fn grpc_urls_are_health_targets_with_the_service_after_the_port() {
        let plain = grpc_target("grpc://127.0.0.1:50051").unwrap();
        assert_eq!(
            (
                plain.host.as_str(),
                plain.port,
                plain.tls,
                plain.service.as_str()
            ),
            ("127.0.0.1", 50051, false, "")
        );
        let tls = grpc_target("grpcs://[::1]:443/shop.Cart?timeout=2s").unwrap();
        assert_eq!(
            (
                tls.host.as_str(),
                tls.tls,
                tls.service.as_str(),
                tls.timeout
            ),
            ("::1", true, "shop.Cart", Some(Duration::from_secs(2)))
        );
    }

    // One rule, one place: what the `healthbridge.io/grpc` annotation refuses, the probe refuses with its words.
    #[test]
    fn grpc_urls_follow_the_contract_rule_and_its_messages() {
        for url in [
            "grpc://localhost",
            "grpc://localhost:0",
            "grpc://:50051",
            "grpc://u@h:1",
            "grpc://h:1/a b",
            "grpc://h:1/a#b",
            "grpc://h:1?send=x",
            "grpc://h:1?timeout=soon",
            "grpc:/h:1",
            "GRPC://h:1",
        ] {
            let contract = socket::parse_target(SocketKind::Grpc, url)
                .unwrap_err()
                .to_string();
            assert_eq!(grpc_target(url).unwrap_err(), contract, "{url}");
        }
    }

    #[test]
    fn an_expected_http_status_makes_no_sense_for_grpc() {
        let error = parse(&["--url=grpc://h:1", "--expect-status=200"])
            .unwrap()
            .target()
            .unwrap_err();
        assert!(error.starts_with("--expect-status is for HTTP"), "{error}");
    }

    // Found by the `probe_url` fuzz target: `-host=` built `http://:80/`, accepted with an empty host.
    #[test]
    fn an_empty_host_is_refused_naming_what_to_write() {
        for args in [
            &["-host=", "-statusPort=80"][..],
            &["--url=http://:80/ready"][..],
        ] {
            let error = parse(args).unwrap().target().unwrap_err();
            assert!(error.contains("no host"), "{args:?}: {error}");
        }
    }

    // Found by the `probe_url` fuzz target: `-host=-#` built `http://-#:0/`, a check of host `-` on port 80.
    #[test]
    fn a_host_holding_url_syntax_is_refused() {
        for host in ["-#", "a/b", "user@a"] {
            let error = parse(&[&format!("-host={host}"), "-statusPort=8080"])
                .unwrap()
                .target()
                .unwrap_err();
            assert!(error.contains("is not a host name"), "{host}: {error}");
        }
        assert_eq!(
            target(&["-host=::1", "-statusPort=8080"]),
            "http://[::1]:8080/"
        );
        assert_eq!(
            target(&["-host=[::1]", "-statusPort=8080"]),
            "http://[::1]:8080/"
        );
    }

    #[test]
    fn only_known_single_dash_flags_are_rewritten() {
        let out = normalize_legacy_flags(
            [
                "p",
                "-path=x",
                "-h",
                "-statusPort",
                "1",
                "--tls",
                "-x",
                "value-with-dash",
            ]
            .map(OsString::from),
        );
        assert_eq!(
            out,
            [
                "p",
                "--path=x",
                "-h",
                "--statusPort",
                "1",
                "--tls",
                "-x",
                "value-with-dash"
            ]
            .map(OsString::from)
        );
    }

    #[test]
    fn the_probe_is_recognised_by_name_or_subcommand() {
        assert!(invoked_as_probe(&[
            "/usr/local/bin/healthbridge-probe".into()
        ]));
        assert!(invoked_as_probe(&[
            "healthbridge-agent".into(),
            "probe".into(),
            "--url=x".into()
        ]));
        assert!(!invoked_as_probe(&[
            "healthbridge-agent".into(),
            "serve".into()
        ]));
        assert!(!invoked_as_probe(&["healthbridge-agent".into()]));
    }
}
