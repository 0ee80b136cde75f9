//! The group index answers exactly what a scan of the pod store answers, through applies, relabels, deletes
//! and relists.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;

use healthbridge_webhook::controller::cached::{CachedPod as Pod, PodMarks};
use healthbridge_webhook::controller::group_index::GroupIndex;
use kube::ResourceExt;
use kube::runtime::reflector::{self, Store, store::Writer};
use kube::runtime::watcher::Event;
use serde_json::json;

const GROUP_LABEL: &str = "healthbridge.io/group";

fn pod(namespace: &str, name: &str, group: Option<&str>) -> Pod {
    let mut value = json!({ "metadata": { "name": name, "namespace": namespace } });
    if let Some(group) = group {
        value["metadata"]["labels"] = json!({ GROUP_LABEL: group });
    }
    serde_json::from_value(value).unwrap()
}

/// The store and the index, fed the same events as the controller feeds them.
struct Cache {
    store: Store<Pod>,
    writer: Writer<Pod>,
    index: GroupIndex,
}

impl Cache {
    fn new() -> Self {
        let (store, writer) = reflector::store();
        Self {
            store,
            writer,
            index: GroupIndex::default(),
        }
    }

    fn apply(&mut self, event: Event<Pod>) -> &mut Self {
        self.writer.apply_watcher_event(&event);
        self.index.apply_watcher_event(&event);
        self
    }

    fn relist(&mut self, pods: Vec<Pod>) -> &mut Self {
        self.apply(Event::Init);
        for pod in pods {
            self.apply(Event::InitApply(pod));
        }
        self.apply(Event::InitDone)
    }

    fn scanned(&self, namespace: &str, group: &str) -> BTreeSet<String> {
        self.store
            .state_filter(|pod| {
                pod.namespace().as_deref() == Some(namespace)
                    && pod.label(GROUP_LABEL) == Some(group)
            })
            .iter()
            .map(|pod| pod.name_any())
            .collect()
    }

    fn indexed(&self, namespace: &str, group: &str) -> BTreeSet<String> {
        self.index
            .members(namespace, group)
            .into_iter()
            .map(|reference| reference.name)
            .collect()
    }

    /// Asserts that the index and a scan agree on every group, and returns the members of `namespace`/`group`.
    fn members(&self, namespace: &str, group: &str) -> BTreeSet<String> {
        for (ns, g) in [
            ("shop", "web"),
            ("shop", "api"),
            ("other", "web"),
            ("shop", "none"),
        ] {
            assert_eq!(self.indexed(ns, g), self.scanned(ns, g), "{ns}/{g}");
        }
        self.indexed(namespace, group)
    }
}

fn names(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|name| (*name).to_owned()).collect()
}

#[test]
fn a_group_is_its_labelled_pods_in_its_namespace_only() {
    let mut cache = Cache::new();
    cache.relist(vec![
        pod("shop", "web-1", Some("web")),
        pod("shop", "web-2", Some("web")),
        pod("other", "web-1", Some("web")),
        pod("shop", "api-1", Some("api")),
        pod("shop", "plain", None),
    ]);
    assert_eq!(cache.members("shop", "web"), names(&["web-1", "web-2"]));
    assert_eq!(cache.members("other", "web"), names(&["web-1"]));
    assert_eq!(cache.index.len(), 4, "unlabelled pods are not indexed");
}

#[test]
fn a_relabelled_pod_moves_to_its_new_group_and_a_deleted_one_leaves() {
    let mut cache = Cache::new();
    cache
        .relist(vec![
            pod("shop", "web-1", Some("web")),
            pod("shop", "web-2", Some("web")),
        ])
        .apply(Event::Apply(pod("shop", "web-2", Some("api"))))
        .apply(Event::Apply(pod("shop", "web-3", Some("web"))))
        .apply(Event::Delete(pod("shop", "web-1", Some("web"))));
    assert_eq!(cache.members("shop", "web"), names(&["web-3"]));
    assert_eq!(cache.members("shop", "api"), names(&["web-2"]));

    cache.apply(Event::Apply(pod("shop", "web-3", None)));
    assert!(cache.members("shop", "web").is_empty());
    assert!(cache.index.len() == 1 && !cache.index.is_empty());
}

#[test]
fn a_relist_replaces_the_groups_at_its_end_as_the_store_does() {
    let mut cache = Cache::new();
    cache.relist(vec![
        pod("shop", "web-1", Some("web")),
        pod("shop", "web-2", Some("web")),
    ]);
    // During a relist the store still shows the old state; so does the index.
    cache
        .apply(Event::Init)
        .apply(Event::InitApply(pod("shop", "web-3", Some("web"))));
    assert_eq!(cache.members("shop", "web"), names(&["web-1", "web-2"]));

    cache.apply(Event::InitDone);
    assert_eq!(cache.members("shop", "web"), names(&["web-3"]));
}
