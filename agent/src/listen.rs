//! Listener settings of `serve`: the admin port, and the bounds that keep the published port alive under floods.

use std::net::IpAddr;
use std::time::Duration;

use clap::Args;
use healthbridge_contract::env;
use healthbridge_runtime::serve::Limits;

/// Default admin port: next to the port the webhook gives the agent (13000).
pub const DEFAULT_ADMIN_PORT: u16 = 13001;
/// Connections the admin port holds: it serves an operator and a scraper, not a load balancer.
const ADMIN_MAX_CONNECTIONS: usize = 32;
/// Requests to the agent are GETs; a body is never read, and never more than this.
const MAX_BODY_BYTES: usize = 16 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, Args)]
pub struct ListenArgs {
    /// Port of the admin listener (/metrics, ?verbose, JSON, reasons, exec output); keep it out of every Service.
    #[arg(long, env = env::ADMIN_PORT, default_value_t = DEFAULT_ADMIN_PORT)]
    pub admin_port: u16,

    /// Address of the admin listener: loopback (reachable by `kubectl port-forward`) unless opened, e.g. `0.0.0.0` for Prometheus.
    #[arg(
        long,
        env = env::ADMIN_ADDRESS,
        default_value = "127.0.0.1"
    )]
    pub admin_address: IpAddr,

    /// Connections the published port holds at once; when full, the oldest idle one is closed for a new one.
    /// Each costs up to ~16 KiB: the default keeps the agent within a 32Mi memory limit.
    #[arg(long, env = env::MAX_CONNECTIONS, default_value_t = 512, value_parser = parse_max_connections)]
    pub max_connections: usize,

    /// Time a client has to send a complete request head, from connect and, on HTTP/1, from each answer (so an
    /// idle HTTP/1 keep-alive is closed after it too) (`5s`, `500ms`, `5`).
    #[arg(long, env = env::HEADER_TIMEOUT, default_value = "5s", value_parser = parse_timeout)]
    pub header_timeout: Duration,

    /// Time a keep-alive connection may stay open without a request (an HTTP/1 one at most the header timeout).
    #[arg(long, env = env::IDLE_TIMEOUT, default_value = "60s", value_parser = parse_timeout)]
    pub idle_timeout: Duration,
}

impl Default for ListenArgs {
    fn default() -> Self {
        Self {
            admin_port: DEFAULT_ADMIN_PORT,
            admin_address: IpAddr::from([127, 0, 0, 1]),
            max_connections: 512,
            header_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(60),
        }
    }
}

impl ListenArgs {
    /// Bounds of the published port; a request may take `longest_check` (the endpoint timeout) and a margin.
    pub fn limits(&self, longest_check: Duration) -> Limits {
        let mut limits = Limits::new(self.max_connections);
        limits.header_read_timeout = self.header_timeout;
        limits.idle_timeout = self.idle_timeout;
        limits.request_timeout = longest_check + Duration::from_secs(5);
        limits.max_body_bytes = MAX_BODY_BYTES;
        limits
    }

    /// Bounds of the admin port.
    pub fn admin_limits(&self, longest_check: Duration) -> Limits {
        let mut limits = self.limits(longest_check);
        limits.max_connections = ADMIN_MAX_CONNECTIONS;
        limits
    }
}

fn parse_max_connections(value: &str) -> Result<usize, String> {
    healthbridge_runtime::settings::parse_max_connections(
        value,
        "HTTP_HEALTHCHECK_SIDECAR_MAX_CONNECTIONS (--max-connections)",
    )
}

fn parse_timeout(value: &str) -> Result<Duration, String> {
    match crate::duration::parse_duration(value) {
        Ok(d) if !d.is_zero() => Ok(d),
        Ok(_) => Err("must be more than 0".to_owned()),
        Err(why) => Err(why.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_bounds_reject_zero_and_name_the_variable() {
        assert_eq!(parse_max_connections("64"), Ok(64));
        let error = parse_max_connections("0").unwrap_err();
        assert!(
            error.contains("HTTP_HEALTHCHECK_SIDECAR_MAX_CONNECTIONS"),
            "{error}"
        );
        assert!(parse_timeout("0s").is_err());
        assert_eq!(parse_timeout("500ms"), Ok(Duration::from_millis(500)));
    }

    #[test]
    fn a_request_may_take_the_longest_check_and_a_margin() {
        let limits = ListenArgs::default().limits(Duration::from_secs(3));
        assert_eq!(limits.request_timeout, Duration::from_secs(8));
        assert_eq!(limits.max_connections, 512);
        assert_eq!(
            ListenArgs::default()
                .admin_limits(Duration::from_secs(3))
                .max_connections,
            32
        );
    }
}
