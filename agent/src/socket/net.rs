//! TCP (connect, optionally send and read the start of the reply) and UDP (one request datagram, one answer).

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use healthbridge_contract::duration::format_duration;
use healthbridge_contract::socket::SocketSpec;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::timeout;

use super::{Verdict, show_bytes};

/// Largest UDP answer read; a longer one is cut, which does not matter for a prefix.
const DATAGRAM_LIMIT: usize = 4096;

fn within(limit: Duration) -> String {
    format!("within {}", format_duration(limit))
}

/// The check's addresses (DNS names resolved at each run, as a name's address may change).
async fn addresses(spec: &SocketSpec) -> Result<Vec<SocketAddr>, String> {
    let found = tokio::net::lookup_host((spec.host.as_str(), spec.port))
        .await
        .map_err(|e| format!("cannot resolve {}: {e}", spec.host))?
        .collect::<Vec<_>>();
    if found.is_empty() {
        return Err(format!("{} has no address", spec.host));
    }
    Ok(found)
}

/// Connects (each address in turn), writes `send`, reads until `expect` can be compared.
pub async fn tcp(spec: &SocketSpec, limit: Duration) -> Verdict {
    match timeout(limit, tcp_exchange(spec)).await {
        Ok(verdict) => verdict,
        Err(_) => Verdict::fail(match &spec.expect {
            Some(_) => format!("no complete answer {}", within(limit)),
            None => format!("no connection {}", within(limit)),
        }),
    }
}

async fn tcp_exchange(spec: &SocketSpec) -> Verdict {
    let addresses = match addresses(spec).await {
        Ok(addresses) => addresses,
        Err(why) => return Verdict::fail(why),
    };
    let mut last_error = None;
    let mut stream = None;
    for address in addresses {
        match TcpStream::connect(address).await {
            Ok(connected) => {
                stream = Some(connected);
                break;
            }
            Err(error) => last_error = Some((address, error)),
        }
    }
    let Some(mut stream) = stream else {
        return Verdict::fail(match last_error {
            Some((address, error)) => format!("cannot connect to {address}: {error}"),
            None => "cannot connect".to_owned(),
        });
    };
    let Some(send) = &spec.send else {
        return Verdict::pass("connected");
    };
    if let Err(error) = stream.write_all(send).await {
        return Verdict::fail(format!("connected, but sending failed: {error}"));
    }
    let Some(expect) = &spec.expect else {
        return Verdict::pass(format!("connected and sent {} bytes", send.len()));
    };
    let mut reply = Vec::with_capacity(expect.len());
    let mut buffer = vec![0; expect.len().max(1)];
    while reply.len() < expect.len() {
        match stream.read(&mut buffer[..expect.len() - reply.len()]).await {
            Ok(0) => break,
            Ok(n) => reply.extend_from_slice(&buffer[..n]),
            Err(error) => return Verdict::fail(format!("connected, but reading failed: {error}")),
        }
        if !expect.starts_with(&reply) {
            break;
        }
    }
    judge(&reply, expect, "closed the connection before answering")
}

/// Sends one datagram and waits for one answer; an ICMP "port unreachable" shows as a refused connection.
pub async fn udp(spec: &SocketSpec, limit: Duration) -> Verdict {
    match timeout(limit, udp_exchange(spec)).await {
        Ok(verdict) => verdict,
        Err(_) => Verdict::fail(format!(
            "no answer {} (UDP: the request or its answer may be lost, or the service does not answer this request)",
            within(limit)
        )),
    }
}

async fn udp_exchange(spec: &SocketSpec) -> Verdict {
    let address = match addresses(spec).await {
        Ok(addresses) => addresses[0],
        Err(why) => return Verdict::fail(why),
    };
    let local: SocketAddr = if address.is_ipv6() {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    };
    let exchange = async {
        let socket = UdpSocket::bind(local).await?;
        // Connected, so only the target's answers are read and an ICMP error reaches us.
        socket.connect(address).await?;
        socket
            .send(spec.send.as_deref().unwrap_or_default())
            .await?;
        let mut buffer = vec![0; DATAGRAM_LIMIT];
        let n = socket.recv(&mut buffer).await?;
        buffer.truncate(n);
        Ok::<_, io::Error>(buffer)
    };
    match exchange.await {
        Ok(reply) => match &spec.expect {
            Some(expect) => judge(&reply, expect, "answered with an empty datagram"),
            None => Verdict::pass(format!("answered {} bytes", reply.len())),
        },
        Err(error) if error.kind() == io::ErrorKind::ConnectionRefused => Verdict::fail(format!(
            "port unreachable: nothing listens on {address} (ICMP)"
        )),
        Err(error) => Verdict::fail(format!("UDP exchange with {address} failed: {error}")),
    }
}

fn judge(reply: &[u8], expect: &[u8], empty: &str) -> Verdict {
    if reply.starts_with(expect) {
        Verdict::pass(format!("answered `{}`", show_bytes(reply)))
    } else if reply.is_empty() {
        Verdict::fail(empty.to_owned())
    } else {
        Verdict::fail(format!(
            "answered `{}`, expected `{}`",
            show_bytes(reply),
            show_bytes(expect)
        ))
    }
}
