//! Admission over HTTPS, in process, with rcgen certificates: the answers the API server gets.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::{big_pod, config, fixture, review, unbase64};
use healthbridge_webhook::admission::{AdmissionState, MAX_BODY_BYTES, app};
use healthbridge_webhook::certs::CertBundle;
use healthbridge_webhook::metrics::Metrics;
use healthbridge_webhook::server::{LimitArgs, Readiness, admin_app, serve_tls};
use healthbridge_webhook::tls::{CertFiles, CertStore};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

struct Webhook {
    addr: SocketAddr,
    /// TLS client configuration trusting the test CA, ALPN h2 only.
    h2_tls: Arc<rustls::ClientConfig>,
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
    /// Speaks HTTP/2 only, as the API server does when the webhook offers it.
    h2: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
    server: tokio::task::JoinHandle<()>,
}

fn certificates() -> CertBundle {
    CertBundle::generate(&["localhost".to_owned()], 1_790_000_000).unwrap()
}

async fn webhook() -> Webhook {
    let bundle = certificates();
    let store = CertStore::new();
    store
        .set_pem(bundle.cert.as_bytes(), bundle.key.as_bytes())
        .unwrap();
    let metrics = Arc::new(Metrics::new());
    let state = Arc::new(AdmissionState {
        cfg: config(),
        metrics: metrics.clone(),
        cluster_supports_native_sidecar: healthbridge_webhook::nodes::SidecarSupport::fixed(true),
        cluster_supports_sleep_action: true,
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(serve_tls(
        listener,
        store.server_config().unwrap(),
        app(state),
        shutdown.clone(),
        LimitArgs::default().limits(Duration::from_secs(5)),
    ));

    let mut roots = rustls::RootCertStore::empty();
    let ca = rustls_pki_types::CertificateDer::from_pem_slice(bundle.ca_cert.as_bytes()).unwrap();
    roots.add(ca).unwrap();
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls.clone())
        .https_only()
        .enable_http1()
        .enable_http2()
        .build();
    let client = Client::builder(TokioExecutor::new()).build(connector);
    let mut h2_tls = tls.clone();
    h2_tls.alpn_protocols = vec![b"h2".to_vec()];
    let h2_connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_http2()
        .build();
    let h2 = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build(h2_connector);
    Webhook {
        addr,
        h2_tls: Arc::new(h2_tls),
        client,
        h2,
        metrics,
        shutdown,
        server,
    }
}

use rustls_pki_types::pem::PemObject;

impl Webhook {
    async fn post_bytes(&self, path: &str, body: Vec<u8>) -> (u16, Bytes) {
        Self::post_with(&self.client, self.addr, path, body).await
    }

    async fn post_bytes_h2(&self, path: &str, body: Vec<u8>) -> (u16, Bytes) {
        Self::post_with(&self.h2, self.addr, path, body).await
    }

    async fn post_with(
        client: &Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
        addr: SocketAddr,
        path: &str,
        body: Vec<u8>,
    ) -> (u16, Bytes) {
        let request = hyper::Request::post(format!("https://localhost:{}{path}", addr.port()))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        let response = client.request(request).await.unwrap();
        let status = response.status().as_u16();
        (
            status,
            response.into_body().collect().await.unwrap().to_bytes(),
        )
    }

    async fn post(&self, path: &str, review: &Value) -> Value {
        let (status, body) = self
            .post_bytes(path, serde_json::to_vec(review).unwrap())
            .await;
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        serde_json::from_slice(&body).unwrap()
    }
}

#[tokio::test]
async fn an_opted_in_pod_gets_a_base64_json_patch_over_https() {
    let webhook = webhook().await;
    let pod = fixture("deployment-pod");
    let answer = webhook
        .post("/mutate", &review(&pod, "CREATE", false))
        .await;
    assert_eq!(answer["apiVersion"], "admission.k8s.io/v1");
    assert_eq!(answer["kind"], "AdmissionReview");
    let response = &answer["response"];
    assert_eq!(response["uid"], "705ab4f5-6393-11e8-b7cc-42010a800002");
    assert_eq!(response["allowed"], true);
    assert_eq!(response["patchType"], "JSONPatch");
    let patch: json_patch::Patch =
        serde_json::from_slice(&unbase64(response["patch"].as_str().unwrap())).unwrap();
    let mut patched = pod.clone();
    json_patch::patch(&mut patched, &patch).unwrap();
    assert_eq!(
        patched["metadata"]["annotations"]["healthbridge.io/status"],
        "injected"
    );
    assert_eq!(webhook.metrics.count("injected"), 1);
}

#[tokio::test]
async fn a_dry_run_gets_exactly_the_answer_of_a_real_request() {
    let webhook = webhook().await;
    let pod = fixture("statefulset-pod");
    let real = webhook
        .post("/mutate", &review(&pod, "CREATE", false))
        .await;
    let dry = webhook.post("/mutate", &review(&pod, "CREATE", true)).await;
    assert_eq!(real, dry);
}

#[tokio::test]
async fn malformed_json_is_a_400_that_says_what_is_wrong() {
    let webhook = webhook().await;
    let (status, body) = webhook
        .post_bytes("/mutate", b"{\"apiVersion\": ".to_vec())
        .await;
    assert_eq!(status, 400);
    let body = String::from_utf8_lossy(&body);
    assert!(body.contains("not a JSON AdmissionReview"), "{body}");
    assert_eq!(webhook.metrics.count("error"), 1);
}

#[tokio::test]
async fn a_review_of_another_kind_is_invalid_with_the_uid_echoed() {
    let webhook = webhook().await;
    let deployment = json!({ "apiVersion": "apps/v1", "kind": "Deployment", "metadata": { "name": "web", "namespace": "shop" }, "spec": {} });
    let mut request = review(&deployment, "CREATE", false);
    request["request"]["kind"] = json!({ "group": "apps", "version": "v1", "kind": "Deployment" });
    let answer = webhook.post("/mutate", &request).await;
    let response = &answer["response"];
    assert_eq!(response["uid"], "705ab4f5-6393-11e8-b7cc-42010a800002");
    assert_eq!(response["allowed"], false);
    assert_eq!(response["status"]["reason"], "InvalidRequest");
    assert!(
        response["status"]["message"]
            .as_str()
            .unwrap()
            .contains("only v1 Pods"),
        "{response}"
    );
}

#[tokio::test]
async fn a_body_over_three_mebibytes_is_refused() {
    let webhook = webhook().await;
    let (status, body) = webhook
        .post_bytes("/mutate", vec![b' '; MAX_BODY_BYTES + 1])
        .await;
    assert_eq!(status, 413);
    assert!(String::from_utf8_lossy(&body).contains("3 MiB"));
}

#[tokio::test]
async fn a_body_over_three_mebibytes_gets_its_413_over_http2_too() {
    let webhook = webhook().await;
    for size in [MAX_BODY_BYTES + 1, 4 * 1024 * 1024, 16 * 1024 * 1024] {
        let (status, body) = webhook.post_bytes_h2("/mutate", vec![b' '; size]).await;
        assert_eq!(status, 413, "{size} bytes over HTTP/2");
        assert!(String::from_utf8_lossy(&body).contains("3 MiB"));
    }
    assert_eq!(webhook.metrics.count("error"), 3);
}

/// Uploads `size` bytes to `/mutate` over a bare HTTP/2 stream, as fast as flow control allows, and answers the
/// status code, or the error the upload or the answer met (a reset stream).
async fn upload_over_h2(webhook: &Webhook, size: usize) -> Result<u16, String> {
    let tcp = tokio::net::TcpStream::connect(webhook.addr).await.unwrap();
    let tls = tokio_rustls::TlsConnector::from(webhook.h2_tls.clone())
        .connect(
            rustls_pki_types::ServerName::try_from("localhost").unwrap(),
            tcp,
        )
        .await
        .unwrap();
    let (mut client, connection) = h2::client::handshake(tls).await.unwrap();
    tokio::spawn(connection);
    let request = http::Request::post(format!("https://localhost:{}/mutate", webhook.addr.port()))
        .header("content-type", "application/json")
        .header("content-length", size.to_string())
        .body(())
        .unwrap();
    let (response, mut upload) = client.send_request(request, false).unwrap();
    let sending = async move {
        let mut left = size;
        while left > 0 {
            upload.reserve_capacity(left.min(64 * 1024));
            let capacity = std::future::poll_fn(|cx| upload.poll_capacity(cx))
                .await
                .ok_or("the stream closed while uploading")?
                .map_err(|e| format!("upload: {e}"))?;
            let chunk = capacity.min(left);
            left -= chunk;
            upload
                .send_data(bytes::Bytes::from(vec![b' '; chunk]), left == 0)
                .map_err(|e| format!("upload: {e}"))?;
        }
        Ok::<(), String>(())
    };
    let (sent, answer) = tokio::join!(sending, async {
        let response = response.await.map_err(|e| format!("answer: {e}"))?;
        let status = response.status().as_u16();
        let mut body = response.into_body();
        while let Some(chunk) = body.data().await {
            chunk.map_err(|e| format!("answer body: {e}"))?;
        }
        Ok::<u16, String>(status)
    });
    sent?;
    answer
}

#[tokio::test]
async fn an_oversized_http2_upload_gets_its_413_on_a_cleanly_closed_stream_not_a_reset() {
    let webhook = webhook().await;
    for size in [4 * 1024 * 1024, 16 * 1024 * 1024] {
        assert_eq!(
            upload_over_h2(&webhook, size).await,
            Ok(413),
            "{size} bytes"
        );
    }
}

#[tokio::test]
async fn the_big_pod_is_admitted_under_the_limit() {
    let webhook = webhook().await;
    let answer = webhook
        .post("/mutate", &review(&big_pod(30, 50), "CREATE", false))
        .await;
    assert_eq!(answer["response"]["allowed"], true);
    assert!(answer["response"]["patch"].is_string());
}

#[tokio::test]
async fn denials_carry_the_message_naming_the_annotation() {
    let webhook = webhook().await;
    let mut pod = fixture("deployment-pod");
    pod["metadata"]["annotations"]["healthbridge.io/port"] = json!("8080");
    let answer = webhook
        .post("/mutate", &review(&pod, "CREATE", false))
        .await;
    let response = &answer["response"];
    assert_eq!(response["allowed"], false);
    let message = response["status"]["message"].as_str().unwrap();
    assert!(
        message.contains("8080")
            && message.contains("\"app\"")
            && message.contains("healthbridge.io/port"),
        "{message}"
    );
    assert!(response.get("patch").is_none());
    assert_eq!(webhook.metrics.count("denied"), 1);
}

#[tokio::test]
async fn warnings_reach_the_user_and_updates_are_let_through() {
    let webhook = webhook().await;
    let answer = webhook
        .post(
            "/mutate",
            &review(&fixture("host-network-pod"), "CREATE", false),
        )
        .await;
    assert!(
        answer["response"]["warnings"][0]
            .as_str()
            .unwrap()
            .contains("hostNetwork")
    );
    let update = webhook
        .post(
            "/mutate",
            &review(&fixture("deployment-pod"), "UPDATE", false),
        )
        .await;
    assert_eq!(update["response"]["allowed"], true);
    assert!(update["response"].get("patch").is_none());
}

#[tokio::test]
async fn the_namespace_path_injects_pods_without_annotation() {
    let webhook = webhook().await;
    let answer = webhook
        .post(
            "/mutate-namespace",
            &review(&fixture("no-annotations-pod"), "CREATE", false),
        )
        .await;
    assert_eq!(answer["response"]["patchType"], "JSONPatch");
    let plain = webhook
        .post(
            "/mutate",
            &review(&fixture("no-annotations-pod"), "CREATE", false),
        )
        .await;
    assert!(plain["response"].get("patch").is_none());
}

#[tokio::test]
async fn shutdown_stops_the_listener() {
    let webhook = webhook().await;
    webhook
        .post("/mutate", &review(&fixture("job-pod"), "CREATE", false))
        .await;
    webhook.shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), webhook.server)
        .await
        .unwrap()
        .unwrap();
    assert!(tokio::net::TcpStream::connect(webhook.addr).await.is_err());
}

#[tokio::test]
async fn the_admin_port_reports_readiness_and_metrics() {
    let metrics = Arc::new(Metrics::new());
    let readiness = Readiness::new();
    let admin = admin_app(metrics.clone(), readiness.clone());
    let get = |path: &str| {
        hyper::Request::get(path)
            .body(axum::body::Body::empty())
            .unwrap()
    };
    assert_eq!(
        admin
            .clone()
            .oneshot(get("/healthz"))
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        admin
            .clone()
            .oneshot(get("/readyz"))
            .await
            .unwrap()
            .status(),
        503
    );
    readiness.set_ready(true);
    assert_eq!(
        admin
            .clone()
            .oneshot(get("/readyz"))
            .await
            .unwrap()
            .status(),
        200
    );
    metrics.observe(
        healthbridge_webhook::metrics::Outcome::Skipped("not_opted_in"),
        Duration::from_micros(80),
    );
    let body = admin
        .oneshot(get("/metrics"))
        .await
        .unwrap()
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes();
    let text = String::from_utf8_lossy(&body);
    assert!(
        text.contains(
            "healthbridge_webhook_admissions_total{result=\"skipped\",reason=\"not_opted_in\"} 1"
        ),
        "{text}"
    );
    assert!(
        text.contains("healthbridge_webhook_admission_duration_seconds_bucket"),
        "{text}"
    );
}

#[test]
fn certificate_files_are_reloaded_when_they_change_and_a_bad_pair_keeps_the_old_one() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
    let first = certificates();
    std::fs::write(&cert, &first.cert).unwrap();
    std::fs::write(&key, &first.key).unwrap();
    let store = CertStore::new();
    let mut files = CertFiles::new(cert.clone(), key.clone());
    assert!(files.reload_if_changed(&store).unwrap());
    assert!(
        !files.reload_if_changed(&store).unwrap(),
        "unchanged files are not reloaded"
    );
    let served_first = store.leaf().unwrap();

    let second = certificates();
    std::fs::write(&cert, &second.cert).unwrap();
    std::fs::write(&key, &second.key).unwrap();
    assert!(files.reload_if_changed(&store).unwrap());
    let served_second = store.leaf().unwrap();
    assert_ne!(served_first, served_second);

    // A certificate with the key of another: refused, the second pair stays.
    std::fs::write(&key, &first.key).unwrap();
    assert!(files.reload_if_changed(&store).is_err());
    assert_eq!(store.leaf().unwrap(), served_second);
    std::fs::write(&cert, "garbage").unwrap();
    assert!(files.reload_if_changed(&store).is_err());
    assert_eq!(store.leaf().unwrap(), served_second);
}
