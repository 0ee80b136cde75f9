//! The group of a pod: which `<group>-healthbridge` Service selects it.

use k8s_openapi::api::core::v1::Pod;
use sha2::{Digest, Sha256};

use crate::keys;

/// Longest label value Kubernetes accepts.
pub const MAX_LABEL_VALUE: usize = 63;

/// The group of `pod`: the `healthbridge.io/service` annotation, else the owning workload's name,
/// else the pod's name or `generateName` prefix; always a valid label value.
pub fn group_of(pod: &Pod) -> String {
    let meta = &pod.metadata;
    if let Some(service) = meta.annotations.as_ref().and_then(|a| a.get(keys::SERVICE)) {
        return to_label_value(service);
    }
    default_group_of(pod)
}

/// The group of `pod` without its `healthbridge.io/service` annotation: its workload's name, else its own.
pub fn default_group_of(pod: &Pod) -> String {
    let meta = &pod.metadata;
    if let Some(owner) = workload_name(pod) {
        return to_label_value(&owner);
    }
    let own = meta
        .name
        .as_deref()
        .filter(|n| !n.is_empty())
        .or_else(|| {
            meta.generate_name
                .as_deref()
                .map(|g| g.trim_end_matches('-'))
        })
        .unwrap_or_default();
    to_label_value(own)
}

/// Name of the top-level workload owning `pod`, as far as the pod alone tells.
fn workload_name(pod: &Pod) -> Option<String> {
    let owners = pod.metadata.owner_references.as_ref()?;
    let owner = owners
        .iter()
        .find(|o| o.controller == Some(true))
        .or_else(|| owners.first())?;
    match owner.kind.as_str() {
        // A Deployment's ReplicaSet is `<deployment>-<pod-template-hash>`; the pod carries the hash label.
        "ReplicaSet" => {
            let hash = pod
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("pod-template-hash"));
            let name = match hash {
                Some(hash) => owner
                    .name
                    .strip_suffix(hash.as_str())
                    .and_then(|n| n.strip_suffix('-'))
                    .unwrap_or(&owner.name),
                None => &owner.name,
            };
            Some(name.to_owned())
        }
        _ => Some(owner.name.clone()),
    }
}

/// Whether `value` is a valid Kubernetes label value.
pub fn is_label_value(value: &str) -> bool {
    let bytes = value.as_bytes();
    value.len() <= MAX_LABEL_VALUE
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && bytes.first().is_none_or(u8::is_ascii_alphanumeric)
        && bytes.last().is_none_or(u8::is_ascii_alphanumeric)
}

/// `raw` made into a non-empty label value: bad characters become `-`, ends trimmed,
/// names over 63 characters truncated with a stable hash of the whole so they stay distinct.
pub fn to_label_value(raw: &str) -> String {
    let cleaned: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '-'
            }
        })
        .collect();
    let trimmed = cleaned.trim_matches(|c: char| !c.is_ascii_alphanumeric());
    if trimmed.is_empty() {
        return "pod".to_owned();
    }
    if trimmed.len() <= MAX_LABEL_VALUE {
        return trimmed.to_owned();
    }
    let digest = Sha256::digest(raw.as_bytes());
    let hash: String = digest.iter().take(4).map(|b| format!("{b:02x}")).collect();
    let head = trimmed[..MAX_LABEL_VALUE - hash.len() - 1]
        .trim_end_matches(|c: char| !c.is_ascii_alphanumeric());
    format!("{head}-{hash}")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

    fn pod_owned_by(kind: &str, name: &str) -> Pod {
        Pod {
            metadata: ObjectMeta {
                generate_name: Some(format!("{name}-")),
                owner_references: Some(vec![OwnerReference {
                    kind: kind.into(),
                    name: name.into(),
                    controller: Some(true),
                    ..Default::default()
                }]),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn a_deployments_pod_is_grouped_by_the_deployment_name() {
        let mut pod = pod_owned_by("ReplicaSet", "web-api-5d8f7c9b6d");
        pod.metadata.labels = Some([("pod-template-hash".into(), "5d8f7c9b6d".into())].into());
        assert_eq!(group_of(&pod), "web-api");
    }

    #[test]
    fn a_bare_replicaset_keeps_its_own_name() {
        assert_eq!(
            group_of(&pod_owned_by("ReplicaSet", "frontend")),
            "frontend"
        );
    }

    #[test]
    fn daemonset_statefulset_and_job_pods_take_the_owner_name() {
        for kind in ["DaemonSet", "StatefulSet", "Job"] {
            assert_eq!(group_of(&pod_owned_by(kind, "db")), "db", "{kind}");
        }
    }

    #[test]
    fn the_service_annotation_wins_over_the_owner() {
        let mut pod = pod_owned_by("StatefulSet", "db");
        pod.metadata.annotations = Some([(keys::SERVICE.into(), "shared".into())].into());
        assert_eq!(group_of(&pod), "shared");
    }

    #[test]
    fn an_unowned_pod_uses_its_name_or_generate_name_prefix() {
        let mut pod = Pod::default();
        pod.metadata.generate_name = Some("batch-".into());
        assert_eq!(group_of(&pod), "batch");
        pod.metadata.name = Some("single".into());
        assert_eq!(group_of(&pod), "single");
    }

    #[test]
    fn long_names_are_truncated_to_a_stable_valid_label_value() {
        let long = "a".repeat(80);
        let value = to_label_value(&long);
        assert_eq!(value.len(), MAX_LABEL_VALUE);
        assert!(is_label_value(&value));
        assert_eq!(value, to_label_value(&long));
        assert_ne!(value, to_label_value(&"a".repeat(81)));
    }

    #[test]
    fn label_values_are_checked_like_kubernetes_does() {
        assert!(is_label_value("my-app_1.0"));
        assert!(!is_label_value("-leading"));
        assert!(!is_label_value("has space"));
        assert!(!is_label_value(&"x".repeat(64)));
    }
}
