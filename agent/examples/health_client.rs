//! A load client for profiling (`bench/agent-profile`): sends exactly N keep-alive `GET /health` requests over C
//! connections and checks each answer is `200`, so an instruction count divided by N is a cost per request.
//!
//! Usage: `health_client PORT REQUESTS [CONNECTIONS]` (CONNECTIONS defaults to 32, like `bench/agent`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const REQUEST: &[u8] = b"GET /health HTTP/1.1\r\nHost: bench\r\n\r\n";

fn main() -> Result<(), String> {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: health_client PORT REQUESTS [CONNECTIONS]";
    let number = |i: usize, name: &str| -> Result<u64, String> {
        let value = args
            .get(i)
            .ok_or_else(|| format!("{name} missing; {usage}"))?;
        value
            .parse()
            .map_err(|_| format!("{name} must be a number, got `{value}`; {usage}"))
    };
    let port = u16::try_from(number(1, "PORT")?).map_err(|_| "PORT must be below 65536")?;
    let requests = number(2, "REQUESTS")?;
    let connections = if args.len() > 3 {
        number(3, "CONNECTIONS")?.max(1)
    } else {
        32
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|error| format!("cannot start the runtime: {error}"))?;
    runtime.block_on(async move {
        let left = Arc::new(AtomicU64::new(requests));
        let clients = (0..connections).map(|_| tokio::spawn(client(port, Arc::clone(&left))));
        let mut answered = 0;
        for client in futures::future::join_all(clients).await {
            answered += client.map_err(|error| format!("a client task failed: {error}"))??;
        }
        println!("{answered} requests answered 200");
        Ok(())
    })
}

/// Takes requests from `left` until none are left; answers how many it sent.
async fn client(port: u16, left: Arc<AtomicU64>) -> Result<u64, String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|error| format!("cannot connect to 127.0.0.1:{port}: {error}"))?;
    stream
        .set_nodelay(true)
        .map_err(|error| error.to_string())?;
    let mut buffer = Vec::with_capacity(4096);
    let mut sent = 0;
    while left
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
        .is_ok()
    {
        stream
            .write_all(REQUEST)
            .await
            .map_err(|error| format!("cannot send: {error}"))?;
        read_answer(&mut stream, &mut buffer).await?;
        sent += 1;
    }
    Ok(sent)
}

/// Reads one answer (head and `content-length` body) and checks it is `200`.
async fn read_answer(stream: &mut TcpStream, buffer: &mut Vec<u8>) -> Result<(), String> {
    loop {
        if let Some(end) = find(buffer, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buffer[..end]).to_ascii_lowercase();
            if !head.starts_with("http/1.1 200") {
                return Err(format!("expected 200, got: {head}"));
            }
            let length: usize = head
                .lines()
                .find_map(|line| line.strip_prefix("content-length:"))
                .and_then(|value| value.trim().parse().ok())
                .ok_or_else(|| format!("no content-length in: {head}"))?;
            let total = end + 4 + length;
            if buffer.len() >= total {
                buffer.drain(..total);
                return Ok(());
            }
        }
        let mut chunk = [0u8; 4096];
        let read = stream
            .read(&mut chunk)
            .await
            .map_err(|error| format!("cannot read: {error}"))?;
        if read == 0 {
            return Err("the server closed the connection".to_owned());
        }
        buffer.extend_from_slice(&chunk[..read]);
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}
