//! gRPC health: `grpc.health.v1.Health/Check` over HTTP/2, plain (h2c, prior knowledge) or TLS with the agent's
//! own verifier (CA file, pinning, mTLS); SERVING is healthy, anything else is not and says which status.

use std::time::Duration;

use healthbridge_contract::duration::format_duration;
use healthbridge_contract::socket::SocketSpec;
use http::Uri;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use super::Verdict;
use crate::tls::ClientTls;

type GrpcClient = Client<HttpsConnector<HttpConnector>, tonic::body::Body>;

/// One gRPC health target with its HTTP/2 client.
#[derive(Debug, Clone)]
pub struct GrpcProbe {
    client: GrpcClient,
    origin: Uri,
    service: String,
}

impl GrpcProbe {
    /// A client for `spec`; `tls` is the agent's TLS set-up (used by `grpcs://`; `grpc://` stays plain).
    pub fn new(spec: &SocketSpec, tls: &ClientTls) -> Self {
        Self::for_target(&spec.host, spec.port, spec.tls, &spec.service, tls)
    }

    /// A client for `host:port`, TLS or h2c, asking about `service` ("" = the server as a whole).
    pub fn for_target(
        host: &str,
        port: u16,
        use_tls: bool,
        service: &str,
        tls: &ClientTls,
    ) -> Self {
        let connector = tls.http2_connector();
        // A new connection per run, like grpc_health_probe: a check proves the server accepts connections now.
        let client = Client::builder(TokioExecutor::new())
            .http2_only(true)
            .timer(TokioTimer::new())
            .pool_max_idle_per_host(0)
            .build(connector);
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
            client,
            origin,
            service: service.to_owned(),
        }
    }

    /// One `Check` call within `limit`.
    pub async fn check(&self, limit: Duration) -> Verdict {
        let mut client = HealthClient::with_origin(self.client.clone(), self.origin.clone());
        let mut request = tonic::Request::new(HealthCheckRequest {
            service: self.service.clone(),
        });
        request.set_timeout(limit);
        match tokio::time::timeout(limit, client.check(request)).await {
            Err(_) => Verdict::fail(format!("no answer within {}", format_duration(limit))),
            Ok(Ok(response)) => {
                let status = response.into_inner().status;
                match ServingStatus::try_from(status) {
                    Ok(ServingStatus::Serving) => Verdict::pass("SERVING"),
                    Ok(other) => Verdict::fail(format!("status {}", other.as_str_name())),
                    Err(_) => Verdict::fail(format!("unknown status {status}")),
                }
            }
            Ok(Err(status)) => Verdict::fail(describe(&status, &self.service)),
        }
    }
}

/// A failed call in one line: the transport error (refused, TLS with its fix) or the gRPC status.
fn describe(status: &tonic::Status, service: &str) -> String {
    if let Some(tls) = crate::tls::explain(status) {
        return format!("cannot connect: {tls}");
    }
    if status.code() == tonic::Code::NotFound {
        return format!("unknown service `{service}` (NOT_FOUND): the server does not report it");
    }
    if status.code() == tonic::Code::Unimplemented {
        return "the server does not implement grpc.health.v1.Health (UNIMPLEMENTED)".to_owned();
    }
    let mut innermost: &(dyn std::error::Error + 'static) = status;
    while let Some(source) = innermost.source() {
        innermost = source;
    }
    if std::ptr::addr_eq(innermost, status) {
        return format!("gRPC status {:?}: {}", status.code(), status.message());
    }
    let message = innermost.to_string();
    match crate::tls::explain_alert_text(&message) {
        Some(tls) => format!("cannot connect: {tls}"),
        None => format!("cannot connect: {message}"),
    }
}
