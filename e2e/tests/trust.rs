//! What a pod author cannot make healthbridge do: forged annotations, markers and names leave another workload's
//! health Service as it was (docs/controller.md, "What a pod author can and cannot make healthbridge do").

use std::time::Duration;

use anyhow::{Context as _, ensure};
use healthbridge_e2e::fixtures::{GROUP_LABEL, STATUS, has_agent};
use healthbridge_e2e::poll::{poll_until, when};
use healthbridge_e2e::{DemoPod, Scenario, demo_pod};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Event, Pod, Service};
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::{Value, json};

const SERVICE: &str = "healthbridge.io/service";
const PORT: &str = "healthbridge.io/port";
const SERVICE_SCOPE: &str = "healthbridge.io/service-scope";
/// The demo app's own port: what an attacker would like the checkout Service to point at.
const APP_PORT: &str = "7000";
const STARTUP: Duration = Duration::from_secs(120);
const CONTROLLER: Duration = Duration::from_secs(60);

/// What of a health Service an attacker would want to change: ports, selector, policy, owner.
fn essence(service: &Service) -> Value {
    let spec = service.spec.clone().unwrap_or_default();
    json!({
        "ports": spec.ports,
        "selector": spec.selector,
        "externalTrafficPolicy": spec.external_traffic_policy,
        "ownerReferences": service.metadata.owner_references,
        "labels": service.metadata.labels,
    })
}

/// The checkout Deployment with its health Service in place; returns that Service's essence.
async fn checkout(s: &Scenario) -> anyhow::Result<Value> {
    let deployments: Api<Deployment> = s.api();
    deployments
        .create(
            &PostParams::default(),
            &demo_pod("checkout").opted_in().deployment(1)?,
        )
        .await?;
    s.health_node_port("checkout").await?;
    let service = checkout_service(s).await?;
    ensure!(
        service
            .metadata
            .owner_references
            .iter()
            .flatten()
            .any(|owner| owner.kind == "Deployment" && owner.name == "checkout"),
        "the checkout Service should belong to its Deployment: {:?}",
        service.metadata
    );
    Ok(essence(&service))
}

async fn checkout_service(s: &Scenario) -> anyhow::Result<Service> {
    let services: Api<Service> = s.api();
    services
        .get("checkout-healthbridge")
        .await
        .context("the checkout Service")
}

/// A pod spec without declared container ports, so the webhook lets its agent take the app's port number.
fn without_declared_ports(mut pod: Value, containers: &str) -> Value {
    if let Some(containers) = pod.pointer_mut(containers).and_then(Value::as_array_mut) {
        for container in containers {
            if let Some(container) = container.as_object_mut() {
                container.remove("ports");
            }
        }
    }
    pod
}

fn claimant(name: &str) -> DemoPod {
    demo_pod(name)
        .opted_in()
        .annotated(SERVICE, "checkout")
        .annotated(PORT, APP_PORT)
}

/// Waits for a Warning Event `reason` about pod `name`, which shows the controller looked at it and said no.
async fn warned(s: &Scenario, name: &str, reason: &str) -> anyhow::Result<String> {
    let events: Api<Event> = s.api();
    poll_until(
        &format!("a {reason} Event on pod {name}"),
        CONTROLLER,
        || async {
            let found = events
                .list(&Default::default())
                .await?
                .items
                .into_iter()
                .find(|event| {
                    event.reason.as_deref() == Some(reason)
                        && event.involved_object.name.as_deref() == Some(name)
                });
            Ok(found.map(|event| event.message.unwrap_or_default()))
        },
    )
    .await
}

async fn ensure_unchanged(s: &Scenario, before: &Value, after_what: &str) -> anyhow::Result<()> {
    let now = essence(&checkout_service(s).await?);
    ensure!(
        &now == before,
        "{after_what} changed the checkout Service:\nbefore {before}\nafter  {now}"
    );
    Ok(())
}

#[tokio::test]
async fn another_deployment_claiming_the_group_with_the_apps_port_leaves_its_service_unchanged()
-> anyhow::Result<()> {
    Scenario::run("trust-claim", |s| async move {
        let before = checkout(&s).await?;
        let deployment = serde_json::to_value(claimant("evil").deployment(1)?)?;
        let deployment: Deployment = serde_json::from_value(without_declared_ports(
            deployment,
            "/spec/template/spec/containers",
        ))?;
        let deployments: Api<Deployment> = s.api();
        deployments
            .create(&PostParams::default(), &deployment)
            .await?;
        let evil = s.wait_for_pod_of("evil", STARTUP).await?;
        ensure!(has_agent(&evil), "the claimant's pod should be injected");
        let name = evil.metadata.name.clone().unwrap_or_default();

        let message = warned(&s, &name, "GroupClaimed").await?;
        ensure!(
            message.contains("belongs to Deployment checkout")
                && message.contains("Deployment evil"),
            "the Event should name both owners: {message}"
        );
        ensure_unchanged(&s, &before, "a Deployment claiming the group").await
    })
    .await
}

#[tokio::test]
async fn a_bare_pod_claiming_the_group_with_the_apps_port_leaves_its_service_unchanged()
-> anyhow::Result<()> {
    Scenario::run("trust-bare", |s| async move {
        let before = checkout(&s).await?;
        let pod = serde_json::to_value(claimant("intruder").pod()?)?;
        let pod: Pod = serde_json::from_value(without_declared_ports(pod, "/spec/containers"))?;
        let pods: Api<Pod> = s.api();
        pods.create(&PostParams::default(), &pod).await?;

        let message = warned(&s, "intruder", "GroupClaimed").await?;
        ensure!(message.contains("no workload"), "{message}");
        ensure_unchanged(&s, &before, "a bare pod claiming the group").await
    })
    .await
}

#[tokio::test]
async fn a_forged_marker_is_denied_at_admission_and_ignored_when_added_later() -> anyhow::Result<()>
{
    Scenario::run("trust-marker", |s| async move {
        let before = checkout(&s).await?;
        let pods: Api<Pod> = s.api();

        // At admission: the webhook sees the marker on a pod it did not inject.
        let mut forged = demo_pod("forged").annotated(STATUS, "injected").pod()?;
        forged
            .metadata
            .labels
            .get_or_insert_default()
            .insert(GROUP_LABEL.to_owned(), "checkout".to_owned());
        let denied = pods
            .create(&PostParams::default(), &forged)
            .await
            .err()
            .context("a pod with a hand-written status marker was admitted")?;
        ensure!(
            denied
                .to_string()
                .contains("written by the healthbridge webhook only"),
            "the denial should say who writes the marker: {denied}"
        );

        // After admission (an update the webhook never sees): the controller checks the pod itself.
        s.create_pod(&demo_pod("forger")).await?;
        s.kubectl(&["annotate", "pod", "forger", &format!("{STATUS}=injected")])?;
        s.kubectl(&["label", "pod", "forger", &format!("{GROUP_LABEL}=checkout")])?;
        let message = warned(&s, "forger", "Untrusted").await?;
        ensure!(
            message.contains("no healthbridge-agent container"),
            "{message}"
        );
        let services: Api<Service> = s.api();
        for name in ["forger-healthbridge", "forger-healthbridge-pod"] {
            ensure!(
                services.get_opt(name).await?.is_none(),
                "the forged pod got a Service {name}"
            );
        }
        ensure_unchanged(&s, &before, "a forged marker").await
    })
    .await
}

#[tokio::test]
async fn a_bare_pod_named_like_the_group_with_its_own_service_leaves_the_groups_alone()
-> anyhow::Result<()> {
    Scenario::run("trust-name", |s| async move {
        let before = checkout(&s).await?;
        let namesake = demo_pod("checkout")
            .opted_in()
            .annotated(SERVICE_SCOPE, "pod");
        // The Deployment's pods carry app=checkout too; a distinct app label keeps the namesake apart.
        let mut pod = namesake.pod()?;
        pod.metadata
            .labels
            .get_or_insert_default()
            .insert("app".to_owned(), "namesake".to_owned());
        let pods: Api<Pod> = s.api();
        pods.create(&PostParams::default(), &pod).await?;

        let services: Api<Service> = s.api();
        poll_until(
            "the namesake's own Service checkout-healthbridge-pod",
            CONTROLLER,
            || async { Ok(services.get_opt("checkout-healthbridge-pod").await?) },
        )
        .await?;
        ensure_unchanged(&s, &before, "a pod named like the group").await?;

        // Before, the namesake owned the group's Service and took it along when deleted.
        pods.delete("checkout", &DeleteParams::default()).await?;
        poll_until(
            "the namesake's Service to go with it",
            CONTROLLER,
            || async {
                Ok(when(
                    services.get_opt("checkout-healthbridge-pod").await?,
                    Option::is_none,
                ))
            },
        )
        .await?;
        ensure_unchanged(&s, &before, "deleting the pod named like the group").await
    })
    .await
}
