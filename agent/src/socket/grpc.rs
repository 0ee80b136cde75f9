//! gRPC health: `grpc.health.v1.Health/Check` over HTTP/2, plain (h2c, prior knowledge) or TLS with the agent's
//! own verifier (CA file, pinning, mTLS); SERVING is healthy, anything else is not and says which status.

use std::time::Duration;

use healthbridge_contract::duration::format_duration;
use healthbridge_contract::socket::SocketSpec;
use http::{HeaderValue, Uri, header};
use hyper::client::conn::http2;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tonic::metadata::MetadataMap;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tower::ServiceExt;

use super::Verdict;
use crate::cause;
use crate::tls::ClientTls;

/// One gRPC health target: where to connect, how, and which service to ask about.
#[derive(Debug, Clone)]
pub struct GrpcProbe {
    connector: HttpsConnector<HttpConnector>,
    origin: Uri,
    /// `Some(presents a client certificate)` for TLS.
    tls: Option<bool>,
    service: String,
    user_agent: Option<HeaderValue>,
    metadata: MetadataMap,
}

/// An HTTP/2 connection to the target; closed when dropped.
#[derive(Debug)]
pub struct Connection {
    sender: http2::SendRequest<tonic::body::Body>,
    /// Drives the connection; ends with why the connection failed, if it did.
    driver: JoinHandle<Option<String>>,
}

/// How long a call that lost its connection waits for the connection's own error: it is there at once, since the
/// connection ended first.
const CONNECTION_ERROR_GRACE: Duration = Duration::from_millis(100);

impl Drop for Connection {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

/// Why a `Check` call did not return a serving status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallFailure {
    /// No connection (TCP, TLS and the HTTP/2 handshake) within this limit.
    ConnectTimeout(Duration),
    /// Could not connect, or the connection broke before an answer: refused, DNS, TLS (with its fix), not HTTP/2.
    Unreachable(String),
    /// Connected, but no answer within this limit.
    NoAnswer(Duration),
    /// The server answered the call with a gRPC error status.
    Status { code: tonic::Code, message: String },
}

impl CallFailure {
    /// True when the failure happened before the server could answer at all.
    pub fn is_connection(&self) -> bool {
        matches!(self, Self::ConnectTimeout(_) | Self::Unreachable(_))
    }

    /// One line saying what went wrong; `service` is the one asked about.
    pub fn describe(&self, service: &str) -> String {
        match self {
            Self::ConnectTimeout(limit) => {
                format!(
                    "cannot connect: no connection within {}",
                    format_duration(*limit)
                )
            }
            Self::Unreachable(why) => format!("cannot connect: {why}"),
            Self::NoAnswer(limit) => format!("no answer within {}", format_duration(*limit)),
            Self::Status {
                code: tonic::Code::NotFound,
                ..
            } => format!("unknown service `{service}` (NOT_FOUND): the server does not report it"),
            Self::Status {
                code: tonic::Code::Unimplemented,
                ..
            } => "the server does not implement grpc.health.v1.Health (UNIMPLEMENTED)".to_owned(),
            Self::Status { code, message } if message.is_empty() => {
                format!("gRPC status {}", code_name(*code))
            }
            Self::Status { code, message } => {
                format!("gRPC status {}: {message}", code_name(*code))
            }
        }
    }

    /// A failed call: a status the server sent, or the transport error tonic wrapped in one.
    fn from_status(status: &tonic::Status) -> Self {
        if let Some(tls) = crate::tls::explain(status) {
            return Self::Unreachable(tls);
        }
        if std::ptr::addr_eq(cause::innermost(status), status) {
            return Self::Status {
                code: status.code(),
                message: status.message().to_owned(),
            };
        }
        Self::Unreachable(innermost_text(status))
    }
}

/// `NOT_FOUND`, `PERMISSION_DENIED`: the canonical name of a status code, as gRPC documents and logs it.
pub fn code_name(code: tonic::Code) -> String {
    let camel = format!("{code:?}");
    let mut name = String::with_capacity(camel.len() + 4);
    for (i, c) in camel.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            name.push('_');
        }
        name.push(c.to_ascii_uppercase());
    }
    name
}

/// `SERVING`, `NOT_SERVING`, …; a number the protocol does not define is shown as such.
pub fn status_name(status: i32) -> String {
    ServingStatus::try_from(status).map_or_else(
        |_| format!("unknown status {status}"),
        |known| known.as_str_name().to_owned(),
    )
}

/// True for `SERVING`, the only healthy answer.
pub fn is_serving(status: i32) -> bool {
    status == ServingStatus::Serving as i32
}

/// A transport error in one line: TLS with its fix (also when h2 kept only the alert's text), else the innermost
/// cause (refused, DNS, reset).
fn innermost_text(error: &(dyn std::error::Error + 'static)) -> String {
    if let Some(tls) = crate::tls::explain(error) {
        return tls;
    }
    let message = cause::innermost(error).to_string();
    crate::tls::explain_alert_text(&message).unwrap_or(message)
}

impl GrpcProbe {
    /// A probe of `spec`; `tls` is the agent's TLS set-up (used by `grpcs://`; `grpc://` stays plain).
    pub fn new(spec: &SocketSpec, tls: &ClientTls) -> Self {
        Self::for_target(&spec.host, spec.port, spec.tls, &spec.service, tls)
    }

    /// A probe of `host:port`, TLS or h2c, asking about `service` ("" = the server as a whole).
    pub fn for_target(
        host: &str,
        port: u16,
        use_tls: bool,
        service: &str,
        tls: &ClientTls,
    ) -> Self {
        let host = if host.contains(':') {
            format!("[{host}]")
        } else {
            host.to_owned()
        };
        let scheme = if use_tls { "https" } else { "http" };
        // The host and port were validated by the contract, so the URI is well formed.
        let origin = format!("{scheme}://{host}:{port}")
            .parse()
            .unwrap_or_else(|_| Uri::from_static("http://invalid"));
        Self {
            connector: tls.http2_connector(),
            origin,
            tls: use_tls.then(|| tls.config.client_auth_cert_resolver.has_certs()),
            service: service.to_owned(),
            user_agent: None,
            metadata: MetadataMap::new(),
        }
    }

    /// Sends this `User-Agent` with each call.
    pub fn with_user_agent(mut self, user_agent: HeaderValue) -> Self {
        self.user_agent = Some(user_agent);
        self
    }

    /// Sends these headers (gRPC metadata) with each call.
    pub fn with_metadata(mut self, metadata: MetadataMap) -> Self {
        self.metadata = metadata;
        self
    }

    /// The service asked about ("" = the server as a whole).
    pub fn service(&self) -> &str {
        &self.service
    }

    /// A new connection, like grpc_health_probe's: a check proves the server accepts connections now. TCP, TLS
    /// and the HTTP/2 handshake all count towards `limit`.
    pub async fn connect(&self, limit: Duration) -> Result<Connection, CallFailure> {
        let connecting = async {
            let stream = self
                .connector
                .clone()
                .oneshot(self.origin.clone())
                .await
                .map_err(|e| CallFailure::Unreachable(innermost_text(e.as_ref())))?;
            let (sender, connection) = http2::Builder::new(TokioExecutor::new())
                .handshake(stream)
                .await
                .map_err(|e| CallFailure::Unreachable(innermost_text(&e)))?;
            let driver =
                tokio::spawn(async move { connection.await.err().map(|e| innermost_text(&e)) });
            Ok(Connection { sender, driver })
        };
        tokio::time::timeout(limit, connecting)
            .await
            .unwrap_or_else(|_| Err(CallFailure::ConnectTimeout(limit)))
    }

    /// One `Check` call on `connection` within `limit` (also sent as the call's `grpc-timeout`): the serving
    /// status the server answered (a number, as the protocol may grow).
    pub async fn ask(
        &self,
        connection: &mut Connection,
        limit: Duration,
    ) -> Result<i32, CallFailure> {
        let sender = connection.sender.clone();
        let user_agent = self.user_agent.clone();
        // tonic drops a User-Agent given as metadata, so it is set on the HTTP request itself.
        let channel = tower::service_fn(move |mut request: http::Request<tonic::body::Body>| {
            let mut sender = sender.clone();
            if let Some(user_agent) = &user_agent {
                request
                    .headers_mut()
                    .insert(header::USER_AGENT, user_agent.clone());
            }
            async move { sender.send_request(request).await }
        });
        let mut client = HealthClient::with_origin(channel, self.origin.clone());
        let mut request = tonic::Request::new(HealthCheckRequest {
            service: self.service.clone(),
        });
        *request.metadata_mut() = self.metadata.clone();
        request.set_timeout(limit);
        match tokio::time::timeout(limit, client.check(request)).await {
            Err(_) => Err(CallFailure::NoAnswer(limit)),
            Ok(Ok(response)) => Ok(response.into_inner().status),
            Ok(Err(status)) => match CallFailure::from_status(&status) {
                // The call only learns that the connection closed (a TLS 1.3 server rejecting our client
                // certificate does so after the handshake); the connection knows why.
                CallFailure::Unreachable(closed) => {
                    let cause =
                        tokio::time::timeout(CONNECTION_ERROR_GRACE, &mut connection.driver).await;
                    let cause = match cause {
                        Ok(Ok(Some(cause))) => cause,
                        _ => closed,
                    };
                    Err(CallFailure::Unreachable(self.after_handshake(cause)))
                }
                failure => Err(failure),
            },
        }
    }

    /// `cause` of a TLS connection lost after the handshake, with the likely reason when it is not a TLS alert: a
    /// server that closes as soon as it has checked (or missed) our client certificate. Whether the alert saying so
    /// arrives, or is lost to a reset because our first request crossed it, depends on timing.
    fn after_handshake(&self, cause: String) -> String {
        match self.tls {
            Some(_) if cause.starts_with("TLS: ") => cause,
            Some(false) => format!(
                "{cause}: the server closed the connection after the TLS handshake; if it requires a client \
                 certificate (mTLS), give --client-cert and --client-key (HTTP_HEALTHCHECK_SIDECAR_TLS_CLIENT_CERT/_KEY)"
            ),
            Some(true) => format!(
                "{cause}: the server closed the connection after the TLS handshake; if it rejects our client \
                 certificate, give one signed by a CA the server trusts"
            ),
            None => cause,
        }
    }

    /// One periodic run within `limit` (connect and call together).
    pub async fn check(&self, limit: Duration) -> Verdict {
        let started = Instant::now();
        let answer = match self.connect(limit).await {
            Ok(mut connection) => {
                self.ask(&mut connection, limit.saturating_sub(started.elapsed()))
                    .await
            }
            Err(failure) => Err(failure),
        };
        match answer {
            Ok(status) if is_serving(status) => Verdict::pass("SERVING"),
            Ok(status) if ServingStatus::try_from(status).is_ok() => {
                Verdict::fail(format!("status {}", status_name(status)))
            }
            Ok(status) => Verdict::fail(status_name(status)),
            Err(CallFailure::NoAnswer(_)) => {
                Verdict::fail(CallFailure::NoAnswer(limit).describe(&self.service))
            }
            Err(failure) => Verdict::fail(failure.describe(&self.service)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_codes_are_shown_by_their_canonical_names() {
        assert_eq!(code_name(tonic::Code::NotFound), "NOT_FOUND");
        assert_eq!(
            code_name(tonic::Code::PermissionDenied),
            "PERMISSION_DENIED"
        );
        assert_eq!(code_name(tonic::Code::Ok), "OK");
        assert_eq!(status_name(1), "SERVING");
        assert_eq!(status_name(3), "SERVICE_UNKNOWN");
        assert_eq!(status_name(9), "unknown status 9");
    }

    #[test]
    fn a_status_the_server_sent_is_not_a_connection_failure() {
        let sent = CallFailure::from_status(&tonic::Status::permission_denied("no"));
        assert_eq!(
            sent,
            CallFailure::Status {
                code: tonic::Code::PermissionDenied,
                message: "no".into()
            }
        );
        assert!(!sent.is_connection());
        assert_eq!(sent.describe(""), "gRPC status PERMISSION_DENIED: no");
        let transport = tonic::Status::from_error(Box::new(std::io::Error::new(
            std::io::ErrorKind::ConnectionReset,
            "connection reset by peer",
        )));
        let broken = CallFailure::from_status(&transport);
        assert!(broken.is_connection(), "{broken:?}");
        assert_eq!(
            broken.describe(""),
            "cannot connect: connection reset by peer"
        );
    }
}
