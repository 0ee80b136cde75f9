//! The agents' RBAC per ServiceAccount: who is in a Role, who is bound, when it is written and deleted, chunking,
//! and the migration from the per-pod Roles of older versions.
#![allow(clippy::unwrap_used)]

mod controller_support;

use controller_support::world::world;
use controller_support::{accepting, agent_container, pod};
use healthbridge_webhook::controller::desired::{MAX_NAMES_PER_ROLE, SERVICE_ACCOUNT_ANNOTATION};
use healthbridge_webhook::controller::rbac::{AgentAccounts, granted_names};
use healthbridge_webhook::keys;
use http::Method;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::runtime::watcher;
use serde_json::{Value, json};

const RBAC: &str = "/apis/rbac.authorization.k8s.io/v1/namespaces";

fn web(name: &str) -> Pod {
    pod(name)
        .injected()
        .in_group("web")
        .with_service_account("web")
        .build()
}

fn role_bodies(world: &controller_support::world::World) -> Vec<(String, Value)> {
    world
        .writes()
        .into_iter()
        .filter(|request| request.method == Method::PATCH && request.path.contains("/roles/"))
        .map(|request| (request.path, request.body))
        .collect()
}

#[tokio::test]
async fn pods_of_one_service_account_share_one_role_listing_exactly_their_names() {
    let pods = [
        web("web-2"),
        web("web-1"),
        pod("api-1")
            .injected()
            .in_group("api")
            .with_service_account("api")
            .build(),
        pod("web-1")
            .in_namespace("other")
            .injected()
            .in_group("web")
            .with_service_account("web")
            .build(),
        // Same ServiceAccount, but not what the webhook injects: never granted.
        pod("forged")
            .with_marker()
            .in_group("web")
            .with_service_account("web")
            .build(),
        pod("plain")
            .in_group("web")
            .with_service_account("web")
            .build(),
    ];
    let world = world(accepting).with_pods(&pods);

    for pod in &pods {
        world.reconcile(pod).await.unwrap();
    }
    world.sync().await;

    let roles = role_bodies(&world);
    let mut granted: Vec<(String, Value)> = roles
        .iter()
        .map(|(path, body)| (path.clone(), body["rules"][0]["resourceNames"].clone()))
        .collect();
    granted.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        granted,
        [
            (
                format!("{RBAC}/other/roles/web-healthbridge-agent"),
                json!(["web-1"])
            ),
            (
                format!("{RBAC}/shop/roles/api-healthbridge-agent"),
                json!(["api-1"])
            ),
            (
                format!("{RBAC}/shop/roles/web-healthbridge-agent"),
                json!(["web-1", "web-2"])
            ),
        ]
    );
    let binding = world
        .writes()
        .into_iter()
        .find(|request| request.path == format!("{RBAC}/shop/rolebindings/web-healthbridge-agent"))
        .unwrap();
    assert_eq!(
        binding.body["subjects"],
        json!([{"kind": "ServiceAccount", "name": "web", "namespace": "shop"}])
    );
    assert_eq!(binding.body["roleRef"]["name"], "web-healthbridge-agent");
}

#[tokio::test]
async fn a_rollout_of_many_pods_writes_the_role_once_not_once_per_pod() {
    let pods: Vec<Pod> = (0..50)
        .map(|index| web(&format!("web-{index:02}")))
        .collect();
    let world = world(accepting).with_pods(&pods);

    futures::future::join_all(pods.iter().map(|pod| world.reconcile(pod))).await;
    for pod in &pods {
        world.reconcile(pod).await.unwrap();
    }
    world.sync().await;

    let roles = role_bodies(&world);
    assert_eq!(
        roles.len(),
        1,
        "{:?}",
        roles.iter().map(|r| &r.0).collect::<Vec<_>>()
    );
    assert_eq!(
        roles[0].1["rules"][0]["resourceNames"]
            .as_array()
            .unwrap()
            .len(),
        50
    );
}

#[tokio::test]
async fn a_pod_authors_annotations_and_labels_cannot_add_names_or_change_the_subject() {
    let sneaky = pod("sneaky")
        .injected()
        .in_group("web")
        .with_service_account("web")
        .with_annotation(SERVICE_ACCOUNT_ANNOTATION, "admin")
        .with_annotation("healthbridge.io/resource-names", "payments-db-0")
        .with_label(SERVICE_ACCOUNT_ANNOTATION, "admin")
        .build();
    let world = world(accepting).with_pod(&sneaky);

    world.reconcile(&sneaky).await.unwrap();
    world.sync().await;

    let rbac: Vec<(String, Value)> = world
        .writes()
        .into_iter()
        .filter(|request| request.path.starts_with(RBAC))
        .map(|request| (request.path, request.body))
        .collect();
    let paths: Vec<&str> = rbac.iter().map(|(path, _)| path.as_str()).collect();
    assert_eq!(
        paths,
        [
            format!("{RBAC}/shop/roles/web-healthbridge-agent"),
            format!("{RBAC}/shop/rolebindings/web-healthbridge-agent")
        ]
    );
    assert_eq!(rbac[0].1["rules"][0]["resourceNames"], json!(["sneaky"]));
    assert_eq!(rbac[1].1["subjects"][0]["name"], "web");
    assert_eq!(
        rbac[1].1["metadata"]["annotations"][SERVICE_ACCOUNT_ANNOTATION],
        "web"
    );
}

#[tokio::test]
async fn a_pod_whose_agent_is_no_longer_trusted_leaves_the_role() {
    let (stays, tampered) = (web("web-1"), web("web-2"));
    let mut world = world(accepting).with_pods(&[stays.clone(), tampered.clone()]);
    world.settle(&[stays.clone(), tampered.clone()]).await;
    let mut changed = tampered.clone();
    if let Some(spec) = changed.spec.as_mut() {
        spec.init_containers = Some(vec![agent_container("docker.io/library/nginx:1.27", 13000)]);
    }
    world = world.with_pod(&changed);

    world.reconcile(&changed).await.unwrap();
    world.sync().await;

    let roles = role_bodies(&world);
    assert_eq!(roles.len(), 1);
    assert_eq!(roles[0].1["rules"][0]["resourceNames"], json!(["web-1"]));
}

#[tokio::test]
async fn the_last_pod_gone_deletes_the_binding_then_the_role_with_preconditions() {
    let pod = web("web-1");
    let mut world = world(accepting).with_pod(&pod);
    world.settle(std::slice::from_ref(&pod)).await;

    world.without_pod(&pod);
    world.sync_account("shop", "web").await;

    let deletes: Vec<(String, Value)> = world
        .writes()
        .into_iter()
        .map(|request| {
            assert_eq!(request.method, Method::DELETE);
            (request.path, request.body["preconditions"].clone())
        })
        .collect();
    assert_eq!(
        deletes,
        [
            (
                format!("{RBAC}/shop/rolebindings/web-healthbridge-agent"),
                json!({"uid": "uid-web-healthbridge-agent", "resourceVersion": "1"})
            ),
            (
                format!("{RBAC}/shop/roles/web-healthbridge-agent"),
                json!({"uid": "uid-web-healthbridge-agent", "resourceVersion": "1"})
            ),
        ]
    );
}

#[tokio::test]
async fn housekeeping_finds_a_role_whose_pods_went_unseen() {
    // A controller restarted after the pods were deleted: no Delete event, only the Role in the cache.
    let pod = web("web-1");
    let mut world = world(accepting).with_pod(&pod);
    world.settle(std::slice::from_ref(&pod)).await;
    world.without_pod(&pod);

    assert_eq!(world.resync_accounts().await, 1);

    assert_eq!(world.written(Method::DELETE).len(), 2);
}

#[tokio::test]
async fn one_pod_leaving_rewrites_the_role_without_it() {
    let pods = [web("web-1"), web("web-2")];
    let mut world = world(accepting).with_pods(&pods);
    world.settle(&pods).await;

    world.without_pod(&pods[0]);
    world.sync_account("shop", "web").await;

    let roles = role_bodies(&world);
    assert_eq!(roles.len(), 1);
    assert_eq!(roles[0].1["rules"][0]["resourceNames"], json!(["web-2"]));
    assert!(world.written(Method::DELETE).is_empty());
}

#[tokio::test]
async fn past_the_per_role_limit_more_roles_are_written_and_dropped_when_no_longer_needed() {
    let pods: Vec<Pod> = (0..=MAX_NAMES_PER_ROLE)
        .map(|index| web(&format!("web-{index:05}")))
        .collect();
    let mut world = world(accepting).with_pods(&pods);
    world.sync_account("shop", "web").await;

    let mut paths = world.written(Method::PATCH);
    paths.sort();
    assert_eq!(
        paths,
        [
            format!("{RBAC}/shop/rolebindings/web-healthbridge-agent"),
            format!("{RBAC}/shop/rolebindings/web-healthbridge-agent-1"),
            format!("{RBAC}/shop/roles/web-healthbridge-agent"),
            format!("{RBAC}/shop/roles/web-healthbridge-agent-1"),
        ]
    );
    let roles = role_bodies(&world);
    let second = roles
        .iter()
        .find(|(path, _)| path.ends_with("-agent-1"))
        .unwrap();
    assert_eq!(
        second.1["rules"][0]["resourceNames"],
        json!([format!("web-{MAX_NAMES_PER_ROLE:05}")])
    );
    world.observe_applied();
    world.forget_requests();

    // Steady state: nothing to write.
    assert_eq!(world.resync_accounts().await, 1);
    assert!(
        world.writes().is_empty(),
        "{:?}",
        world.written(Method::PATCH)
    );

    // Back under the limit: the first Role is rewritten, the second goes (binding first).
    world.without_pod(&pods[0]);
    world.sync_account("shop", "web").await;
    assert_eq!(
        world.written(Method::PATCH),
        [format!("{RBAC}/shop/roles/web-healthbridge-agent")]
    );
    assert_eq!(
        world.written(Method::DELETE),
        [
            format!("{RBAC}/shop/rolebindings/web-healthbridge-agent-1"),
            format!("{RBAC}/shop/roles/web-healthbridge-agent-1"),
        ]
    );
}

#[tokio::test]
async fn a_resync_of_settled_pods_writes_nothing() {
    let pods: Vec<Pod> = (0..20)
        .map(|index| {
            pod(&format!("pod-{index}"))
                .injected()
                .in_group(if index % 2 == 0 { "web" } else { "api" })
                .with_service_account(if index % 2 == 0 { "web" } else { "api" })
                .build()
        })
        .collect();
    let mut world = world(accepting).with_pods(&pods);
    world.settle(&pods).await;

    for pod in &pods {
        world.reconcile(pod).await.unwrap();
    }
    assert_eq!(world.resync_accounts().await, 2);

    assert!(world.requests().is_empty(), "{:?}", world.requests());
}

fn legacy<K: serde::de::DeserializeOwned>(kind: &str, pod: &str, uid: &str) -> K {
    let mut object = json!({
        "metadata": {"name": format!("{pod}-healthbridge"), "namespace": "shop", "uid": format!("{kind}-{pod}"), "resourceVersion": "9",
            "labels": {keys::MANAGED_BY_LABEL: keys::MANAGED_BY},
            "ownerReferences": [{"apiVersion": "v1", "kind": "Pod", "name": pod, "uid": uid, "controller": true}]},
    });
    if kind == "role" {
        object["rules"] = json!([{"apiGroups": [""], "resources": ["pods"], "resourceNames": [pod], "verbs": ["get", "list", "watch"]}]);
    } else {
        object["roleRef"] = json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": format!("{pod}-healthbridge")});
        object["subjects"] =
            json!([{"kind": "ServiceAccount", "name": "web", "namespace": "shop"}]);
    }
    serde_json::from_value(object).unwrap()
}

#[tokio::test]
async fn an_upgrade_deletes_the_per_pod_role_and_binding_once_the_service_account_role_covers_the_pod()
 {
    let pod = web("web-1");
    let mut world = world(accepting).with_pod(&pod);
    world
        .roles
        .apply_watcher_event(&watcher::Event::Apply(legacy::<Role>(
            "role",
            "web-1",
            "uid-web-1",
        )));
    world
        .role_bindings
        .apply_watcher_event(&watcher::Event::Apply(legacy::<RoleBinding>(
            "binding",
            "web-1",
            "uid-web-1",
        )));
    // A per-pod Role of a pod that is not this one (another UID under the name: its predecessor) is left to the
    // garbage collector.
    world
        .roles
        .apply_watcher_event(&watcher::Event::Apply(legacy::<Role>(
            "role",
            "web-2",
            "uid-web-2-old",
        )));

    world.reconcile(&pod).await.unwrap();
    assert!(
        world.written(Method::DELETE).is_empty(),
        "not before the new Role is in place"
    );
    world.sync().await;
    world.observe_applied();
    world.forget_requests();

    world.reconcile(&pod).await.unwrap();

    let deletes: Vec<(String, Value)> = world
        .writes()
        .into_iter()
        .filter(|request| request.method == Method::DELETE)
        .map(|request| (request.path, request.body["preconditions"].clone()))
        .collect();
    assert_eq!(
        deletes,
        [
            (
                format!("{RBAC}/shop/rolebindings/web-1-healthbridge"),
                json!({"uid": "binding-web-1", "resourceVersion": "9"})
            ),
            (
                format!("{RBAC}/shop/roles/web-1-healthbridge"),
                json!({"uid": "role-web-1", "resourceVersion": "9"})
            ),
        ]
    );
}

#[tokio::test]
async fn pods_waiting_for_their_role_are_reconciled_again_after_the_sync() {
    let (requeue, mut requeued) = futures::channel::mpsc::unbounded();
    let pod = web("web-1");
    let mut world = world(accepting).with_pod(&pod);
    let ctx = std::sync::Arc::get_mut(&mut world.ctx).unwrap();
    ctx.accounts = AgentAccounts::with_requeue(requeue);

    world.reconcile(&pod).await.unwrap();
    assert!(requeued.try_recv().is_err(), "nothing before the sync");
    world.sync().await;

    let again = requeued.try_recv().unwrap();
    assert_eq!(
        (again.name.as_str(), again.namespace.as_deref()),
        ("web-1", Some("shop"))
    );
}

#[tokio::test]
async fn a_terminating_pod_keeps_its_name_while_its_agent_drains() {
    let mut draining = web("web-1");
    draining.metadata.deletion_timestamp = draining.metadata.creation_timestamp.clone();
    let world = world(accepting).with_pod(&draining);

    assert_eq!(
        granted_names(&world.ctx, &("shop".to_owned(), "web".to_owned())),
        ["web-1"]
    );
}
