//! Names of the objects the controller creates: `<base>-healthbridge`, kept a valid DNS-1035 label of at most 63 characters.

use sha2::{Digest, Sha256};

/// Longest name a Service (DNS-1035 label) may have; Roles and RoleBindings use the same bound for symmetry.
pub const MAX_NAME_LEN: usize = 63;
/// Suffix of every object name the controller creates.
pub const SUFFIX: &str = "-healthbridge";
/// Hex digits of the hash appended when a name had to be shortened or rewritten.
const HASH_LEN: usize = 8;

/// Suffix of per-pod Services (`service-scope: pod`). Every group Service name ends with [`SUFFIX`] and none ends
/// with this, so no pod name can produce a group's Service name, nor a group name a pod's.
pub const POD_SERVICE_SUFFIX: &str = "-healthbridge-pod";

/// Suffix of the agent Roles and RoleBindings of a ServiceAccount (never the end of a per-pod `<pod>-healthbridge`
/// name of older versions, so the two never collide).
pub const AGENT_RBAC_SUFFIX: &str = "-healthbridge-agent";

/// Name of chunk `chunk` of a ServiceAccount's agent Role and RoleBinding: `<sa>-healthbridge-agent`, then
/// `<sa>-healthbridge-agent-1`, …, shortened like [`object_name`].
pub fn agent_rbac_name(service_account: &str, chunk: usize) -> String {
    if chunk == 0 {
        suffixed(service_account, AGENT_RBAC_SUFFIX)
    } else {
        suffixed(service_account, &format!("{AGENT_RBAC_SUFFIX}-{chunk}"))
    }
}

/// `<base>-healthbridge` when that is already a valid label, else the base sanitised and truncated, plus a short stable
/// hash of the original base so two long names sharing a prefix still get different objects.
pub fn object_name(base: &str) -> String {
    suffixed(base, SUFFIX)
}

/// Name of the per-pod Service of `pod`: `<pod>-healthbridge-pod`, shortened like [`object_name`].
pub fn pod_service_name(pod: &str) -> String {
    suffixed(pod, POD_SERVICE_SUFFIX)
}

fn suffixed(base: &str, suffix: &str) -> String {
    let plain = format!("{base}{suffix}");
    if plain.len() <= MAX_NAME_LEN && is_dns_1035_label(&plain) {
        return plain;
    }
    let hash = short_hash(base);
    let room = MAX_NAME_LEN - suffix.len() - HASH_LEN - 1;
    let mut sanitised: String = base
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9') => c,
            _ => '-',
        })
        .collect();
    if !sanitised.starts_with(|c: char| c.is_ascii_lowercase()) {
        sanitised.insert_str(0, "hb-");
    }
    sanitised.truncate(room);
    let trimmed = sanitised.trim_end_matches('-');
    format!("{trimmed}-{hash}{suffix}")
}

/// First hex digits of SHA-256: stable across versions and machines, unlike `std`'s hasher.
pub fn short_hash(input: &str) -> String {
    let digest = Sha256::digest(input.as_bytes());
    digest
        .iter()
        .take(HASH_LEN / 2)
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// RFC 1035 label as Kubernetes checks it for Service names.
pub fn is_dns_1035_label(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.ends_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_short_name_gets_the_plain_suffix() {
        assert_eq!(object_name("web"), "web-healthbridge");
    }

    #[test]
    fn a_name_that_fits_exactly_is_kept() {
        let base = "a".repeat(MAX_NAME_LEN - SUFFIX.len());
        assert_eq!(object_name(&base), format!("{base}{SUFFIX}"));
    }

    #[test]
    fn a_long_name_is_truncated_to_63_with_a_hash() {
        let base = "a".repeat(MAX_NAME_LEN - SUFFIX.len() + 1);
        let name = object_name(&base);
        assert_eq!(name.len(), MAX_NAME_LEN);
        assert!(name.ends_with(&format!("-{}{SUFFIX}", short_hash(&base))));
        assert!(is_dns_1035_label(&name));
    }

    #[test]
    fn two_long_names_with_the_same_prefix_differ() {
        let prefix = "checkout-frontend-canary-".repeat(4);
        assert_ne!(
            object_name(&format!("{prefix}a")),
            object_name(&format!("{prefix}b"))
        );
    }

    #[test]
    fn the_hash_is_stable() {
        // Pinned: changing the hash would rename every object on upgrade and orphan the old ones.
        assert_eq!(short_hash("web"), "4b5e57f6");
    }

    #[test]
    fn a_name_that_is_not_a_dns_label_is_rewritten() {
        let name = object_name("web.v2_canary");
        assert!(is_dns_1035_label(&name), "{name}");
        assert!(name.starts_with("web-v2-canary-"));
    }

    #[test]
    fn per_pod_and_group_service_names_never_collide() {
        // The attack: a bare pod named like a group, with `service-scope: pod`.
        assert_eq!(object_name("checkout"), "checkout-healthbridge");
        assert_eq!(pod_service_name("checkout"), "checkout-healthbridge-pod");
        let long = "x".repeat(80);
        for base in [
            "checkout",
            "checkout-pod",
            "checkout-healthbridge",
            long.as_str(),
            "0db",
        ] {
            let pod = pod_service_name(base);
            assert!(is_dns_1035_label(&pod), "{pod}");
            assert!(
                pod.ends_with(POD_SERVICE_SUFFIX) && !pod.ends_with(SUFFIX),
                "{pod}"
            );
            assert!(object_name(base).ends_with(SUFFIX), "{base}");
        }
    }

    #[test]
    fn a_name_starting_with_a_digit_gets_a_letter_first() {
        let name = object_name("0web");
        assert!(is_dns_1035_label(&name), "{name}");
    }
}
