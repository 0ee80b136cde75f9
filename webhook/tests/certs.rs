//! Self-managed certificates against a fake API server: create-if-absent, fill-if-empty, the replica races,
//! caBundle only when it differs.
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};

mod common;

use healthbridge_webhook::certs::bundle::DAY;
use healthbridge_webhook::certs::{
    CA_OVERLAP_SECONDS, CertBundle, CertError, PREVIOUS_CA_KEY, SelfManaged, ca_bundle_pem,
    ensure_secret, guard_ca_bundle, publish_ca_bundle,
};
use healthbridge_webhook::keys;
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::client::Body;
use serde_json::{Value, json};
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

type Log = Arc<Mutex<Vec<(Method, String, Value)>>>;

/// A kube client answered in process by `respond(method, path, body)`; every request is logged.
fn fake_api(
    mut respond: impl FnMut(&Method, &str, &Value) -> (StatusCode, Value) + Send + 'static,
) -> (kube::Client, Log) {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let log: Log = Arc::default();
    let recorded = log.clone();
    tokio::spawn(async move {
        while let Some((request, send)) = handle.next_request().await {
            let (parts, body) = request.into_parts();
            let bytes = body.collect().await.unwrap().to_bytes();
            let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            let (status, answer) = respond(&parts.method, parts.uri.path(), &body);
            recorded
                .lock()
                .unwrap()
                .push((parts.method, parts.uri.path().to_owned(), body));
            send.send_response(
                Response::builder()
                    .status(status)
                    .body(Body::from(serde_json::to_vec(&answer).unwrap()))
                    .unwrap(),
            );
        }
    });
    (kube::Client::new(service, "healthbridge-system"), log)
}

fn status(code: u16, reason: &str) -> (StatusCode, Value) {
    let body = json!({ "kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": reason, "code": code, "message": reason });
    (StatusCode::from_u16(code).unwrap(), body)
}

fn settings() -> SelfManaged {
    SelfManaged {
        namespace: "healthbridge-system".into(),
        service_name: "healthbridge-webhook".into(),
        secret_name: "healthbridge-webhook-tls".into(),
        webhook_config: "healthbridge".into(),
    }
}

const NOW: i64 = 1_790_000_000;

/// `ensure_secret` as the webhook calls it, against the fake API.
async fn ensure(client: kube::Client) -> Result<CertBundle, CertError> {
    ensure_secret(
        &Api::<Secret>::namespaced(client, "healthbridge-system"),
        &settings(),
        NOW,
        None,
    )
    .await
}

/// The Secret JSON another replica would have stored for `bundle`.
fn secret_json(bundle: &CertBundle) -> Value {
    serde_json::to_value(bundle.to_secret("healthbridge-webhook-tls", "healthbridge-system"))
        .unwrap()
}

/// GET answers of a race: `first` once, then the winner's Secret every time after.
fn first_get_then(
    first: (StatusCode, Value),
    winner: Value,
) -> impl FnMut() -> (StatusCode, Value) + Send + 'static {
    let mut first = Some(first);
    move || {
        first
            .take()
            .unwrap_or_else(|| (StatusCode::OK, winner.clone()))
    }
}
const SECRET_PATH: &str = "/api/v1/namespaces/healthbridge-system/secrets";

#[tokio::test]
async fn an_absent_secret_is_created_with_ca_and_serving_cert() {
    let (client, log) = fake_api(|method, _, body| match *method {
        Method::GET => status(404, "NotFound"),
        _ => (StatusCode::CREATED, body.clone()),
    });
    let bundle = ensure(client).await.unwrap();
    assert_eq!(bundle.dns_names, settings().dns_names());
    let log = log.lock().unwrap();
    let (method, path, body) = &log[1];
    assert_eq!((method, path.as_str()), (&Method::POST, SECRET_PATH));
    let keys: Vec<&str> = body["data"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, ["ca.crt", "ca.key", "tls.crt", "tls.key"]);
}

#[tokio::test]
async fn losing_the_create_race_takes_the_other_replicas_secret() {
    let theirs = CertBundle::generate(&settings().dns_names(), NOW).unwrap();
    let their_secret = secret_json(&theirs);
    let mut get = first_get_then(status(404, "NotFound"), their_secret);
    let (client, _) = fake_api(move |method, _, _| match *method {
        Method::GET => get(),
        _ => status(409, "AlreadyExists"),
    });
    let bundle = ensure(client).await.unwrap();
    assert_eq!(bundle, theirs);
}

#[tokio::test]
async fn a_current_secret_is_used_without_any_write() {
    let existing = CertBundle::generate(&settings().dns_names(), NOW).unwrap();
    let secret = secret_json(&existing);
    let (client, log) = fake_api(move |_, _, _| (StatusCode::OK, secret.clone()));
    let bundle = ensure(client).await.unwrap();
    assert_eq!(bundle, existing);
    assert!(log.lock().unwrap().iter().all(|(m, _, _)| m == Method::GET));
}

/// The cert Secret as the chart ships it in self-managed mode: no data, Helm's ownership metadata.
fn empty_chart_secret() -> Value {
    json!({
        "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
        "metadata": {
            "name": "healthbridge-webhook-tls", "namespace": "healthbridge-system", "resourceVersion": "42",
            "labels": { "app.kubernetes.io/managed-by": "Helm" },
            "annotations": { "meta.helm.sh/release-name": "healthbridge" }
        }
    })
}

#[tokio::test]
async fn an_empty_secret_from_the_chart_is_filled_keeping_helms_metadata() {
    let (client, log) = fake_api(|method, _, body| match *method {
        Method::GET => (StatusCode::OK, empty_chart_secret()),
        _ => (StatusCode::OK, body.clone()),
    });
    let bundle = ensure(client).await.unwrap();
    assert_eq!(bundle.dns_names, settings().dns_names());
    let log = log.lock().unwrap();
    let (method, path, written) = &log[1];
    assert_eq!(
        (method, path.as_str()),
        (
            &Method::PUT,
            "/api/v1/namespaces/healthbridge-system/secrets/healthbridge-webhook-tls"
        )
    );
    assert_eq!(
        written["metadata"]["resourceVersion"], "42",
        "optimistic write"
    );
    assert_eq!(
        written["metadata"]["labels"]["app.kubernetes.io/managed-by"],
        "Helm"
    );
    assert_eq!(
        written["metadata"]["annotations"]["meta.helm.sh/release-name"],
        "healthbridge"
    );
    assert_eq!(written["type"], "Opaque");
    let filled: Secret = serde_json::from_value(written.clone()).unwrap();
    assert_eq!(CertBundle::from_secret(&filled).unwrap(), bundle);
}

#[tokio::test]
async fn losing_the_fill_race_takes_the_other_replicas_bundle() {
    let theirs = CertBundle::generate(&settings().dns_names(), NOW).unwrap();
    let their_secret = secret_json(&theirs);
    let mut get = first_get_then((StatusCode::OK, empty_chart_secret()), their_secret);
    let (client, log) = fake_api(move |method, _, _| match *method {
        Method::GET => get(),
        _ => status(409, "Conflict"),
    });
    let bundle = ensure(client).await.unwrap();
    assert_eq!(bundle, theirs);
    let methods: Vec<Method> = log
        .lock()
        .unwrap()
        .iter()
        .map(|(m, _, _)| m.clone())
        .collect();
    assert_eq!(methods, [Method::GET, Method::PUT, Method::GET]);
}

#[tokio::test]
async fn a_secret_with_only_some_keys_is_an_error_that_says_how_to_fix_it() {
    let mut partial = empty_chart_secret();
    partial["data"] = json!({ "tls.crt": healthbridge_webhook::admission::base64(b"cert") });
    let (client, log) = fake_api(move |_, _, _| (StatusCode::OK, partial.clone()));
    let error = ensure(client).await.unwrap_err();
    assert!(matches!(error, CertError::MissingKey(_, "ca.crt")));
    assert!(error.to_string().contains("empty its data"));
    assert!(log.lock().unwrap().iter().all(|(m, _, _)| m == Method::GET));
}

fn webhook_config(ca_bundles: [Option<&str>; 2]) -> Value {
    let entry = |name: &str, ca: Option<&str>| {
        let mut client_config = json!({ "service": { "name": "healthbridge-webhook", "namespace": "healthbridge-system", "path": "/mutate" } });
        if let Some(ca) = ca {
            client_config["caBundle"] =
                json!(healthbridge_webhook::admission::base64(ca.as_bytes()));
        }
        json!({ "name": name, "clientConfig": client_config, "sideEffects": "None", "admissionReviewVersions": ["v1"] })
    };
    json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfiguration",
        "metadata": { "name": "healthbridge", "resourceVersion": "7" },
        "webhooks": [entry("pods.healthbridge.io", ca_bundles[0]), entry("namespaces.healthbridge.io", ca_bundles[1])]
    })
}

#[tokio::test]
async fn the_ca_bundle_is_written_only_when_it_differs() {
    let ca = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
    let stale = webhook_config([Some(ca), None]);
    let (client, log) = fake_api(move |method, _, body| match *method {
        Method::GET => (StatusCode::OK, stale.clone()),
        _ => (StatusCode::OK, body.clone()),
    });
    let configs = Api::<MutatingWebhookConfiguration>::all(client);
    assert!(
        publish_ca_bundle(&configs, "healthbridge", ca)
            .await
            .unwrap()
    );
    let (method, _, written) = log.lock().unwrap().last().cloned().unwrap();
    assert_eq!(method, Method::PUT);
    assert_eq!(written["metadata"]["resourceVersion"], "7");
    for webhook in written["webhooks"].as_array().unwrap() {
        assert_eq!(
            webhook["clientConfig"]["caBundle"],
            json!(healthbridge_webhook::admission::base64(ca.as_bytes()))
        );
    }

    let current = webhook_config([Some(ca), Some(ca)]);
    let (client, log) = fake_api(move |_, _, _| (StatusCode::OK, current.clone()));
    let configs = Api::<MutatingWebhookConfiguration>::all(client);
    assert!(
        !publish_ca_bundle(&configs, "healthbridge", ca)
            .await
            .unwrap()
    );
    assert_eq!(log.lock().unwrap().len(), 1, "only the GET");
}

#[tokio::test]
async fn a_missing_webhook_configuration_says_how_to_fix_it() {
    let (client, _) = fake_api(|_, _, _| status(404, "NotFound"));
    let error = publish_ca_bundle(&Api::all(client), "healthbridge", "ca")
        .await
        .unwrap_err();
    assert!(matches!(error, CertError::NoWebhookConfig(_)));
    assert!(error.to_string().contains("--webhook-config"));
}

/// The webhook configuration held by the fake API: a caBundle that someone strips once, while the guard watches.
struct WatchedConfig {
    current: Value,
    watches: usize,
}

/// A fake API for `guard_ca_bundle`: LIST and GET answer `current`, PUT replaces it, the first WATCH reports that
/// someone stripped one caBundle, later WATCHes stay open (and ring `settled`).
fn fake_watched_api(state: Arc<Mutex<WatchedConfig>>, settled: Arc<Notify>) -> (kube::Client, Log) {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let log: Log = Arc::default();
    let recorded = log.clone();
    tokio::spawn(async move {
        let mut open_watches = Vec::new();
        while let Some((request, send)) = handle.next_request().await {
            let (parts, body) = request.into_parts();
            let bytes = body.collect().await.unwrap().to_bytes();
            let body: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
            let target = parts.uri.to_string();
            recorded
                .lock()
                .unwrap()
                .push((parts.method.clone(), target.clone(), body.clone()));
            let answer = {
                let mut state = state.lock().unwrap();
                if parts.method == Method::PUT {
                    state.current = body;
                    Some(serde_json::to_vec(&state.current).unwrap())
                } else if target.contains("watch=true") {
                    state.watches += 1;
                    if state.watches == 1 {
                        state.current["webhooks"][1]["clientConfig"]
                            .as_object_mut()
                            .unwrap()
                            .remove("caBundle");
                        state.current["metadata"]["resourceVersion"] = json!("8");
                        let event = json!({ "type": "MODIFIED", "object": state.current });
                        Some(format!("{event}\n").into_bytes())
                    } else {
                        None
                    }
                } else if target.contains("fieldSelector") {
                    let list = json!({
                        "apiVersion": "admissionregistration.k8s.io/v1", "kind": "MutatingWebhookConfigurationList",
                        "metadata": { "resourceVersion": state.current["metadata"]["resourceVersion"] },
                        "items": [state.current],
                    });
                    Some(serde_json::to_vec(&list).unwrap())
                } else {
                    Some(serde_json::to_vec(&state.current).unwrap())
                }
            };
            match answer {
                Some(answer) => send.send_response(
                    Response::builder()
                        .status(StatusCode::OK)
                        .body(Body::from(answer))
                        .unwrap(),
                ),
                None => {
                    open_watches.push(send);
                    settled.notify_one();
                }
            }
        }
    });
    (kube::Client::new(service, "healthbridge-system"), log)
}

/// Runs `guard_ca_bundle` over the webhook configuration `config` (the CA it knows: `ca`) until the fake API's
/// later watch is open (`expectation` says what that means), then stops it; every request it made.
async fn guard_until_settled(config: Value, ca: Option<&str>, expectation: &str) -> Log {
    let state = Arc::new(Mutex::new(WatchedConfig {
        current: config,
        watches: 0,
    }));
    let settled = Arc::new(Notify::new());
    let (client, log) = fake_watched_api(state, settled.clone());
    let (_ca, ca_seen) = watch::channel(ca.map(str::to_owned));
    let shutdown = CancellationToken::new();
    let guard = tokio::spawn(guard_ca_bundle(
        Api::all(client),
        "healthbridge".into(),
        ca_seen,
        shutdown.clone(),
    ));
    tokio::time::timeout(std::time::Duration::from_secs(30), settled.notified())
        .await
        .expect(expectation);
    shutdown.cancel();
    guard.await.unwrap();
    log
}

fn puts(log: &Log) -> Vec<Value> {
    log.lock()
        .unwrap()
        .iter()
        .filter(|(method, _, _)| method == Method::PUT)
        .map(|(_, _, body)| body.clone())
        .collect()
}

#[tokio::test]
async fn a_stripped_ca_bundle_is_set_back_as_soon_as_the_watch_reports_it() {
    let ca = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
    let log = guard_until_settled(
        webhook_config([Some(ca), Some(ca)]),
        Some(ca),
        "the guard to process the strip and watch again",
    )
    .await;

    let first = log.lock().unwrap()[0].1.clone();
    assert!(
        first.contains("fieldSelector=metadata.name%3Dhealthbridge"),
        "watches only its own configuration: {first}"
    );
    let writes = puts(&log);
    assert_eq!(writes.len(), 1, "one write, for the one strip: {writes:?}");
    assert_eq!(writes[0]["metadata"]["resourceVersion"], "8");
    for webhook in writes[0]["webhooks"].as_array().unwrap() {
        assert_eq!(
            webhook["clientConfig"]["caBundle"],
            json!(healthbridge_webhook::admission::base64(ca.as_bytes()))
        );
    }
}

#[tokio::test]
async fn the_guard_writes_nothing_before_it_knows_the_ca() {
    let log = guard_until_settled(
        webhook_config([None, None]),
        None,
        "the guard to see the list and the strip",
    )
    .await;
    assert!(puts(&log).is_empty());
}

/// The Secret JSON of `bundle` as another replica (or the webhook before) stored it, with `annotations` added.
fn secret_json_annotated(bundle: &CertBundle, annotations: &[(&str, &str)]) -> Value {
    let mut secret = secret_json(bundle);
    secret["metadata"]["resourceVersion"] = json!("50");
    for (key, value) in annotations {
        secret["metadata"]["annotations"][*key] = json!(value);
    }
    secret
}

/// `ensure_secret` at `now` against a Secret that holds `stored`: the bundle, and the Secret it wrote (if any).
async fn ensure_at(
    stored: Value,
    now: i64,
    served_ca: Option<&str>,
) -> (CertBundle, Option<Secret>) {
    let (client, log) = fake_api(move |method, _, body| match *method {
        Method::GET => (StatusCode::OK, stored.clone()),
        _ => (StatusCode::OK, body.clone()),
    });
    let bundle = ensure_secret(
        &Api::<Secret>::namespaced(client, "healthbridge-system"),
        &settings(),
        now,
        served_ca,
    )
    .await
    .unwrap();
    let written = log
        .lock()
        .unwrap()
        .iter()
        .find(|(method, _, _)| method == Method::PUT)
        .map(|(_, _, body)| serde_json::from_value(body.clone()).unwrap());
    (bundle, written)
}

/// The caBundle `publish_ca_bundle` writes for `ca_bundle` over a configuration that carries `live`, decoded;
/// `None` when it writes nothing.
async fn published_over(live: &str, ca_bundle: &str) -> Option<String> {
    let config = webhook_config([Some(live), Some(live)]);
    let (client, log) = fake_api(move |method, _, body| match *method {
        Method::GET => (StatusCode::OK, config.clone()),
        _ => (StatusCode::OK, body.clone()),
    });
    let configs = Api::<MutatingWebhookConfiguration>::all(client);
    publish_ca_bundle(&configs, "healthbridge", ca_bundle)
        .await
        .unwrap();
    let log = log.lock().unwrap();
    let (_, _, written) = log.iter().find(|(method, _, _)| method == Method::PUT)?;
    let entries = written["webhooks"].as_array().unwrap();
    let bundles: Vec<&str> = entries
        .iter()
        .map(|entry| entry["clientConfig"]["caBundle"].as_str().unwrap())
        .collect();
    assert!(
        bundles.iter().all(|b| *b == bundles[0]),
        "every entry alike"
    );
    Some(String::from_utf8(common::unbase64(bundles[0])).unwrap())
}

/// Whether a TLS client trusting exactly the CAs of `ca_bundle` (as the API server does) accepts `leaf_pem` for
/// the webhook Service at `now`.
fn verifies(ca_bundle: &str, leaf_pem: &str, now: i64) -> bool {
    use rustls::client::WebPkiServerVerifier;
    use rustls::client::danger::ServerCertVerifier;
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

    let mut roots = rustls::RootCertStore::empty();
    for ca in CertificateDer::pem_slice_iter(ca_bundle.as_bytes()) {
        roots.add(ca.unwrap()).unwrap();
    }
    let verifier = WebPkiServerVerifier::builder_with_provider(
        Arc::new(roots),
        Arc::new(rustls::crypto::ring::default_provider()),
    )
    .build()
    .unwrap();
    let leaf = CertificateDer::from_pem_slice(leaf_pem.as_bytes()).unwrap();
    let name = ServerName::try_from("healthbridge-webhook.healthbridge-system.svc").unwrap();
    let at = UnixTime::since_unix_epoch(std::time::Duration::from_secs(now.try_into().unwrap()));
    verifier
        .verify_server_cert(&leaf, &[], &name, &[], at)
        .is_ok()
}

#[tokio::test]
async fn a_ca_rotation_publishes_the_old_and_the_new_ca_until_the_overlap_has_passed() {
    let before = CertBundle::generate(&settings().dns_names(), NOW).unwrap();
    let asked = secret_json_annotated(&before, &[(keys::ROTATE_CA, "2026-12-02")]);

    let (rotated, written) = ensure_at(asked, NOW, Some(&before.ca_cert)).await;
    let written = written.expect("the rotation is written to the Secret");
    assert_ne!(rotated.ca_cert, before.ca_cert, "a new CA");
    let annotations = written.metadata.annotations.clone().unwrap();
    assert!(
        !annotations.contains_key(keys::ROTATE_CA),
        "the request is cleared"
    );
    assert_eq!(
        annotations[keys::CA_PREVIOUS_UNTIL],
        (NOW + CA_OVERLAP_SECONDS).to_string()
    );
    let data = written.data.clone().unwrap();
    assert_eq!(data[PREVIOUS_CA_KEY].0, before.ca_cert.as_bytes());

    let during = published_over(&before.ca_cert, &rotated.ca_bundle(NOW))
        .await
        .expect("the caBundle gains the new CA");
    assert_eq!(
        during,
        ca_bundle_pem([rotated.ca_cert.as_str(), before.ca_cert.as_str()])
    );

    // Another replica reads the rotated Secret during the overlap: nothing to write, the same caBundle.
    let stored = serde_json::to_value(&written).unwrap();
    let (same, rewritten) = ensure_at(stored.clone(), NOW + 3600, Some(&rotated.ca_cert)).await;
    assert!(rewritten.is_none(), "steady: no write to the Secret");
    assert_eq!(same.ca_bundle(NOW + 3600), during);
    assert_eq!(
        published_over(&during, &same.ca_bundle(NOW + 3600)).await,
        None,
        "steady: no write to the caBundle"
    );

    // Once the overlap has passed the previous CA leaves the Secret and the caBundle.
    let after = NOW + CA_OVERLAP_SECONDS;
    let (pruned, rewritten) = ensure_at(stored, after, Some(&rotated.ca_cert)).await;
    let rewritten = rewritten.expect("the previous CA is dropped from the Secret");
    assert!(!rewritten.data.unwrap().contains_key(PREVIOUS_CA_KEY));
    assert!(
        !rewritten
            .metadata
            .annotations
            .unwrap()
            .contains_key(keys::CA_PREVIOUS_UNTIL)
    );
    assert_eq!(pruned.ca_cert, rotated.ca_cert);
    assert_eq!(
        published_over(&during, &pruned.ca_bundle(after)).await,
        Some(ca_bundle_pem([rotated.ca_cert.as_str()]))
    );
}

#[tokio::test]
async fn a_replica_still_serving_the_old_certificate_is_trusted_during_the_overlap() {
    let mut before = CertBundle::generate(&settings().dns_names(), NOW).unwrap();
    // The scheduled rotation, a year before the CA expires, while the replicas serve a current certificate of it.
    let due = before.ca_not_after - 300 * DAY;
    before.reissue(&settings().dns_names(), due - DAY).unwrap();
    let (rotated, _) = ensure_at(
        secret_json_annotated(&before, &[]),
        due,
        Some(&before.ca_cert),
    )
    .await;
    let published = published_over(&before.ca_cert, &rotated.ca_bundle(due))
        .await
        .unwrap();
    assert!(
        verifies(&published, &before.cert, due + 60),
        "the replica that has not switched yet"
    );
    assert!(
        verifies(&published, &rotated.cert, due + 60),
        "the replica that has"
    );
    let after = due + CA_OVERLAP_SECONDS;
    assert!(!verifies(&rotated.ca_bundle(after), &before.cert, after));
    assert!(verifies(&rotated.ca_bundle(after), &rotated.cert, after));
}

#[tokio::test]
async fn an_emptied_secret_is_refilled_keeping_the_served_ca_trusted_for_the_overlap() {
    let served = CertBundle::generate(&settings().dns_names(), NOW).unwrap();
    let (refilled, written) = ensure_at(empty_chart_secret(), NOW, Some(&served.ca_cert)).await;
    assert!(written.is_some());
    assert_ne!(refilled.ca_cert, served.ca_cert);
    assert!(verifies(&refilled.ca_bundle(NOW), &served.cert, NOW + 60));
    assert!(!verifies(
        &refilled.ca_bundle(NOW + CA_OVERLAP_SECONDS),
        &served.cert,
        NOW + 60
    ));
    // A replica that served nothing yet (a fresh start) has no CA to keep.
    let (fresh, _) = ensure_at(empty_chart_secret(), NOW, None).await;
    assert_eq!(fresh.previous_ca, None);
}
