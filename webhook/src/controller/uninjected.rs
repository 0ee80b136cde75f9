//! Pods opted in by annotation that the webhook did not inject, followed from a metadata-only watch of every pod:
//! only their UIDs are kept, not the pods.

use std::collections::HashSet;
use std::sync::{Mutex, PoisonError};

use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::core::PartialObjectMeta;
use kube::runtime::watcher::Event;

use super::context::Context;
use super::events::warn_uninjected;

/// The UIDs of uninjected pods, with the watcher's relist semantics (a relist replaces the set at its end).
#[derive(Debug, Default)]
pub struct Uninjected {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    current: HashSet<String>,
    relisting: Option<HashSet<String>>,
}

impl Uninjected {
    /// How many pods are uninjected now.
    pub fn len(&self) -> usize {
        self.lock().current.len()
    }

    /// Whether no pod is uninjected.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the pod of this UID is uninjected now.
    pub fn contains(&self, uid: &str) -> bool {
        self.lock().current.contains(uid)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Follows one event of the metadata watch; a pod newly seen uninjected gets its `Uninjected` Event.
pub async fn follow(ctx: &Context, event: Event<PartialObjectMeta<Pod>>) {
    let warn = {
        let mut state = ctx.uninjected.lock();
        match &event {
            Event::Init => {
                state.relisting = Some(HashSet::new());
                false
            }
            Event::InitDone => {
                state.current = state.relisting.take().unwrap_or_default();
                false
            }
            Event::Delete(pod) => {
                if let Some(uid) = pod.uid() {
                    state.current.remove(&uid);
                }
                false
            }
            Event::Apply(pod) | Event::InitApply(pod) => {
                let set = match &event {
                    Event::InitApply(_) => state.relisting.get_or_insert_default(),
                    _ => &mut state.current,
                };
                let uid = pod.uid().unwrap_or_default();
                if ctx.missed_by_webhook(pod) {
                    set.insert(uid);
                    true
                } else {
                    set.remove(&uid);
                    false
                }
            }
        }
    };
    if let (true, Event::Apply(pod) | Event::InitApply(pod)) = (warn, &event) {
        warn_uninjected(pod, ctx).await;
    }
}
