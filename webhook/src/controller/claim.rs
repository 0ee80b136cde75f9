//! Whether the controller may write over an object that already exists: only one healthbridge manages, held by the same owner.
//!
//! Server-side apply with `force` takes over any object of the name; these checks run first, so a pod author
//! can neither make healthbridge rewrite an object it does not manage nor move another workload's Service.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};

use crate::keys;

/// Owner kinds healthbridge sets on what it creates: the pod (Role, RoleBinding, per-pod Service) or a workload.
const HOLDER_KINDS: [&str; 5] = [
    "Pod",
    "Deployment",
    "DaemonSet",
    "StatefulSet",
    "ReplicaSet",
];

/// An existing object healthbridge must leave unchanged; the message names who holds it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClaimConflict {
    #[error(
        "{kind} {namespace}/{name} exists and is not managed by healthbridge (it lacks the label {}={}): healthbridge leaves it unchanged; rename or delete it, or give this pod another group with {}",
        keys::MANAGED_BY_LABEL,
        keys::MANAGED_BY,
        keys::SERVICE
    )]
    NotManaged {
        kind: &'static str,
        namespace: String,
        name: String,
    },
    #[error(
        "group {group:?} belongs to {holder} (its Service {namespace}/{name}), and this pod belongs to {claimant}: a pod joins a group only with the group's owner, so the Service stays as it is; set {} to a group of this pod's own",
        keys::SERVICE
    )]
    GroupHeld {
        group: String,
        namespace: String,
        name: String,
        holder: String,
        claimant: String,
    },
    #[error(
        "{kind} {namespace}/{name} belongs to {holder}, not to {claimant}: healthbridge leaves it unchanged"
    )]
    Held {
        kind: &'static str,
        namespace: String,
        name: String,
        holder: String,
        claimant: String,
    },
}

impl ClaimConflict {
    /// Reason of the Warning Event.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::GroupHeld { .. } => "GroupClaimed",
            Self::NotManaged { .. } | Self::Held { .. } => "NameConflict",
        }
    }

    /// The kind, namespace and name of the object left unchanged (its owner is told too).
    pub fn object(&self) -> (&'static str, &str, &str) {
        match self {
            Self::NotManaged {
                kind,
                namespace,
                name,
            }
            | Self::Held {
                kind,
                namespace,
                name,
                ..
            } => (kind, namespace, name),
            Self::GroupHeld {
                namespace, name, ..
            } => ("Service", namespace, name),
        }
    }
}

/// The owner healthbridge put on an object (others may add more ownerReferences; those are theirs).
pub fn holder(meta: &ObjectMeta) -> Option<&OwnerReference> {
    meta.owner_references
        .iter()
        .flatten()
        .find(|owner| HOLDER_KINDS.contains(&owner.kind.as_str()))
}

/// "Deployment checkout", or what an ownerless group means.
pub fn describe(owner: Option<&OwnerReference>) -> String {
    owner.map_or_else(
        || "no workload (bare pods and Job pods)".to_owned(),
        |owner| format!("{} {}", owner.kind, owner.name),
    )
}

/// Whether `desired` (kind `kind`) may be applied over `observed`, the object of that name as it exists, if it does.
/// It may when nothing exists, or when the object is labelled managed by healthbridge and is held by the same
/// owner: the same UID, or a pod of the same name (a StatefulSet pod re-created before its old objects were
/// collected). Ownerless group Services are shared by ownerless pods only.
pub fn may_apply(
    kind: &'static str,
    desired: &ObjectMeta,
    observed: Option<&ObjectMeta>,
) -> Result<(), ClaimConflict> {
    let Some(observed) = observed else {
        return Ok(());
    };
    let namespace = observed.namespace.clone().unwrap_or_default();
    let name = observed.name.clone().unwrap_or_default();
    let managed = observed
        .labels
        .as_ref()
        .and_then(|labels| labels.get(keys::MANAGED_BY_LABEL))
        .is_some_and(|value| value == keys::MANAGED_BY);
    if !managed {
        return Err(ClaimConflict::NotManaged {
            kind,
            namespace,
            name,
        });
    }
    let (want, have) = (holder(desired), holder(observed));
    let same = match (want, have) {
        (None, None) => true,
        (Some(want), Some(have)) => {
            want.uid == have.uid
                || (want.kind == "Pod" && have.kind == "Pod" && want.name == have.name)
        }
        _ => false,
    };
    if same {
        return Ok(());
    }
    let (holder, claimant) = (describe(have), describe(want));
    let group = desired
        .labels
        .as_ref()
        .and_then(|labels| labels.get(keys::GROUP_LABEL));
    Err(match group {
        Some(group) => ClaimConflict::GroupHeld {
            group: group.clone(),
            namespace,
            name,
            holder,
            claimant,
        },
        None => ClaimConflict::Held {
            kind,
            namespace,
            name,
            holder,
            claimant,
        },
    })
}
