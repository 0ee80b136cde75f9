//! The load balancer's view of a health endpoint: one plain HTTP GET on a node's port.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// Status code of `GET <path>` on `<host>:<port>` (what `curl http://<host>:<port><path>` shows).
pub async fn status_at(host: IpAddr, port: u16, path: &str) -> anyhow::Result<u16> {
    let target = SocketAddr::new(host, port);
    let exchange = async {
        let mut stream = TcpStream::connect(target).await?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: {target}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut head = Vec::new();
        let mut buffer = [0_u8; 256];
        while !head.windows(2).any(|w| w == b"\r\n") {
            let read = stream.read(&mut buffer).await?;
            if read == 0 {
                break;
            }
            head.extend_from_slice(&buffer[..read]);
        }
        Ok::<_, std::io::Error>(head)
    };
    let head = tokio::time::timeout(Duration::from_secs(2), exchange)
        .await
        .with_context(|| format!("no answer from {target} within 2 s"))?
        .with_context(|| format!("GET {target}{path}"))?;
    let line = String::from_utf8_lossy(&head);
    let status_line = line.lines().next().unwrap_or_default();
    match status_line.split_whitespace().nth(1).map(str::parse::<u16>) {
        Some(Ok(code)) if status_line.starts_with("HTTP/") => Ok(code),
        _ => bail!("{target}{path} answered without an HTTP status line: {status_line:?}"),
    }
}

/// [`status_at`] on 127.0.0.1, where node A's NodePorts also answer.
pub async fn status_on_loopback(port: u16, path: &str) -> anyhow::Result<u16> {
    status_at(LOOPBACK, port, path).await
}

/// A load balancer's answer: the status code and the body, e.g. which check of `/all` failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub body: String,
    /// The agent's `healthbridge-stale` header: seconds since the API server last confirmed the pod status,
    /// sent once that is longer than `MAX_STALENESS`.
    pub stale_seconds: Option<u64>,
}

/// `GET <path>` on `<host>:<port>` read to the end (the request says `Connection: close`).
pub async fn get_at(host: IpAddr, port: u16, path: &str) -> anyhow::Result<Answer> {
    let target = SocketAddr::new(host, port);
    let exchange = async {
        let mut stream = TcpStream::connect(target).await?;
        let request = format!("GET {path} HTTP/1.1\r\nHost: {target}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        Ok::<_, std::io::Error>(response)
    };
    let response = tokio::time::timeout(Duration::from_secs(2), exchange)
        .await
        .with_context(|| format!("no answer from {target} within 2 s"))?
        .with_context(|| format!("GET {target}{path}"))?;
    parse_answer(&String::from_utf8_lossy(&response))
        .with_context(|| format!("{target}{path} answered"))
}

/// [`get_at`] on 127.0.0.1, where node A's NodePorts also answer.
pub async fn get_on_loopback(port: u16, path: &str) -> anyhow::Result<Answer> {
    get_at(LOOPBACK, port, path).await
}

/// Splits a raw HTTP/1.1 response into status and body (chunked bodies are joined).
fn parse_answer(response: &str) -> anyhow::Result<Answer> {
    let status_line = response.lines().next().unwrap_or_default();
    let status = match status_line.split_whitespace().nth(1).map(str::parse::<u16>) {
        Some(Ok(code)) if status_line.starts_with("HTTP/") => code,
        _ => bail!("without an HTTP status line: {status_line:?}"),
    };
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((response, ""));
    let chunked = head
        .lines()
        .any(|line| line.eq_ignore_ascii_case("transfer-encoding: chunked"));
    let body = if chunked {
        unchunk(body)
    } else {
        body.to_owned()
    };
    let stale_seconds = head.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        name.trim()
            .eq_ignore_ascii_case("healthbridge-stale")
            .then(|| value.trim().parse().ok())?
    });
    Ok(Answer {
        status,
        body,
        stale_seconds,
    })
}

fn unchunk(mut rest: &str) -> String {
    let mut body = String::new();
    while let Some((size_line, after)) = rest.split_once("\r\n") {
        let size = usize::from_str_radix(size_line.trim(), 16).unwrap_or(0);
        if size == 0 || after.len() < size {
            break;
        }
        body.push_str(&after[..size]);
        rest = after[size..].trim_start_matches("\r\n");
    }
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stale_header_is_read() -> anyhow::Result<()> {
        let answer = parse_answer(
            "HTTP/1.1 503 Service Unavailable\r\nHealthbridge-Stale: 7\r\ncontent-length: 3\r\n\r\nbad",
        )?;
        assert_eq!(answer.stale_seconds, Some(7));
        Ok(())
    }

    #[test]
    fn a_plain_body_is_read_after_the_head() -> anyhow::Result<()> {
        let answer =
            parse_answer("HTTP/1.1 503 Service Unavailable\r\ncontent-length: 4\r\n\r\nbad\n")?;
        assert_eq!(
            answer,
            Answer {
                status: 503,
                body: "bad\n".to_owned(),
                stale_seconds: None,
            }
        );
        Ok(())
    }

    #[test]
    fn a_chunked_body_is_joined() -> anyhow::Result<()> {
        let answer = parse_answer(
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nOK \r\n2\r\nhi\r\n0\r\n\r\n",
        )?;
        assert_eq!(answer.body, "OK hi");
        Ok(())
    }

    #[test]
    fn an_answer_without_a_status_line_is_an_error() {
        assert!(parse_answer("SSH-2.0-OpenSSH\r\n").is_err());
    }
}
