//! Fixture helpers shared by the webhook's tests and benches.
#![allow(dead_code, clippy::unwrap_used)]

use healthbridge_webhook::config::InjectionConfig;
use healthbridge_webhook::patch::{AdmissionContext, OptIn};
use healthbridge_webhook::trust::AgentImages;
use k8s_openapi::api::core::v1::Pod;
use serde_json::{Value, json};

pub const AGENT_IMAGE: &str = "docker.io/healthbridge/agent:0.1.0";

/// A fixture from `tests/data/<name>.json`.
pub fn fixture(name: &str) -> Value {
    let path = format!("{}/tests/data/{name}.json", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap()
}

pub fn pod(value: &Value) -> Pod {
    serde_json::from_value(value.clone()).unwrap()
}

/// A mirror of the agent image the tests' webhook also allows (`--allowed-agent-images`).
pub const AGENT_MIRROR: &str = "mirror.example/agent";

pub fn config() -> InjectionConfig {
    let mut cfg = InjectionConfig::new(AGENT_IMAGE, Some("healthbridge-system"));
    cfg.agent_images = AgentImages::new(AGENT_IMAGE, [AGENT_MIRROR]);
    cfg
}

pub fn by_annotation(namespace: &str) -> AdmissionContext<'_> {
    AdmissionContext {
        namespace,
        opt_in: OptIn::Annotation,
        cluster_supports_native_sidecar: true,
        cluster_supports_sleep_action: true,
    }
}

/// A pod with `containers` containers of `env_per_container` env vars each, opted in.
pub fn big_pod(containers: usize, env_per_container: usize) -> Value {
    let containers: Vec<Value> = (0..containers)
        .map(|c| {
            let env: Vec<Value> = (0..env_per_container)
                .map(|e| json!({ "name": format!("VAR_{c}_{e}"), "value": format!("value number {e} of container {c}") }))
                .collect();
            json!({ "name": format!("c{c}"), "image": "registry.example/app:1", "env": env,
                    "ports": [{ "containerPort": 8000 + c }] })
        })
        .collect();
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": { "generateName": "big-", "namespace": "load", "annotations": { "healthbridge.io/inject": "true" } },
        "spec": { "containers": containers }
    })
}

/// An AdmissionReview v1 around `object`.
pub fn review(object: &Value, operation: &str, dry_run: bool) -> Value {
    json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "request": {
            "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
            "kind": { "group": "", "version": "v1", "kind": "Pod" },
            "resource": { "group": "", "version": "v1", "resource": "pods" },
            "namespace": object["metadata"]["namespace"],
            "operation": operation,
            "userInfo": { "username": "admin" },
            "object": object,
            "oldObject": null,
            "dryRun": dry_run
        }
    })
}

/// Decodes standard base64 (the AdmissionResponse patch encoding).
pub fn unbase64(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    };
    let clean: Vec<u8> = text.bytes().filter(|b| *b != b'=').collect();
    let mut out = Vec::new();
    for chunk in clean.chunks(4) {
        let mut n = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            n |= u32::from(value(*c)) << (18 - 6 * i);
        }
        for i in 0..chunk.len().saturating_sub(1) {
            out.push((n >> (16 - 8 * i)) as u8);
        }
    }
    out
}
