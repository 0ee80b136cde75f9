//! Fuzzes AdmissionReview decoding plus patching: any body gets an answer or a 400, never a panic,
//! and every patch produced applies to the pod it was made for.
#![no_main]

use healthbridge_webhook::admission;
use healthbridge_webhook::config::InjectionConfig;
use healthbridge_webhook::patch::{AdmissionContext, Decision, OptIn, patch_for};
use k8s_openapi::api::core::v1::Pod;
use libfuzzer_sys::fuzz_target;

const HEAD: &[u8] = br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"fuzz","kind":{"group":"","version":"v1","kind":"Pod"},"resource":{"group":"","version":"v1","resource":"pods"},"namespace":"fuzz","operation":"CREATE","userInfo":{},"dryRun":false,"object":"#;

fuzz_target!(|data: &[u8]| {
    let cfg = InjectionConfig::new(
        "docker.io/healthbridge/agent:fuzz",
        Some("healthbridge-system"),
    );
    // The raw bytes as a whole review, then as the pod inside a well-formed review.
    let mut wrapped = HEAD.to_vec();
    wrapped.extend_from_slice(data);
    wrapped.extend_from_slice(b"}}");
    for body in [data, wrapped.as_slice()] {
        for opt_in in [OptIn::Annotation, OptIn::Namespace] {
            let _ = admission::review(body, &cfg, opt_in, true, true);
        }
    }
    let Ok(pod) = serde_json::from_slice::<Pod>(data) else {
        return;
    };
    let ctx = AdmissionContext {
        namespace: "fuzz",
        opt_in: OptIn::Namespace,
        cluster_supports_native_sidecar: true,
        cluster_supports_sleep_action: true,
    };
    if let Ok(Decision::Inject { patch, .. }) = patch_for(&pod, &cfg, &ctx) {
        let mut document = serde_json::to_value(&pod).unwrap_or_default();
        // A pod without spec cannot take a container: the API server would have rejected it before us.
        if pod.spec.is_some() {
            json_patch::patch(&mut document, &patch)
                .expect("the patch applies to the pod it was made for");
            let patched: Pod =
                serde_json::from_value(document).expect("the patched pod is still a pod");
            let again = patch_for(&patched, &cfg, &ctx);
            assert!(
                matches!(again, Ok(Decision::Skip { .. })),
                "patching is idempotent: {again:?}"
            );
        }
    }
});
