//! Pods by (namespace, `healthbridge.io/group` label) or by (namespace, ServiceAccount), kept from the pod
//! reflector's events, so a group's or a ServiceAccount's pods are found in O(their number) instead of by scanning
//! every cached pod.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, PoisonError, RwLock};

use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher::Event;

use super::cached::{CachedPod as Pod, PodMarks, PodView};
use crate::keys;

/// Pods by what they are indexed by, per namespace. Names are shared strings, not `ObjectRef`s (which carry a UID
/// and a resourceVersion): at 10,000 pods an entry per pod is what this costs, so it stays small. A namespace and a
/// group name are stored once per group, a pod's name once for both maps.
#[derive(Debug, Default)]
struct Groups {
    /// namespace → key → the names of its pods.
    members: HashMap<Arc<str>, KeyMembers>,
    /// namespace → pod name → its key.
    key_of: HashMap<Arc<str>, HashMap<Arc<str>, Arc<str>>>,
}

/// In one namespace: each key's pod names.
type KeyMembers = HashMap<Arc<str>, HashSet<Arc<str>>>;

/// What a pod is indexed by, besides its namespace.
pub type IndexKey = fn(&Pod) -> Option<String>;

fn group_label(pod: &Pod) -> Option<String> {
    pod.label(keys::GROUP_LABEL).map(str::to_owned)
}

fn service_account(pod: &Pod) -> Option<String> {
    Some(pod.service_account_name().unwrap_or("default").to_owned())
}

impl Groups {
    fn insert(&mut self, pod: &Pod, key: IndexKey) {
        let (Some(namespace), Some(name)) = (
            pod.metadata.namespace.as_deref(),
            pod.metadata.name.as_deref(),
        ) else {
            return;
        };
        let key = key(pod);
        let current = self.key_of.get(namespace).and_then(|names| names.get(name));
        if current.map(|current| &**current) == key.as_deref() {
            return;
        }
        self.remove(namespace, name);
        let Some(key) = key else {
            return;
        };
        // The namespace's and the group's strings already in the map, when they are there.
        let namespace: Arc<str> = self
            .members
            .get_key_value(namespace)
            .map_or_else(|| namespace.into(), |(namespace, _)| namespace.clone());
        let groups = self.members.entry(namespace.clone()).or_default();
        let key: Arc<str> = groups
            .get_key_value(key.as_str())
            .map_or_else(|| key.as_str().into(), |(key, _)| key.clone());
        let name: Arc<str> = name.into();
        groups.entry(key.clone()).or_default().insert(name.clone());
        self.key_of.entry(namespace).or_default().insert(name, key);
    }

    fn remove(&mut self, namespace: &str, name: &str) {
        let Some(names) = self.key_of.get_mut(namespace) else {
            return;
        };
        let Some((name, key)) = names.remove_entry(name) else {
            return;
        };
        if names.is_empty() {
            self.key_of.remove(namespace);
        }
        let Some(groups) = self.members.get_mut(namespace) else {
            return;
        };
        if let Some(members) = groups.get_mut(&key) {
            members.remove(&name);
            if members.is_empty() {
                groups.remove(&key);
            }
        }
        if groups.is_empty() {
            self.members.remove(namespace);
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
            Event::Delete(pod) => {
                if let (Some(namespace), Some(name)) = (&pod.metadata.namespace, &pod.metadata.name)
                {
                    state.current.remove(namespace, name);
                }
            }
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
            .get(namespace)
            .and_then(|groups| groups.get(group))
            .map(|members| {
                members
                    .iter()
                    .map(|name| ObjectRef::new(name).within(namespace))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// How many pods are indexed (with a group label).
    pub fn len(&self) -> usize {
        let state = self.state.read().unwrap_or_else(PoisonError::into_inner);
        state.current.key_of.values().map(HashMap::len).sum()
    }

    /// Whether no pod is indexed.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
