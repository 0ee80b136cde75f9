//! Optional plain-HTTP status port: any GET answers 200 while the marker file exists, else 503.
//! Off by default (the demo stays a service with no health check of its own); it gives the
//! agent's `/all` and exec checks an HTTP endpoint to aggregate in the examples.

use std::io;
use std::path::{Path, PathBuf};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::ready;

/// Request heads longer than this are not worth reading: the answer never depends on them.
const MAX_REQUEST_HEAD: usize = 8 * 1024;

/// The whole HTTP answer for a readiness state.
pub fn response(ready: bool) -> &'static [u8] {
    if ready {
        b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: 6\r\nconnection: close\r\n\r\nready\n"
    } else {
        b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\ncontent-length: 8\r\nconnection: close\r\n\r\nunready\n"
    }
}

/// Answers each connection once, from the marker's state at that moment.
pub async fn serve(listener: TcpListener, ready_file: PathBuf) -> io::Result<()> {
    loop {
        let (stream, peer) = listener.accept().await?;
        let ready_file = ready_file.clone();
        tokio::spawn(async move {
            if let Err(err) = answer(stream, &ready_file).await {
                eprintln!("status: request from {peer} failed: {err}");
            }
        });
    }
}

async fn answer(mut stream: TcpStream, ready_file: &Path) -> io::Result<()> {
    let mut head = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_REQUEST_HEAD {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    stream
        .write_all(response(ready::is_ready(ready_file)))
        .await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn status_server(ready_file: PathBuf) -> std::net::SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(serve(listener, ready_file));
        addr
    }

    async fn get(addr: std::net::SocketAddr) -> String {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(b"GET /ready HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).await.unwrap();
        answer
    }

    #[test]
    fn content_length_matches_the_body() {
        for ready in [true, false] {
            let text = std::str::from_utf8(response(ready)).unwrap();
            let (head, body) = text.split_once("\r\n\r\n").unwrap();
            assert!(
                head.contains(&format!("content-length: {}", body.len())),
                "{text}"
            );
        }
    }

    #[tokio::test]
    async fn answers_200_while_the_marker_exists_and_503_once_it_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("ready");
        let addr = status_server(marker.clone()).await;

        ready::set_ready(&marker).unwrap();
        assert!(get(addr).await.starts_with("HTTP/1.1 200 "));

        ready::set_unready(&marker).unwrap();
        assert!(get(addr).await.starts_with("HTTP/1.1 503 "));
    }
}
