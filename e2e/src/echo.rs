//! The demo's own traffic as a client sends it: one UDP datagram or TCP exchange on a loopback port.

use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

/// How long a single datagram or TCP exchange may take before the attempt counts as lost.
const EXCHANGE: Duration = Duration::from_secs(2);

/// Sends `payload` as one datagram to `127.0.0.1:<port>` and returns the datagram that comes back.
pub async fn udp_on_loopback(port: u16, payload: &[u8]) -> anyhow::Result<Vec<u8>> {
    let socket = UdpSocket::bind(("127.0.0.1", 0)).await?;
    socket.connect(("127.0.0.1", port)).await?;
    socket.send(payload).await?;
    let mut buffer = vec![0_u8; 2048];
    let read = tokio::time::timeout(EXCHANGE, socket.recv(&mut buffer))
        .await
        .with_context(|| format!("no UDP answer from 127.0.0.1:{port} within {EXCHANGE:?}"))?
        .with_context(|| format!("UDP to 127.0.0.1:{port}"))?;
    buffer.truncate(read);
    Ok(buffer)
}

/// Writes `payload` to a TCP connection to `127.0.0.1:<port>`, half-closes it and returns what
/// the other side sent back before closing.
pub async fn tcp_on_loopback(port: u16, payload: &[u8]) -> anyhow::Result<Vec<u8>> {
    let exchange = async {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await?;
        stream.write_all(payload).await?;
        stream.shutdown().await?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await?;
        Ok::<_, std::io::Error>(answer)
    };
    let answer = tokio::time::timeout(EXCHANGE, exchange)
        .await
        .with_context(|| format!("no TCP answer from 127.0.0.1:{port} within {EXCHANGE:?}"))?
        .with_context(|| format!("TCP to 127.0.0.1:{port}"))?;
    if answer.is_empty() && !payload.is_empty() {
        bail!("127.0.0.1:{port} closed the connection without echoing anything");
    }
    Ok(answer)
}
