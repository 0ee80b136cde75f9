//! Admission under load: server-side dry-run creates of an annotated pod in a bounded loop, each one injected
//! or recorded with what came back instead.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::ensure;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, PostParams};

use crate::demo_pod;
use crate::fixtures::{STATUS, annotation, describe, has_agent};

/// One server-side dry-run create of an annotated pod: injected, or what came back instead.
pub type Admission = Result<(), String>;

/// A server-side dry-run create of an annotated demo pod named `name`: the pod as admitted, nothing created.
pub async fn dry_run_create(pods: &Api<Pod>, name: &str) -> anyhow::Result<Pod> {
    let dry_run = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    Ok(pods
        .create(&dry_run, &demo_pod(name).opted_in().pod()?)
        .await?)
}

/// Whether the webhook injected `pod`: the agent and the marker.
pub fn is_injected(pod: &Pod) -> bool {
    has_agent(pod) && annotation(pod, STATUS) == Some("injected")
}

/// One admission, judged.
pub async fn admit_once(pods: &Api<Pod>, name: &str) -> Admission {
    match dry_run_create(pods, name).await {
        Ok(pod) if is_injected(&pod) => Ok(()),
        Ok(pod) => Err(format!("admitted without the agent: {}", describe(&pod))),
        Err(error) => Err(format!("refused: {error:#}")),
    }
}

/// A steady admission load in the background: 20 dry-run creates a second until stopped, or `max` of them.
pub struct AdmissionLoop {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<Vec<Admission>>,
}

impl AdmissionLoop {
    pub fn start(pods: Api<Pod>, prefix: &str, max: usize) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let prefix = prefix.to_owned();
        let task = tokio::spawn(async move {
            let mut admissions = Vec::new();
            // Paces the load, it waits for nothing: 20 admissions a second keep two cores usable.
            let mut pace = tokio::time::interval(Duration::from_millis(50));
            pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            while !stopped.load(Ordering::Relaxed) && admissions.len() < max {
                pace.tick().await;
                let name = format!("{prefix}-{}", admissions.len());
                admissions.push(admit_once(&pods, &name).await);
            }
            admissions
        });
        Self { stop, task }
    }

    /// Stops the loop and returns every admission it made.
    pub async fn stop(self) -> anyhow::Result<Vec<Admission>> {
        self.stop.store(true, Ordering::Relaxed);
        Ok(self.task.await?)
    }
}

/// Fails unless at least `min` admissions ran during `what` and every one was injected.
pub fn ensure_all_injected(admissions: &[Admission], min: usize, what: &str) -> anyhow::Result<()> {
    let bad: Vec<&String> = admissions
        .iter()
        .filter_map(|admission| admission.as_ref().err())
        .collect();
    eprintln!(
        "{what}: {} admissions, {} not injected",
        admissions.len(),
        bad.len()
    );
    ensure!(
        admissions.len() >= min,
        "only {} admissions ran during {what} (want at least {min})",
        admissions.len()
    );
    ensure!(
        bad.is_empty(),
        "{} of {} admissions during {what} were not injected; the first ones: {:#?}",
        bad.len(),
        admissions.len(),
        bad.iter().take(5).collect::<Vec<_>>()
    );
    Ok(())
}
