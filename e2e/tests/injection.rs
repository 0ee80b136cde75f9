//! Which pods get the agent: annotated ones do, at admission; others, and opted-out ones, stay untouched.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::ensure;
use healthbridge_e2e::fixtures::{GROUP_LABEL, STATUS, annotation, describe, has_agent, label};
use healthbridge_e2e::{Scenario, demo_pod};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, PostParams};

const STARTUP: Duration = Duration::from_secs(120);

#[tokio::test]
async fn an_annotated_deployment_gets_pods_with_the_agent_that_become_ready() -> anyhow::Result<()>
{
    Scenario::run("inject", |s| async move {
        let deployments: Api<Deployment> = s.api();
        deployments
            .create(
                &PostParams::default(),
                &demo_pod("echo").opted_in().deployment(1)?,
            )
            .await?;

        let pod = s.wait_for_pod_of("echo", STARTUP).await?;
        ensure!(
            has_agent(&pod),
            "the Deployment's pod has no agent: {}",
            describe(&pod)
        );
        ensure!(
            annotation(&pod, STATUS) == Some("injected"),
            "no injected marker: {}",
            describe(&pod)
        );
        ensure!(
            label(&pod, GROUP_LABEL) == Some("echo"),
            "group label should name the Deployment (echo): {}",
            describe(&pod)
        );
        let name = pod.metadata.name.clone().unwrap_or_default();
        s.wait_for_pod(
            &name,
            "to be Ready with app and agent running",
            STARTUP,
            healthbridge_e2e::fixtures::is_ready,
        )
        .await?;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn an_unannotated_pod_is_left_untouched() -> anyhow::Result<()> {
    Scenario::run("plain", |s| async move {
        let pod = s.create_pod(&demo_pod("plain")).await?;
        ensure!(
            !has_agent(&pod),
            "an unannotated pod got the agent: {}",
            describe(&pod)
        );
        ensure!(
            annotation(&pod, STATUS).is_none(),
            "an unannotated pod got the marker: {}",
            describe(&pod)
        );
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_pod_opted_out_in_an_opted_in_namespace_is_left_untouched() -> anyhow::Result<()> {
    let labels = BTreeMap::from([("healthbridge.io/inject".to_owned(), "enabled".to_owned())]);
    Scenario::run_with_labels("optout", labels, |s| async move {
        let opted_out = s.create_pod(&demo_pod("opted-out").opted_out()).await?;
        ensure!(
            !has_agent(&opted_out),
            "a pod annotated inject=false got the agent: {}",
            describe(&opted_out)
        );
        // The namespace-wide opt-in works for the pod next to it, so the opt-out is what kept the agent away.
        let neighbour = s.create_pod(&demo_pod("neighbour")).await?;
        ensure!(
            has_agent(&neighbour),
            "a pod of an opted-in namespace got no agent: {}",
            describe(&neighbour)
        );
        Ok(())
    })
    .await
}

#[tokio::test]
async fn an_annotated_pod_in_a_system_namespace_is_left_untouched() -> anyhow::Result<()> {
    Scenario::run("system", |s| async move {
        // kube-public is never injected (contract); the pod's name is unique to this scenario.
        let pods: Api<Pod> = Api::namespaced(s.cluster.client.clone(), "kube-public");
        let name = s.namespace.clone();
        let created = pods
            .create(&PostParams::default(), &demo_pod(&name).opted_in().pod()?)
            .await;
        let deleted = pods.delete(&name, &DeleteParams::default()).await;
        let pod = created?;
        deleted?;
        ensure!(
            !has_agent(&pod),
            "a pod in kube-public got the agent: {}",
            describe(&pod)
        );
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_server_side_dry_run_create_returns_the_mutated_pod_and_creates_nothing()
-> anyhow::Result<()> {
    Scenario::run("dryrun", |s| async move {
        let pods: Api<Pod> = s.api();
        let dry_run = PostParams {
            dry_run: true,
            ..PostParams::default()
        };
        let pod = pods
            .create(&dry_run, &demo_pod("dry").opted_in().pod()?)
            .await?;
        ensure!(
            has_agent(&pod),
            "the dry-run answer lacks the agent: {}",
            describe(&pod)
        );
        ensure!(
            annotation(&pod, STATUS) == Some("injected"),
            "the dry-run answer lacks the marker: {}",
            describe(&pod)
        );
        ensure!(
            pods.get_opt("dry").await?.is_none(),
            "a dry-run create left a pod behind"
        );
        Ok(())
    })
    .await
}
