//! What every reconcile shares: the client, the caches of observed objects, the event recorder and the
//! controller's own memory (ReplicaSet owners, failure counts, per-Service apply slots).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::ResourceExt;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{ObjectRef, Store};

use super::cached::{CachedPod, PodMarks, PodView};
use super::desired::{NodePortRange, is_uninjected};
use super::group_index::GroupIndex;
use super::rbac::AgentAccounts;
use crate::config::SYSTEM_NAMESPACES;
use crate::keys;
use crate::trust::AgentImages;

/// Everything a reconcile needs: the client, the caches of observed objects and the event recorder.
pub struct Context {
    pub client: kube::Client,
    pub pods: Store<CachedPod>,
    pub roles: Store<Role>,
    pub role_bindings: Store<RoleBinding>,
    pub services: Store<Service>,
    /// Publishes the Events that may repeat (warnings retried every few minutes), as a series per pod and reason.
    pub recorder: Recorder,
    /// Who publishes: also for the Events that do not repeat (see [`super::events::publish_once`]).
    pub reporter: Reporter,
    pub node_port_range: NodePortRange,
    /// Images trusted as the agent: a pod is acted on only when its agent container comes from one of them.
    pub agent_images: AgentImages,
    /// ReplicaSet UID → its workload: a ReplicaSet's controller never changes, so it is fetched once.
    pub(super) replica_set_owners: Mutex<HashMap<String, OwnerReference>>,
    /// Consecutive failures per pod, for the backoff of the error policy.
    pub(super) failures: Mutex<HashMap<ObjectRef<CachedPod>, u32>>,
    /// Pods already warned about as uninjected, so each gets one Event, not one per change.
    pub(super) warned_uninjected: Mutex<HashSet<String>>,
    /// The pods seen opted in without the marker, from a metadata-only watch of every pod.
    pub uninjected: super::uninjected::Uninjected,
    /// Namespaces the webhook never injects: an opted-in pod there is not "uninjected", it is excluded.
    pub(super) never_injected: HashSet<String>,
    /// Per Service: a lock so that pods of one group do not apply it concurrently, and what was last applied.
    pub(super) service_slots: Mutex<HashMap<String, Arc<tokio::sync::Mutex<Option<Applied>>>>>,
    /// The pods of each group, fed from the same events as `pods`; without it (a store fed directly) a group is
    /// found by scanning every pod.
    pub(super) group_index: Option<Arc<GroupIndex>>,
    /// The pods of each (namespace, ServiceAccount), like `group_index`.
    pub(super) account_index: Option<Arc<GroupIndex>>,
    /// The agents' Roles waiting to be synced, coalesced per ServiceAccount.
    pub accounts: AgentAccounts,
    /// Pods whose Role was not in place yet: their first reconcile that finds it tells them `Ready`.
    pub(super) awaiting_rbac: Mutex<HashSet<String>>,
}

/// A Service as the API server returned it from our apply, and when.
pub(super) struct Applied {
    pub(super) service: Service,
    pub(super) at: std::time::Instant,
}

/// How long a just-applied Service is trusted over the cache, which may not have seen it yet. Short: a user
/// edit landing within this window after our apply is set back at the next resync instead of at once.
pub(super) const APPLIED_MEMO: Duration = Duration::from_secs(2);

impl Context {
    pub fn new(
        client: kube::Client,
        stores: Stores,
        reporter: Reporter,
        node_port_range: NodePortRange,
        agent_images: AgentImages,
    ) -> Self {
        Self {
            recorder: Recorder::new(client.clone(), reporter.clone()),
            client,
            pods: stores.pods,
            roles: stores.roles,
            role_bindings: stores.role_bindings,
            services: stores.services,
            reporter,
            node_port_range,
            agent_images,
            replica_set_owners: Mutex::default(),
            failures: Mutex::default(),
            warned_uninjected: Mutex::default(),
            uninjected: super::uninjected::Uninjected::default(),
            never_injected: SYSTEM_NAMESPACES.map(str::to_owned).into(),
            service_slots: Mutex::default(),
            group_index: None,
            account_index: None,
            accounts: AgentAccounts::default(),
            awaiting_rbac: Mutex::default(),
        }
    }

    /// Finds a ServiceAccount's pods through `index` (see [`GroupIndex::by_service_account`]).
    #[must_use]
    pub fn with_account_index(mut self, index: Arc<GroupIndex>) -> Self {
        self.account_index = Some(index);
        self
    }

    /// Syncs the agents' Roles through `accounts` (which may requeue waiting pods).
    #[must_use]
    pub fn with_accounts(mut self, accounts: AgentAccounts) -> Self {
        self.accounts = accounts;
        self
    }

    /// The cached pods of `service_account` in `namespace`: O(their number) with the index, O(pods) without.
    pub fn pods_of_account(&self, namespace: &str, service_account: &str) -> Vec<Arc<CachedPod>> {
        let of_account = |pod: &CachedPod| {
            pod.namespace().as_deref() == Some(namespace)
                && pod.service_account_name().unwrap_or("default") == service_account
        };
        match &self.account_index {
            Some(index) => index
                .members(namespace, service_account)
                .iter()
                .filter_map(|reference| self.pods.get(reference))
                .filter(|pod| of_account(pod))
                .collect(),
            None => self.pods.state_filter(|pod| of_account(pod)),
        }
    }

    /// Finds a group's pods through `index`, which must see the same watcher events as the pod store.
    #[must_use]
    pub fn with_group_index(mut self, index: Arc<GroupIndex>) -> Self {
        self.group_index = Some(index);
        self
    }

    /// The cached pods labelled with `group` in `namespace`: O(group size) with the index, O(pods) without.
    pub fn pods_in_group(&self, namespace: &str, group: &str) -> Vec<Arc<CachedPod>> {
        // The store is the truth: an index entry is only a candidate, checked against the cached pod.
        let in_group = |pod: &CachedPod| {
            pod.namespace().as_deref() == Some(namespace)
                && pod.label(keys::GROUP_LABEL) == Some(group)
        };
        match &self.group_index {
            Some(index) => index
                .members(namespace, group)
                .iter()
                .filter_map(|reference| self.pods.get(reference))
                .filter(|pod| in_group(pod))
                .collect(),
            None => self.pods.state_filter(|pod| in_group(pod)),
        }
    }

    /// Adds namespaces the webhook skips (its own, and any configured exclusions).
    #[must_use]
    pub fn never_injecting(mut self, namespaces: impl IntoIterator<Item = String>) -> Self {
        self.never_injected.extend(namespaces);
        self
    }

    pub(super) fn service_slot(&self, key: &str) -> Arc<tokio::sync::Mutex<Option<Applied>>> {
        let mut slots = self
            .service_slots
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        slots.entry(key.to_owned()).or_default().clone()
    }

    /// Drops the slots no reconcile holds: their memo is past [`APPLIED_MEMO`] long before housekeeping runs.
    pub(super) fn forget_idle_service_slots(&self) {
        let mut slots = self
            .service_slots
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        slots.retain(|_, slot| Arc::strong_count(slot) > 1);
    }

    /// True for pods of a namespace the webhook never injects: a marker there was not written by the webhook.
    pub(super) fn never_injects(&self, pod: &impl kube::Resource) -> bool {
        pod.meta()
            .namespace
            .as_ref()
            .is_some_and(|namespace| self.never_injected.contains(namespace))
    }

    pub(super) fn missed_by_webhook(&self, pod: &impl PodMarks) -> bool {
        is_uninjected(pod)
            && pod
                .meta()
                .namespace
                .as_ref()
                .is_none_or(|namespace| !self.never_injected.contains(namespace))
    }
}

/// The caches the reconciler compares against.
pub struct Stores {
    pub pods: Store<CachedPod>,
    pub roles: Store<Role>,
    pub role_bindings: Store<RoleBinding>,
    pub services: Store<Service>,
}
