//! Reconciler behaviour against a fake API server: create, steady state, drift, nodePort conflict, 403, 409, GC.
#![allow(clippy::unwrap_used)]

mod controller_support;

use std::time::Duration;

use controller_support::world::{World, world};
use controller_support::{Recorded, accepting, pod, status};
use healthbridge_webhook::controller::cached::CachedPod;
use healthbridge_webhook::controller::desired::desired_agent_rbac;
use healthbridge_webhook::controller::housekeeping::collect_garbage;
use healthbridge_webhook::controller::reconcile::{ReconcileError, SLOW_RETRY, retry_after};
use healthbridge_webhook::keys;
use http::{Method, StatusCode};
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::rbac::v1::Role;
use kube::Resource;
use kube::runtime::controller::Action;
use kube::runtime::watcher;
use serde_json::Value;

fn web_pod() -> Pod {
    pod("web-7d9f8c6b5d-x2x7q")
        .injected()
        .in_group("web")
        .owned_by("ReplicaSet", "web-7d9f8c6b5d")
        .with_service_account("web")
        .build()
}

#[tokio::test]
async fn a_new_injected_pod_gets_its_role_binding_and_service_applied_by_the_healthbridge_manager()
{
    let pod = web_pod();
    let world = world(accepting).with_pod(&pod);

    let action = world.reconcile(&pod).await.unwrap();
    assert_eq!(world.sync().await, 1, "its ServiceAccount was asked for");

    assert_eq!(action, Action::requeue(Duration::from_secs(300)));
    let writes = world.writes();
    let paths: Vec<&str> = writes.iter().map(|request| request.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "/api/v1/namespaces/shop/services/web-healthbridge",
            "/apis/rbac.authorization.k8s.io/v1/namespaces/shop/roles/web-healthbridge-agent",
            "/apis/rbac.authorization.k8s.io/v1/namespaces/shop/rolebindings/web-healthbridge-agent",
        ]
    );
    for write in &writes {
        assert_eq!(write.method, Method::PATCH);
        assert!(
            write.query.contains("fieldManager=healthbridge"),
            "{}",
            write.query
        );
        assert!(write.query.contains("force=true"), "{}", write.query);
    }
    assert_eq!(
        writes[0].body["metadata"]["ownerReferences"][0]["kind"],
        "Deployment"
    );
    assert_eq!(
        writes[0].body["metadata"]["ownerReferences"][0]["name"],
        "web"
    );
}

#[tokio::test]
async fn the_pod_is_told_its_rbac_and_node_port_are_ready() {
    let pod = web_pod();
    let mut world = world(accepting).with_pod(&pod);
    world.reconcile(&pod).await.unwrap();
    assert!(world.events().is_empty(), "not Ready before its Role");
    world.sync().await;
    world.observe_applied();

    world.reconcile(&pod).await.unwrap();
    world.reconcile(&pod).await.unwrap();

    let events = world.events();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["type"], "Normal");
    assert_eq!(events[0]["reason"], "Ready");
    assert_eq!(events[0]["regarding"]["name"], "web-7d9f8c6b5d-x2x7q");
    let note = events[0]["note"].as_str().unwrap();
    assert!(
        note.contains("ServiceAccount web may read this pod and the other injected pods running as it in this namespace (Role/RoleBinding web-healthbridge-agent)"),
        "{note}"
    );
    assert!(
        note.contains("Service web-healthbridge serves the health check on nodePort 30001"),
        "{note}"
    );
}

#[tokio::test]
async fn in_steady_state_a_reconcile_makes_no_request_at_all() {
    let pod = web_pod();
    let mut world = world(accepting).with_pod(&pod);
    world.settle(std::slice::from_ref(&pod)).await;

    world.reconcile(&pod).await.unwrap();
    world.reconcile(&pod).await.unwrap();
    assert_eq!(world.resync_accounts().await, 1);

    assert!(world.requests().is_empty(), "{:?}", world.requests());
}

#[tokio::test]
async fn a_user_edit_of_a_field_we_own_is_set_back() {
    let pod = web_pod();
    let mut world = world(accepting).with_pod(&pod);
    world.settle(std::slice::from_ref(&pod)).await;
    let mut edited = web_role();
    if let Some(rules) = edited.rules.as_mut() {
        rules[0].verbs.push("delete".to_owned());
    }
    world
        .roles
        .apply_watcher_event(&watcher::Event::Apply(edited));

    // The Role's watch event brings its ServiceAccount up for a sync.
    world.resync_accounts().await;

    let writes = world.writes();
    assert_eq!(writes.len(), 1);
    assert!(writes[0].path.ends_with("/roles/web-healthbridge-agent"));
    assert_eq!(
        writes[0].body["rules"][0]["verbs"],
        serde_json::json!(["get", "list", "watch"])
    );
}

/// The Role the controller applies for [`web_pod`].
fn web_role() -> Role {
    desired_agent_rbac("shop", "web", ["web-7d9f8c6b5d-x2x7q"])
        .remove(0)
        .role
}

#[tokio::test]
async fn a_new_pinned_node_port_is_applied_to_the_existing_service() {
    let pod = web_pod();
    let mut world = world(accepting).with_pod(&pod);
    world.settle(std::slice::from_ref(&pod)).await;
    let mut pinned = pod.clone();
    pinned
        .metadata
        .annotations
        .get_or_insert_default()
        .insert(keys::NODE_PORT.to_owned(), "31500".to_owned());
    world
        .pods
        .apply_watcher_event(&watcher::Event::Apply(CachedPod::from(&pinned)));

    world.reconcile(&pinned).await.unwrap();

    let writes = world.writes();
    assert_eq!(writes.len(), 1, "only the Service changes: {writes:?}");
    assert_eq!(writes[0].body["spec"]["ports"][0]["nodePort"], 31500);
}

fn conflicting(request: &Recorded) -> (StatusCode, Value) {
    if request.method == Method::PATCH && request.path.contains("/services/") {
        return status(
            422,
            "Invalid",
            "Service \"web-healthbridge\" is invalid: spec.ports[0].nodePort: Invalid value: 31500: provided port is already allocated",
        );
    }
    accepting(request)
}

#[tokio::test]
async fn a_node_port_conflict_is_reported_on_the_pod_and_the_deployment_and_retried_slowly() {
    let pod = pod("web-7d9f8c6b5d-x2x7q")
        .injected()
        .in_group("web")
        .owned_by("ReplicaSet", "web-7d9f8c6b5d")
        .with_annotation(keys::NODE_PORT, "31500")
        .build();
    let world = world(conflicting).with_pod(&pod);

    let error = world.reconcile(&pod).await.unwrap_err();

    assert!(matches!(
        error,
        ReconcileError::NodePortConflict {
            node_port: 31500,
            ..
        }
    ));
    assert!(
        error
            .to_string()
            .contains("set healthbridge.io/node-port to a free port"),
        "{error}"
    );
    let events = world.events();
    let regarding: Vec<&str> = events
        .iter()
        .map(|event| event["regarding"]["kind"].as_str().unwrap())
        .collect();
    assert_eq!(regarding, ["Pod", "Deployment"]);
    assert!(
        events
            .iter()
            .all(|event| event["type"] == "Warning" && event["reason"] == "NodePortConflict")
    );
    assert_eq!(world.retry_of(&pod, &error), Action::requeue(SLOW_RETRY));
}

#[tokio::test]
async fn a_forbidden_write_names_the_missing_permission() {
    let pod = web_pod();
    let world = world(|request: &Recorded| {
        if request.method == Method::PATCH && request.path.contains("/rolebindings/") {
            return status(
                403,
                "Forbidden",
                "rolebindings.rbac.authorization.k8s.io is forbidden: User \"system:serviceaccount:healthbridge:healthbridge-webhook\" cannot patch resource \"rolebindings\"",
            );
        }
        accepting(request)
    })
    .with_pod(&pod);
    world.reconcile(&pod).await.unwrap();
    world.sync().await;
    world.forget_requests();

    let error = world.reconcile(&pod).await.unwrap_err();

    assert_eq!(
        error.to_string().split(';').next().unwrap(),
        "the controller may not apply rolebindings in namespace shop: grant it in the controller's ClusterRole (see docs/controller.md)"
    );
    let events = world.events();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["reason"], "Forbidden");
    assert_eq!(world.retry_of(&pod, &error), Action::requeue(SLOW_RETRY));
}

#[tokio::test]
async fn a_conflict_backs_off_exponentially_and_resets_on_success() {
    let pod = web_pod();
    let world = world(|request: &Recorded| {
        if request.method == Method::PATCH && request.path.contains("/roles/") {
            return status(409, "Conflict", "Operation cannot be fulfilled on roles.rbac.authorization.k8s.io: the object has been modified");
        }
        accepting(request)
    })
    .with_pod(&pod);
    world.reconcile(&pod).await.unwrap();
    world.sync().await;

    let error = world.reconcile(&pod).await.unwrap_err();
    assert!(matches!(error.root(), ReconcileError::Api { .. }));

    let delays: Vec<Action> = (0..3).map(|_| world.retry_of(&pod, &error)).collect();
    assert_eq!(
        delays,
        [1, 2, 4].map(|seconds| Action::requeue(Duration::from_secs(seconds)))
    );
    assert_eq!(retry_after(&error, 30), Duration::from_secs(300));
}

#[tokio::test]
async fn a_pod_the_webhook_missed_gets_one_uninjected_warning_and_nothing_else() {
    let pod = pod("web-1").with_annotation(keys::INJECT, "true").build();
    let world = world(accepting).with_pod(&pod);

    world.reconcile(&pod).await.unwrap();
    world.reconcile(&pod).await.unwrap();

    assert!(world.writes().is_empty());
    let events = world.events();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0]["type"], "Warning");
    assert_eq!(events[0]["reason"], "Uninjected");
    assert!(
        events[0]["note"]
            .as_str()
            .unwrap()
            .contains("delete this pod so it is re-created with the agent")
    );
}

#[tokio::test]
async fn an_opted_in_pod_in_a_namespace_the_webhook_skips_is_not_reported() {
    let pod = pod("coredns-1")
        .in_namespace("kube-system")
        .with_annotation(keys::INJECT, "true")
        .build();
    let world = world(accepting).with_pod(&pod);

    world.reconcile(&pod).await.unwrap();

    assert!(world.requests().is_empty());
}

#[tokio::test]
async fn a_pod_without_the_marker_is_left_alone() {
    let pod = pod("web-1").in_group("web").build();
    let world = world(accepting).with_pod(&pod);

    world.reconcile(&pod).await.unwrap();

    assert!(world.requests().is_empty());
}

#[tokio::test]
async fn a_bad_annotation_keeps_the_rbac_and_says_what_to_fix() {
    let pod = pod("web-1")
        .injected()
        .in_group("web")
        .with_annotation(keys::TRAFFIC_POLICY, "Nearest")
        .build();
    let world = world(accepting).with_pod(&pod);

    world.reconcile(&pod).await.unwrap();
    world.sync().await;

    assert_eq!(world.writes().len(), 2, "Role and RoleBinding only");
    let events = world.events();
    assert_eq!(events[0]["reason"], "InvalidAnnotation");
    assert!(
        events[0]["note"]
            .as_str()
            .unwrap()
            .contains("healthbridge.io/traffic-policy: `Nearest`")
    );
}

#[tokio::test]
async fn a_per_pod_service_labels_the_pod_and_selects_that_label() {
    let pod = pod("debug")
        .injected()
        .in_group("debug")
        .with_annotation(keys::SERVICE_SCOPE, "pod")
        .build();
    let world = world(accepting).with_pod(&pod);

    world.reconcile(&pod).await.unwrap();

    let writes = world.writes();
    let label = writes
        .iter()
        .find(|request| request.path == "/api/v1/namespaces/shop/pods/debug")
        .unwrap();
    assert_eq!(label.body["metadata"]["labels"][keys::POD_LABEL], "debug");
    let service = writes
        .iter()
        .find(|request| request.path.ends_with("/services/debug-healthbridge-pod"))
        .unwrap();
    assert_eq!(service.body["spec"]["selector"][keys::POD_LABEL], "debug");
    assert_eq!(
        service.body["metadata"]["ownerReferences"][0]["kind"],
        "Pod"
    );
}

#[tokio::test]
async fn pods_of_a_new_group_reconciled_together_apply_its_service_once() {
    let pods: Vec<Pod> = (1..=5)
        .map(|index| {
            pod(&format!("web-{index}"))
                .injected()
                .in_group("web")
                .build()
        })
        .collect();
    let world = world(accepting).with_pods(&pods);

    let results = futures::future::join_all(pods.iter().map(|pod| world.reconcile(pod))).await;

    assert!(results.iter().all(Result::is_ok));
    let services = world
        .writes()
        .into_iter()
        .filter(|request| request.path.contains("/services/"))
        .count();
    assert_eq!(services, 1);
}

#[tokio::test]
async fn the_group_service_follows_the_newest_pod_of_the_group() {
    let old = pod("web-old")
        .injected()
        .in_group("web")
        .created_at(1_700_000_000)
        .build();
    let new = pod("web-new")
        .injected()
        .in_group("web")
        .created_at(1_700_000_600)
        .with_annotation(keys::NODE_PORT, "31999")
        .build();
    let world = world(accepting).with_pods(&[old.clone(), new]);

    world.reconcile(&old).await.unwrap();

    let service = world
        .writes()
        .into_iter()
        .find(|request| request.path.contains("/services/"))
        .unwrap();
    assert_eq!(service.body["spec"]["ports"][0]["nodePort"], 31999);
}

fn unowned_group_service(group: &str) -> Service {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": format!("{group}-healthbridge"), "namespace": "shop", "uid": "svc-uid", "resourceVersion": "7",
            "labels": {keys::MANAGED_BY_LABEL: keys::MANAGED_BY, keys::GROUP_LABEL: group}},
        "spec": {"type": "NodePort", "selector": {keys::GROUP_LABEL: group}}
    }))
    .unwrap()
}

#[tokio::test]
async fn an_unowned_group_service_is_deleted_when_its_last_pod_is_gone() {
    let mut world = world(accepting);
    world
        .services
        .apply_watcher_event(&watcher::Event::Apply(unowned_group_service("debug")));

    assert_eq!(collect_garbage(&world.ctx).await, 1);

    let writes = world.writes();
    assert_eq!(writes.len(), 1);
    assert_eq!(writes[0].method, Method::DELETE);
    assert_eq!(
        writes[0].path,
        "/api/v1/namespaces/shop/services/debug-healthbridge"
    );
    assert_eq!(
        writes[0].body["preconditions"],
        serde_json::json!({"uid": "svc-uid", "resourceVersion": "7"})
    );
}

#[tokio::test]
async fn a_group_service_with_a_live_pod_is_kept() {
    let mut world =
        world(accepting).with_pods(&[pod("debug").injected().in_group("debug").build()]);
    world
        .services
        .apply_watcher_event(&watcher::Event::Apply(unowned_group_service("debug")));
    let mut owned = unowned_group_service("web");
    owned.meta_mut().owner_references =
        Some(vec![controller_support::owner("Deployment", "web", false)]);
    world
        .services
        .apply_watcher_event(&watcher::Event::Apply(owned));

    assert_eq!(collect_garbage(&world.ctx).await, 0);
    assert!(world.requests().is_empty());
}

// ---------------------------------------------------------------- what a pod author cannot make the controller do

fn checkout_pod() -> Pod {
    pod("checkout-7d9f8c6b5d-x2x7q")
        .injected()
        .in_group("checkout")
        .owned_by("ReplicaSet", "checkout-7d9f8c6b5d")
        .app_on_port(8080)
        .created_at(1_700_000_000)
        .build()
}

/// The world after the checkout Deployment's pod got its Service, with the caches up to date.
async fn checkout_world(
    respond: impl Fn(&Recorded) -> (StatusCode, Value) + Send + Sync + 'static,
) -> World {
    let mut world = world(respond).with_pods(&[checkout_pod()]);
    world.settle(&[checkout_pod()]).await;
    world
}

fn service_writes(world: &World) -> Vec<Recorded> {
    world
        .writes()
        .into_iter()
        .filter(|request| request.path.contains("/services/"))
        .collect()
}

#[tokio::test]
async fn ready_is_created_anew_each_time_while_a_repeated_warning_is_counted_as_a_series() {
    let untrusted = pod("intruder").with_marker().in_group("web").build();
    let ready = web_pod();
    let mut world = world(accepting).with_pods(&[ready.clone(), untrusted.clone()]);
    world.settle(std::slice::from_ref(&ready)).await;
    // The pod's Service settings change: the next reconcile applies the Service and tells the pod Ready again.
    let changed = pod("web-7d9f8c6b5d-x2x7q")
        .injected()
        .in_group("web")
        .owned_by("ReplicaSet", "web-7d9f8c6b5d")
        .with_service_account("web")
        .with_annotation(keys::TRAFFIC_POLICY, "Cluster")
        .build();
    world
        .pods
        .apply_watcher_event(&watcher::Event::Apply(CachedPod::from(&changed)));

    world.reconcile(&changed).await.unwrap();
    world.reconcile(&untrusted).await.unwrap();
    world.reconcile(&untrusted).await.unwrap();

    let events: Vec<(Method, String)> = world
        .requests()
        .into_iter()
        .filter(Recorded::is_event)
        .map(|request| {
            let reason = request.body["reason"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            (request.method, reason)
        })
        .collect();
    assert_eq!(
        events,
        [
            // Ready is not kept by the recorder (one per pod of a burst would stay in memory for minutes).
            (Method::POST, "Ready".to_owned()),
            (Method::POST, "Untrusted".to_owned()),
            (Method::PATCH, "Untrusted".to_owned()),
        ]
    );
}

#[tokio::test]
async fn a_forged_marker_with_a_hand_set_group_label_gets_nothing() {
    let forged = pod("intruder")
        .with_marker()
        .in_group("checkout")
        .app_on_port(8080)
        .with_annotation(keys::PORT, "8080")
        .build();
    let world = checkout_world(accepting).await.with_pod(&forged);

    world.reconcile(&forged).await.unwrap();
    world.reconcile(&checkout_pod()).await.unwrap();

    assert!(world.writes().is_empty(), "{:?}", world.writes());
    let events = world.events();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["reason"], "Untrusted");
    assert_eq!(events[0]["regarding"]["name"], "intruder");
    let note = events[0]["note"].as_str().unwrap();
    assert!(note.contains("no healthbridge-agent container"), "{note}");
}

/// Reconciles the pod `forged` alone, which must get no write: the note of the event it got.
async fn note_for_untrusted(forged: &Pod) -> String {
    let world = world(accepting).with_pod(forged);

    world.reconcile(forged).await.unwrap();

    assert!(world.writes().is_empty(), "{:?}", world.writes());
    world.events()[0]["note"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn an_agent_container_on_the_apps_port_is_not_trusted() {
    // The pod author adds a container named like the agent, serving on the app's own port.
    let forged = pod("web-1")
        .with_marker()
        .in_group("web")
        .app_on_port(8080)
        .with_agent(controller_support::agent_container(
            controller_support::AGENT_IMAGE,
            8080,
        ))
        .build();
    let note = note_for_untrusted(&forged).await;
    assert!(
        note.contains("port 8080 is also declared by container \"app\""),
        "{note}"
    );
}

#[tokio::test]
async fn an_agent_container_of_another_image_is_not_trusted() {
    let forged = pod("web-1")
        .with_marker()
        .in_group("web")
        .with_agent(controller_support::agent_container(
            "docker.io/library/nginx:1.27",
            13000,
        ))
        .build();
    let note = note_for_untrusted(&forged).await;
    assert!(
        note.contains("not from an allowed agent repository (docker.io/healthbridge/agent)"),
        "{note}"
    );
}

#[tokio::test]
async fn another_workloads_pod_claiming_the_group_leaves_its_service_unchanged() {
    // A newer pod of Deployment "evil", injected for real, names the checkout group and puts its agent on the
    // checkout app's port: before, the group's Service followed it and pointed at 8080 on every checkout pod.
    let claimant = pod("evil-5d8f7c9b6d-aaaaa")
        .injected_on_port(8080)
        .in_group("checkout")
        .with_annotation(keys::SERVICE, "checkout")
        .with_annotation(keys::NODE_PORT, "31999")
        .owned_by("ReplicaSet", "evil-5d8f7c9b6d")
        .created_at(1_700_000_600)
        .build();
    let world = checkout_world(accepting).await.with_pod(&claimant);

    let error = world.reconcile(&claimant).await.unwrap_err();
    world.reconcile(&checkout_pod()).await.unwrap();

    assert!(
        service_writes(&world).is_empty(),
        "{:?}",
        service_writes(&world)
    );
    assert_eq!(
        error.to_string(),
        "group \"checkout\" belongs to Deployment checkout (its Service shop/checkout-healthbridge), and this pod belongs to Deployment evil: a pod joins a group only with the group's owner, so the Service stays as it is; set healthbridge.io/service to a group of this pod's own"
    );
    assert_eq!(
        world.retry_of(&claimant, &error),
        Action::requeue(SLOW_RETRY)
    );
    let regarding: Vec<(String, String)> = world
        .events()
        .iter()
        .map(|event| {
            assert_eq!(event["reason"], "GroupClaimed");
            (
                event["regarding"]["kind"].as_str().unwrap().to_owned(),
                event["regarding"]["name"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        regarding,
        [
            ("Pod".to_owned(), "evil-5d8f7c9b6d-aaaaa".to_owned()),
            ("Service".to_owned(), "checkout-healthbridge".to_owned())
        ]
    );
}

#[tokio::test]
async fn a_bare_pod_claiming_a_workloads_group_leaves_its_service_unchanged() {
    let claimant = pod("intruder")
        .injected_on_port(8080)
        .in_group("checkout")
        .created_at(1_700_000_600)
        .build();
    let world = checkout_world(accepting).await.with_pod(&claimant);

    let error = world.reconcile(&claimant).await.unwrap_err();

    assert!(service_writes(&world).is_empty());
    assert!(
        error
            .to_string()
            .contains("this pod belongs to no workload (bare pods and Job pods)"),
        "{error}"
    );
}

#[tokio::test]
async fn the_groups_service_follows_the_newest_pod_of_its_own_workload() {
    let next = pod("checkout-6c8e7b5a4c-y3y8r")
        .injected_on_port(13000)
        .in_group("checkout")
        .owned_by("ReplicaSet", "checkout-6c8e7b5a4c")
        .with_annotation(keys::NODE_PORT, "31080")
        .created_at(1_700_000_300)
        .build();
    let world = checkout_world(accepting).await.with_pod(&next);

    world.reconcile(&checkout_pod()).await.unwrap();

    let writes = service_writes(&world);
    assert_eq!(writes.len(), 1, "{writes:?}");
    assert_eq!(writes[0].body["spec"]["ports"][0]["nodePort"], 31080);
}

#[tokio::test]
async fn a_bare_pod_named_like_a_group_with_a_per_pod_service_never_writes_the_groups_service() {
    let namesake = pod("checkout")
        .injected()
        .in_group("checkout")
        .with_annotation(keys::SERVICE_SCOPE, "pod")
        .build();
    let world = checkout_world(accepting).await.with_pod(&namesake);

    world.reconcile(&namesake).await.unwrap();

    let paths: Vec<String> = service_writes(&world)
        .into_iter()
        .map(|request| request.path)
        .collect();
    assert_eq!(
        paths,
        ["/api/v1/namespaces/shop/services/checkout-healthbridge-pod"]
    );
}

/// A Service or Role of `name` exists and was made by someone else: no managed-by label.
fn with_unmanaged(name: &'static str) -> impl Fn(&Recorded) -> (StatusCode, Value) {
    move |request: &Recorded| {
        if request.method == Method::GET && request.path.ends_with(&format!("/{name}")) {
            return (
                StatusCode::OK,
                serde_json::json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
                    "metadata": {"name": name, "namespace": "shop", "uid": "theirs", "labels": {"team": "ops"}}}),
            );
        }
        accepting(request)
    }
}

#[tokio::test]
async fn a_service_healthbridge_does_not_manage_is_never_applied_over() {
    let pod = web_pod();
    let world = world(with_unmanaged("web-healthbridge")).with_pod(&pod);

    let error = world.reconcile(&pod).await.unwrap_err();

    assert!(
        service_writes(&world).is_empty(),
        "{:?}",
        service_writes(&world)
    );
    assert!(
        error.to_string().starts_with(
            "Service shop/web-healthbridge exists and is not managed by healthbridge (it lacks the label app.kubernetes.io/managed-by=healthbridge)"
        ),
        "{error}"
    );
    let told = world.event_reasons_and_kinds();
    assert_eq!(
        told,
        [
            ("NameConflict".into(), "Pod".into()),
            ("NameConflict".into(), "Service".into())
        ]
    );
}

#[tokio::test]
async fn a_role_healthbridge_does_not_manage_is_never_applied_over() {
    let pod = web_pod();
    let world = world(with_unmanaged("web-healthbridge-agent")).with_pod(&pod);
    world.reconcile(&pod).await.unwrap();
    world.sync().await;

    let error = world.reconcile(&pod).await.unwrap_err();

    let rbac_writes: Vec<Recorded> = world
        .writes()
        .into_iter()
        .filter(|request| request.path.contains("/rbac.authorization.k8s.io/"))
        .collect();
    assert!(rbac_writes.is_empty(), "{rbac_writes:?}");
    assert!(
        error.to_string().starts_with(
            "Role shop/web-healthbridge-agent exists and is not managed by healthbridge"
        ),
        "{error}"
    );
    let told = world.event_reasons_and_kinds();
    assert_eq!(
        told,
        [
            ("NameConflict".into(), "Pod".into()),
            ("NameConflict".into(), "Role".into())
        ]
    );
}

#[tokio::test]
async fn a_per_pod_service_of_the_old_name_is_deleted_once_the_new_one_exists() {
    let debug = pod("debug")
        .injected()
        .in_group("debug")
        .with_annotation(keys::SERVICE_SCOPE, "pod")
        .build();
    let mut world = world(accepting).with_pod(&debug);
    let legacy: Service = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": "debug-healthbridge", "namespace": "shop", "uid": "legacy-uid", "resourceVersion": "3",
            "labels": {keys::MANAGED_BY_LABEL: keys::MANAGED_BY, keys::POD_LABEL: "debug"},
            "ownerReferences": [{"apiVersion": "v1", "kind": "Pod", "name": "debug", "uid": "uid-debug", "controller": true}]},
        "spec": {"type": "NodePort", "selector": {keys::POD_LABEL: "debug"}}
    }))
    .unwrap();
    world
        .services
        .apply_watcher_event(&watcher::Event::Apply(legacy));

    world.reconcile(&debug).await.unwrap();

    let deletes: Vec<Recorded> = world
        .writes()
        .into_iter()
        .filter(|request| request.method == Method::DELETE)
        .collect();
    assert_eq!(deletes.len(), 1);
    assert_eq!(
        deletes[0].path,
        "/api/v1/namespaces/shop/services/debug-healthbridge"
    );
    assert_eq!(
        deletes[0].body["preconditions"],
        serde_json::json!({"uid": "legacy-uid", "resourceVersion": "3"})
    );
}

#[tokio::test]
async fn a_marker_in_a_namespace_the_webhook_never_injects_is_ignored() {
    let pod = pod("coredns-1")
        .in_namespace("kube-system")
        .injected()
        .in_group("coredns")
        .build();
    let world = world(accepting).with_pod(&pod);

    world.reconcile(&pod).await.unwrap();

    assert!(world.requests().is_empty());
}
