//! The load balancer's view of a health endpoint: one plain HTTP GET on a loopback port.

use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Status code of `GET <path>` on `127.0.0.1:<port>` (what `curl 127.0.0.1:<port><path>` shows).
pub async fn status_on_loopback(port: u16, path: &str) -> anyhow::Result<u16> {
    let exchange = async {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await?;
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
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
        .with_context(|| format!("no answer from 127.0.0.1:{port} within 2 s"))?
        .with_context(|| format!("GET 127.0.0.1:{port}{path}"))?;
    let line = String::from_utf8_lossy(&head);
    let status_line = line.lines().next().unwrap_or_default();
    match status_line.split_whitespace().nth(1).map(str::parse::<u16>) {
        Some(Ok(code)) if status_line.starts_with("HTTP/") => Ok(code),
        _ => bail!("127.0.0.1:{port}{path} answered without an HTTP status line: {status_line:?}"),
    }
}
