//! The desired agent Roles and RoleBindings of a ServiceAccount and the Service of a pod, from fixtures: names, owners, settings and drift detection.
#![allow(clippy::unwrap_used)]

mod controller_support;

use controller_support::{owner, pod};
use healthbridge_webhook::controller::desired::{
    self, MAX_NAMES_PER_ROLE, NodePortRange, SERVICE_ACCOUNT_ANNOTATION, ServiceScope,
    SettingsError, TrafficPolicy, WorkloadOwner, desired_agent_rbac, desired_service, granted_pods,
    is_injected, is_uninjected, needs_apply, pod_identity, pod_label_value, replica_set_owner,
    service_settings, service_target,
};
use healthbridge_webhook::controller::names::{agent_rbac_name, object_name, short_hash};
use healthbridge_webhook::keys;
use k8s_openapi::api::apps::v1::ReplicaSet;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use serde_json::json;

fn fixture<T: serde::de::DeserializeOwned>(name: &str) -> T {
    let path = format!(
        "{}/tests/data/controller/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn one_role_per_service_account_grants_exactly_its_pods_names_sorted() {
    let rbac = desired_agent_rbac("shop", "checkout", ["web-b", "web-a", "web-a"]);

    assert_eq!(rbac.len(), 1);
    let role = &rbac[0].role;
    assert_eq!(role.name_any(), "checkout-healthbridge-agent");
    assert_eq!(role.namespace().as_deref(), Some("shop"));
    assert_eq!(
        serde_json::to_value(&role.rules).unwrap(),
        json!([{"apiGroups": [""], "resources": ["pods"], "resourceNames": ["web-a", "web-b"], "verbs": ["get", "list", "watch"]}])
    );
    assert_eq!(
        role.labels()
            .get(keys::MANAGED_BY_LABEL)
            .map(String::as_str),
        Some(keys::MANAGED_BY)
    );
    assert_eq!(
        role.annotations()
            .get(SERVICE_ACCOUNT_ANNOTATION)
            .map(String::as_str),
        Some("checkout")
    );
}

#[test]
fn the_role_and_binding_have_no_owner_no_pod_holds_them() {
    let rbac = desired_agent_rbac("shop", "checkout", ["web-a"]);
    assert!(rbac[0].role.owner_references().is_empty());
    assert!(rbac[0].binding.owner_references().is_empty());
}

#[test]
fn the_binding_gives_the_role_to_that_service_account_only() {
    let binding = &desired_agent_rbac("shop", "checkout", ["web-a"])[0].binding;

    assert_eq!(binding.role_ref.kind, "Role");
    assert_eq!(binding.role_ref.name, "checkout-healthbridge-agent");
    assert_eq!(
        serde_json::to_value(&binding.subjects).unwrap(),
        json!([{"kind": "ServiceAccount", "name": "checkout", "namespace": "shop"}])
    );
}

#[test]
fn no_pods_no_role() {
    assert!(desired_agent_rbac("shop", "checkout", std::iter::empty::<&str>()).is_empty());
}

#[test]
fn past_the_per_role_limit_the_names_are_cut_into_numbered_roles_the_same_way_every_time() {
    let names: Vec<String> = (0..2 * MAX_NAMES_PER_ROLE + 1)
        .map(|index| format!("web-{index:05}"))
        .collect();
    let mut shuffled = names.clone();
    shuffled.reverse();

    let rbac = desired_agent_rbac("shop", "web", names.iter().map(String::as_str));

    let role_names: Vec<String> = rbac.iter().map(|chunk| chunk.role.name_any()).collect();
    assert_eq!(
        role_names,
        [
            "web-healthbridge-agent",
            "web-healthbridge-agent-1",
            "web-healthbridge-agent-2"
        ]
    );
    for chunk in &rbac {
        assert_eq!(chunk.binding.name_any(), chunk.role.name_any());
        assert_eq!(chunk.binding.role_ref.name, chunk.role.name_any());
        assert!(granted_pods(&chunk.role).len() <= MAX_NAMES_PER_ROLE);
    }
    let granted: Vec<String> = rbac
        .iter()
        .flat_map(|chunk| granted_pods(&chunk.role).to_vec())
        .collect();
    assert_eq!(granted, names);
    assert_eq!(
        desired_agent_rbac("shop", "web", shuffled.iter().map(String::as_str)),
        rbac
    );
}

#[test]
fn a_full_role_of_the_longest_pod_names_stays_under_etcds_request_limit() {
    // Pod names are DNS subdomains: at most 253 characters.
    let names: Vec<String> = (0..MAX_NAMES_PER_ROLE)
        .map(|index| format!("{index:05}{}", "a".repeat(248)))
        .collect();

    let rbac = desired_agent_rbac("shop", "web", names.iter().map(String::as_str));

    assert_eq!(rbac.len(), 1);
    let size = serde_json::to_vec(&rbac[0].role).unwrap().len();
    assert!(size < 1_572_864, "{size} bytes");
}

#[test]
fn agent_rbac_names_never_collide_with_the_per_pod_names_of_older_versions() {
    let long = "s".repeat(200);
    for base in [
        "web",
        "web-healthbridge",
        "web-healthbridge-agent",
        long.as_str(),
    ] {
        for chunk in [0, 1, 12] {
            let name = agent_rbac_name(base, chunk);
            assert!(name.len() <= 63, "{name}");
            assert!(!name.ends_with("-healthbridge"), "{name}");
            for pod in ["web", "web-healthbridge-agent", long.as_str()] {
                assert_ne!(name, object_name(pod));
            }
        }
    }
    assert_eq!(agent_rbac_name("web", 0), "web-healthbridge-agent");
    assert_eq!(agent_rbac_name("web", 2), "web-healthbridge-agent-2");
}

#[test]
fn a_pod_without_a_service_account_binds_default() {
    let identity = pod_identity(&pod("web-1").injected().build()).unwrap();
    assert_eq!(identity.service_account, "default");
}

#[test]
fn a_pod_not_yet_named_is_not_reconciled() {
    let mut unnamed = pod("web-1").injected().build();
    unnamed.metadata.name = None;
    assert!(
        pod_identity(&unnamed)
            .unwrap_err()
            .to_string()
            .contains("no name yet")
    );
}

#[test]
fn a_63_character_name_is_hashed_and_stays_stable() {
    let pod: Pod = fixture("statefulset-pod.json");
    let name = object_name(&pod_identity(&pod).unwrap().name);

    assert_eq!(name.len(), 63);
    assert!(name.ends_with(&format!(
        "-{}-healthbridge",
        short_hash("a-very-long-statefulset-name-for-the-orders-database-replica-0")
    )));
    // Pinned, so an upgrade never renames (and orphans) existing objects, and finds the per-pod Roles of older
    // versions to delete.
    assert_eq!(
        name,
        "a-very-long-statefulset-name-for-the-orde-c5c97f62-healthbridge"
    );
}

#[test]
fn the_group_service_is_owned_by_the_deployment_found_through_the_replicaset() {
    let pod: Pod = fixture("deployment-pod.json");
    let replica_set: ReplicaSet = fixture("replicaset.json");

    let WorkloadOwner::ViaReplicaSet(via) = desired::workload_owner(pod.owner_references()) else {
        panic!("a ReplicaSet pod needs its ReplicaSet read");
    };
    assert_eq!(via.name, "checkout-7d9f8c6b5d");
    let deployment = replica_set_owner(&via, replica_set.owner_references());

    assert_eq!(deployment.kind, "Deployment");
    assert_eq!(deployment.name, "checkout");
    assert_eq!(deployment.uid, "9e8d7c6b-dddd-eeee-ffff-000000000002");
    assert_eq!(deployment.controller, Some(false));
    assert_eq!(deployment.block_owner_deletion, Some(false));
}

#[test]
fn a_replicaset_without_a_deployment_owns_the_service_itself() {
    let via = owner("ReplicaSet", "bare-rs", true);
    let workload = replica_set_owner(&via, &[]);
    assert_eq!(
        (workload.kind.as_str(), workload.name.as_str()),
        ("ReplicaSet", "bare-rs")
    );
}

#[test]
fn statefulset_and_daemonset_pods_are_owned_directly() {
    for kind in ["StatefulSet", "DaemonSet"] {
        let pod = pod("db-0").owned_by(kind, "db").build();
        let WorkloadOwner::Resolved(Some(workload)) =
            desired::workload_owner(pod.owner_references())
        else {
            panic!("{kind} pods have their workload as owner");
        };
        assert_eq!(workload.kind, kind);
    }
}

#[test]
fn job_and_bare_pods_have_no_workload_owner() {
    let job_pod = pod("migrate-x7").owned_by("Job", "migrate").build();
    assert_eq!(
        desired::workload_owner(job_pod.owner_references()),
        WorkloadOwner::Resolved(None)
    );
    assert_eq!(desired::workload_owner(&[]), WorkloadOwner::Resolved(None));
}

#[test]
fn the_group_service_selects_the_group_on_the_agent_port_with_the_pinned_node_port() {
    let pod: Pod = fixture("deployment-pod.json");
    let identity = pod_identity(&pod).unwrap();
    let settings = service_settings(&pod, NodePortRange::default()).unwrap();
    let target = service_target(
        &pod,
        &identity,
        settings.scope,
        Some(owner("Deployment", "checkout", false)),
    )
    .unwrap();
    let service = serde_json::to_value(desired_service(&target, &settings)).unwrap();

    assert_eq!(service["metadata"]["name"], "checkout-healthbridge");
    assert_eq!(
        service["metadata"]["ownerReferences"][0]["kind"],
        "Deployment"
    );
    assert_eq!(service["spec"]["type"], "NodePort");
    assert_eq!(
        service["spec"]["selector"],
        json!({"healthbridge.io/group": "checkout"})
    );
    assert_eq!(service["spec"]["externalTrafficPolicy"], "Cluster");
    // An unready pod must still answer its 503 through the Service instead of vanishing from it.
    assert_eq!(service["spec"]["publishNotReadyAddresses"], true);
    // The agent container's declared port wins: it is what the agent listens on.
    assert_eq!(
        service["spec"]["ports"],
        json!([{"name": "health", "protocol": "TCP", "port": 14000, "targetPort": 14000, "nodePort": 31080}])
    );
}

#[test]
fn without_annotations_the_service_is_local_on_13000_with_any_node_port() {
    let settings = service_settings(&pod("web-1").build(), NodePortRange::default()).unwrap();
    assert_eq!(settings.port, 13000);
    assert_eq!(settings.node_port, None);
    assert_eq!(settings.traffic_policy, TrafficPolicy::Local);
    assert_eq!(settings.scope, ServiceScope::Group);
}

#[test]
fn the_port_annotation_is_used_when_no_agent_container_declares_one() {
    let pod: Pod = fixture("statefulset-pod.json");
    assert_eq!(
        service_settings(&pod, NodePortRange::default())
            .unwrap()
            .port,
        13500
    );
}

#[test]
fn a_node_port_outside_the_range_names_the_annotation_and_the_range() {
    let pod = pod("web-1")
        .with_annotation(keys::NODE_PORT, "8080")
        .build();
    let error = service_settings(&pod, NodePortRange::default()).unwrap_err();

    assert_eq!(error.key(), keys::NODE_PORT);
    assert_eq!(
        error.to_string(),
        "annotation healthbridge.io/node-port: `8080` is not a NodePort of this cluster: use a free port in 30000-32767 or remove the annotation to let Kubernetes pick one"
    );
}

#[test]
fn a_custom_node_port_range_is_honoured() {
    let range: NodePortRange = "20000-20100".parse().unwrap();
    let pod = pod("web-1")
        .with_annotation(keys::NODE_PORT, "20050")
        .build();
    assert_eq!(
        service_settings(&pod, range).unwrap().node_port,
        Some(20050)
    );
    assert!("20100-20000".parse::<NodePortRange>().is_err());
}

#[test]
fn bad_traffic_policy_and_scope_say_what_is_accepted() {
    let policy = service_settings(
        &pod("a")
            .with_annotation(keys::TRAFFIC_POLICY, "Nearest")
            .build(),
        NodePortRange::default(),
    );
    assert!(matches!(policy, Err(SettingsError::TrafficPolicy { .. })));
    assert!(
        policy
            .unwrap_err()
            .to_string()
            .contains("use Local (default")
    );

    let scope = service_settings(
        &pod("a")
            .with_annotation(keys::SERVICE_SCOPE, "node")
            .build(),
        NodePortRange::default(),
    );
    assert!(
        scope
            .unwrap_err()
            .to_string()
            .contains("use group (default")
    );
}

#[test]
fn a_per_pod_service_selects_the_pod_label_and_is_owned_by_the_pod() {
    let pod: Pod = fixture("bare-pod.json");
    let identity = pod_identity(&pod).unwrap();
    let settings = service_settings(&pod, NodePortRange::default()).unwrap();
    assert_eq!(settings.scope, ServiceScope::Pod);
    let target = service_target(&pod, &identity, settings.scope, None).unwrap();

    assert_eq!(target.name, "debug-healthbridge-pod");
    assert_eq!(
        target.selector.get(keys::POD_LABEL).map(String::as_str),
        Some("debug")
    );
    assert_eq!(
        target.owner.as_ref().map(|owner| owner.uid.as_str()),
        Some("2c3d4e5f-0000-1111-2222-555555555555")
    );
}

#[test]
fn a_group_pod_without_an_owner_gets_an_unowned_service() {
    let pod = pod("debug").injected().in_group("debug").build();
    let identity = pod_identity(&pod).unwrap();
    let target = service_target(&pod, &identity, ServiceScope::Group, None).unwrap();
    assert_eq!(target.owner, None);
}

#[test]
fn a_group_pod_without_the_group_label_is_told_to_be_recreated() {
    let pod = pod("web-1").injected().build();
    let error = service_target(
        &pod,
        &pod_identity(&pod).unwrap(),
        ServiceScope::Group,
        None,
    )
    .unwrap_err();
    assert!(error.to_string().contains("healthbridge.io/group"));
}

#[test]
fn a_pod_label_value_longer_than_63_is_hashed() {
    let long = "x".repeat(80);
    let value = pod_label_value(&long);
    assert_eq!(value.len(), 63);
    assert!(value.ends_with(&short_hash(&long)));
    assert_eq!(pod_label_value("web-1"), "web-1");
}

#[test]
fn the_marker_tells_injected_from_uninjected_pods() {
    assert!(is_injected(&pod("a").injected().build()));
    assert!(is_uninjected(
        &pod("b").with_annotation(keys::INJECT, "true").build()
    ));
    assert!(!is_uninjected(&pod("c").injected().build()));
    assert!(!is_uninjected(
        &pod("d").with_annotation(keys::INJECT, "false").build()
    ));
}

#[test]
fn an_observed_object_with_server_fields_needs_no_apply() {
    let role = desired_agent_rbac("shop", "checkout", ["checkout-7d9f8c6b5d-x2x7q"])
        .remove(0)
        .role;
    let mut observed = role.clone();
    observed.metadata.resource_version = Some("4242".to_owned());
    observed
        .metadata
        .labels
        .get_or_insert_default()
        .insert("team".to_owned(), "payments".to_owned());

    assert!(!needs_apply(&role, Some(&observed)));
    assert!(needs_apply(&role, None));
}

#[test]
fn a_rule_added_by_a_user_is_drift_to_set_back() {
    let role = desired_agent_rbac("shop", "checkout", ["checkout-7d9f8c6b5d-x2x7q"])
        .remove(0)
        .role;
    let mut widened = role.clone();
    if let Some(rules) = widened.rules.as_mut() {
        rules[0].resource_names = None;
    }
    assert!(needs_apply(&role, Some(&widened)));
}

#[test]
fn an_allocated_node_port_is_not_drift_but_a_changed_pin_is() {
    let pod = pod("web-1").injected().in_group("web").build();
    let identity = pod_identity(&pod).unwrap();
    let mut settings = service_settings(&pod, NodePortRange::default()).unwrap();
    let target = service_target(&pod, &identity, settings.scope, None).unwrap();
    let mut observed = desired_service(&target, &settings);
    if let Some(ports) = observed.spec.as_mut().and_then(|spec| spec.ports.as_mut()) {
        ports[0].node_port = Some(30001);
    }
    assert!(!needs_apply(
        &desired_service(&target, &settings),
        Some(&observed)
    ));

    settings.node_port = Some(31000);
    assert!(needs_apply(
        &desired_service(&target, &settings),
        Some(&observed)
    ));
}

#[test]
fn a_selector_key_added_by_a_user_is_drift_to_set_back() {
    let pod = pod("web-1").injected().in_group("web").build();
    let identity = pod_identity(&pod).unwrap();
    let settings = service_settings(&pod, NodePortRange::default()).unwrap();
    let target = service_target(&pod, &identity, settings.scope, None).unwrap();
    let desired = desired_service(&target, &settings);
    let mut observed = desired.clone();
    if let Some(selector) = observed
        .spec
        .as_mut()
        .and_then(|spec| spec.selector.as_mut())
    {
        selector.insert("tier".to_owned(), "gold".to_owned());
    }
    assert!(needs_apply(&desired, Some(&observed)));
}
