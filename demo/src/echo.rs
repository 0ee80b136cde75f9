//! UDP and TCP echo: every datagram and every byte goes straight back to its sender.

use std::io;
use std::net::SocketAddr;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream, UdpSocket};

/// Largest UDP payload; bigger datagrams are truncated by the kernel, which is fine for an echo.
const MAX_DATAGRAM: usize = 65_535;

/// Answers every datagram with the same bytes, until the socket fails.
pub async fn serve_udp(socket: UdpSocket) -> io::Result<()> {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let (len, peer) = socket.recv_from(&mut buf).await?;
        // A peer that vanished must not stop the service for everyone else.
        if let Err(err) = socket.send_to(&buf[..len], peer).await {
            eprintln!("udp: cannot answer {peer}: {err}");
        }
    }
}

/// Accepts TCP connections and echoes each on its own task.
pub async fn serve_tcp(listener: TcpListener) -> io::Result<()> {
    loop {
        let (stream, peer) = listener.accept().await?;
        tokio::spawn(async move {
            if let Err(err) = echo_stream(stream).await {
                eprintln!("tcp: connection from {peer} ended: {err}");
            }
        });
    }
}

async fn echo_stream(mut stream: TcpStream) -> io::Result<()> {
    let (mut reader, mut writer) = stream.split();
    tokio::io::copy(&mut reader, &mut writer).await?;
    writer.shutdown().await
}

/// Binds both sockets on the same port (port 0: the TCP port is chosen first and reused for UDP).
pub async fn bind(addr: SocketAddr) -> io::Result<(UdpSocket, TcpListener)> {
    let tcp = TcpListener::bind(addr).await?;
    let udp = UdpSocket::bind(tcp.local_addr()?).await?;
    Ok((udp, tcp))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    async fn echo_server() -> SocketAddr {
        let (udp, tcp) = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = tcp.local_addr().unwrap();
        tokio::spawn(serve_udp(udp));
        tokio::spawn(serve_tcp(tcp));
        addr
    }

    #[tokio::test]
    async fn udp_and_tcp_share_one_port() {
        let (udp, tcp) = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        assert_eq!(udp.local_addr().unwrap(), tcp.local_addr().unwrap());
    }

    #[tokio::test]
    async fn a_udp_datagram_comes_back_unchanged() {
        let server = echo_server().await;
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        client.send_to(b"hello over udp", server).await.unwrap();
        let mut buf = [0u8; 64];
        let (len, from) = client.recv_from(&mut buf).await.unwrap();
        assert_eq!(&buf[..len], b"hello over udp");
        assert_eq!(from, server);
    }

    #[tokio::test]
    async fn a_tcp_stream_comes_back_unchanged_and_is_closed_after_the_client_is_done() {
        let server = echo_server().await;
        let mut client = TcpStream::connect(server).await.unwrap();
        client.write_all(b"hello over tcp").await.unwrap();
        client.shutdown().await.unwrap();
        let mut answer = Vec::new();
        client.read_to_end(&mut answer).await.unwrap();
        assert_eq!(answer, b"hello over tcp");
    }

    #[tokio::test]
    async fn two_tcp_clients_are_served_at_the_same_time() {
        let server = echo_server().await;
        let mut first = TcpStream::connect(server).await.unwrap();
        let mut second = TcpStream::connect(server).await.unwrap();
        // The first stays open while the second is answered.
        first.write_all(b"one").await.unwrap();
        second.write_all(b"two").await.unwrap();
        let mut buf = [0u8; 3];
        second.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"two");
        first.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"one");
    }
}
