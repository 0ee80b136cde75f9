//! A Kubernetes API stand-in on 127.0.0.1 that the test controls at the TCP level: it serves one pod to GETs, lists
//! and watches over plain HTTP/1.1 like kube-apiserver, and fails the way production does (error statuses, refused
//! connections, silence on open sockets, watches that never start or go silent, reads that fail while the watch
//! cache keeps serving).
#![allow(dead_code, clippy::unwrap_used)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use http::{Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Bytes, Frame, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// How the fake API misbehaves; `None` is a healthy API server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    None,
    /// Every request answered with this status (a `Status` body, `Retry-After` when given), like an overloaded
    /// API server, one whose etcd is gone, or a load balancer in front of dead ones.
    Status {
        code: u16,
        retry_after: Option<u32>,
    },
    /// Nothing listens: connections are refused; open ones are closed.
    Refused,
    /// Connections are accepted and requests read, but nothing is ever answered and open watches go silent:
    /// a stopped process, a partitioned host that sends no RST.
    Blackhole,
    /// GETs and lists are answered, watches never start.
    WatchHangs,
    /// Watches start and then send nothing at all (no event, no bookmark, no end), while the pod may change and
    /// GETs are answered: a watch that died without a word.
    WatchSilent,
    /// GETs and lists are answered 503 (etcd cannot be read), while open and new watches keep delivering events and
    /// bookmarks from the cache: an API server whose etcd is gone.
    ReadsFail,
}

/// What a request asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `GET .../pods/web-0`
    Get,
    /// `GET .../pods?watch=true...`
    Watch,
    /// `GET .../pods?...` without `watch`
    List,
    Other,
}

impl Kind {
    pub fn of(path_and_query: &str) -> Self {
        let (path, query) = path_and_query
            .split_once('?')
            .unwrap_or((path_and_query, ""));
        match path {
            POD_PATH => Self::Get,
            PODS_PATH if query.split('&').any(|pair| pair == "watch=true") => Self::Watch,
            PODS_PATH => Self::List,
            _ => Self::Other,
        }
    }
}

const PODS_PATH: &str = "/api/v1/namespaces/shop/pods";
const POD_PATH: &str = "/api/v1/namespaces/shop/pods/web-0";

type Body = UnsyncBoxBody<Bytes, Infallible>;

struct Inner {
    fault: watch::Sender<Fault>,
    /// The pod (`None` once deleted) and the resourceVersion of its last change.
    pod: watch::Sender<(u64, Option<Value>)>,
    /// Bumped to close every open connection.
    cut: watch::Sender<u64>,
    bookmarks: broadcast::Sender<()>,
    requests: Mutex<Vec<String>>,
}

pub struct FakeApi {
    addr: SocketAddr,
    inner: Arc<Inner>,
    acceptor: Mutex<Option<JoinHandle<()>>>,
}

impl FakeApi {
    /// Serves `pod` (JSON) as pod `web-0` of namespace `shop` on a free loopback port.
    pub async fn start(pod: &str) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let inner = Arc::new(Inner {
            fault: watch::channel(Fault::None).0,
            pod: watch::channel((1, Some(serde_json::from_str(pod).unwrap()))).0,
            cut: watch::channel(0).0,
            bookmarks: broadcast::channel(16).0,
            requests: Mutex::new(Vec::new()),
        });
        let acceptor = tokio::spawn(accept(listener, Arc::clone(&inner)));
        Self {
            addr,
            inner,
            acceptor: Mutex::new(Some(acceptor)),
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Switches to `fault`. Error statuses and hanging watches start like a restarted server: open connections
    /// close. A blackhole keeps them open and silent.
    pub async fn set_fault(&self, fault: Fault) {
        let before = *self.inner.fault.borrow();
        if before == Fault::Refused && fault != Fault::Refused {
            self.listen_again().await;
        }
        self.inner.fault.send_replace(fault);
        match fault {
            Fault::Refused => {
                let acceptor = self.acceptor.lock().unwrap().take();
                if let Some(acceptor) = acceptor {
                    acceptor.abort();
                    // The listener is dropped only once the aborted task has unwound.
                    let _ = acceptor.await;
                }
                self.cut_connections();
            }
            Fault::Status { .. } | Fault::WatchHangs => self.cut_connections(),
            Fault::None | Fault::Blackhole | Fault::WatchSilent | Fault::ReadsFail => {}
        }
    }

    /// Replaces the pod; open watches see it as MODIFIED with a newer resourceVersion.
    pub fn set_pod(&self, pod: &str) {
        let pod: Value = serde_json::from_str(pod).unwrap();
        self.inner
            .pod
            .send_modify(|(version, current)| (*version, *current) = (*version + 1, Some(pod)));
    }

    /// Deletes the pod; open watches see DELETED, GETs answer 404 NotFound naming it.
    pub fn delete_pod(&self) {
        self.inner
            .pod
            .send_modify(|(version, current)| (*version, *current) = (*version + 1, None));
    }

    /// Sends a BOOKMARK on every open watch that asked for bookmarks.
    pub fn bookmark(&self) {
        let _ = self.inner.bookmarks.send(());
    }

    /// Path and query of every request so far.
    pub fn requests(&self) -> Vec<String> {
        self.inner.requests.lock().unwrap().clone()
    }

    /// How many requests of this kind so far.
    pub fn count(&self, kind: Kind) -> usize {
        self.requests()
            .iter()
            .filter(|request| Kind::of(request) == kind)
            .count()
    }

    fn cut_connections(&self) {
        self.inner.cut.send_modify(|generation| *generation += 1);
    }

    async fn listen_again(&self) {
        // The port was ours a moment ago; SO_REUSEADDR (set by tokio) lets it be bound again at once.
        let mut delay = Duration::from_millis(10);
        let listener = loop {
            match TcpListener::bind(self.addr).await {
                Ok(listener) => break listener,
                Err(error) if delay < Duration::from_secs(2) => {
                    eprintln!("rebinding {}: {error}", self.addr);
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
                Err(error) => panic!("cannot listen on {} again: {error}", self.addr),
            }
        };
        let acceptor = tokio::spawn(accept(listener, Arc::clone(&self.inner)));
        *self.acceptor.lock().unwrap() = Some(acceptor);
    }
}

async fn accept(listener: TcpListener, inner: Arc<Inner>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(connection(stream, Arc::clone(&inner)));
    }
}

async fn connection(stream: TcpStream, inner: Arc<Inner>) {
    let mut cut = inner.cut.subscribe();
    let service = service_fn(move |request| answer(request, Arc::clone(&inner)));
    let serving = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
    tokio::select! {
        _ = serving => {}
        _ = cut.changed() => {}
    }
}

async fn answer(
    request: Request<Incoming>,
    inner: Arc<Inner>,
) -> Result<Response<Body>, Infallible> {
    let target = request
        .uri()
        .path_and_query()
        .map(ToString::to_string)
        .unwrap_or_default();
    inner.requests.lock().unwrap().push(target.clone());
    let query = Query::parse(request.uri().query().unwrap_or_default());
    // A blackholed request waits like one sent to a stopped process: answered only once the fault is over.
    let mut faults = inner.fault.subscribe();
    let fault = *faults
        .wait_for(|fault| *fault != Fault::Blackhole)
        .await
        .unwrap();
    let kind = Kind::of(&target);
    Ok(match fault {
        Fault::Status { code, retry_after } => status(code, retry_after),
        Fault::WatchHangs if kind == Kind::Watch => futures::future::pending().await,
        Fault::ReadsFail if matches!(kind, Kind::Get | Kind::List) => status(503, None),
        _ => match kind {
            Kind::Get => get(&inner),
            Kind::Watch => watch_stream(&inner, &query),
            Kind::List => list(&inner),
            Kind::Other => status(404, None),
        },
    })
}

struct Query {
    resource_version: u64,
    timeout: Duration,
    bookmarks: bool,
}

impl Query {
    fn parse(query: &str) -> Self {
        let pairs: Vec<(&str, &str)> = query.split('&').filter_map(|p| p.split_once('=')).collect();
        let get = |key: &str| pairs.iter().find(|(k, _)| *k == key).map(|(_, v)| *v);
        Self {
            resource_version: get("resourceVersion")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
            timeout: Duration::from_secs(
                get("timeoutSeconds")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(290),
            ),
            bookmarks: get("allowWatchBookmarks") == Some("true"),
        }
    }
}

fn json_response(code: u16, body: String) -> Response<Body> {
    Response::builder()
        .status(StatusCode::from_u16(code).unwrap())
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)).boxed_unsync())
        .unwrap()
}

fn status(code: u16, retry_after: Option<u32>) -> Response<Body> {
    let reason = match code {
        429 => "TooManyRequests",
        503 => "ServiceUnavailable",
        404 => "NotFound",
        _ => "InternalError",
    };
    let mut body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": format!("fake API server answers {code}"), "reason": reason, "code": code,
    });
    if let Some(seconds) = retry_after {
        body["details"] = json!({ "retryAfterSeconds": seconds });
    }
    let mut response = json_response(code, body.to_string());
    if let Some(seconds) = retry_after {
        response
            .headers_mut()
            .insert("retry-after", seconds.to_string().parse().unwrap());
    }
    response
}

fn versioned(version: u64, pod: &Value) -> Value {
    let mut pod = pod.clone();
    pod["metadata"]["resourceVersion"] = json!(version.to_string());
    pod
}

fn list(inner: &Inner) -> Response<Body> {
    let (version, pod) = inner.pod.borrow().clone();
    let body = json!({
        "apiVersion": "v1", "kind": "PodList",
        "metadata": { "resourceVersion": version.to_string() },
        "items": pod.iter().map(|pod| versioned(version, pod)).collect::<Vec<_>>(),
    });
    json_response(200, body.to_string())
}

/// The pod as etcd has it, or kube-apiserver's 404 for a pod that does not exist.
fn get(inner: &Inner) -> Response<Body> {
    let (version, pod) = inner.pod.borrow().clone();
    match pod {
        Some(pod) => json_response(200, versioned(version, &pod).to_string()),
        None => {
            let body = json!({
                "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                "message": "pods \"web-0\" not found", "reason": "NotFound",
                "details": { "name": "web-0", "kind": "pods" }, "code": 404,
            });
            json_response(404, body.to_string())
        }
    }
}

/// State of one open watch: what it has sent, what it waits for.
struct OpenWatch {
    pod: watch::Receiver<(u64, Option<Value>)>,
    fault: watch::Receiver<Fault>,
    bookmarks: broadcast::Receiver<()>,
    sent: u64,
    deadline: Instant,
    wants_bookmarks: bool,
}

fn watch_stream(inner: &Inner, query: &Query) -> Response<Body> {
    let pod = inner.pod.subscribe();
    // `resourceVersion=0`: the current pod first, as a synthetic event; nothing when there is none.
    let sent = match (query.resource_version, &*pod.borrow()) {
        (0, (version, None)) => *version,
        (0, (_, Some(_))) => 0,
        (after, _) => after,
    };
    let open = OpenWatch {
        pod,
        fault: inner.fault.subscribe(),
        bookmarks: inner.bookmarks.subscribe(),
        sent,
        deadline: Instant::now() + query.timeout,
        wants_bookmarks: query.bookmarks,
    };
    let events = futures::stream::unfold(open, |mut open| async move {
        let line = open.next_line().await?;
        Some((Ok::<_, Infallible>(Frame::data(Bytes::from(line))), open))
    });
    Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .body(StreamBody::new(events.boxed()).boxed_unsync())
        .unwrap()
}

impl OpenWatch {
    /// The next event line, or `None` when the server-side timeout ends the watch. Silent while blackholed.
    async fn next_line(&mut self) -> Option<String> {
        loop {
            let fault = *self.fault.borrow();
            // An API server whose etcd is gone still serves its watch cache.
            let healthy = matches!(fault, Fault::None | Fault::ReadsFail);
            let (version, pod) = self.pod.borrow().clone();
            if healthy && version > self.sent {
                let previous = self.sent;
                self.sent = version;
                let event = match pod {
                    Some(pod) if previous == 0 => {
                        json!({ "type": "ADDED", "object": versioned(version, &pod) })
                    }
                    Some(pod) => json!({ "type": "MODIFIED", "object": versioned(version, &pod) }),
                    None => json!({ "type": "DELETED", "object": {
                        "kind": "Pod", "apiVersion": "v1",
                        "metadata": { "name": "web-0", "namespace": "shop", "resourceVersion": version.to_string() },
                    }}),
                };
                return Some(format!("{event}\n"));
            }
            tokio::select! {
                _ = self.pod.changed() => {}
                _ = self.fault.changed() => {}
                Ok(()) = self.bookmarks.recv() => {
                    if healthy && self.wants_bookmarks {
                        let event = json!({ "type": "BOOKMARK", "object": {
                            "kind": "Pod", "apiVersion": "v1",
                            "metadata": { "resourceVersion": self.sent.to_string() },
                        }});
                        return Some(format!("{event}\n"));
                    }
                }
                () = tokio::time::sleep_until(self.deadline), if healthy => return None,
            }
        }
    }
}
