//! The native-sidecar decision of `auto` against a fake API server: the lowest kubelet version of the nodes
//! decides, not the API server's version, and unreadable nodes give the safe choice (a regular container).
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{fixture, review, unbase64};
use healthbridge_webhook::admission::{self};
use healthbridge_webhook::metrics::Metrics;
use healthbridge_webhook::nodes::{SidecarSupport, follow_nodes};
use healthbridge_webhook::patch::OptIn;
use http::{Request, Response, StatusCode};
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use kube::client::Body;
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

fn node(name: &str, kubelet: &str) -> Value {
    json!({
        "metadata": { "name": name, "resourceVersion": "10" },
        "status": { "nodeInfo": {
            "kubeletVersion": kubelet, "architecture": "amd64", "bootID": "", "containerRuntimeVersion": "",
            "kernelVersion": "", "kubeProxyVersion": "", "machineID": "", "operatingSystem": "linux",
            "osImage": "", "systemUUID": ""
        } }
    })
}

/// A fake API whose node LIST answers `list` (a NodeList, or a Status with its code); WATCHes stay open.
fn fake_nodes_api(list: (StatusCode, Value)) -> kube::Client {
    let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    tokio::spawn(async move {
        let mut open_watches = Vec::new();
        while let Some((request, send)) = handle.next_request().await {
            if request.uri().to_string().contains("watch=true") {
                open_watches.push(send);
                continue;
            }
            send.send_response(
                Response::builder()
                    .status(list.0)
                    .body(Body::from(serde_json::to_vec(&list.1).unwrap()))
                    .unwrap(),
            );
        }
    });
    kube::Client::new(service, "healthbridge-system")
}

fn node_list(nodes: &[Value]) -> (StatusCode, Value) {
    (
        StatusCode::OK,
        json!({ "apiVersion": "v1", "kind": "NodeList", "metadata": { "resourceVersion": "10" }, "items": nodes }),
    )
}

/// The decision `follow_nodes` makes from `list` on a 1.29+ API server, once it has made one, and the metrics.
async fn decided(list: (StatusCode, Value)) -> (SidecarSupport, Arc<Metrics>) {
    let support = SidecarSupport::fixed(true);
    let metrics = Arc::new(Metrics::new());
    let (first, mut first_seen) = watch::channel(false);
    let shutdown = CancellationToken::new();
    tokio::spawn(follow_nodes(
        Api::<Node>::all(fake_nodes_api(list)),
        Some(true),
        support.clone(),
        metrics.clone(),
        first,
        shutdown.clone(),
    ));
    tokio::time::timeout(Duration::from_secs(30), first_seen.wait_for(|seen| *seen))
        .await
        .expect("a decision from the nodes")
        .unwrap();
    shutdown.cancel();
    (support, metrics)
}

/// Where the webhook puts the agent of an opted-in Deployment pod: `initContainers` or `containers`.
fn agent_goes_to(support: &SidecarSupport) -> String {
    let body = serde_json::to_vec(&review(&fixture("deployment-pod"), "CREATE", false)).unwrap();
    let answer = admission::review(
        &body,
        &common::config(),
        OptIn::Annotation,
        support.get(),
        true,
    )
    .unwrap();
    let answer: Value = serde_json::from_slice(&answer.body).unwrap();
    let patch: Value =
        serde_json::from_slice(&unbase64(answer["response"]["patch"].as_str().unwrap())).unwrap();
    let agent = patch
        .as_array()
        .unwrap()
        .iter()
        .find(|op| {
            op["value"].to_string().contains("healthbridge-agent")
                && op["path"].as_str().unwrap().contains("ontainers")
        })
        .unwrap();
    let path = agent["path"].as_str().unwrap();
    path.trim_start_matches("/spec/")
        .split('/')
        .next()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn a_1_28_kubelet_under_a_1_29_api_server_makes_the_agent_a_regular_container() {
    let (support, metrics) =
        decided(node_list(&[node("a", "v1.33.1"), node("b", "v1.28.15")])).await;
    assert!(!support.get());
    assert_eq!(agent_goes_to(&support), "containers");
    let text = metrics.render();
    assert!(
        text.contains("healthbridge_webhook_native_sidecars 0"),
        "{text}"
    );
    assert!(
        text.contains("healthbridge_webhook_node_versions_known 1"),
        "{text}"
    );
}

#[tokio::test]
async fn kubelets_all_at_1_29_or_later_make_a_native_sidecar() {
    let (support, metrics) = decided(node_list(&[
        node("a", "v1.33.1"),
        node("b", "v1.29.0-eks-1"),
    ]))
    .await;
    assert!(support.get());
    assert_eq!(agent_goes_to(&support), "initContainers");
    assert!(
        metrics
            .render()
            .contains("healthbridge_webhook_native_sidecars 1")
    );
}

#[tokio::test]
async fn nodes_that_cannot_be_listed_give_the_safe_choice_and_say_so_in_the_metrics() {
    let forbidden = json!({ "kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Forbidden", "code": 403,
        "message": "nodes is forbidden: User \"system:serviceaccount:healthbridge-system:healthbridge\" cannot list resource \"nodes\"" });
    let (support, metrics) = decided((StatusCode::FORBIDDEN, forbidden)).await;
    assert!(!support.get());
    assert_eq!(agent_goes_to(&support), "containers");
    let text = metrics.render();
    assert!(
        text.contains("healthbridge_webhook_node_versions_known 0"),
        "{text}"
    );
    assert!(
        text.contains("healthbridge_webhook_native_sidecars 0"),
        "{text}"
    );
}
