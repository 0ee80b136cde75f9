//! The HTTP server of every healthbridge listener: a bounded connection table, header/idle/request timeouts,
//! body limits, HTTP/2 keepalive and a graceful drain, after an optional handshake (TLS).
//!
//! Connections are cheap to refuse and cheap to hold: when the table is full, a new connection evicts the oldest
//! one that has no request in flight (a client that never finished its request, or an idle keep-alive), so floods
//! of half-open or slowloris connections can neither grow memory past the bound nor lock out a load balancer's check.
//! Only when every slot is busy with a request is the new connection closed at once.
//!
//! Serving a request arms no timer: each connection's deadlines (header read, idle) are kept in its table entry
//! and one sweep per listener closes the late ones.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use bytes::Bytes;
use futures::future::{BoxFuture, Either, Ready, ready};
use futures::task::AtomicWaker;
use http::{Request, Response, StatusCode, header};
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

/// Bounds of one listener. Every field has a safe default in [`Limits::new`].
#[derive(Debug, Clone)]
pub struct Limits {
    /// Connections held at once; beyond, the oldest without a request in flight is closed, else the new one is.
    pub max_connections: usize,
    /// Time from accept (after the handshake) to the first complete request head; on HTTP/1 also from each
    /// answer to the next complete head, which bounds an idle HTTP/1 keep-alive as well.
    pub header_read_timeout: Duration,
    /// Time a connection may stay open without a request in flight (keep-alive): HTTP/2, and HTTP/1 when it is
    /// shorter than `header_read_timeout`.
    pub idle_timeout: Duration,
    /// Time one request may take, reading its body included; then `503`.
    pub request_timeout: Duration,
    /// Time a handshake (TLS) may take.
    pub handshake_timeout: Duration,
    /// Largest request body read; a bigger one is cut off with an error the handler turns into `413`.
    pub max_body_bytes: usize,
    /// Largest request head (HTTP/1 buffer, HTTP/2 header list).
    pub max_header_bytes: usize,
    /// HTTP/2 requests in flight on one connection.
    pub h2_max_concurrent_streams: u32,
    /// HTTP/2 PING interval; a peer that does not answer within `h2_keepalive_timeout` is dropped.
    pub h2_keepalive_interval: Duration,
    pub h2_keepalive_timeout: Duration,
    /// After shutdown, how long in-flight requests may take before the listener gives up on them.
    pub drain_timeout: Duration,
}

impl Limits {
    /// Defaults for a listener of at most `max_connections` connections.
    pub fn new(max_connections: usize) -> Self {
        Self {
            max_connections,
            header_read_timeout: Duration::from_secs(5),
            idle_timeout: Duration::from_secs(60),
            request_timeout: Duration::from_secs(30),
            handshake_timeout: Duration::from_secs(10),
            max_body_bytes: 64 * 1024,
            max_header_bytes: 16 * 1024,
            h2_max_concurrent_streams: 32,
            h2_keepalive_interval: Duration::from_secs(30),
            h2_keepalive_timeout: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(5),
        }
    }
}

/// Connections the kernel queues for accept. A flood fills a short queue in microseconds and then drops SYNs,
/// the load balancer's among them (its connect then waits for the 1 s, 3 s SYN retransmits); 4096 is the
/// usual `net.core.somaxconn` ceiling.
pub const LISTEN_BACKLOG: u32 = 4096;

/// Binds `addr` with [`LISTEN_BACKLOG`] (and `SO_REUSEADDR`, as `TcpListener::bind` does).
pub fn listen(addr: std::net::SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv6() {
        tokio::net::TcpSocket::new_v6()?
    } else {
        tokio::net::TcpSocket::new_v4()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Turns an accepted TCP connection into the stream HTTP is spoken on (plain, or TLS).
pub trait Handshake: Send + Sync + 'static {
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    fn handshake(&self, tcp: TcpStream) -> BoxFuture<'static, io::Result<Self::Io>>;
}

/// Plain HTTP: the TCP stream as it is.
#[derive(Debug, Clone, Copy, Default)]
pub struct PlainHttp;

impl Handshake for PlainHttp {
    type Io = TcpStream;
    fn handshake(&self, tcp: TcpStream) -> BoxFuture<'static, io::Result<TcpStream>> {
        Box::pin(std::future::ready(Ok(tcp)))
    }
}

/// A request answered from memory, before the router: `None` sends the request on to the router.
pub type AnswerAtOnce =
    Arc<dyn Fn(&http::request::Parts) -> Option<Response<AtOnceBody>> + Send + Sync>;

/// The body of an answer given at once: whole, in memory, and not boxed as a router's answer is.
pub type AtOnceBody = http_body_util::Full<Bytes>;

/// What a connection sends: an answer given at once, or the router's (which keeps the request body until sent).
type Served = http_body_util::Either<AtOnceBody, AnswerBody>;

/// What a listener serves: a router, and optionally a synchronous answer for the hottest route.
///
/// A load balancer's check is answered from memory; taking it before the router spares it the router's boxed
/// service, the request-timeout and body bookkeeping, which cost a tenth of the agent's throughput.
#[derive(Clone)]
pub struct App {
    router: Router,
    at_once: Option<AnswerAtOnce>,
}

impl App {
    /// Requests without a body that `answer` takes (`Some`) are answered at once; every other goes to the router.
    pub fn answering_at_once(router: Router, answer: AnswerAtOnce) -> Self {
        Self {
            router,
            at_once: Some(answer),
        }
    }
}

impl From<Router> for App {
    fn from(router: Router) -> Self {
        Self {
            router,
            at_once: None,
        }
    }
}

/// Serves `app` on every listener until `shutdown`, then stops accepting, closes idle connections, lets in-flight
/// requests finish for up to `limits.drain_timeout`, and returns.
pub async fn serve<H: Handshake>(
    listeners: Vec<TcpListener>,
    handshake: H,
    app: impl Into<App>,
    limits: Limits,
    shutdown: CancellationToken,
) {
    let app = app.into();
    let limits = Arc::new(effective(limits));
    let server = Arc::new(Server {
        table: Table::new(limits.max_connections),
        handshake,
        builder: builder(&limits),
        app,
        limits: Arc::clone(&limits),
        shutdown: shutdown.clone(),
        connections: TaskTracker::new(),
    });
    for listener in &listeners {
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(%addr, max_connections = limits.max_connections, "listening");
        }
    }
    let loops = listeners
        .into_iter()
        .map(|listener| accept_loop(listener, Arc::clone(&server)));
    let serving = async {
        futures::future::join_all(loops).await;
        // No more accepts: every connection still open finishes what it is doing and closes.
        server.table.drain_all();
        server.connections.close();
        if tokio::time::timeout(limits.drain_timeout, server.connections.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                drain_timeout = ?limits.drain_timeout,
                "in-flight requests did not finish in time; closing them"
            );
        }
    };
    // Deadlines apply while draining too: the sweep stops only when serving has ended.
    tokio::select! {
        () = serving => {}
        never = close_late_connections(&server.table, &limits) => match never {},
    }
}

/// Closes every connection past its deadline (header read, head, idle), with one timer for the whole listener:
/// a timer per connection would be polled on each of its wake-ups, that is on every request.
async fn close_late_connections(table: &Table, limits: &Limits) -> Infallible {
    loop {
        let next = table.close_late(Instant::now(), limits);
        tokio::time::sleep_until(next).await;
    }
}

/// The limits with the connection bound lowered to what the open-file limit allows.
fn effective(mut limits: Limits) -> Limits {
    // Headroom for the API client, exec pipes, the other listener and log files.
    const RESERVED_FDS: u64 = 64;
    let fds = crate::fdlimit::raise_nofile();
    let allowed = usize::try_from(fds.saturating_sub(RESERVED_FDS)).unwrap_or(usize::MAX);
    if limits.max_connections > allowed {
        tracing::warn!(
            configured = limits.max_connections,
            open_file_limit = fds,
            "the open-file limit allows fewer connections than configured; holding at most {allowed}"
        );
        limits.max_connections = allowed.max(1);
    }
    limits.max_connections = limits.max_connections.max(1);
    limits
}

/// The connection builder every connection starts from; each sets its own HTTP/1 timer ([`HeadClock`]).
fn builder(limits: &Limits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(limits.h2_keepalive_interval)
        .keep_alive_timeout(limits.h2_keepalive_timeout)
        .max_concurrent_streams(limits.h2_max_concurrent_streams)
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX));
    builder
}

struct Server<H> {
    table: Table,
    handshake: H,
    builder: auto::Builder<TokioExecutor>,
    app: App,
    limits: Arc<Limits>,
    shutdown: CancellationToken,
    connections: TaskTracker,
}

async fn accept_loop<H: Handshake>(listener: TcpListener, server: Arc<Server<H>>) {
    loop {
        let accepted = tokio::select! {
            () = server.shutdown.cancelled() => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((tcp, _peer)) => {
                match server.table.admit() {
                    Some(slot) => {
                        let server = Arc::clone(&server);
                        server
                            .connections
                            .clone()
                            .spawn(connection(tcp, slot, server));
                    }
                    // Every slot has a request in flight: closing at once costs nothing and tells the client.
                    None => drop(tcp),
                }
                // Let the new connection read its request before more accepts can make it the oldest idle
                // one: under a flood, a load balancer's check must be seen as busy before it can be evicted.
                tokio::task::yield_now().await;
            }
            Err(error) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn connection<H: Handshake>(tcp: TcpStream, slot: Slot, server: Arc<Server<H>>) {
    let _ = tcp.set_nodelay(true);
    let conn = Arc::clone(&slot.conn);
    let limits = &server.limits;
    let io = tokio::select! {
        io = tokio::time::timeout(limits.handshake_timeout, server.handshake.handshake(tcp)) => match io {
            Ok(Ok(io)) => io,
            Ok(Err(error)) => {
                tracing::debug!(%error, "handshake failed");
                return;
            }
            Err(_) => return,
        },
        // Evicted, or the server is shutting down: nothing was asked yet, nothing is lost.
        _ = conn.stop.above(Stop::Open) => return,
    };
    conn.became_idle();
    let service = Guarded {
        app: server.app.clone(),
        conn: Arc::clone(&conn),
        limits: Arc::clone(limits),
    };
    let mut builder = server.builder.clone();
    builder.http1().timer(HeadClock(Arc::clone(&conn)));
    let http = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(http);
    let mut seen = Stop::Open;
    loop {
        tokio::select! {
            result = http.as_mut() => {
                if let Err(error) = result {
                    tracing::debug!(%error, "connection ended with an error");
                }
                return;
            }
            stop = conn.stop.above(seen) => match stop {
                // Evicted or late: nothing is in flight, closing loses nothing.
                Stop::Close => return,
                _ => {
                    seen = stop;
                    http.as_mut().graceful_shutdown();
                }
            },
        }
    }
}

/// The connection table: who is open, since when, and whether a request is in flight.
struct Table {
    max: usize,
    inner: Arc<Mutex<Entries>>,
}

#[derive(Default)]
struct Entries {
    by_age: BTreeMap<u64, Arc<Conn>>,
    next_id: u64,
    /// Entries not yet told to close.
    live: usize,
}

impl Table {
    fn new(max: usize) -> Self {
        Self {
            max,
            inner: Arc::default(),
        }
    }

    /// A slot for a new connection, evicting the oldest idle one when full; `None` when every slot is busy.
    fn admit(&self) -> Option<Slot> {
        let mut entries = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        if entries.live >= self.max {
            let victim = entries
                .by_age
                .values()
                .find(|c| {
                    !c.evicted.load(Ordering::Acquire) && c.in_flight.load(Ordering::Acquire) == 0
                })?
                .clone();
            victim.evicted.store(true, Ordering::Release);
            victim.stop.raise(Stop::Close);
            entries.live -= 1;
        }
        // Evicted connections leave within a poll; this keeps the table bounded even if they lag.
        if entries.by_age.len() >= self.max.saturating_mul(2) {
            return None;
        }
        let id = entries.next_id;
        entries.next_id += 1;
        entries.live += 1;
        let conn = Arc::new(Conn::default());
        entries.by_age.insert(id, Arc::clone(&conn));
        Some(Slot {
            table: Arc::clone(&self.inner),
            id,
            conn,
        })
    }

    /// Tells every connection past its deadline to close; answers when to look again: at the earliest deadline,
    /// and no later than one header-read timeout from `now`, since a wait for a request head may start any moment
    /// and its deadline is that far away.
    fn close_late(&self, now: Instant, limits: &Limits) -> Instant {
        let entries = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let mut next = later(now, limits.header_read_timeout);
        for conn in entries.by_age.values() {
            match conn.deadline(limits) {
                Some(at) if at <= now => conn.stop.raise(Stop::Close),
                Some(at) => next = next.min(at),
                None => {}
            }
        }
        next
    }

    /// Tells every open connection to finish its request in flight, if any, and close.
    fn drain_all(&self) {
        let entries = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        for conn in entries.by_age.values() {
            conn.stop.raise(Stop::Drain);
        }
    }
}

/// A connection's entry in the table, removed when the connection's task ends.
struct Slot {
    table: Arc<Mutex<Entries>>,
    id: u64,
    conn: Arc<Conn>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut entries = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        entries.by_age.remove(&self.id);
        if !self.conn.evicted.load(Ordering::Acquire) {
            entries.live -= 1;
        }
    }
}

struct Conn {
    in_flight: AtomicUsize,
    /// Whether a request has been seen: before, the header-read timeout applies; after, the idle timeout.
    served: AtomicBool,
    /// When the last request finished (or the handshake did), in ms since `EPOCH`; `NO_DEADLINE` during the
    /// handshake, which has a timeout of its own.
    idle_since_ms: AtomicU64,
    /// While hyper waits for an HTTP/1 request head: when it must be complete, in ms since `EPOCH`; else `NO_DEADLINE`.
    head_deadline_ms: AtomicU64,
    evicted: AtomicBool,
    stop: StopSignal,
}

impl Default for Conn {
    fn default() -> Self {
        Self {
            in_flight: AtomicUsize::new(0),
            served: AtomicBool::new(false),
            idle_since_ms: AtomicU64::new(NO_DEADLINE),
            head_deadline_ms: AtomicU64::new(NO_DEADLINE),
            evicted: AtomicBool::new(false),
            stop: StopSignal::default(),
        }
    }
}

const NO_DEADLINE: u64 = u64::MAX;

/// The clock of the connection timestamps: ms since the first use, so they fit in an `AtomicU64`.
fn epoch() -> Instant {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn now_ms() -> u64 {
    ms_since_epoch(Instant::now())
}

fn ms_since_epoch(at: Instant) -> u64 {
    u64::try_from(at.saturating_duration_since(epoch()).as_millis()).unwrap_or(u64::MAX)
}

fn instant_at(ms: u64) -> Instant {
    later(epoch(), Duration::from_millis(ms))
}

/// `at + by`, or a year after `at` when a configured timeout is too large to add (`Instant + Duration` panics).
fn later(at: Instant, by: Duration) -> Instant {
    at.checked_add(by)
        .unwrap_or_else(|| at + Duration::from_secs(365 * 24 * 3600))
}

impl Conn {
    fn became_idle(&self) {
        self.idle_since_ms.store(now_ms(), Ordering::Release);
    }

    /// When this connection should be closed if nothing changes; `None` while a request is in flight and during
    /// the handshake.
    fn deadline(&self, limits: &Limits) -> Option<Instant> {
        let idle_since = self.idle_since_ms.load(Ordering::Acquire);
        if idle_since == NO_DEADLINE || self.in_flight.load(Ordering::Acquire) > 0 {
            return None;
        }
        let timeout = if self.served.load(Ordering::Acquire) {
            limits.idle_timeout
        } else {
            limits.header_read_timeout
        };
        let idle = later(instant_at(idle_since), timeout);
        match self.head_deadline_ms.load(Ordering::Acquire) {
            NO_DEADLINE => Some(idle),
            head => Some(idle.min(instant_at(head))),
        }
    }
}

/// Why a connection must stop, in rising order: a drain lets the request in flight finish; a close (evicted, or
/// past its deadline) is for a connection with nothing in flight, and is at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
enum Stop {
    Open = 0,
    Drain = 1,
    Close = 2,
}

/// Tells one connection to stop. It is polled on every wake-up of the connection (every request), so it is an
/// atomic and an `AtomicWaker`; a `Notify` or a `CancellationToken` takes a lock on every poll.
#[derive(Default)]
struct StopSignal {
    level: AtomicU8,
    waker: AtomicWaker,
}

impl StopSignal {
    fn raise(&self, stop: Stop) {
        self.level.fetch_max(stop as u8, Ordering::AcqRel);
        self.waker.wake();
    }

    fn current(&self) -> Stop {
        match self.level.load(Ordering::Acquire) {
            0 => Stop::Open,
            1 => Stop::Drain,
            _ => Stop::Close,
        }
    }

    /// Resolves once the signal is above `seen`, with its level.
    fn above(&self, seen: Stop) -> impl Future<Output = Stop> + '_ {
        std::future::poll_fn(move |cx| {
            if self.current() > seen {
                return Poll::Ready(self.current());
            }
            self.waker.register(cx.waker());
            // Raised between the check and the registration: its wake went to the previous waker.
            match self.current() {
                stop if stop > seen => Poll::Ready(stop),
                _ => Poll::Pending,
            }
        })
    }
}

/// hyper's HTTP/1 header-read timer for one connection, without a timer per request: hyper asks for a sleep each
/// time it starts waiting for a request head; this records the deadline in the connection and returns a sleep that
/// never wakes by itself. The listener's sweep (`close_late_connections`) closes the connection when a head is late.
/// A tokio sleep here cost an allocation and two timer-wheel locks per request: about 730 of the agent's 12,600
/// instructions per `/health` (callgrind, `bench/agent-profile`).
struct HeadClock(Arc<Conn>);

impl hyper::rt::Timer for HeadClock {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        self.sleep_until(later(Instant::now(), duration).into_std())
    }

    fn sleep_until(&self, deadline: std::time::Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        // Rounded up: the connection is closed at the deadline or within a millisecond after, never before.
        let ms = ms_since_epoch(Instant::from_std(deadline)).saturating_add(1);
        self.0.head_deadline_ms.store(ms, Ordering::Release);
        // Zero-sized: boxing it allocates nothing.
        Box::pin(LeftToTheSweep)
    }

    fn now(&self) -> std::time::Instant {
        // The clock of the sweep's deadlines: tokio's, which a test may pause.
        Instant::now().into_std()
    }
}

/// The sleep `HeadClock` gives hyper: never ready by itself; the sweep closes the connection at the deadline.
struct LeftToTheSweep;

impl Future for LeftToTheSweep {
    type Output = ();
    fn poll(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<()> {
        Poll::Pending
    }
}

impl hyper::rt::Sleep for LeftToTheSweep {}

/// Marks a request in flight on its connection for as long as it lives.
struct Busy(Arc<Conn>);

impl Busy {
    fn new(conn: Arc<Conn>) -> Self {
        conn.served.store(true, Ordering::Release);
        conn.in_flight.fetch_add(1, Ordering::AcqRel);
        // The head arrived in time: hyper is no longer waiting for one.
        conn.head_deadline_ms.store(NO_DEADLINE, Ordering::Release);
        Self(conn)
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.became_idle();
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The app behind the limits: request timeout, body limit, in-flight accounting. A hyper service (called by
/// reference) rather than a tower one, which hyper-util would clone and drive through `Oneshot` per request.
struct Guarded {
    app: App,
    conn: Arc<Conn>,
    limits: Arc<Limits>,
}

impl hyper::service::Service<Request<Incoming>> for Guarded {
    type Response = Response<Served>;
    type Error = Infallible;
    type Future = Either<
        Ready<Result<Response<Served>, Infallible>>,
        BoxFuture<'static, Result<Response<Served>, Infallible>>,
    >;

    fn call(&self, request: Request<Incoming>) -> Self::Future {
        let busy = Busy::new(Arc::clone(&self.conn));
        if let Some(at_once) = &self.app.at_once {
            let (parts, body) = request.into_parts();
            // With a body to read (and limit), the request takes the router's way.
            if body.is_end_stream()
                && let Some(response) = at_once(&parts)
            {
                drop(busy);
                return Either::Left(ready(Ok(response.map(Served::Left))));
            }
            return Either::Right(self.routed(Request::from_parts(parts, body), busy));
        }
        Either::Right(self.routed(request, busy))
    }
}

impl Guarded {
    fn routed(
        &self,
        request: Request<Incoming>,
        busy: Busy,
    ) -> BoxFuture<'static, Result<Response<Served>, Infallible>> {
        let app = self.app.router.clone();
        let limits = Arc::clone(&self.limits);
        Box::pin(async move {
            let _busy = busy;
            let (parts, body) = request.into_parts();
            let body = KeptBody::new(body, limits.max_body_bytes);
            let request = Request::from_parts(parts, Body::new(body.reader()));
            let response =
                match tokio::time::timeout(limits.request_timeout, app.oneshot(request)).await {
                    Ok(Ok(response)) => response,
                    Ok(Err(never)) => match never {},
                    Err(_) => timed_out(limits.request_timeout),
                };
            Ok(response.map(|inner| {
                Served::Right(AnswerBody {
                    inner,
                    request: Some(body),
                })
            }))
        })
    }
}

fn timed_out(after: Duration) -> Response<Body> {
    let mut response = Response::new(Body::from(format!(
        "the request took longer than {after:?} and was abandoned\n"
    )));
    *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// The request body, limited, shared between the handler and the answer: the handler may drop its reader early
/// (a `413`), but the body itself lives until the answer is sent, then the rest of it is drained (bounded), so an
/// HTTP/2 client still uploading gets its answer on a cleanly closed stream instead of a reset.
#[derive(Clone)]
struct KeptBody(Arc<Mutex<Upload>>);

struct Upload {
    body: Incoming,
    /// Bytes the handler may still read.
    remaining: usize,
    limit: usize,
}

/// The request body went past [`Limits::max_body_bytes`].
#[derive(Debug, thiserror::Error)]
#[error("the request body is larger than {limit} bytes")]
pub struct BodyTooLarge {
    pub limit: usize,
}

/// Bytes of an oversized upload still read (and thrown away) after the answer so the client can finish sending.
const DRAIN_BYTES: usize = 32 * 1024 * 1024;
const DRAIN_TIME: Duration = Duration::from_secs(5);

impl KeptBody {
    fn new(body: Incoming, limit: usize) -> Self {
        Self(Arc::new(Mutex::new(Upload {
            body,
            remaining: limit,
            limit,
        })))
    }

    fn reader(&self) -> KeptBody {
        self.clone()
    }

    /// Reads what the client still sends, up to `DRAIN_BYTES` or `DRAIN_TIME`, unless the body is complete.
    fn drain_in_background(self) {
        let Some(mutex) = Arc::into_inner(self.0) else {
            return;
        };
        let mut body = mutex
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner)
            .body;
        if body.is_end_stream() {
            return;
        }
        tokio::spawn(async move {
            let drain = async {
                let mut read = 0;
                while read <= DRAIN_BYTES {
                    match body.frame().await {
                        Some(Ok(frame)) => read += frame.data_ref().map_or(0, Bytes::len),
                        _ => return,
                    }
                }
            };
            let _ = tokio::time::timeout(DRAIN_TIME, drain).await;
        });
    }
}

impl HttpBody for KeptBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let mut upload = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        match Pin::new(&mut upload.body).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                let len = frame.data_ref().map_or(0, Bytes::len);
                if len > upload.remaining {
                    upload.remaining = 0;
                    return Poll::Ready(Some(Err(Box::new(BodyTooLarge {
                        limit: upload.limit,
                    }))));
                }
                upload.remaining -= len;
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(error))) => Poll::Ready(Some(Err(Box::new(error)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .body
            .is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .body
            .size_hint()
    }
}

/// The handler's answer, keeping the request body alive until the answer is sent.
struct AnswerBody {
    inner: Body,
    request: Option<KeptBody>,
}

impl Drop for AnswerBody {
    fn drop(&mut self) {
        if let Some(request) = self.request.take() {
            request.drain_in_background();
        }
    }
}

impl HttpBody for AnswerBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_table_evicts_the_oldest_idle_connection_and_refuses_only_when_all_are_busy() {
        let table = Table::new(2);
        let first = table.admit().unwrap();
        let second = table.admit().unwrap();
        let _busy = Busy::new(Arc::clone(&second.conn));

        let third = table.admit().unwrap();
        assert!(
            first.conn.evicted.load(Ordering::Acquire),
            "the idle oldest goes"
        );
        assert!(!second.conn.evicted.load(Ordering::Acquire));

        let _busy_third = Busy::new(Arc::clone(&third.conn));
        assert!(
            table.admit().is_none(),
            "every slot has a request in flight"
        );
        drop(first);
        assert!(
            table.admit().is_none(),
            "an evicted slot was already given away"
        );
    }

    #[test]
    fn a_head_deadline_applies_only_while_hyper_waits_for_a_head() {
        use hyper::rt::Timer;
        let limits = Limits::new(1);
        let conn = Arc::new(Conn::default());
        conn.became_idle();
        let clock = HeadClock(Arc::clone(&conn));
        let head_due = Instant::from_std(clock.now()) + Duration::from_millis(100);
        let _sleep = clock.sleep_until(head_due.into_std());
        let deadline = conn.deadline(&limits).unwrap();
        assert!(deadline >= head_due && deadline <= head_due + Duration::from_millis(2));

        drop(Busy::new(Arc::clone(&conn)));
        let deadline = conn.deadline(&limits).unwrap();
        assert!(
            deadline >= head_due + limits.idle_timeout - Duration::from_secs(1),
            "answered: the idle timeout applies, not the head's deadline"
        );
    }

    #[test]
    fn a_stop_raised_before_anyone_waits_is_seen_and_a_close_outranks_a_drain() {
        use futures::FutureExt;
        let stop = StopSignal::default();
        assert_eq!(stop.above(Stop::Open).now_or_never(), None);
        stop.raise(Stop::Drain);
        assert_eq!(stop.above(Stop::Open).now_or_never(), Some(Stop::Drain));
        assert_eq!(stop.above(Stop::Drain).now_or_never(), None);
        stop.raise(Stop::Close);
        stop.raise(Stop::Drain);
        assert_eq!(stop.above(Stop::Drain).now_or_never(), Some(Stop::Close));
    }

    #[test]
    fn the_sweep_closes_only_connections_past_their_deadline_and_looks_again_within_a_header_timeout()
     {
        let limits = Limits::new(4);
        let table = Table::new(4);
        let handshaking = table.admit().unwrap();
        let idle = table.admit().unwrap();
        idle.conn.became_idle();
        let busy = table.admit().unwrap();
        busy.conn.became_idle();
        let _busy = Busy::new(Arc::clone(&busy.conn));

        let now = Instant::now();
        let next = table.close_late(now, &limits);
        assert!(next <= now + limits.header_read_timeout);
        assert!(next >= now + limits.header_read_timeout - Duration::from_secs(1));
        for slot in [&handshaking, &idle, &busy] {
            assert_eq!(slot.conn.stop.current(), Stop::Open);
        }

        table.close_late(now + limits.header_read_timeout * 2, &limits);
        assert_eq!(
            idle.conn.stop.current(),
            Stop::Close,
            "past its header-read deadline"
        );
        assert_eq!(busy.conn.stop.current(), Stop::Open, "a request in flight");
        assert_eq!(
            handshaking.conn.stop.current(),
            Stop::Open,
            "the handshake has its own timeout"
        );
    }

    #[test]
    fn a_closed_connection_frees_its_slot() {
        let table = Table::new(1);
        let only = table.admit().unwrap();
        let _busy = Busy::new(Arc::clone(&only.conn));
        assert!(table.admit().is_none());
        drop(_busy);
        drop(only);
        assert!(table.admit().is_some());
    }
}
