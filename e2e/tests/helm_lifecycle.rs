//! The chart's life: `helm upgrade` rolls the webhook without one uninjected admission, `helm
//! uninstall` leaves nothing behind, and a re-install brings healthbridge back.
//! (Its own test binary with one test: it changes the shared install, and cargo runs test
//! binaries one after another, so no other test sees it half-rolled or gone.)

use std::time::Duration;

use anyhow::{Context, ensure};
use healthbridge_e2e::admission::{
    AdmissionLoop, dry_run_create, ensure_all_injected, is_injected,
};
use healthbridge_e2e::fixtures::{AGENT_CONTAINER, describe, is_ready};
use healthbridge_e2e::poll::poll_until;
use healthbridge_e2e::webhook::{
    RELEASE, RestoreInstallOnDrop, chart, install_with_default_values, webhook_pods,
};
use healthbridge_e2e::{Cluster, Scenario};
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;

/// The chart's leader-election Lease (`<fullname>-controller`).
const LEASE: &str = "healthbridge-controller";
/// The self-managed certificate Secret (`<fullname>-tls`): the chart ships it, the webhook fills it.
const CERT_SECRET: &str = "healthbridge-tls";
/// The upgrade's changed value: the injected agent's CPU request (default 10m).
const UPGRADED_AGENT_CPU: &str = "15m";
/// Admissions the roll must see at least, so "none failed" cannot be true of an empty loop.
const MIN_ADMISSIONS_DURING_ROLL: usize = 20;

fn names(pods: &[Pod]) -> Vec<String> {
    pods.iter()
        .filter_map(|pod| pod.metadata.name.clone())
        .collect()
}

fn agent_cpu_request(pod: &Pod) -> Option<String> {
    let spec = pod.spec.as_ref()?;
    let agent = spec
        .init_containers
        .iter()
        .flatten()
        .chain(spec.containers.iter())
        .find(|container| container.name == AGENT_CONTAINER)?;
    let cpu = agent.resources.as_ref()?.requests.as_ref()?.get("cpu")?;
    Some(cpu.0.clone())
}

async fn upgrade_rolls_the_webhook_without_an_uninjected_admission(
    s: &Scenario,
) -> anyhow::Result<()> {
    let cluster = &s.cluster;
    let before = names(&webhook_pods(cluster).await?);
    ensure!(
        !before.is_empty(),
        "no webhook pod before the upgrade: is healthbridge installed?"
    );
    let replicas = before.len();

    // Bounded: 20 a second, a roll takes well under the 5 minutes this allows.
    let admitting = AdmissionLoop::start(s.api(), "roll", 6000);

    let upgrading = {
        let cluster = cluster.clone();
        let chart = chart()?;
        let cpu = format!("agent.resources.requests.cpu={UPGRADED_AGENT_CPU}");
        tokio::task::spawn_blocking(move || {
            cluster.helm(&[
                "upgrade",
                RELEASE,
                &chart,
                "--namespace",
                &cluster.release_namespace,
                "--reuse-values",
                "--set",
                &cpu,
                "--wait",
                "--timeout",
                "5m",
            ])
        })
    };
    let upgraded = upgrading.await?;
    // The roll is over when every old pod is gone (a terminating one still answers) and the
    // new ones are all ready.
    let rolled = match &upgraded {
        Ok(_) => {
            poll_until(
                "the upgrade to replace every webhook pod",
                Duration::from_secs(180),
                || async {
                    let pods = webhook_pods(cluster).await?;
                    let old_left = pods.iter().any(|pod| {
                        before.contains(pod.metadata.name.as_ref().unwrap_or(&String::new()))
                    });
                    let ready = pods.iter().filter(|pod| is_ready(pod)).count();
                    Ok((!old_left && pods.len() == replicas && ready == replicas).then_some(()))
                },
            )
            .await
        }
        Err(_) => Ok(()),
    };
    let admissions = admitting.stop().await?;
    upgraded.context("helm upgrade with a changed agent CPU request")?;
    rolled?;
    ensure_all_injected(&admissions, MIN_ADMISSIONS_DURING_ROLL, "the roll")?;

    // The new pods serve the new value: the roll really happened.
    let pod = dry_run_create(&s.api(), "after-upgrade").await?;
    ensure!(
        agent_cpu_request(&pod).as_deref() == Some(UPGRADED_AGENT_CPU),
        "after the upgrade the agent's CPU request is {:?}, expected {UPGRADED_AGENT_CPU}: {}",
        agent_cpu_request(&pod),
        describe(&pod)
    );
    Ok(())
}

/// Every object of the release that must be gone after `helm uninstall`, as `kubectl get` names.
fn release_objects() -> Vec<String> {
    let namespaced = [
        "deployment",
        "service",
        "serviceaccount",
        "role.rbac.authorization.k8s.io",
        "rolebinding.rbac.authorization.k8s.io",
        "poddisruptionbudget.policy",
    ];
    let cluster_wide = [
        "clusterrole.rbac.authorization.k8s.io",
        "clusterrolebinding.rbac.authorization.k8s.io",
        "mutatingwebhookconfiguration.admissionregistration.k8s.io",
    ];
    namespaced
        .iter()
        .chain(cluster_wide.iter())
        .map(|kind| format!("{kind}/{RELEASE}"))
        .chain([
            format!("lease.coordination.k8s.io/{LEASE}"),
            // Filled by the webhook at runtime, but shipped (empty) by the chart so uninstall removes it.
            format!("secret/{CERT_SECRET}"),
        ])
        .collect()
}

/// The names of the listed objects that still exist (`kubectl get … --ignore-not-found`).
fn still_existing(cluster: &Cluster, objects: &[String]) -> anyhow::Result<Vec<String>> {
    let mut args = vec![
        "get",
        "--ignore-not-found",
        "-o",
        "name",
        "-n",
        cluster.release_namespace.as_str(),
    ];
    args.extend(objects.iter().map(String::as_str));
    Ok(cluster.kubectl(&args)?.lines().map(str::to_owned).collect())
}

async fn uninstall_leaves_nothing_behind(cluster: &Cluster) -> anyhow::Result<()> {
    // Whatever the chart rendered (beyond the list above, e.g. an optional NetworkPolicy) must go too.
    let manifest = tempfile::NamedTempFile::new()?;
    std::fs::write(
        manifest.path(),
        cluster.helm(&[
            "get",
            "manifest",
            RELEASE,
            "--namespace",
            &cluster.release_namespace,
        ])?,
    )?;
    let manifest_path = manifest
        .path()
        .to_str()
        .context("the temporary directory's path is not UTF-8")?
        .to_owned();

    cluster.helm(&[
        "uninstall",
        RELEASE,
        "--namespace",
        &cluster.release_namespace,
        "--wait",
        "--timeout",
        "3m",
    ])?;

    let expected_gone = release_objects();
    let left = poll_until(
        "helm uninstall to leave nothing of the release behind",
        Duration::from_secs(120),
        || async {
            let mut left = still_existing(cluster, &expected_gone)?;
            left.extend(
                cluster
                    .kubectl(&[
                        "get",
                        "--ignore-not-found",
                        "-o",
                        "name",
                        "-f",
                        &manifest_path,
                    ])?
                    .lines()
                    .map(str::to_owned),
            );
            left.extend(
                names(&webhook_pods(cluster).await?)
                    .into_iter()
                    .map(|name| format!("pod/{name}")),
            );
            // Helm's own record of the release.
            left.extend(
                cluster
                    .kubectl(&[
                        "get",
                        "secrets",
                        "-n",
                        &cluster.release_namespace,
                        "-l",
                        &format!("owner=helm,name={RELEASE}"),
                        "-o",
                        "name",
                    ])?
                    .lines()
                    .map(str::to_owned),
            );
            left.sort();
            left.dedup();
            Ok(Some(left).filter(Vec::is_empty))
        },
    )
    .await;
    if let Err(error) = left {
        let now = still_existing(cluster, &expected_gone).unwrap_or_default();
        return Err(error.context(format!("left behind by helm uninstall: {now:?}")));
    }

    Ok(())
}

async fn reinstall_injects_again(s: &Scenario) -> anyhow::Result<()> {
    install_with_default_values(&s.cluster)?;
    let pods: Api<Pod> = s.api();
    let pod = poll_until(
        "an annotated pod to be injected after the re-install",
        Duration::from_secs(120),
        || async { Ok(Some(dry_run_create(&pods, "reinstalled").await?).filter(is_injected)) },
    )
    .await?;
    let cpu = agent_cpu_request(&pod);
    ensure!(
        cpu.is_some() && cpu.as_deref() != Some(UPGRADED_AGENT_CPU),
        "the re-install with default values injects an agent CPU request of {cpu:?}, expected the chart's default"
    );
    Ok(())
}

#[tokio::test]
async fn helm_upgrade_rolls_without_failed_admissions_and_uninstall_leaves_nothing_behind()
-> anyhow::Result<()> {
    Scenario::run("helm", |s| async move {
        let guard = RestoreInstallOnDrop::new(s.cluster.clone());
        let outcome = async {
            upgrade_rolls_the_webhook_without_an_uninjected_admission(&s).await?;
            uninstall_leaves_nothing_behind(&s.cluster).await?;
            reinstall_injects_again(&s).await
        }
        .await;
        let restored = guard.restore();
        outcome?;
        restored
    })
    .await
}
