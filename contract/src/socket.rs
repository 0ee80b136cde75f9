//! Socket checks, one `PATH=URL` per line like exec checks: `tcp://HOST:PORT[?send=…&expect=…]`,
//! `udp://HOST:PORT?send=…[&expect=…]`, `grpc://HOST:PORT[/SERVICE]` (h2c) and `grpcs://…` (TLS); every URL may
//! add `timeout=DURATION`. Also the rule that no two checks of any kind share a path.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use thiserror::Error;

use crate::duration::{DurationError, parse_positive_duration};
use crate::exec::RESERVED_PATHS;
use crate::value::shorten;

/// What a socket check speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SocketKind {
    Tcp,
    Udp,
    Grpc,
}

impl SocketKind {
    pub const ALL: [SocketKind; 3] = [Self::Tcp, Self::Udp, Self::Grpc];

    /// The name of the kind, as in `tcp:/db` and the annotation `healthbridge.io/tcp`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
            Self::Grpc => "grpc",
        }
    }

    fn example(self) -> &'static str {
        match self {
            Self::Tcp => "/db=tcp://127.0.0.1:5432",
            Self::Udp => "/dns=udp://127.0.0.1:53?send=…&expect=…",
            Self::Grpc => "/api=grpc://127.0.0.1:50051/my.Service",
        }
    }

    /// [`Self::example`] without the path, for a URL given on its own.
    fn url_example(self) -> &'static str {
        let example = self.example();
        example.split_once('=').map_or(example, |(_, url)| url)
    }
}

impl fmt::Display for SocketKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One socket check, parsed and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketSpec {
    pub path: String,
    pub kind: SocketKind,
    /// The URL as written, for names and messages.
    pub url: String,
    /// A DNS name or an IP address (IPv6 without its brackets).
    pub host: String,
    pub port: u16,
    /// `grpcs://`: TLS, verified with the agent's TLS settings.
    pub tls: bool,
    /// gRPC service to ask about; empty: the server as a whole.
    pub service: String,
    /// Bytes written once connected (TCP) or sent as the datagram (UDP).
    pub send: Option<Vec<u8>>,
    /// The reply must start with these bytes.
    pub expect: Option<Vec<u8>>,
    /// This check's timeout, instead of the agent's default.
    pub timeout: Option<Duration>,
}

/// A socket spec the agent cannot run.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SocketSpecError {
    #[error("`{spec}`: write PATH=URL, e.g. {example}")]
    NoPath { spec: String, example: &'static str },
    #[error(
        "`{spec}`: the URL `{path}` must be a path starting with / and without spaces, `?` or `#`"
    )]
    BadPath { spec: String, path: String },
    #[error("`{spec}`: {path} is the agent's own route; pick another path such as /db")]
    ReservedPath { spec: String, path: String },
    #[error("`{spec}`: a {kind} check needs a URL like {example}")]
    Scheme {
        spec: String,
        kind: SocketKind,
        example: &'static str,
    },
    #[error("`{spec}`: {why}")]
    BadAddress { spec: String, why: String },
    #[error(
        "`{spec}`: unknown parameter `{name}`; a {kind} URL takes {accepted} (e.g. ?timeout=2s)"
    )]
    UnknownParameter {
        spec: String,
        name: String,
        kind: SocketKind,
        accepted: &'static str,
    },
    #[error("`{spec}`: `{name}` is given twice")]
    RepeatedParameter { spec: String, name: String },
    #[error(
        "`{spec}`: `{name}` has a bad escape: write bytes as %XX or \\xXX, and \\r, \\n, \\t, \\0, \\\\"
    )]
    BadEscape { spec: String, name: String },
    #[error("`{spec}`: timeout {why}")]
    BadTimeout { spec: String, why: DurationError },
    #[error(
        "`{spec}`: a UDP check needs a request to send (`?send=…`): UDP has no connection to check, only an answer"
    )]
    UdpWithoutSend { spec: String },
    #[error(
        "`{spec}`: `expect` without `send` would wait for a server that speaks first; add send=…"
    )]
    ExpectWithoutSend { spec: String },
    #[error("{path} is given twice; every check needs its own path")]
    DuplicatePath { path: String },
    #[error("no check given: write lines of PATH=URL, e.g. {example}")]
    Empty { example: &'static str },
}

/// Two checks (of any kinds) on one path.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error(
    "{path} is taken by both the {first} check and the {second} check; every check needs its own path"
)]
pub struct PathClash {
    pub path: String,
    pub first: String,
    pub second: String,
}

/// Every spec of one value: one per non-blank line.
pub fn spec_lines(value: &str) -> impl Iterator<Item = &str> {
    value.lines().map(str::trim).filter(|line| !line.is_empty())
}

/// One `PATH=URL` of the given kind.
pub fn parse_spec(kind: SocketKind, spec: &str) -> Result<SocketSpec, SocketSpecError> {
    let text = spec.trim();
    let quoted = || shorten(text);
    let Some((path, url)) = text
        .split_once('=')
        .filter(|(path, _)| path.starts_with('/'))
    else {
        return Err(SocketSpecError::NoPath {
            spec: quoted(),
            example: kind.example(),
        });
    };
    let (path, url) = (path.trim(), url.trim());
    if path.contains(char::is_whitespace) || path.contains(['?', '#']) {
        return Err(SocketSpecError::BadPath {
            spec: quoted(),
            path: shorten(path),
        });
    }
    if RESERVED_PATHS.contains(&path) {
        return Err(SocketSpecError::ReservedPath {
            spec: quoted(),
            path: path.to_owned(),
        });
    }
    parse_url(kind, text, path, url, kind.example())
}

/// One URL of the given kind on its own, without `PATH=` (the probe's `--url grpc://…`): the rules and messages
/// of a `PATH=URL` line, so both accept the same targets. The returned spec's `path` is empty.
pub fn parse_target(kind: SocketKind, url: &str) -> Result<SocketSpec, SocketSpecError> {
    let url = url.trim();
    parse_url(kind, url, "", url, kind.url_example())
}

/// The URL part of a spec; `text` is what messages quote (the whole spec as written).
fn parse_url(
    kind: SocketKind,
    text: &str,
    path: &str,
    url: &str,
    example: &'static str,
) -> Result<SocketSpec, SocketSpecError> {
    let quoted = || shorten(text);
    let scheme_error = || SocketSpecError::Scheme {
        spec: quoted(),
        kind,
        example,
    };
    let (scheme, rest) = url.split_once("://").ok_or_else(scheme_error)?;
    let tls = match (kind, scheme) {
        (SocketKind::Tcp, "tcp") | (SocketKind::Udp, "udp") | (SocketKind::Grpc, "grpc") => false,
        (SocketKind::Grpc, "grpcs") => true,
        _ => return Err(scheme_error()),
    };
    let (rest, query) = match rest.split_once('?') {
        Some((rest, query)) => (rest, Some(query)),
        None => (rest, None),
    };
    let (authority, service) = match rest.split_once('/') {
        Some((authority, service)) => (authority, service),
        None => (rest, ""),
    };
    let bad_address = |why: String| SocketSpecError::BadAddress {
        spec: quoted(),
        why,
    };
    if kind != SocketKind::Grpc && !service.is_empty() {
        return Err(bad_address(format!(
            "a {kind} URL has no path after HOST:PORT (`/{}`)",
            shorten(service)
        )));
    }
    if service.contains(['/', '#']) || service.contains(char::is_whitespace) {
        return Err(bad_address(format!(
            "`{}` is not a gRPC service name like my.package.Service",
            shorten(service)
        )));
    }
    let (host, port) = split_host_port(authority).map_err(bad_address)?;
    let mut spec = SocketSpec {
        path: path.to_owned(),
        kind,
        url: url.to_owned(),
        host,
        port,
        tls,
        service: service.to_owned(),
        send: None,
        expect: None,
        timeout: None,
    };
    let mut seen = BTreeMap::new();
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        if seen.insert(name, ()).is_some() {
            return Err(SocketSpecError::RepeatedParameter {
                spec: quoted(),
                name: shorten(name),
            });
        }
        let bytes = || {
            decode(value).ok_or_else(|| SocketSpecError::BadEscape {
                spec: quoted(),
                name: name.to_owned(),
            })
        };
        match (name, kind) {
            ("timeout", _) => {
                spec.timeout = Some(parse_positive_duration(value).map_err(|why| {
                    SocketSpecError::BadTimeout {
                        spec: quoted(),
                        why,
                    }
                })?);
            }
            ("send", SocketKind::Tcp | SocketKind::Udp) => spec.send = Some(bytes()?),
            ("expect", SocketKind::Tcp | SocketKind::Udp) => spec.expect = Some(bytes()?),
            _ => {
                return Err(SocketSpecError::UnknownParameter {
                    spec: quoted(),
                    name: shorten(name),
                    kind,
                    accepted: match kind {
                        SocketKind::Grpc => "only timeout",
                        _ => "send, expect and timeout",
                    },
                });
            }
        }
    }
    if kind == SocketKind::Udp && spec.send.as_ref().is_none_or(Vec::is_empty) {
        return Err(SocketSpecError::UdpWithoutSend { spec: quoted() });
    }
    if kind == SocketKind::Tcp && spec.expect.is_some() && spec.send.is_none() {
        return Err(SocketSpecError::ExpectWithoutSend { spec: quoted() });
    }
    Ok(spec)
}

/// `host:port` or `[v6]:port`, with a port from 1 to 65535; `Err` says what is wrong and what to write. The
/// address rule of every socket URL, also used for `grpc_health_probe -addr`.
pub fn split_host_port(authority: &str) -> Result<(String, u16), String> {
    let example = "write HOST:PORT, e.g. 127.0.0.1:5432 or [::1]:5432";
    if authority.contains('@') {
        return Err(format!("`{}` has user info: {example}", shorten(authority)));
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (host, port) = v6
            .split_once("]:")
            .ok_or_else(|| format!("`{}` has no port: {example}", shorten(authority)))?;
        if host.parse::<std::net::Ipv6Addr>().is_err() {
            return Err(format!("`[{}]` is not an IPv6 address", shorten(host)));
        }
        (host, port)
    } else {
        let (host, port) = authority
            .rsplit_once(':')
            .ok_or_else(|| format!("`{}` has no port: {example}", shorten(authority)))?;
        let valid_name = !host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_');
        if !valid_name {
            return Err(format!(
                "`{}` is not a host name or IPv4 address: {example}",
                shorten(host)
            ));
        }
        (host, port)
    };
    let port = port
        .parse::<u16>()
        .ok()
        .filter(|p| *p != 0)
        .ok_or_else(|| {
            format!(
                "`{}` is not a port: use a number from 1 to 65535",
                shorten(port)
            )
        })?;
    Ok((host.to_owned(), port))
}

/// `%XX` and then `\r`, `\n`, `\t`, `\0`, `\\`, `\xXX` into bytes; `None` for a broken escape.
fn decode(value: &str) -> Option<Vec<u8>> {
    let hex = |pair: &[u8]| u8::from_str_radix(std::str::from_utf8(pair).ok()?, 16).ok();
    let raw = value.as_bytes();
    let mut percent = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'%' {
            percent.push(hex(raw.get(i + 1..i + 3)?)?);
            i += 3;
        } else {
            percent.push(raw[i]);
            i += 1;
        }
    }
    let mut out = Vec::with_capacity(percent.len());
    let mut i = 0;
    while i < percent.len() {
        if percent[i] != b'\\' {
            out.push(percent[i]);
            i += 1;
            continue;
        }
        let (byte, used) = match percent.get(i + 1)? {
            b'r' => (b'\r', 2),
            b'n' => (b'\n', 2),
            b't' => (b'\t', 2),
            b'0' => (0, 2),
            b'\\' => (b'\\', 2),
            b'x' => (hex(percent.get(i + 2..i + 4)?)?, 4),
            _ => return None,
        };
        out.push(byte);
        i += used;
    }
    Some(out)
}

/// Every spec of the lines of `values`, each path once within the kind (none at all is fine).
pub fn parse_specs<'a>(
    kind: SocketKind,
    values: impl IntoIterator<Item = &'a str>,
) -> Result<Vec<SocketSpec>, SocketSpecError> {
    let mut parsed: Vec<SocketSpec> = Vec::new();
    for line in values.into_iter().flat_map(spec_lines) {
        let spec = parse_spec(kind, line)?;
        if parsed.iter().any(|other| other.path == spec.path) {
            return Err(SocketSpecError::DuplicatePath { path: spec.path });
        }
        parsed.push(spec);
    }
    Ok(parsed)
}

/// The specs of one value (an annotation), of which there must be at least one.
pub fn parse_spec_lines(kind: SocketKind, value: &str) -> Result<Vec<SocketSpec>, SocketSpecError> {
    let specs = parse_specs(kind, [value])?;
    if specs.is_empty() {
        return Err(SocketSpecError::Empty {
            example: kind.example(),
        });
    }
    Ok(specs)
}

/// Checks that no path is served by two checks, whatever their kinds (`exec`, `tcp`, `udp`, `grpc`): the
/// first clash in the given order.
pub fn distinct_paths<'a>(
    checks: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<(), PathClash> {
    let mut seen: BTreeMap<&str, &str> = BTreeMap::new();
    for (kind, path) in checks {
        if let Some(first) = seen.insert(path, kind) {
            return Err(PathClash {
                path: path.to_owned(),
                first: first.to_owned(),
                second: kind.to_owned(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(kind: SocketKind, text: &str) -> SocketSpec {
        parse_spec(kind, text).unwrap()
    }

    fn error(kind: SocketKind, text: &str) -> String {
        parse_spec(kind, text).unwrap_err().to_string()
    }

    #[test]
    fn tcp_specs_with_and_without_a_conversation() {
        let plain = spec(SocketKind::Tcp, "/db=tcp://127.0.0.1:5432");
        assert_eq!((plain.host.as_str(), plain.port), ("127.0.0.1", 5432));
        assert_eq!(
            (plain.send, plain.expect, plain.timeout),
            (None, None, None)
        );
        let redis = spec(
            SocketKind::Tcp,
            r"/cache=tcp://localhost:6379?send=PING\r\n&expect=%2BPONG&timeout=500ms",
        );
        assert_eq!(redis.send.as_deref(), Some(&b"PING\r\n"[..]));
        assert_eq!(redis.expect.as_deref(), Some(&b"+PONG"[..]));
        assert_eq!(redis.timeout, Some(Duration::from_millis(500)));
        let v6 = spec(SocketKind::Tcp, "/x=tcp://[::1]:80");
        assert_eq!((v6.host.as_str(), v6.port), ("::1", 80));
    }

    #[test]
    fn udp_needs_a_request_and_grpc_takes_a_service() {
        let dns = spec(
            SocketKind::Udp,
            r"/dns=udp://127.0.0.1:53?send=\x00\x01&expect=\x00",
        );
        assert_eq!(dns.send.as_deref(), Some(&[0u8, 1][..]));
        assert!(error(SocketKind::Udp, "/dns=udp://127.0.0.1:53").contains("needs a request"));
        let grpc = spec(
            SocketKind::Grpc,
            "/api=grpcs://api.shop.svc:443/shop.Cart?timeout=2s",
        );
        assert!(grpc.tls);
        assert_eq!(grpc.service, "shop.Cart");
        assert_eq!(
            spec(SocketKind::Grpc, "/api=grpc://127.0.0.1:50051").service,
            ""
        );
        assert!(error(SocketKind::Grpc, "/api=grpc://h:1?send=x").contains("only timeout"));
    }

    #[test]
    fn mistakes_are_named_with_what_is_accepted() {
        for (kind, text, why) in [
            (SocketKind::Tcp, "tcp://127.0.0.1:1", "write PATH=URL"),
            (
                SocketKind::Tcp,
                "/db=udp://127.0.0.1:1",
                "a tcp check needs a URL like",
            ),
            (
                SocketKind::Tcp,
                "/db=127.0.0.1:1",
                "a tcp check needs a URL like",
            ),
            (
                SocketKind::Tcp,
                "/health=tcp://127.0.0.1:1",
                "agent's own route",
            ),
            (SocketKind::Tcp, "/a b=tcp://127.0.0.1:1", "must be a path"),
            (SocketKind::Tcp, "/db=tcp://127.0.0.1", "has no port"),
            (SocketKind::Tcp, "/db=tcp://127.0.0.1:0", "1 to 65535"),
            (SocketKind::Tcp, "/db=tcp://:80", "not a host name"),
            (SocketKind::Tcp, "/db=tcp://u@h:80", "user info"),
            (
                SocketKind::Tcp,
                "/db=tcp://h:80/x",
                "no path after HOST:PORT",
            ),
            (
                SocketKind::Tcp,
                "/db=tcp://h:80?sned=x",
                "unknown parameter `sned`",
            ),
            (SocketKind::Tcp, "/db=tcp://h:80?send=%zz", "bad escape"),
            (SocketKind::Tcp, r"/db=tcp://h:80?send=\q", "bad escape"),
            (SocketKind::Tcp, "/db=tcp://h:80?expect=x", "add send="),
            (
                SocketKind::Tcp,
                "/db=tcp://h:80?timeout=0",
                "positive duration",
            ),
            (
                SocketKind::Tcp,
                "/db=tcp://h:80?timeout=1s&timeout=2s",
                "given twice",
            ),
            (
                SocketKind::Tcp,
                "/db=tcp://[nope]:80",
                "not an IPv6 address",
            ),
        ] {
            let message = error(kind, text);
            assert!(message.contains(why), "{text}: {message}");
        }
    }

    #[test]
    fn a_target_alone_follows_the_rules_of_a_spec_line() {
        let alone = parse_target(
            SocketKind::Grpc,
            " grpcs://api.shop.svc:443/shop.Cart?timeout=2s ",
        )
        .unwrap();
        let line = spec(
            SocketKind::Grpc,
            "/api=grpcs://api.shop.svc:443/shop.Cart?timeout=2s",
        );
        assert_eq!(alone.path, "");
        assert_eq!(
            SocketSpec {
                path: line.path.clone(),
                ..alone
            },
            line
        );
        for url in [
            "grpc://127.0.0.1",
            "grpc://127.0.0.1:0",
            "grpc://:50051",
            "grpc://h:1/a b",
            "grpc://h:1?send=x",
            "grpc://h:1?timeout=0",
        ] {
            let alone = parse_target(SocketKind::Grpc, url).unwrap_err().to_string();
            let line = error(SocketKind::Grpc, &format!("/api={url}"));
            assert_eq!(
                alone,
                line.replacen("/api=", "", 1),
                "the same message, quoting the URL"
            );
        }
        let scheme = parse_target(SocketKind::Grpc, "grpc:/h:1")
            .unwrap_err()
            .to_string();
        assert_eq!(
            scheme,
            "`grpc:/h:1`: a grpc check needs a URL like grpc://127.0.0.1:50051/my.Service"
        );
    }

    #[test]
    fn paths_are_unique_within_and_across_kinds() {
        assert_eq!(
            parse_spec_lines(SocketKind::Tcp, "/a=tcp://h:1\n/a=tcp://h:2"),
            Err(SocketSpecError::DuplicatePath { path: "/a".into() })
        );
        assert!(matches!(
            parse_spec_lines(SocketKind::Tcp, " \n"),
            Err(SocketSpecError::Empty { .. })
        ));
        let clash = distinct_paths([("exec", "/healthz"), ("tcp", "/db"), ("grpc", "/healthz")])
            .unwrap_err();
        assert_eq!(
            clash.to_string(),
            "/healthz is taken by both the exec check and the grpc check; every check needs its own path"
        );
        assert!(distinct_paths([("exec", "/a"), ("udp", "/b")]).is_ok());
    }
}
