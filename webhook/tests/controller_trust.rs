//! The controller's trust decisions, pure: which pods count as injected, which port they may publish, and when an
//! existing object may be written over.
#![allow(clippy::unwrap_used)]

mod controller_support;

use controller_support::{AGENT_IMAGE, agent_container, agent_images, owner, pod};
use healthbridge_webhook::controller::claim::{ClaimConflict, may_apply};
use healthbridge_webhook::controller::desired::{
    NodePortRange, ServiceScope, desired_service, pod_identity, service_settings, service_target,
};
use healthbridge_webhook::controller::names::object_name;
use healthbridge_webhook::keys;
use healthbridge_webhook::trust::{Untrusted, VerifiedAgent, verify_agent};
use k8s_openapi::api::core::v1::{Pod, VolumeMount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::json;

fn verdict(pod: &Pod) -> Result<VerifiedAgent, Untrusted> {
    verify_agent(pod, &agent_images())
}

#[test]
fn a_pod_the_webhook_injected_is_trusted_with_its_agents_port() {
    let pod = pod("web-1")
        .injected_on_port(14000)
        .app_on_port(8080)
        .build();
    assert_eq!(verdict(&pod), Ok(VerifiedAgent { port: 14000 }));
}

#[test]
fn a_forged_marker_without_the_agent_is_not_trusted() {
    let pod = pod("web-1").with_marker().in_group("checkout").build();
    assert!(matches!(verdict(&pod), Err(Untrusted::NoAgent { .. })));
}

#[test]
fn an_agent_on_a_port_another_container_declares_is_not_trusted() {
    let pod = pod("web-1")
        .injected_on_port(8080)
        .app_on_port(8080)
        .build();
    assert_eq!(
        verdict(&pod).unwrap_err().to_string(),
        "the agent's port 8080 is also declared by container \"app\": healthbridge publishes only the agent's own port"
    );
}

#[test]
fn the_port_annotation_never_decides_the_port() {
    // Before, the annotation was the fallback when the agent declared no port: any port of the pod.
    let mut agent = agent_container(AGENT_IMAGE, 13000);
    agent.ports = None;
    let pod = pod("web-1")
        .with_marker()
        .with_agent(agent)
        .with_annotation(keys::PORT, "8080")
        .build();
    assert!(matches!(
        verdict(&pod),
        Err(Untrusted::PortMismatch { port: 13000, .. })
    ));
}

#[test]
fn a_declared_port_other_than_the_one_the_agent_listens_on_is_not_trusted() {
    let mut agent = agent_container(AGENT_IMAGE, 13000);
    agent.ports.as_mut().unwrap()[0].container_port = 8080;
    let pod = pod("web-1").with_marker().with_agent(agent).build();
    assert_eq!(
        verdict(&pod).unwrap_err().to_string(),
        "its healthbridge-agent container listens on HTTP_HEALTHCHECK_SIDECAR_PORT=13000 but declares containerPort [8080]"
    );
}

#[test]
fn an_agent_of_another_image_or_with_its_own_command_is_not_trusted() {
    let foreign = pod("a")
        .with_marker()
        .with_agent(agent_container("ghcr.io/someone/agent:1", 13000))
        .build();
    assert!(matches!(verdict(&foreign), Err(Untrusted::Image { .. })));

    let mut commanded = agent_container(AGENT_IMAGE, 13000);
    commanded.command = Some(vec!["/bin/sh".into(), "-c".into(), "nc -l 13000".into()]);
    let commanded = pod("b").with_marker().with_agent(commanded).build();
    assert!(matches!(
        verdict(&commanded),
        Err(Untrusted::Command { .. })
    ));

    let mut with_args = agent_container(AGENT_IMAGE, 13000);
    with_args.args = Some(vec!["--port".into(), "8080".into()]);
    let with_args = pod("c").with_marker().with_agent(with_args).build();
    assert!(matches!(
        verdict(&with_args),
        Err(Untrusted::Command { .. })
    ));
}

#[test]
fn an_agent_whose_binary_is_hidden_by_a_volume_is_not_trusted() {
    let mut agent = agent_container(AGENT_IMAGE, 13000);
    agent.volume_mounts = Some(vec![VolumeMount {
        name: "tools".into(),
        mount_path: "/usr/local/bin".into(),
        ..VolumeMount::default()
    }]);
    let pod = pod("a").with_marker().with_agent(agent).build();
    assert!(matches!(
        verdict(&pod),
        Err(Untrusted::MountOverBinary { .. })
    ));
}

#[test]
fn a_second_container_named_like_the_agent_is_not_trusted() {
    let mut pod = pod("a").injected().build();
    let mut decoy = agent_container(AGENT_IMAGE, 13001);
    decoy.restart_policy = None;
    pod.spec.as_mut().unwrap().containers.push(decoy);
    assert!(matches!(verdict(&pod), Err(Untrusted::TwoAgents { .. })));
}

fn meta(value: serde_json::Value) -> ObjectMeta {
    serde_json::from_value(value).unwrap()
}

fn checkout_service_meta() -> ObjectMeta {
    meta(json!({"name": "checkout-healthbridge", "namespace": "shop",
        "labels": {keys::MANAGED_BY_LABEL: keys::MANAGED_BY, keys::GROUP_LABEL: "checkout"},
        "ownerReferences": [owner("Deployment", "checkout", false)]}))
}

/// The Service a pod of group `checkout` owned by `workload` would apply.
fn claim_by(workload: Option<(&str, &str)>) -> ObjectMeta {
    let claimant = pod("claimant").injected().in_group("checkout").build();
    let target = service_target(
        &claimant,
        &pod_identity(&claimant).unwrap(),
        ServiceScope::Group,
        workload.map(|(kind, name)| owner(kind, name, false)),
    )
    .unwrap();
    let settings = service_settings(&claimant, NodePortRange::default()).unwrap();
    desired_service(&target, &settings).metadata
}

#[test]
fn a_new_group_may_be_created() {
    assert_eq!(
        may_apply("Service", &claim_by(Some(("Deployment", "checkout"))), None),
        Ok(())
    );
}

#[test]
fn the_groups_own_workload_may_write_its_service() {
    let observed = checkout_service_meta();
    assert_eq!(
        may_apply(
            "Service",
            &claim_by(Some(("Deployment", "checkout"))),
            Some(&observed)
        ),
        Ok(())
    );
}

#[test]
fn another_workload_may_not_join_a_group_and_is_told_whose_it_is() {
    let observed = checkout_service_meta();
    let conflict = may_apply(
        "Service",
        &claim_by(Some(("Deployment", "evil"))),
        Some(&observed),
    )
    .unwrap_err();
    assert_eq!(conflict.reason(), "GroupClaimed");
    assert!(
        conflict
            .to_string()
            .starts_with("group \"checkout\" belongs to Deployment checkout"),
        "{conflict}"
    );
}

#[test]
fn ownerless_pods_and_owned_groups_never_mix() {
    let owned = checkout_service_meta();
    assert!(may_apply("Service", &claim_by(None), Some(&owned)).is_err());

    let mut ownerless = checkout_service_meta();
    ownerless.owner_references = None;
    assert!(
        may_apply(
            "Service",
            &claim_by(Some(("Deployment", "checkout"))),
            Some(&ownerless)
        )
        .is_err()
    );
    assert_eq!(
        may_apply("Service", &claim_by(None), Some(&ownerless)),
        Ok(())
    );
}

#[test]
fn an_object_without_the_managed_by_label_is_never_written() {
    let mut theirs = checkout_service_meta();
    theirs.labels = Some([("team".to_owned(), "ops".to_owned())].into());
    assert!(matches!(
        may_apply(
            "Service",
            &claim_by(Some(("Deployment", "checkout"))),
            Some(&theirs)
        ),
        Err(ClaimConflict::NotManaged { .. })
    ));
}

#[test]
fn a_per_pod_service_never_carries_a_groups_name() {
    let namesake = pod("checkout")
        .injected()
        .in_group("checkout")
        .with_annotation(keys::SERVICE_SCOPE, "pod")
        .build();
    let target = service_target(
        &namesake,
        &pod_identity(&namesake).unwrap(),
        ServiceScope::Pod,
        None,
    )
    .unwrap();
    assert_ne!(target.name, object_name("checkout"));
    assert_eq!(target.name, "checkout-healthbridge-pod");
}

#[test]
fn a_per_pod_service_may_not_replace_a_group_service_of_the_same_name() {
    // What the old naming allowed: the per-pod Service of pod "checkout" was named checkout-healthbridge.
    let mut namesake = pod("checkout").injected().build();
    namesake.metadata.uid = Some("uid-of-the-bare-pod".to_owned());
    let identity = pod_identity(&namesake).unwrap();
    let mut per_pod = service_target(&namesake, &identity, ServiceScope::Pod, None).unwrap();
    per_pod.name = object_name("checkout");
    let settings = service_settings(&namesake, NodePortRange::default()).unwrap();
    let conflict = may_apply(
        "Service",
        &desired_service(&per_pod, &settings).metadata,
        Some(&checkout_service_meta()),
    )
    .unwrap_err();
    assert_eq!(
        conflict.to_string(),
        "Service shop/checkout-healthbridge belongs to Deployment checkout, not to Pod checkout: healthbridge leaves it unchanged"
    );
}
