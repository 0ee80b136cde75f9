//! The pod as the controller caches it: the metadata it reads and the agent facts trust verification needs,
//! stripped from each object as it is decoded, so 10,000 pods fit in a few MiB (a full `Pod` is ~7 KiB in memory).

use std::borrow::Cow;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use serde::{Deserialize, Deserializer};

use crate::keys;
use crate::trust::{AgentFacts, AgentImages, Untrusted, VerifiedAgent};

/// What the controller needs of a pod, whether it holds the whole object (tests, admission) or the cached one.
pub trait PodView: Resource<DynamicType = ()> {
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
/// ownerReferences, the `healthbridge.io/` labels and annotations, the ServiceAccount and the agent facts.
/// No managedFields, no other containers, no status.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CachedPod {
    pub metadata: ObjectMeta,
    pub service_account_name: Option<String>,
    pub agent: AgentFacts,
}

impl From<Pod> for CachedPod {
    fn from(pod: Pod) -> Self {
        let agent = AgentFacts::of(&pod);
        let service_account_name = pod
            .spec
            .and_then(|spec| spec.service_account_name)
            .filter(|name| !name.is_empty());
        Self {
            metadata: strip_meta(pod.metadata),
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

/// Keeps only what the controller reads of a pod's metadata.
pub fn strip_meta(meta: ObjectMeta) -> ObjectMeta {
    let ours = |map: Option<std::collections::BTreeMap<String, String>>| {
        map.map(|map| {
            map.into_iter()
                .filter(|(key, _)| key.starts_with(keys::PREFIX))
                .collect()
        })
    };
    ObjectMeta {
        name: meta.name,
        namespace: meta.namespace,
        uid: meta.uid,
        resource_version: meta.resource_version,
        creation_timestamp: meta.creation_timestamp,
        deletion_timestamp: meta.deletion_timestamp,
        owner_references: meta.owner_references,
        labels: ours(meta.labels),
        annotations: ours(meta.annotations),
        ..ObjectMeta::default()
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

impl PodView for CachedPod {
    fn service_account_name(&self) -> Option<&str> {
        self.service_account_name.as_deref()
    }

    fn agent_facts(&self) -> Cow<'_, AgentFacts> {
        Cow::Borrowed(&self.agent)
    }
}
