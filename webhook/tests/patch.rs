//! The patch for every fixture pod, applied with json_patch and checked field by field.
#![allow(clippy::unwrap_used)]

mod common;

use common::{AGENT_IMAGE, big_pod, by_annotation, config, fixture, pod};
use healthbridge_webhook::config::NativeSidecar;
use healthbridge_webhook::patch::{
    AdmissionContext, Decision, DenyReason, OptIn, SkipReason, patch_for,
};
use serde_json::{Value, json};

/// The pod after the webhook's patch, and the warnings given.
fn injected(fixture_value: &Value, ctx: &AdmissionContext<'_>) -> (Value, Vec<String>) {
    match patch_for(&pod(fixture_value), &config(), ctx).unwrap() {
        Decision::Inject {
            patch, warnings, ..
        } => {
            let mut patched = fixture_value.clone();
            json_patch::patch(&mut patched, &patch).unwrap();
            (patched, warnings)
        }
        other => panic!("expected an injection, got {other:?}"),
    }
}

fn inject(name: &str) -> (Value, Vec<String>) {
    let value = fixture(name);
    let ns = value["metadata"]["namespace"].as_str().unwrap().to_owned();
    injected(&value, &by_annotation(&ns))
}

fn agent_in<'a>(pod: &'a Value, list: &str) -> &'a Value {
    pod["spec"][list]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "healthbridge-agent")
        .unwrap()
}

fn env_of(container: &Value) -> Vec<(String, Value)> {
    container["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap().to_owned(),
                e.get("value")
                    .cloned()
                    .unwrap_or_else(|| e["valueFrom"].clone()),
            )
        })
        .collect()
}

fn env_value(container: &Value, name: &str) -> Option<String> {
    env_of(container)
        .into_iter()
        .find(|(n, _)| n == name)
        .and_then(|(_, v)| v.as_str().map(str::to_owned))
}

fn denial(value: &Value) -> DenyReason {
    let ns = value["metadata"]["namespace"]
        .as_str()
        .unwrap_or("default")
        .to_owned();
    patch_for(&pod(value), &config(), &by_annotation(&ns)).unwrap_err()
}

#[test]
fn a_deployment_pod_gets_the_agent_as_native_sidecar_with_the_deployment_group() {
    let (patched, warnings) = inject("deployment-pod");
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(
        patched["metadata"]["annotations"]["healthbridge.io/status"],
        "injected"
    );
    assert_eq!(
        patched["metadata"]["annotations"]["healthbridge.io/inject"],
        "true"
    );
    assert_eq!(
        patched["metadata"]["labels"]["healthbridge.io/group"],
        "web"
    );
    assert_eq!(patched["metadata"]["labels"]["app"], "web");
    assert_eq!(
        patched["spec"]["containers"].as_array().unwrap().len(),
        1,
        "app containers untouched"
    );
    let agent = agent_in(&patched, "initContainers");
    assert_eq!(agent["image"], AGENT_IMAGE);
    assert_eq!(agent["restartPolicy"], "Always");
    assert_eq!(
        agent["ports"],
        json!([{ "name": "healthbridge", "containerPort": 13000, "protocol": "TCP" }])
    );
    assert_eq!(
        agent["readinessProbe"]["httpGet"],
        json!({ "path": "/self", "port": 13000 })
    );
    assert_eq!(
        agent["livenessProbe"]["httpGet"],
        json!({ "path": "/self", "port": 13000 })
    );
    assert_eq!(
        agent["resources"],
        json!({ "requests": { "cpu": "10m", "memory": "16Mi" }, "limits": { "memory": "32Mi" } })
    );
    let sc = &agent["securityContext"];
    assert_eq!(sc["runAsNonRoot"], true);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]));
    assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault");
    assert_eq!(
        env_of(agent)[..3],
        [
            (
                "POD_NAME".to_owned(),
                json!({ "fieldRef": { "fieldPath": "metadata.name" } })
            ),
            (
                "POD_NAMESPACE".to_owned(),
                json!({ "fieldRef": { "fieldPath": "metadata.namespace" } })
            ),
            ("HTTP_HEALTHCHECK_SIDECAR_PORT".to_owned(), json!("13000")),
        ]
    );
    // The pod already has the API-access volume: the agent shares it and nothing is added.
    assert_eq!(agent["volumeMounts"][0]["name"], "kube-api-access-x7k2p");
    assert_eq!(patched["spec"]["volumes"].as_array().unwrap().len(), 1);
}

#[test]
fn a_statefulset_pod_uses_the_annotated_port_and_target_container() {
    let (patched, _) = inject("statefulset-pod");
    assert_eq!(patched["metadata"]["labels"]["healthbridge.io/group"], "db");
    let agent = agent_in(&patched, "initContainers");
    assert_eq!(agent["ports"][0]["containerPort"], 14000);
    assert_eq!(agent["readinessProbe"]["httpGet"]["port"], 14000);
    assert_eq!(
        env_value(agent, "HTTP_HEALTHCHECK_SIDECAR_PORT").as_deref(),
        Some("14000")
    );
    assert_eq!(
        env_value(agent, "HTTP_HEALTHCHECK_SIDECAR_TARGET_CONTAINER").as_deref(),
        Some("postgres")
    );
}

#[test]
fn the_default_port_colliding_with_a_container_port_is_denied_naming_the_annotation() {
    let mut value = fixture("statefulset-pod");
    value["metadata"]["annotations"]
        .as_object_mut()
        .unwrap()
        .remove("healthbridge.io/port");
    let deny = denial(&value);
    let message = deny.to_string();
    assert_eq!(deny.as_str(), "port_collision");
    assert!(
        message.contains("13000")
            && message.contains("\"exporter\"")
            && message.contains("healthbridge.io/port"),
        "{message}"
    );
}

#[test]
fn a_job_pod_without_labels_gets_the_label_map_created_and_the_job_group() {
    let (patched, warnings) = inject("job-pod");
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(
        patched["metadata"]["labels"],
        json!({ "healthbridge.io/group": "migrate" })
    );
    assert_eq!(
        agent_in(&patched, "initContainers")["restartPolicy"],
        "Always"
    );
}

#[test]
fn a_job_pod_with_a_regular_sidecar_is_warned_that_it_will_not_complete() {
    let value = fixture("job-pod");
    let mut cfg = config();
    cfg.native_sidecar = NativeSidecar::Never;
    let Decision::Inject {
        patch, warnings, ..
    } = patch_for(&pod(&value), &cfg, &by_annotation("shop")).unwrap()
    else {
        panic!("expected an injection")
    };
    let mut patched = value.clone();
    json_patch::patch(&mut patched, &patch).unwrap();
    assert!(
        agent_in(&patched, "containers")
            .get("restartPolicy")
            .is_none()
    );
    assert!(
        warnings.iter().any(|w| w.contains("restartPolicy Never")),
        "{warnings:?}"
    );
}

#[test]
fn existing_init_containers_and_volumes_are_kept_and_the_agent_appended() {
    let (patched, _) = inject("init-containers-pod");
    let names: Vec<&str> = patched["spec"]["initContainers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["wait-for-db", "log-shipper", "healthbridge-agent"]);
    let volumes: Vec<&str> = patched["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(volumes, ["scratch", "healthbridge-agent-token"]);
}

#[test]
fn a_native_sidecar_of_the_app_may_be_the_target_container() {
    let mut value = fixture("init-containers-pod");
    value["metadata"]["annotations"]["healthbridge.io/target-container"] = json!("log-shipper");
    let (patched, _) = injected(&value, &by_annotation("shop"));
    assert_eq!(
        env_value(
            agent_in(&patched, "initContainers"),
            "HTTP_HEALTHCHECK_SIDECAR_TARGET_CONTAINER"
        )
        .as_deref(),
        Some("log-shipper")
    );
    value["metadata"]["annotations"]["healthbridge.io/target-container"] = json!("wait-for-db");
    let message = denial(&value).to_string();
    assert!(
        message.contains("healthbridge.io/target-container")
            && message.contains("worker, log-shipper"),
        "{message}"
    );
}

#[test]
fn agent_settings_come_from_annotations_and_the_apps_env_is_untouched() {
    let original = fixture("existing-env-pod");
    let (patched, warnings) = inject("existing-env-pod");
    assert_eq!(
        patched["spec"]["containers"][0],
        original["spec"]["containers"][0]
    );
    let agent = agent_in(&patched, "initContainers");
    let expected = [
        ("HTTP_HEALTHCHECK_SIDECAR_PORT", "13000"),
        ("HTTP_HEALTHCHECK_SIDECAR_STATE_OVERRIDE", "true"),
        (
            "HTTP_HEALTHCHECK_SIDECAR_ENDPOINTS",
            "http://localhost:8080/ready,https://localhost:8443/live",
        ),
        ("HTTP_HEALTHCHECK_SIDECAR_TIMEOUT", "500ms"),
        ("HTTP_HEALTHCHECK_SIDECAR_EXEC", "/disk=test -w /data"),
        ("HTTP_HEALTHCHECK_SIDECAR_UNHEALTHY_STATUS", "500"),
    ];
    for (name, value) in expected {
        assert_eq!(env_value(agent, name).as_deref(), Some(value), "{name}");
    }
    assert_eq!(agent["resources"]["limits"]["memory"], "64Mi");
    assert!(
        warnings.iter().any(|w| w.contains("healthbridge.io/exec")),
        "{warnings:?}"
    );
}

#[test]
fn a_pod_without_annotations_in_an_opted_in_namespace_gets_the_map_created() {
    let value = fixture("no-annotations-pod");
    let ctx = AdmissionContext {
        namespace: "team-a",
        opt_in: OptIn::Namespace,
        cluster_supports_native_sidecar: true,
        cluster_supports_sleep_action: true,
    };
    let (patched, _) = injected(&value, &ctx);
    assert_eq!(
        patched["metadata"]["annotations"],
        json!({ "healthbridge.io/status": "injected" })
    );
    assert_eq!(
        patched["metadata"]["labels"],
        json!({ "healthbridge.io/group": "plain" })
    );
    assert_eq!(
        patched["spec"]["initContainers"].as_array().unwrap().len(),
        1
    );
}

#[test]
fn without_the_annotation_the_annotation_path_skips_and_the_pod_may_opt_out_of_a_namespace() {
    let value = fixture("no-annotations-pod");
    let skipped = patch_for(&pod(&value), &config(), &by_annotation("team-a")).unwrap();
    assert!(matches!(
        skipped,
        Decision::Skip {
            reason: SkipReason::NotOptedIn,
            ..
        }
    ));
    let mut opted_out = value.clone();
    opted_out["metadata"]["annotations"] = json!({ "healthbridge.io/inject": "false" });
    let ctx = AdmissionContext {
        namespace: "team-a",
        opt_in: OptIn::Namespace,
        cluster_supports_native_sidecar: true,
        cluster_supports_sleep_action: true,
    };
    assert!(matches!(
        patch_for(&pod(&opted_out), &config(), &ctx).unwrap(),
        Decision::Skip {
            reason: SkipReason::OptedOut,
            ..
        }
    ));
}

#[test]
fn keys_with_slash_and_tilde_are_escaped_and_other_keys_survive() {
    let original = fixture("escaped-keys-pod");
    let (patched, _) = inject("escaped-keys-pod");
    let annotations = patched["metadata"]["annotations"].as_object().unwrap();
    assert_eq!(annotations.len(), 4);
    assert_eq!(annotations["healthbridge.io/status"], "injected");
    assert_eq!(
        annotations["example.com/path~0/x"],
        original["metadata"]["annotations"]["example.com/path~0/x"]
    );
    assert_eq!(annotations["example.com~1slash"], "keeps ~1 literally");
    let labels = patched["metadata"]["labels"].as_object().unwrap();
    assert_eq!(labels["healthbridge.io/group"], "odd-keys");
    assert_eq!(labels["example.com/a~b"], "tilde");
    assert_eq!(labels.len(), 3);
}

#[test]
fn a_pod_without_token_automount_gets_a_token_volume_for_the_agent_only() {
    let (patched, _) = inject("no-automount-pod");
    assert_eq!(patched["spec"]["automountServiceAccountToken"], false);
    let volumes = patched["spec"]["volumes"].as_array().unwrap();
    assert_eq!(volumes.len(), 1);
    assert_eq!(volumes[0]["name"], "healthbridge-agent-token");
    assert_eq!(
        volumes[0]["projected"]["sources"][0]["serviceAccountToken"]["path"],
        "token"
    );
    let agent = agent_in(&patched, "initContainers");
    assert_eq!(
        agent["volumeMounts"],
        json!([{ "name": "healthbridge-agent-token", "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount", "readOnly": true }])
    );
    assert!(
        patched["spec"]["containers"][0]
            .get("volumeMounts")
            .is_none(),
        "the app stays without a token"
    );
}

#[test]
fn a_host_network_pod_is_injected_with_a_warning_about_the_node_port() {
    let (patched, warnings) = inject("host-network-pod");
    assert_eq!(
        patched["metadata"]["labels"]["healthbridge.io/group"],
        "node-agent"
    );
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("hostNetwork") && w.contains("13000")),
        "{warnings:?}"
    );
}

#[test]
fn patching_the_patched_pod_changes_nothing() {
    for name in [
        "deployment-pod",
        "statefulset-pod",
        "job-pod",
        "init-containers-pod",
        "existing-env-pod",
        "escaped-keys-pod",
        "no-automount-pod",
        "host-network-pod",
    ] {
        let (patched, _) = inject(name);
        let again = patch_for(&pod(&patched), &config(), &by_annotation("shop")).unwrap();
        assert!(
            matches!(
                again,
                Decision::Skip {
                    reason: SkipReason::AlreadyInjected,
                    ..
                }
            ),
            "{name}: {again:?}"
        );
    }
}

#[test]
fn a_pod_with_the_agent_but_no_marker_is_left_alone() {
    let (mut patched, _) = inject("deployment-pod");
    patched["metadata"]["annotations"]
        .as_object_mut()
        .unwrap()
        .remove("healthbridge.io/status");
    let again = patch_for(&pod(&patched), &config(), &by_annotation("shop")).unwrap();
    assert!(matches!(
        again,
        Decision::Skip {
            reason: SkipReason::AlreadyInjected,
            ..
        }
    ));
}

#[test]
fn system_namespaces_and_the_webhooks_own_are_never_injected() {
    for ns in [
        "kube-system",
        "kube-public",
        "kube-node-lease",
        "healthbridge-system",
    ] {
        let mut value = fixture("deployment-pod");
        value["metadata"]["namespace"] = json!(ns);
        let decision = patch_for(&pod(&value), &config(), &by_annotation(ns)).unwrap();
        assert!(
            matches!(
                decision,
                Decision::Skip {
                    reason: SkipReason::ExcludedNamespace,
                    ..
                }
            ),
            "{ns}"
        );
    }
}

#[test]
fn a_request_for_a_system_namespace_is_never_injected_whatever_the_object_or_the_configuration_says()
 {
    let mut cfg = config();
    cfg.excluded_namespaces.clear();
    for ns in ["kube-system", "kube-public", "kube-node-lease"] {
        let mut value = fixture("deployment-pod");
        value["metadata"]["namespace"] = json!("shop");
        for opt_in in [OptIn::Annotation, OptIn::Namespace] {
            let ctx = AdmissionContext {
                namespace: ns,
                opt_in,
                cluster_supports_native_sidecar: true,
                cluster_supports_sleep_action: true,
            };
            let decision = patch_for(&pod(&value), &cfg, &ctx).unwrap();
            assert!(
                matches!(
                    decision,
                    Decision::Skip {
                        reason: SkipReason::ExcludedNamespace,
                        ..
                    }
                ),
                "{ns} {opt_in:?}: {decision:?}"
            );
        }
    }
}

#[test]
fn bad_annotation_values_are_denied_with_key_value_and_what_is_accepted() {
    let mut value = fixture("deployment-pod");
    value["metadata"]["annotations"]["healthbridge.io/state-override"] = json!("maybe");
    value["metadata"]["annotations"]["healthbridge.io/colour"] = json!("blue");
    let message = denial(&value).to_string();
    assert!(
        message.contains("healthbridge.io/state-override: `maybe`")
            && message.contains("`true` or `false`"),
        "{message}"
    );
    assert!(
        message.contains("healthbridge.io/colour") && message.contains("known keys"),
        "{message}"
    );
}

#[test]
fn a_memory_request_above_the_limit_is_denied_naming_both_annotations() {
    let mut value = fixture("deployment-pod");
    value["metadata"]["annotations"]["healthbridge.io/memory-request"] = json!("1Gi");
    let message = denial(&value).to_string();
    assert!(
        message.contains("healthbridge.io/memory-request")
            && message.contains("healthbridge.io/memory-limit"),
        "{message}"
    );
}

#[test]
fn the_per_pod_native_sidecar_annotation_and_agent_image_win_over_the_config() {
    let mut value = fixture("deployment-pod");
    value["metadata"]["annotations"]["healthbridge.io/native-sidecar"] = json!("false");
    value["metadata"]["annotations"]["healthbridge.io/agent-image"] =
        json!("mirror.example/agent:pinned");
    let (patched, _) = injected(&value, &by_annotation("shop"));
    assert!(patched["spec"].get("initContainers").is_none());
    assert_eq!(
        agent_in(&patched, "containers")["image"],
        "mirror.example/agent:pinned"
    );
}

#[test]
fn the_patch_does_not_grow_with_unrelated_pod_content() {
    let size =
        |value: &Value| match patch_for(&pod(value), &config(), &by_annotation("load")).unwrap() {
            Decision::Inject { patch, .. } => {
                let mut patched = value.clone();
                json_patch::patch(&mut patched, &patch).unwrap();
                (patch.0.len(), serde_json::to_vec(&patch).unwrap().len())
            }
            other => panic!("{other:?}"),
        };
    assert_eq!(size(&big_pod(30, 50)), size(&big_pod(1, 1)));
}

// ---------------------------------------------------------------- what a pod author cannot make the webhook do

#[test]
fn a_status_marker_written_by_the_pod_author_is_denied() {
    let mut value = fixture("deployment-pod");
    value["metadata"]["annotations"]["healthbridge.io/status"] = json!("injected");
    value["metadata"]["labels"]["healthbridge.io/group"] = json!("checkout");
    let deny = denial(&value);
    assert_eq!(deny.as_str(), "forged_marker");
    assert_eq!(
        deny.to_string(),
        "annotation healthbridge.io/status=injected is written by the healthbridge webhook only, and this pod was not injected by it: it has no healthbridge-agent container (in containers, or in initContainers with restartPolicy Always); remove the annotation (and any healthbridge.io/group label) and opt in with healthbridge.io/inject: \"true\""
    );
}

#[test]
fn a_marker_on_an_injected_pod_moved_to_another_group_is_denied() {
    let (mut patched, _) = inject("deployment-pod");
    patched["metadata"]["labels"]["healthbridge.io/group"] = json!("checkout");
    let deny = denial(&patched);
    assert!(
        deny.to_string()
            .contains("its label healthbridge.io/group=\"checkout\" is not the group \"web\" the webhook gives it"),
        "{deny}"
    );
}

#[test]
fn a_marker_with_the_agent_moved_to_the_apps_port_is_denied() {
    let (mut patched, _) = inject("deployment-pod");
    let agent = patched["spec"]["initContainers"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|c| c["name"] == "healthbridge-agent")
        .unwrap();
    agent["ports"][0]["containerPort"] = json!(8080);
    for var in agent["env"].as_array_mut().unwrap() {
        if var["name"] == "HTTP_HEALTHCHECK_SIDECAR_PORT" {
            var["value"] = json!("8080");
        }
    }
    let deny = denial(&patched);
    assert!(
        deny.to_string()
            .contains("the agent's port 8080 is also declared by container \"app\""),
        "{deny}"
    );
}

#[test]
fn healthbridge_labels_set_by_the_pod_author_are_denied() {
    for label in ["healthbridge.io/group", "healthbridge.io/pod"] {
        let mut value = fixture("no-annotations-pod");
        value["metadata"]["labels"] = json!({ label: "checkout" });
        let deny = denial(&value);
        assert_eq!(deny.as_str(), "reserved_label", "{label}");
        assert!(
            deny.to_string()
                .starts_with(&format!("label {label} is set by healthbridge only")),
            "{deny}"
        );
    }
}

#[test]
fn an_agent_image_outside_the_allowed_repositories_is_denied() {
    let mut value = fixture("deployment-pod");
    value["metadata"]["annotations"]["healthbridge.io/agent-image"] =
        json!("docker.io/library/nginx:1.27");
    let deny = denial(&value);
    assert_eq!(
        deny.to_string(),
        "annotation healthbridge.io/agent-image: \"docker.io/library/nginx:1.27\" is not from an allowed agent image repository (docker.io/healthbridge/agent, mirror.example/agent); use one of them, or ask the cluster admin to add the repository to the webhook's --allowed-agent-images"
    );
}

#[test]
fn naming_another_workloads_group_is_warned_about() {
    let mut value = fixture("deployment-pod");
    value["metadata"]["annotations"]["healthbridge.io/service"] = json!("checkout");
    let (_, warnings) = injected(&value, &by_annotation("shop"));
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0]
            .starts_with("healthbridge.io/service=\"checkout\": a group belongs to one workload"),
        "{warnings:?}"
    );
}

fn container<'a>(pod: &'a Value, name: &str) -> &'a Value {
    pod["spec"]["containers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap()
}

fn with_context(native: bool, sleep_action: bool) -> AdmissionContext<'static> {
    AdmissionContext {
        namespace: "edge",
        opt_in: OptIn::Annotation,
        cluster_supports_native_sidecar: native,
        cluster_supports_sleep_action: sleep_action,
    }
}

#[test]
fn drain_delay_makes_every_app_container_sleep_before_its_sigterm_and_keeps_a_hook_of_its_own() {
    let (patched, warnings) = injected(&fixture("drain-delay-pod"), &with_context(true, true));
    let sleep = json!({ "sleep": { "seconds": 10 } });
    assert_eq!(container(&patched, "proxy")["lifecycle"]["preStop"], sleep);
    // A lifecycle without preStop gets one beside what it had.
    let metrics = &container(&patched, "metrics")["lifecycle"];
    assert_eq!(metrics["preStop"], sleep);
    assert_eq!(metrics["postStart"]["exec"]["command"][0], "/bin/warm-up");
    // A container's own preStop hook is the app author's: it stays, and the warning says what it must do.
    assert_eq!(
        container(&patched, "flusher")["lifecycle"]["preStop"]["exec"]["command"][0],
        "/bin/flush"
    );
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("healthbridge.io/drain-delay")
                && w.contains("\"flusher\"")
                && w.contains("10s")),
        "{warnings:?}"
    );
    // A native sidecar is stopped after the app containers have exited: it needs no delay of its own.
    assert!(
        agent_in(&patched, "initContainers")
            .get("lifecycle")
            .is_none()
    );
}

#[test]
fn a_regular_container_agent_waits_as_long_as_the_app_so_the_unhealthy_answer_lasts_the_delay() {
    let (patched, _) = injected(&fixture("drain-delay-pod"), &with_context(false, true));
    assert_eq!(
        agent_in(&patched, "containers")["lifecycle"]["preStop"],
        json!({ "sleep": { "seconds": 10 } })
    );
}

#[test]
fn without_the_sleep_action_nothing_is_added_and_the_warning_says_what_to_do() {
    let (patched, warnings) = injected(&fixture("drain-delay-pod"), &with_context(true, false));
    assert!(container(&patched, "proxy").get("lifecycle").is_none());
    assert!(
        container(&patched, "metrics")["lifecycle"]
            .get("preStop")
            .is_none()
    );
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("1.30") && w.contains("preStop hook that waits 10s")),
        "{warnings:?}"
    );
}

#[test]
fn a_drain_delay_that_does_not_fit_the_grace_period_is_denied_naming_both() {
    let mut value = fixture("drain-delay-pod");
    value["metadata"]["annotations"]["healthbridge.io/drain-delay"] = json!("45s");
    let denied = denial(&value);
    assert_eq!(denied.as_str(), "drain_delay_not_below_grace_period");
    let message = denied.to_string();
    assert!(
        message.contains("healthbridge.io/drain-delay")
            && message.contains("45s")
            && message.contains("terminationGracePeriodSeconds (45s)"),
        "{message}"
    );
    // Without a grace period of its own the pod has the API server's 30 s.
    value["spec"]
        .as_object_mut()
        .unwrap()
        .remove("terminationGracePeriodSeconds");
    value["metadata"]["annotations"]["healthbridge.io/drain-delay"] = json!("30");
    assert!(denial(&value).to_string().contains("(30s)"));
}

#[test]
fn a_drain_delay_that_is_not_whole_seconds_is_denied_with_what_is_accepted() {
    let mut value = fixture("drain-delay-pod");
    value["metadata"]["annotations"]["healthbridge.io/drain-delay"] = json!("2.5s");
    let message = denial(&value).to_string();
    assert!(
        message.contains(
            "annotation healthbridge.io/drain-delay: `2.5s` is not a whole number of seconds"
        ),
        "{message}"
    );
}
