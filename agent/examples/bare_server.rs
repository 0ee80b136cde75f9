//! A minimal hyper server for the benchmarks: `200 OK` at once (the agent's throughput baseline), or after MS milliseconds on `/slow/MS` (a slow app for `/all`).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use http::Response;
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

fn main() -> std::io::Result<()> {
    let port: u16 = std::env::args()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(3001);
    // The same runtime set-up as the agent, so the baseline differs only in what serves the request.
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get().min(2));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port))).await?;
        let builder = auto::Builder::new(TokioExecutor::new());
        loop {
            let (stream, _) = listener.accept().await?;
            let _ = stream.set_nodelay(true);
            let builder = builder.clone();
            tokio::spawn(async move {
                let service =
                    service_fn(|request: http::Request<hyper::body::Incoming>| async move {
                        let delay = request
                            .uri()
                            .path()
                            .strip_prefix("/slow/")
                            .and_then(|ms| ms.parse().ok());
                        if let Some(ms) = delay {
                            tokio::time::sleep(Duration::from_millis(ms)).await;
                        }
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"OK"))))
                    });
                let _ = builder
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}
