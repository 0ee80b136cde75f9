//! Aggregated endpoint checks for `/all`: every configured URL fetched concurrently, 200–399 healthy; concurrent
//! requests share the round in flight and its result is reused for `CACHE_TTL`.

use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use futures::future::{BoxFuture, Shared, join_all};
use http::{Request, StatusCode, Uri, header};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use thiserror::Error;
use tokio::sync::Semaphore;
use tokio::time::Instant;

use healthbridge_contract::duration::{format_duration, parse_duration, parse_positive_duration};
use healthbridge_contract::endpoint::{self, EndpointError};
use healthbridge_contract::env;

use crate::config::setting;
use crate::report::CheckResult;
use crate::tls::{ClientTlsArgs, TlsError};

/// Redirects followed when following is enabled, like the older checker.
pub const MAX_REDIRECTS: usize = 10;
/// Body bytes read (and thrown away) so the connection can be reused; a longer body just closes the connection.
const DRAIN_LIMIT: usize = 64 * 1024;
/// Outbound requests in flight at once, whatever the number of endpoints: each holds at most one connection.
pub const MAX_OUTBOUND: usize = 32;

/// Endpoint-check flags, each also an `HTTP_HEALTHCHECK_SIDECAR_` variable.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct EndpointArgs {
    /// URL checked by /all; repeatable. The variable holds several, separated by commas or whitespace.
    #[arg(
        long = "endpoint",
        env = env::ENDPOINTS,
        value_name = "URL"
    )]
    pub endpoints: Vec<String>,
    /// Per-endpoint timeout: `3` (seconds), `3s`, `500ms`.
    #[arg(long = "timeout", env = env::TIMEOUT, default_value = "3s", value_parser = setting(env::TIMEOUT, "--timeout", parse_positive_duration))]
    pub timeout: Duration,
    /// Follow up to 10 redirects; otherwise a redirect is a (healthy) 3xx status.
    #[arg(
        long,
        env = env::FOLLOW_REDIRECTS,
        default_value = "false",
        num_args = 0..=1,
        default_missing_value = "true",
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub follow_redirects: bool,
    /// Reuse one round of endpoint checks for this long (0 = a new round for every request not arriving while one
    /// runs); concurrent requests always share the round in flight.
    #[arg(long, env = env::CACHE_TTL, default_value = "1s", value_parser = setting(env::CACHE_TTL, "--cache-ttl", parse_duration))]
    pub cache_ttl: Duration,
    #[command(flatten)]
    pub tls: ClientTlsArgs,
}

impl Default for EndpointArgs {
    fn default() -> Self {
        Self {
            endpoints: Vec::new(),
            timeout: Duration::from_secs(3),
            follow_redirects: false,
            cache_ttl: Duration::from_secs(1),
            tls: ClientTlsArgs::default(),
        }
    }
}

#[derive(Debug, Error)]
pub enum EndpointConfigError {
    #[error("--endpoint / HTTP_HEALTHCHECK_SIDECAR_ENDPOINTS: {0}")]
    BadUrl(EndpointError),
    #[error("--timeout / HTTP_HEALTHCHECK_SIDECAR_TIMEOUT must be more than 0")]
    ZeroTimeout,
    #[error(
        "old positional form `PORT TIMEOUT URL...`: PORT `{0}` is not a port number (1-65535); for example `8081 3 http://localhost:8080/health`"
    )]
    BadLegacyPort(String),
    #[error("old positional form `PORT TIMEOUT URL...`: TIMEOUT {why}")]
    BadLegacyTimeout { value: String, why: String },
    #[error(
        "old positional form `PORT TIMEOUT URL...`: missing {0}; for example `8081 3 http://localhost:8080/health`"
    )]
    LegacyMissing(&'static str),
    #[error("endpoint TLS options: {0}")]
    Tls(#[from] TlsError),
}

/// What the old positional arguments said beyond the endpoints: the port to listen on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LegacyPositional {
    pub port: u16,
}

impl EndpointArgs {
    /// Applies the old checker's container args `PORT TIMEOUT URL...`; the URLs are added to the configured ones.
    pub fn apply_legacy_positional(
        &mut self,
        positional: &[String],
    ) -> Result<LegacyPositional, EndpointConfigError> {
        let [port, timeout, urls @ ..] = positional else {
            return Err(EndpointConfigError::LegacyMissing(
                if positional.is_empty() {
                    "PORT"
                } else {
                    "TIMEOUT"
                },
            ));
        };
        let port = healthbridge_contract::value::parse_port(port)
            .map_err(|_| EndpointConfigError::BadLegacyPort(port.clone()))?;
        self.timeout = parse_positive_duration(timeout).map_err(|e| {
            EndpointConfigError::BadLegacyTimeout {
                value: timeout.clone(),
                why: e.to_string(),
            }
        })?;
        if urls.is_empty() {
            return Err(EndpointConfigError::LegacyMissing("URL (at least one)"));
        }
        self.endpoints.extend(urls.iter().cloned());
        Ok(LegacyPositional { port })
    }

    /// Every URL, split out of comma- or whitespace-separated values.
    pub fn urls(&self) -> impl Iterator<Item = &str> {
        self.endpoints.iter().flat_map(|v| endpoint::split_urls(v))
    }

    /// Checks every URL and duration and loads TLS files, so mistakes stop the start-up.
    pub fn validate(&self) -> Result<EndpointConfig, EndpointConfigError> {
        let endpoints = self
            .urls()
            .map(|url| endpoint::parse_url(url).map_err(EndpointConfigError::BadUrl))
            .collect::<Result<Vec<_>, _>>()?;
        if self.timeout.is_zero() {
            return Err(EndpointConfigError::ZeroTimeout);
        }
        Ok(EndpointConfig {
            endpoints,
            timeout: self.timeout,
            follow_redirects: self.follow_redirects,
            cache_ttl: self.cache_ttl,
            tls: self.tls.clone(),
        })
    }
}

/// A validated endpoint configuration.
#[derive(Debug, Clone)]
pub struct EndpointConfig {
    pub endpoints: Vec<Uri>,
    pub timeout: Duration,
    pub follow_redirects: bool,
    pub cache_ttl: Duration,
    tls: ClientTlsArgs,
}

type HttpClient = Client<HttpsConnector<HttpConnector>, Empty<Bytes>>;

/// Checks every endpoint concurrently; cheap to clone (shared state).
#[derive(Clone)]
pub struct EndpointChecker {
    inner: Arc<Inner>,
}

struct Inner {
    client: HttpClient,
    config: EndpointConfig,
    /// Bounds outbound requests (hence connections) across rounds.
    outbound: Semaphore,
    round: std::sync::Mutex<Round>,
}

type Results = Arc<Vec<CheckResult>>;

/// The single flight: callers arriving while a round runs await that round; its result is reused for the TTL.
enum Round {
    Idle,
    Running(Shared<BoxFuture<'static, Results>>),
    Done { at: Instant, results: Results },
}

impl std::fmt::Debug for EndpointChecker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EndpointChecker")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl EndpointChecker {
    pub fn new(args: &EndpointArgs) -> Result<Self, EndpointConfigError> {
        Self::from_config(args.validate()?)
    }

    pub fn from_config(config: EndpointConfig) -> Result<Self, EndpointConfigError> {
        let tls = config.tls.load()?;
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .pool_max_idle_per_host(MAX_OUTBOUND)
            .build(tls.connector());
        Ok(Self {
            inner: Arc::new(Inner {
                client,
                config,
                outbound: Semaphore::new(MAX_OUTBOUND),
                round: std::sync::Mutex::new(Round::Idle),
            }),
        })
    }

    pub fn config(&self) -> &EndpointConfig {
        &self.inner.config
    }

    pub fn is_empty(&self) -> bool {
        self.inner.config.endpoints.is_empty()
    }

    /// One result per endpoint, in configuration order; takes about the slowest endpoint, at most the timeout.
    /// A call while a round runs gets that round's results; a call within `cache_ttl` of the last round, those.
    pub async fn check_all(&self) -> Vec<CheckResult> {
        let round = {
            let mut round = self.lock_round();
            match &*round {
                Round::Done { at, results } if at.elapsed() < self.inner.config.cache_ttl => {
                    return results.as_ref().clone();
                }
                Round::Running(running) => running.clone(),
                Round::Idle | Round::Done { .. } => {
                    let this = self.clone();
                    let running = async move { Arc::new(this.run_round().await) }
                        .boxed()
                        .shared();
                    *round = Round::Running(running.clone());
                    running
                }
            }
        };
        let results = round.clone().await;
        let mut state = self.lock_round();
        if matches!(&*state, Round::Running(running) if running.ptr_eq(&round)) {
            *state = Round::Done {
                at: Instant::now(),
                results: Arc::clone(&results),
            };
        }
        results.as_ref().clone()
    }

    fn lock_round(&self) -> std::sync::MutexGuard<'_, Round> {
        self.inner
            .round
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn run_round(&self) -> Vec<CheckResult> {
        join_all(
            self.inner
                .config
                .endpoints
                .iter()
                .enumerate()
                .map(|(index, uri)| self.check_one(index, uri)),
        )
        .await
    }

    async fn check_one(&self, index: usize, uri: &Uri) -> CheckResult {
        let name = format!("endpoint:{}", redact(uri));
        let started = Instant::now();
        let timeout = self.inner.config.timeout;
        let fetch = async {
            // Closed only on drop, which never happens while `self` is borrowed.
            let _permit = self.inner.outbound.acquire().await;
            self.fetch(uri).await
        };
        let result = match tokio::time::timeout(timeout, fetch).await {
            Err(_) => CheckResult::fail(
                name,
                format!("no answer within {}", format_duration(timeout)),
            ),
            Ok(Err(why)) => CheckResult::fail(name, why),
            Ok(Ok(status)) if is_healthy_status(status) => {
                CheckResult::pass(name, describe_status(status))
            }
            Ok(Ok(status)) => CheckResult::fail(name, describe_status(status)),
        };
        // The published port names an endpoint by its position only: URLs may carry hosts, ports and tokens.
        result
            .with_latency(started.elapsed())
            .with_public_name(format!("endpoint:{}", index + 1))
    }

    async fn fetch(&self, uri: &Uri) -> Result<StatusCode, String> {
        let mut current = uri.clone();
        for _ in 0..=MAX_REDIRECTS {
            let request = Request::get(current.clone())
                .header(
                    header::USER_AGENT,
                    concat!("healthbridge-agent/", env!("CARGO_PKG_VERSION")),
                )
                .body(Empty::new())
                .map_err(|e| format!("cannot build the request: {e}"))?;
            let response = self
                .inner
                .client
                .request(request)
                .await
                .map_err(|e| describe_client_error(&e))?;
            let status = response.status();
            let location = response
                .headers()
                .get(header::LOCATION)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            drain(response.into_body()).await;
            match (
                self.inner.config.follow_redirects && status.is_redirection(),
                location,
            ) {
                (true, Some(location)) => {
                    current = resolve_location(&current, &location).ok_or_else(|| {
                        format!(
                            "HTTP {} with an unusable Location `{}`",
                            status.as_u16(),
                            redact_text(&location)
                        )
                    })?;
                }
                _ => return Ok(status),
            }
        }
        Err(format!("more than {MAX_REDIRECTS} redirects"))
    }
}

/// A URL fit to print: userinfo and query, which may carry credentials and tokens, replaced by `REDACTED`.
pub fn redact(uri: &Uri) -> String {
    let mut text = String::new();
    if let Some(scheme) = uri.scheme_str() {
        text.push_str(scheme);
        text.push_str("://");
    }
    if let Some(authority) = uri.authority() {
        let authority = authority.as_str();
        match authority.rsplit_once('@') {
            Some((_, host)) => {
                text.push_str("REDACTED@");
                text.push_str(host);
            }
            None => text.push_str(authority),
        }
    }
    text.push_str(uri.path());
    if uri.query().is_some() {
        text.push_str("?REDACTED");
    }
    text
}

/// [`redact`] for text that may not parse as a URL (a `Location` header): parsed if it can be, else withheld.
fn redact_text(text: &str) -> String {
    match text.parse::<Uri>() {
        Ok(uri) => redact(&uri),
        Err(_) => "(unparsable, not shown)".to_owned(),
    }
}

/// Success as the older checker defined it: 200–399.
pub fn is_healthy_status(status: StatusCode) -> bool {
    (200..400).contains(&status.as_u16())
}

fn describe_status(status: StatusCode) -> String {
    match status.canonical_reason() {
        Some(reason) => format!("HTTP {} {reason}", status.as_u16()),
        None => format!("HTTP {}", status.as_u16()),
    }
}

/// Reads a bounded amount so keep-alive works for small bodies; dropping the rest closes the connection.
async fn drain(mut body: hyper::body::Incoming) {
    let mut read = 0;
    while read <= DRAIN_LIMIT {
        match body.frame().await {
            Some(Ok(frame)) => read += frame.data_ref().map_or(0, Bytes::len),
            _ => return,
        }
    }
}

/// The innermost cause, which is the one that says what went wrong (refused, DNS, certificate).
pub fn describe_client_error(error: &(dyn std::error::Error + 'static)) -> String {
    let prefix = match error.downcast_ref::<hyper_util::client::legacy::Error>() {
        Some(e) if e.is_connect() => "cannot connect",
        _ => "request failed",
    };
    if let Some(tls) = crate::tls::explain(error) {
        return format!("{prefix}: {tls}");
    }
    format!("{prefix}: {}", crate::cause::innermost(error))
}

fn resolve_location(base: &Uri, location: &str) -> Option<Uri> {
    if location.contains("://") {
        let target: Uri = location.parse().ok()?;
        return matches!(target.scheme_str(), Some("http" | "https")).then_some(target);
    }
    let path_and_query = if location.starts_with('/') {
        location.to_owned()
    } else {
        let base_path = base.path();
        let dir = &base_path[..base_path.rfind('/').map_or(0, |i| i + 1)];
        format!("{dir}{location}")
    };
    Uri::builder()
        .scheme(base.scheme()?.clone())
        .authority(base.authority()?.clone())
        .path_and_query(path_and_query)
        .build()
        .ok()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn strings(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn urls_are_split_on_commas_and_whitespace() {
        let args = EndpointArgs {
            endpoints: strings(&[
                "http://a/1,http://b/2  http://c/3\nhttp://d/4",
                "http://e/5",
            ]),
            ..EndpointArgs::default()
        };
        assert_eq!(
            args.urls().collect::<Vec<_>>(),
            [
                "http://a/1",
                "http://b/2",
                "http://c/3",
                "http://d/4",
                "http://e/5"
            ]
        );
    }

    #[test]
    fn bad_urls_are_named() {
        for (url, why) in [
            ("localhost:8080/health", "scheme"),
            ("ftp://x/", "ftp"),
            ("http://", ""),
        ] {
            let args = EndpointArgs {
                endpoints: strings(&[url]),
                ..EndpointArgs::default()
            };
            let err = args.validate().unwrap_err().to_string();
            assert!(
                err.contains(&format!("`{url}`")) && err.contains(why),
                "{err}"
            );
            assert!(
                err.starts_with("--endpoint / HTTP_HEALTHCHECK_SIDECAR_ENDPOINTS"),
                "{err}"
            );
        }
    }

    #[test]
    fn a_zero_timeout_is_rejected() {
        let args = EndpointArgs {
            timeout: Duration::ZERO,
            ..EndpointArgs::default()
        };
        assert!(matches!(
            args.validate(),
            Err(EndpointConfigError::ZeroTimeout)
        ));
    }

    #[test]
    fn the_old_positional_form_sets_port_timeout_and_urls() {
        let mut args = EndpointArgs::default();
        let legacy = args
            .apply_legacy_positional(&strings(&[
                "8081",
                "5",
                "http://localhost:8080/health",
                "http://localhost:15020/ready",
            ]))
            .unwrap();
        assert_eq!(legacy, LegacyPositional { port: 8081 });
        assert_eq!(args.timeout, Duration::from_secs(5));
        assert_eq!(args.urls().count(), 2);
        let mut args = EndpointArgs::default();
        args.apply_legacy_positional(&strings(&["8081", "500ms", "http://x/"]))
            .unwrap();
        assert_eq!(args.timeout, Duration::from_millis(500));
    }

    #[test]
    fn the_old_positional_form_rejects_what_the_old_tool_silently_accepted() {
        let cases: [(&[&str], &str); 6] = [
            (&["80x81", "3", "http://x/"], "PORT `80x81`"),
            (&["0", "3", "http://x/"], "PORT `0`"),
            (&["70000", "3", "http://x/"], "PORT `70000`"),
            (&["8081", "soon", "http://x/"], "TIMEOUT `soon`"),
            (&["8081", "3"], "missing URL"),
            (&[], "missing PORT"),
        ];
        for (positional, expected) in cases {
            let err = EndpointArgs::default()
                .apply_legacy_positional(&strings(positional))
                .unwrap_err()
                .to_string();
            assert!(err.contains(expected), "{positional:?}: {err}");
        }
    }

    #[test]
    fn healthy_statuses_are_200_to_399() {
        for (code, healthy) in [
            (199, false),
            (200, true),
            (204, true),
            (301, true),
            (399, true),
            (400, false),
            (503, false),
        ] {
            assert_eq!(
                is_healthy_status(StatusCode::from_u16(code).unwrap()),
                healthy,
                "{code}"
            );
        }
    }

    #[test]
    fn locations_resolve_against_the_current_url() {
        let base: Uri = "http://app:8080/a/b?x=1".parse().unwrap();
        assert_eq!(resolve_location(&base, "/c").unwrap(), "http://app:8080/c");
        assert_eq!(
            resolve_location(&base, "c?y").unwrap(),
            "http://app:8080/a/c?y"
        );
        assert_eq!(
            resolve_location(&base, "https://other/").unwrap(),
            "https://other/"
        );
        assert_eq!(resolve_location(&base, "ftp://other/"), None);
    }
}
