//! Turns a `Report` into an HTTP answer: on the published port `OK` or the names of the failing checks; on the
//! admin port a one-line reason, a kube-apiserver style `?verbose` list, or JSON.

use std::sync::LazyLock;

use axum::body::Body;
use axum::body::Bytes;
use axum::response::Response;
use http::header::{ACCEPT, CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderMap, HeaderValue, StatusCode};
use http_body_util::Full;
use serde::Serialize;

use crate::report::{CheckResult, Report};

/// How the client wants the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `OK`, or `UNAVAILABLE: <the failing checks>`.
    Line,
    /// One `[+]name ok` / `[-]name failed: reason` line per check, then a verdict line.
    Verbose,
    Json,
}

impl Format {
    /// JSON when `Accept` asks for it, verbose when the query has `verbose` (any value), else one line.
    pub fn negotiate(query: Option<&str>, headers: &HeaderMap) -> Self {
        let wants_json = headers
            .get_all(ACCEPT)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| {
                v.split(',')
                    .any(|media| media.trim().starts_with("application/json"))
            });
        if wants_json {
            return Self::Json;
        }
        let verbose = query
            .into_iter()
            .flat_map(|q| q.split('&'))
            .any(|pair| pair == "verbose" || pair.starts_with("verbose="));
        if verbose { Self::Verbose } else { Self::Line }
    }
}

/// Renders `report` for the check named `title` (`health`, `all`, `/healthz`); unhealthy answers get `unhealthy_status`.
pub fn render(
    report: &Report,
    title: &str,
    format: Format,
    unhealthy_status: StatusCode,
) -> Response {
    answer(report, title, format, unhealthy_status)
}

/// The published port's answer: `OK`, or `UNAVAILABLE: ` and the names of the failing checks, whatever was asked.
/// Reasons stay on the admin port: they carry termination messages, API errors, endpoint errors.
/// A plain body (not axum's boxed one): it is what the published port sends a load balancer, before the router.
pub fn render_public(report: &Report, unhealthy_status: StatusCode) -> http::Response<Full<Bytes>> {
    let healthy = report.healthy();
    let body = if healthy {
        // The common answer needs no allocation.
        Bytes::from_static(b"OK")
    } else {
        Bytes::from(public_line(report))
    };
    with_headers(
        Full::new(body),
        status(healthy, unhealthy_status),
        &TEXT_HEADERS,
    )
}

fn answer(report: &Report, title: &str, format: Format, unhealthy_status: StatusCode) -> Response {
    let healthy = report.healthy();
    let (headers, body) = match format {
        Format::Line if healthy => (&TEXT_HEADERS, Body::from("OK")),
        Format::Line => (&TEXT_HEADERS, Body::from(line(report))),
        Format::Verbose => (&TEXT_HEADERS, Body::from(verbose(report, title))),
        Format::Json => (&JSON_HEADERS, Body::from(json(report, title))),
    };
    with_headers(body, status(healthy, unhealthy_status), headers)
}

fn status(healthy: bool, unhealthy_status: StatusCode) -> StatusCode {
    if healthy {
        StatusCode::OK
    } else {
        unhealthy_status
    }
}

fn with_headers<B>(body: B, status: StatusCode, headers: &HeaderMap) -> http::Response<B> {
    let mut response = http::Response::new(body);
    *response.status_mut() = status;
    // Cloned, not built: a load balancer's check is answered thousands of times a second, and cloning skips
    // hashing each name and checking each value again.
    *response.headers_mut() = HeaderMap::clone(headers);
    response
}

static TEXT_HEADERS: LazyLock<HeaderMap> =
    LazyLock::new(|| answer_headers("text/plain; charset=utf-8"));
static JSON_HEADERS: LazyLock<HeaderMap> = LazyLock::new(|| answer_headers("application/json"));

fn answer_headers(content_type: &'static str) -> HeaderMap {
    let mut headers = HeaderMap::with_capacity(2);
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    // A cached health answer is a wrong health answer.
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers
}

/// `OK`, or `UNAVAILABLE: ` and every failing check with its reason; `OK`/`UNAVAILABLE` keep the original sidecar's bodies.
pub fn line(report: &Report) -> String {
    if report.healthy() {
        return "OK".to_owned();
    }
    let failures: Vec<String> = report
        .failures()
        .map(|c| format!("{}: {}", c.name, one_line(&c.reason)))
        .collect();
    format!("UNAVAILABLE: {}", failures.join("; "))
}

/// `OK`, or `UNAVAILABLE: ` and the public name of every failing check: `UNAVAILABLE: container:app, endpoint:2`.
pub fn public_line(report: &Report) -> String {
    if report.healthy() {
        return "OK".to_owned();
    }
    let failures: Vec<&str> = report.failures().map(CheckResult::public_name).collect();
    format!("UNAVAILABLE: {}", failures.join(", "))
}

pub fn verbose(report: &Report, title: &str) -> String {
    let mut text = String::new();
    for check in &report.checks {
        let (mark, verdict) = if check.healthy {
            ('+', "ok")
        } else {
            ('-', "failed")
        };
        text.push_str(&format!(
            "[{mark}]{} {verdict}: {}",
            check.name,
            one_line(&check.reason)
        ));
        if let Some(latency) = check.latency {
            text.push_str(&format!(" ({:.1}ms)", latency.as_secs_f64() * 1000.0));
        }
        text.push('\n');
    }
    let verdict = if report.healthy() { "passed" } else { "failed" };
    text.push_str(&format!("{title} check {verdict}\n"));
    text
}

#[derive(Serialize)]
struct JsonAnswer<'a> {
    check: &'a str,
    status: &'static str,
    healthy: bool,
    checks: &'a [CheckResult],
}

pub fn json(report: &Report, title: &str) -> String {
    let healthy = report.healthy();
    let answer = JsonAnswer {
        check: title,
        status: if healthy { "healthy" } else { "unhealthy" },
        healthy,
        checks: &report.checks,
    };
    // Plain structs of strings, bools and numbers always serialise.
    serde_json::to_string(&answer).unwrap_or_default()
}

/// Reasons may carry command output; a line-oriented answer must stay one line per check.
fn one_line(reason: &str) -> String {
    reason.replace(['\r', '\n'], " ")
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn report() -> Report {
        Report::new(vec![
            CheckResult::pass("pod", "phase Running"),
            CheckResult::fail("container:app", "not ready: waiting (CrashLoopBackOff)")
                .with_latency(Duration::from_millis(2)),
        ])
    }

    #[test]
    fn the_line_names_every_failing_check() {
        assert_eq!(
            line(&report()),
            "UNAVAILABLE: container:app: not ready: waiting (CrashLoopBackOff)"
        );
        assert_eq!(line(&Report::default()), "OK");
    }

    #[test]
    fn the_public_line_names_the_failing_checks_without_their_reasons() {
        let report = Report::new(vec![
            CheckResult::fail(
                "container:app",
                "terminated (Error): panic: password=hunter2",
            ),
            CheckResult::fail("endpoint:http://admin:hunter2@app:8080/health", "HTTP 503")
                .with_public_name("endpoint:2"),
            CheckResult::pass("pod", "phase Running"),
        ]);
        assert_eq!(
            public_line(&report),
            "UNAVAILABLE: container:app, endpoint:2"
        );
        assert_eq!(public_line(&Report::default()), "OK");
    }

    #[test]
    fn verbose_lists_every_check_like_readyz() {
        assert_eq!(
            verbose(&report(), "health"),
            "[+]pod ok: phase Running\n[-]container:app failed: not ready: waiting (CrashLoopBackOff) (2.0ms)\nhealth check failed\n"
        );
    }

    #[test]
    fn multi_line_reasons_stay_on_one_line() {
        let report = Report::new(vec![CheckResult::fail(
            "exec:/healthz",
            "exit 1\nno such file",
        )]);
        assert_eq!(
            line(&report),
            "UNAVAILABLE: exec:/healthz: exit 1 no such file"
        );
    }

    #[test]
    fn format_follows_accept_then_query() {
        let mut headers = HeaderMap::new();
        assert_eq!(Format::negotiate(None, &headers), Format::Line);
        assert_eq!(
            Format::negotiate(Some("verbose"), &headers),
            Format::Verbose
        );
        assert_eq!(
            Format::negotiate(Some("a=1&verbose=1"), &headers),
            Format::Verbose
        );
        assert_eq!(Format::negotiate(Some("verbosely"), &headers), Format::Line);
        headers.insert(
            ACCEPT,
            HeaderValue::from_static("text/html, application/json;q=0.9"),
        );
        assert_eq!(Format::negotiate(Some("verbose"), &headers), Format::Json);
    }
}
