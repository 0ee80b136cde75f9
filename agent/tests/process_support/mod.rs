//! For tests that start the agent binary and talk to it over loopback: free ports, plain HTTP/1.0 GETs, polling
//! with backoff, and a child process that is killed when the test ends.
#![allow(clippy::unwrap_used)]
#![allow(dead_code)]

use std::io::{Read, Write};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// The agent binary cargo built for these tests.
pub const AGENT: &str = env!("CARGO_BIN_EXE_healthbridge-agent");

/// A command that starts the agent binary.
pub fn agent() -> Command {
    Command::new(AGENT)
}

/// A loopback port nothing listens on (bound, then released): for a server to take, or to be refused at.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The whole answer (status line, headers, body) to `GET path` over HTTP/1.0 on loopback; `None` while nothing
/// listens or when no answer comes within 10 s.
pub fn http_get(port: u16, path: &str) -> Option<String> {
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())
        .ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    Some(answer)
}

/// `(status, body)` of `GET path`, or `None` while nothing listens.
pub fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let answer = http_get(port, path)?;
    let status = answer.get(9..12)?.parse().ok()?;
    let body = answer.split_once("\r\n\r\n")?.1.to_owned();
    Some((status, body))
}

/// Polls with exponential backoff until `done` gives a value; panics naming `what` after about 30 s.
pub fn eventually<T>(what: &str, mut done: impl FnMut() -> Option<T>) -> T {
    let mut pause = Duration::from_millis(10);
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Some(value) = done() {
            return value;
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(500));
    }
    panic!("not reached within 30 s: {what}")
}

/// A started process, killed and reaped when the test ends, pass or fail.
pub struct KilledOnDrop(pub Child);

impl Drop for KilledOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
