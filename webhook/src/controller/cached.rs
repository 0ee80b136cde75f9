//! The pod as the controller caches it: the metadata it reads and the agent facts trust verification needs,
//! stripped from each object as it is decoded, so 10,000 pods fit in a few MiB (a full `Pod` is ~7 KiB in memory).

use std::borrow::Cow;
use std::collections::BTreeMap;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use kube::core::PartialObjectMeta;
use serde::{Deserialize, Deserializer};

use crate::keys;
use crate::trust::{AgentFacts, AgentImages, Untrusted, VerifiedAgent};

/// The pod labels the controller reads.
pub const READ_LABELS: [&str; 2] = [keys::GROUP_LABEL, keys::POD_LABEL];
/// The pod annotations the controller reads.
pub const READ_ANNOTATIONS: [&str; 6] = [
    keys::STATUS,
    keys::INJECT,
    keys::PORT,
    keys::NODE_PORT,
    keys::TRAFFIC_POLICY,
    keys::SERVICE_SCOPE,
];

/// The labels and annotations the controller reads of a pod, whatever form of it it holds. Read them through this,
/// never through `ObjectMeta`: the cached pod keeps them apart from its metadata.
pub trait PodMarks: Resource<DynamicType = ()> {
    /// The value of one of [`READ_LABELS`].
    fn label(&self, key: &str) -> Option<&str>;
    /// The value of one of [`READ_ANNOTATIONS`].
    fn annotation(&self, key: &str) -> Option<&str>;
}

fn map_value<'a>(map: Option<&'a BTreeMap<String, String>>, key: &str) -> Option<&'a str> {
    map?.get(key).map(String::as_str)
}

impl PodMarks for Pod {
    fn label(&self, key: &str) -> Option<&str> {
        map_value(self.metadata.labels.as_ref(), key)
    }

    fn annotation(&self, key: &str) -> Option<&str> {
        map_value(self.metadata.annotations.as_ref(), key)
    }
}

impl PodMarks for PartialObjectMeta<Pod> {
    fn label(&self, key: &str) -> Option<&str> {
        map_value(self.metadata.labels.as_ref(), key)
    }

    fn annotation(&self, key: &str) -> Option<&str> {
        map_value(self.metadata.annotations.as_ref(), key)
    }
}

/// What the controller needs of a pod, whether it holds the whole object (tests, admission) or the cached one.
pub trait PodView: PodMarks {
    /// `spec.serviceAccountName` as written (the API server defaults it to `default`).
    fn service_account_name(&self) -> Option<&str>;
    /// The agent container, as trust verification reads it.
    fn agent_facts(&self) -> Cow<'_, AgentFacts>;

    /// The agent as the webhook injects it, or why this is not it.
    fn verify_agent(&self, images: &AgentImages) -> Result<VerifiedAgent, Untrusted> {
        self.agent_facts().verify(images)
    }
}

impl PodView for Pod {
    fn service_account_name(&self) -> Option<&str> {
        self.spec.as_ref()?.service_account_name.as_deref()
    }

    fn agent_facts(&self) -> Cow<'_, AgentFacts> {
        Cow::Owned(AgentFacts::of(self))
    }
}

/// A pod reduced to what reconcile reads: name, namespace, UID, resourceVersion, creation and deletion times,
/// ownerReferences, the labels and annotations of [`READ_LABELS`] and [`READ_ANNOTATIONS`], the ServiceAccount and
/// the agent facts. No managedFields, no other labels or annotations, no other containers, no status.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CachedPod {
    /// Without labels and annotations: those the controller reads are in `labels` and `annotations`.
    pub metadata: ObjectMeta,
    pub service_account_name: Option<String>,
    pub agent: AgentFacts,
    labels: Marks,
    annotations: Marks,
}

/// Some of a pod's labels or annotations: the keys are the constants of [`READ_LABELS`] or [`READ_ANNOTATIONS`], so
/// only the values take memory (a `BTreeMap` allocates a node of eleven entries for one).
#[derive(Debug, Clone, Default, PartialEq)]
struct Marks(Box<[(&'static str, Box<str>)]>);

impl Marks {
    fn keep(map: Option<BTreeMap<String, String>>, read: &[&'static str]) -> Self {
        let Some(mut map) = map else {
            return Self::default();
        };
        Self(
            read.iter()
                .filter_map(|key| Some((*key, map.remove(*key)?.into_boxed_str())))
                .collect(),
        )
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(kept, _)| *kept == key)
            .map(|(_, value)| &**value)
    }
}

impl From<Pod> for CachedPod {
    fn from(pod: Pod) -> Self {
        let agent = AgentFacts::of(&pod);
        let service_account_name = pod
            .spec
            .and_then(|spec| spec.service_account_name)
            .filter(|name| !name.is_empty());
        let meta = pod.metadata;
        Self {
            labels: Marks::keep(meta.labels, &READ_LABELS),
            annotations: Marks::keep(meta.annotations, &READ_ANNOTATIONS),
            metadata: ObjectMeta {
                name: meta.name,
                namespace: meta.namespace,
                uid: meta.uid,
                resource_version: meta.resource_version,
                creation_timestamp: meta.creation_timestamp,
                deletion_timestamp: meta.deletion_timestamp,
                owner_references: meta.owner_references,
                ..ObjectMeta::default()
            },
            service_account_name,
            agent,
        }
    }
}

impl From<&Pod> for CachedPod {
    fn from(pod: &Pod) -> Self {
        Self::from(pod.clone())
    }
}

/// Decoded as a whole pod (one at a time, as the list or watch delivers it) and stripped at once.
impl<'de> Deserialize<'de> for CachedPod {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Pod::deserialize(deserializer).map(Self::from)
    }
}

impl Resource for CachedPod {
    type DynamicType = ();
    type Scope = NamespaceResourceScope;

    fn kind(dt: &()) -> Cow<'_, str> {
        Pod::kind(dt)
    }
    fn group(dt: &()) -> Cow<'_, str> {
        Pod::group(dt)
    }
    fn version(dt: &()) -> Cow<'_, str> {
        Pod::version(dt)
    }
    fn api_version(dt: &()) -> Cow<'_, str> {
        Pod::api_version(dt)
    }
    fn plural(dt: &()) -> Cow<'_, str> {
        Pod::plural(dt)
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

impl PodMarks for CachedPod {
    fn label(&self, key: &str) -> Option<&str> {
        debug_assert!(
            READ_LABELS.contains(&key),
            "label {key} is not cached: add it to READ_LABELS"
        );
        self.labels.get(key)
    }

    fn annotation(&self, key: &str) -> Option<&str> {
        debug_assert!(
            READ_ANNOTATIONS.contains(&key),
            "annotation {key} is not cached: add it to READ_ANNOTATIONS"
        );
        self.annotations.get(key)
    }
}

impl PodView for CachedPod {
    fn service_account_name(&self) -> Option<&str> {
        self.service_account_name.as_deref()
    }

    fn agent_facts(&self) -> Cow<'_, AgentFacts> {
        Cow::Borrowed(&self.agent)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_cached_pod_keeps_the_labels_and_annotations_the_controller_reads_and_nothing_else() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {
                "name": "web-1", "namespace": "shop", "uid": "u1", "resourceVersion": "7",
                "labels": {keys::GROUP_LABEL: "web", "app": "web", "pod-template-hash": "5d8f7c9b6d"},
                "annotations": {keys::STATUS: keys::STATUS_INJECTED, keys::SERVICE_SCOPE: "pod",
                    keys::ENDPOINTS: "/ready,/live", "kubectl.kubernetes.io/restartedAt": "2026-01-01T00:00:00Z"},
                "managedFields": [{"manager": "kubectl", "operation": "Update", "fieldsV1": {"f:metadata": {}}}]
            },
            "spec": {"serviceAccountName": "web", "containers": [{"name": "app", "image": "app:1"}]}
        }))
        .unwrap();

        let cached = CachedPod::from(pod);

        assert_eq!(cached.label(keys::GROUP_LABEL), Some("web"));
        assert_eq!(cached.label(keys::POD_LABEL), None);
        assert_eq!(cached.annotation(keys::STATUS), Some(keys::STATUS_INJECTED));
        assert_eq!(cached.annotation(keys::SERVICE_SCOPE), Some("pod"));
        assert_eq!(cached.labels.0.len() + cached.annotations.0.len(), 3);
        assert_eq!(
            cached.metadata,
            ObjectMeta {
                name: Some("web-1".into()),
                namespace: Some("shop".into()),
                uid: Some("u1".into()),
                resource_version: Some("7".into()),
                ..ObjectMeta::default()
            },
            "no labels, annotations or managedFields in the metadata"
        );
        assert_eq!(cached.service_account_name(), Some("web"));
    }
}
