//! Pods by (namespace, `healthbridge.io/group` label) or by (namespace, ServiceAccount), kept from the pod
//! reflector's events, so a group's or a ServiceAccount's pods are found in O(their number) instead of by scanning
//! every cached pod.

use std::collections::{HashMap, HashSet};
use std::sync::{PoisonError, RwLock};

use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher::Event;

use super::cached::{CachedPod as Pod, PodView};
use crate::keys;

/// A group: its namespace and label value.
type GroupKey = (String, String);

#[derive(Debug, Default)]
struct Groups {
    members: HashMap<GroupKey, HashSet<ObjectRef<Pod>>>,
    group_of: HashMap<ObjectRef<Pod>, GroupKey>,
}

/// What a pod is indexed by, besides its namespace.
pub type IndexKey = fn(&Pod) -> Option<String>;

fn group_label(pod: &Pod) -> Option<String> {
    pod.labels().get(keys::GROUP_LABEL).cloned()
}

fn service_account(pod: &Pod) -> Option<String> {
    Some(pod.service_account_name().unwrap_or("default").to_owned())
}

impl Groups {
    fn insert(&mut self, pod: &Pod, key: IndexKey) {
        let reference = ObjectRef::from_obj(pod);
        let group = pod.namespace().zip(key(pod));
        if self.group_of.get(&reference) == group.as_ref() {
            return;
        }
        self.remove(&reference);
        if let Some(group) = group {
            self.members
                .entry(group.clone())
                .or_default()
                .insert(reference.clone());
            self.group_of.insert(reference, group);
        }
    }

    fn remove(&mut self, reference: &ObjectRef<Pod>) {
        let Some(group) = self.group_of.remove(reference) else {
            return;
        };
        if let Some(members) = self.members.get_mut(&group) {
            members.remove(reference);
            if members.is_empty() {
                self.members.remove(&group);
            }
        }
    }
}

/// The index, applied the same watcher events as the pod store and with the same relist semantics: a relist
/// (Init … InitDone) builds a fresh index that replaces the old one at InitDone, as the store does.
#[derive(Debug)]
pub struct GroupIndex {
    state: RwLock<State>,
    key: IndexKey,
}

impl Default for GroupIndex {
    /// By the `healthbridge.io/group` label.
    fn default() -> Self {
        Self {
            state: RwLock::default(),
            key: group_label,
        }
    }
}

#[derive(Debug, Default)]
struct State {
    current: Groups,
    relisting: Option<Groups>,
}

impl GroupIndex {
    /// By ServiceAccount (`default` when unset, as the API server defaults it).
    pub fn by_service_account() -> Self {
        Self {
            state: RwLock::default(),
            key: service_account,
        }
    }

    /// Follows one event of the pod watcher.
    pub fn apply_watcher_event(&self, event: &Event<Pod>) {
        let mut state = self.state.write().unwrap_or_else(PoisonError::into_inner);
        match event {
            Event::Apply(pod) => state.current.insert(pod, self.key),
            Event::Delete(pod) => state.current.remove(&ObjectRef::from_obj(pod)),
            Event::Init => state.relisting = Some(Groups::default()),
            Event::InitApply(pod) => state
                .relisting
                .get_or_insert_default()
                .insert(pod, self.key),
            Event::InitDone => state.current = state.relisting.take().unwrap_or_default(),
        }
    }

    /// The pods last seen with `group` in `namespace`, in no particular order.
    pub fn members(&self, namespace: &str, group: &str) -> Vec<ObjectRef<Pod>> {
        let state = self.state.read().unwrap_or_else(PoisonError::into_inner);
        state
            .current
            .members
            .get(&(namespace.to_owned(), group.to_owned()))
            .map(|members| members.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// How many pods are indexed (with a group label).
    pub fn len(&self) -> usize {
        let state = self.state.read().unwrap_or_else(PoisonError::into_inner);
        state.current.group_of.len()
    }

    /// Whether no pod is indexed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
