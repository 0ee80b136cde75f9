//! A loopback stand-in for the Kubernetes API for the agent's benchmark: answers GETs (and lists) of one ready pod,
//! holds watches open, and counts every request so the benchmark can show how many API calls health requests cause.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::routing::get;
use serde::Deserialize;

#[derive(Deserialize)]
struct PodQuery {
    watch: Option<String>,
}

const POD: &str = r#"{"apiVersion":"v1","kind":"Pod","metadata":{"name":"web-0","namespace":"bench","resourceVersion":"1"},
"spec":{"containers":[{"name":"app"},{"name":"healthbridge-agent"}]},
"status":{"phase":"Running","containerStatuses":[
{"name":"app","ready":true,"restartCount":0,"image":"app","imageID":"","state":{"running":{}}},
{"name":"healthbridge-agent","ready":true,"restartCount":0,"image":"agent","imageID":"","state":{"running":{}}}]}}"#;

async fn pods(State(count): State<Arc<AtomicU64>>, Query(query): Query<PodQuery>) -> Body {
    count.fetch_add(1, Ordering::Relaxed);
    if query.watch.as_deref() == Some("true") {
        // An open watch with nothing to report, like a real apiserver while the pod does not change.
        return Body::from_stream(futures::stream::pending::<Result<Vec<u8>, std::io::Error>>());
    }
    let pod = POD.replace('\n', "");
    Body::from(format!(
        r#"{{"apiVersion":"v1","kind":"PodList","metadata":{{"resourceVersion":"1"}},"items":[{pod}]}}"#
    ))
}

/// `GET pods/NAME`: the agent's confirmation every round.
async fn pod(State(count): State<Arc<AtomicU64>>, Path(_): Path<(String, String)>) -> Body {
    count.fetch_add(1, Ordering::Relaxed);
    Body::from(POD.replace('\n', ""))
}

async fn count(State(count): State<Arc<AtomicU64>>) -> String {
    count.load(Ordering::Relaxed).to_string()
}

fn main() -> std::io::Result<()> {
    let port: u16 = std::env::args()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(3002);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let requests = Arc::new(AtomicU64::new(0));
        let app = Router::new()
            .route("/api/v1/namespaces/{namespace}/pods", get(pods))
            .route("/api/v1/namespaces/{namespace}/pods/{name}", get(pod))
            .route("/requests", get(count))
            .with_state(requests);
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        axum::serve(listener, app).await
    })
}
