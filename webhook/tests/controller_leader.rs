//! Leader election on a Lease against a fake API server that enforces resourceVersion like the real one.
#![allow(clippy::unwrap_used)]

mod controller_support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use controller_support::{Recorded, fake_api, status};
use healthbridge_webhook::controller::leader::{Decision, LeaseLock, Timing, decide};
use http::{Method, StatusCode};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};

fn lease(holder: Option<&str>, renewed: Timestamp, transitions: i32) -> Value {
    json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "healthbridge-controller", "namespace": "healthbridge", "resourceVersion": "1"},
        "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15,
                 "renewTime": renewed.to_string(), "acquireTime": renewed.to_string(), "leaseTransitions": transitions}
    })
}

/// One stored Lease; writes with a stale resourceVersion get 409, like the API server.
#[derive(Clone, Default)]
struct LeaseServer {
    stored: Arc<Mutex<Option<Value>>>,
    failing: Arc<AtomicBool>,
}

impl LeaseServer {
    fn holding(value: Value) -> Self {
        let server = Self::default();
        *server.stored.lock().unwrap() = Some(value);
        server
    }

    fn holder(&self) -> Option<String> {
        self.stored.lock().unwrap().as_ref()?["spec"]["holderIdentity"]
            .as_str()
            .map(str::to_owned)
    }

    fn respond(&self, request: &Recorded) -> (StatusCode, Value) {
        if self.failing.load(Ordering::SeqCst) {
            return status(500, "InternalError", "etcdserver: request timed out");
        }
        let mut stored = self.stored.lock().unwrap();
        match (request.method.clone(), stored.as_mut()) {
            (Method::GET, Some(lease)) => (StatusCode::OK, lease.clone()),
            (Method::GET, None) => status(
                404,
                "NotFound",
                "leases.coordination.k8s.io \"healthbridge-controller\" not found",
            ),
            (Method::POST, None) => {
                let mut created = request.body.clone();
                created["metadata"]["resourceVersion"] = json!("1");
                *stored = Some(created.clone());
                (StatusCode::CREATED, created)
            }
            (Method::POST, Some(_)) => status(409, "AlreadyExists", "already exists"),
            (Method::PUT, Some(lease)) => {
                if request.body["metadata"]["resourceVersion"]
                    != lease["metadata"]["resourceVersion"]
                {
                    return status(409, "Conflict", "the object has been modified");
                }
                let next = lease["metadata"]["resourceVersion"]
                    .as_str()
                    .unwrap()
                    .parse::<u64>()
                    .unwrap()
                    + 1;
                let mut replaced = request.body.clone();
                replaced["metadata"]["resourceVersion"] = json!(next.to_string());
                *lease = replaced.clone();
                (StatusCode::OK, replaced)
            }
            _ => status(404, "NotFound", "not found"),
        }
    }
}

fn lock_for(server: &LeaseServer, identity: &str) -> (LeaseLock, Arc<Mutex<Vec<Recorded>>>) {
    let responder = server.clone();
    let (client, log) = fake_api(move |request| responder.respond(request));
    (
        LeaseLock::new(
            client,
            "healthbridge",
            "healthbridge-controller",
            identity,
            Timing::default(),
        ),
        log,
    )
}

fn writes(log: &Arc<Mutex<Vec<Recorded>>>) -> usize {
    log.lock()
        .unwrap()
        .iter()
        .filter(|request| request.is_write())
        .count()
}

fn parsed(value: Value) -> Lease {
    serde_json::from_value(value).unwrap()
}

#[test]
fn no_lease_is_created() {
    assert_eq!(decide(None, "a", Timestamp::now()), Decision::Create);
}

#[test]
fn our_own_lease_is_renewed_without_a_transition() {
    let now = Timestamp::now();
    assert_eq!(
        decide(Some(&parsed(lease(Some("a"), now, 3))), "a", now),
        Decision::Take { transition: false }
    );
}

#[test]
fn a_fresh_lease_of_another_replica_is_waited_for() {
    let now = Timestamp::now();
    let renewed = now - SignedDuration::from_secs(14);
    assert_eq!(
        decide(Some(&parsed(lease(Some("b"), renewed, 3))), "a", now),
        Decision::Wait
    );
}

#[test]
fn an_expired_or_released_lease_is_taken_over() {
    let now = Timestamp::now();
    let expired = now - SignedDuration::from_secs(16);
    assert_eq!(
        decide(Some(&parsed(lease(Some("b"), expired, 3))), "a", now),
        Decision::Take { transition: true }
    );
    assert_eq!(
        decide(Some(&parsed(lease(None, now, 3))), "a", now),
        Decision::Take { transition: true }
    );
}

#[test]
fn unsafe_timings_are_refused() {
    assert!(Timing::default().validate().is_ok());
    let overlapping = Timing {
        renew_deadline: Duration::from_secs(15),
        ..Timing::default()
    };
    assert!(
        overlapping
            .validate()
            .unwrap_err()
            .to_string()
            .contains("retry period < renew deadline < lease duration")
    );
}

#[tokio::test]
async fn the_first_replica_creates_the_lease_holding_it() {
    let server = LeaseServer::default();
    let (lock, _) = lock_for(&server, "replica-a");

    assert!(lock.try_acquire_or_renew(Timestamp::now()).await.unwrap());
    assert_eq!(server.holder().as_deref(), Some("replica-a"));
}

#[tokio::test]
async fn a_second_replica_waits_without_writing() {
    let server = LeaseServer::holding(lease(Some("replica-a"), Timestamp::now(), 0));
    let (lock, log) = lock_for(&server, "replica-b");

    assert!(!lock.try_acquire_or_renew(Timestamp::now()).await.unwrap());
    assert_eq!(writes(&log), 0);
    assert_eq!(server.holder().as_deref(), Some("replica-a"));
}

#[tokio::test]
async fn an_expired_lease_is_taken_over_counting_the_transition() {
    let server = LeaseServer::holding(lease(
        Some("replica-a"),
        Timestamp::now() - SignedDuration::from_secs(60),
        4,
    ));
    let (lock, _) = lock_for(&server, "replica-b");

    assert!(lock.try_acquire_or_renew(Timestamp::now()).await.unwrap());
    let stored = server.stored.lock().unwrap().clone().unwrap();
    assert_eq!(stored["spec"]["holderIdentity"], "replica-b");
    assert_eq!(stored["spec"]["leaseTransitions"], 5);
}

#[tokio::test]
async fn losing_a_race_for_the_lease_is_not_leading() {
    let server = LeaseServer::holding(lease(
        Some("replica-a"),
        Timestamp::now() - SignedDuration::from_secs(60),
        0,
    ));
    let racing = server.clone();
    // Another replica writes between our read and our write: our resourceVersion is stale.
    let (client, _) = fake_api(move |request| {
        let answer = racing.respond(request);
        if request.method == Method::GET {
            racing.stored.lock().unwrap().as_mut().unwrap()["metadata"]["resourceVersion"] =
                json!("99");
        }
        answer
    });
    let lock = LeaseLock::new(
        client,
        "healthbridge",
        "healthbridge-controller",
        "replica-b",
        Timing::default(),
    );

    assert!(!lock.try_acquire_or_renew(Timestamp::now()).await.unwrap());
    assert_eq!(server.holder().as_deref(), Some("replica-a"));
}

#[tokio::test(start_paused = true)]
async fn the_leader_releases_the_lease_on_shutdown() {
    let server = LeaseServer::default();
    let (lock, _) = lock_for(&server, "replica-a");
    let shutdown = tokio_util::sync::CancellationToken::new();
    let runs = Arc::new(AtomicUsize::new(0));

    let stop = shutdown.clone();
    let counted = runs.clone();
    lock.run_while_leading(shutdown.clone(), move |leading| {
        counted.fetch_add(1, Ordering::SeqCst);
        let stop = stop.clone();
        async move {
            assert!(!leading.is_cancelled());
            stop.cancel();
            leading.cancelled().await;
        }
    })
    .await
    .unwrap();

    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert_eq!(
        server.holder(),
        None,
        "released so the next replica need not wait 15s"
    );
}

#[tokio::test(start_paused = true)]
async fn work_stops_when_another_replica_takes_the_lease() {
    let server = LeaseServer::default();
    let (lock, _) = lock_for(&server, "replica-a");
    let shutdown = tokio_util::sync::CancellationToken::new();
    let lost_before_shutdown = Arc::new(AtomicBool::new(false));

    let stop = shutdown.clone();
    let takeover = server.clone();
    let lost = lost_before_shutdown.clone();
    lock.run_while_leading(shutdown.clone(), move |leading| {
        let (stop, takeover, lost) = (stop.clone(), takeover.clone(), lost.clone());
        async move {
            let mut stolen = lease(Some("replica-b"), Timestamp::now(), 1);
            stolen["metadata"]["resourceVersion"] = json!("50");
            *takeover.stored.lock().unwrap() = Some(stolen);
            leading.cancelled().await;
            lost.store(!stop.is_cancelled(), Ordering::SeqCst);
            stop.cancel();
        }
    })
    .await
    .unwrap();

    assert!(lost_before_shutdown.load(Ordering::SeqCst));
    assert_eq!(
        server.holder().as_deref(),
        Some("replica-b"),
        "the new holder's Lease is not released by the old one"
    );
}

#[tokio::test(start_paused = true)]
async fn work_stops_when_the_lease_cannot_be_renewed_within_the_deadline() {
    let server = LeaseServer::default();
    let (lock, _) = lock_for(&server, "replica-a");
    let shutdown = tokio_util::sync::CancellationToken::new();
    let led_for = Arc::new(Mutex::new(Duration::ZERO));

    let stop = shutdown.clone();
    let failing = server.failing.clone();
    let measured = led_for.clone();
    lock.run_while_leading(shutdown.clone(), move |leading| {
        let (stop, failing, measured) = (stop.clone(), failing.clone(), measured.clone());
        async move {
            let started = tokio::time::Instant::now();
            failing.store(true, Ordering::SeqCst);
            leading.cancelled().await;
            *measured.lock().unwrap() = started.elapsed();
            stop.cancel();
        }
    })
    .await
    .unwrap();

    let led_for = *led_for.lock().unwrap();
    assert!(
        led_for >= Timing::default().renew_deadline,
        "gave up after {led_for:?}"
    );
    assert!(
        led_for < Timing::default().lease_duration,
        "still leading after {led_for:?}: another replica may lead too"
    );
}
