//! AdmissionReview v1 in, AdmissionReview v1 out: decoding, the decision, and the axum routes around it.

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use k8s_openapi::api::core::v1::Pod;
use kube::core::DynamicObject;
use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use serde_json::Value;

use crate::config::InjectionConfig;
use crate::metrics::{Metrics, Outcome};
use crate::patch::{AdmissionContext, Decision, OptIn, patch_for};

/// Largest request body accepted; the API server's own limit for an object is 3 MiB.
pub const MAX_BODY_BYTES: usize = 3 * 1024 * 1024;

/// A request body that is not an AdmissionReview at all: answered with HTTP 400.
#[derive(Debug, thiserror::Error)]
#[error("the request body is not a JSON AdmissionReview (admission.k8s.io/v1): {0}")]
pub struct UndecodableReview(String);

/// The encoded AdmissionReview answer and how it ended.
#[derive(Debug)]
pub struct Answer {
    pub body: Vec<u8>,
    pub outcome: Outcome,
}

/// Answers one AdmissionReview. Pure apart from logging: no API calls, so dry-run requests
/// get exactly the answer a real request would.
pub fn review(
    body: &[u8],
    cfg: &InjectionConfig,
    opt_in: OptIn,
    cluster_supports_native_sidecar: bool,
    cluster_supports_sleep_action: bool,
) -> Result<Answer, UndecodableReview> {
    let request: AdmissionRequest<Pod> = match serde_json::from_slice::<AdmissionReview<Pod>>(body)
    {
        Ok(review) => match review.try_into() {
            Ok(request) => request,
            Err(_) => {
                return Ok(invalid(
                    "",
                    "the AdmissionReview has no request",
                    "no_request",
                ));
            }
        },
        Err(pod_error) => return not_a_pod_review(body, &pod_error),
    };
    let uid = request.uid.as_str();
    if !request.kind.group.is_empty() || request.kind.version != "v1" || request.kind.kind != "Pod"
    {
        let message = format!(
            "this webhook admits only v1 Pods, got {}/{} {}; check the rules of the MutatingWebhookConfiguration",
            request.kind.group, request.kind.version, request.kind.kind
        );
        return Ok(invalid(uid, &message, "wrong_kind"));
    }
    let response = AdmissionResponse::from(&request);
    if !matches!(request.operation, Operation::Create) {
        return Ok(encode(response, None, Outcome::Skipped("not_create")));
    }
    let Some(pod) = &request.object else {
        return Ok(invalid(
            uid,
            "the AdmissionReview request has no object",
            "no_object",
        ));
    };
    let namespace = request.namespace.as_deref().unwrap_or_default();
    let ctx = AdmissionContext {
        namespace,
        opt_in,
        cluster_supports_native_sidecar,
        cluster_supports_sleep_action,
    };
    let name = pod
        .metadata
        .name
        .as_deref()
        .or(pod.metadata.generate_name.as_deref())
        .unwrap_or_default();
    let answer = match patch_for(pod, cfg, &ctx) {
        Ok(Decision::Inject {
            patch,
            group,
            warnings,
        }) => {
            tracing::info!(
                uid,
                namespace,
                name,
                group,
                dry_run = request.dry_run,
                "injecting the agent"
            );
            let patch = serde_json::to_vec(&patch).unwrap_or_default();
            encode(
                with_warnings(response, warnings),
                Some(patch),
                Outcome::Injected,
            )
        }
        Ok(Decision::Skip { reason, warnings }) => {
            tracing::debug!(
                uid,
                namespace,
                name,
                reason = reason.as_str(),
                "not injecting"
            );
            encode(
                with_warnings(response, warnings),
                None,
                Outcome::Skipped(reason.as_str()),
            )
        }
        Err(deny) => {
            tracing::info!(uid, namespace, name, reason = deny.as_str(), message = %deny, "denying the pod");
            encode(
                response.deny(format!("healthbridge: {deny}")),
                None,
                Outcome::Denied(deny.as_str()),
            )
        }
    };
    Ok(answer)
}

/// The body did not decode as a Pod review: a review of something else is `invalid` (uid echoed),
/// anything else is a 400.
fn not_a_pod_review(
    body: &[u8],
    pod_error: &serde_json::Error,
) -> Result<Answer, UndecodableReview> {
    match serde_json::from_slice::<AdmissionReview<DynamicObject>>(body) {
        Ok(review) => {
            let uid = review
                .request
                .as_ref()
                .map(|r| r.uid.as_str())
                .unwrap_or_default();
            let kind = review
                .request
                .as_ref()
                .map(|r| r.kind.kind.as_str())
                .unwrap_or_default();
            let message = format!(
                "this webhook admits only v1 Pods; the {kind} object could not be read as one: {pod_error}"
            );
            Ok(invalid(uid, &message, "wrong_kind"))
        }
        Err(error) => Err(UndecodableReview(error.to_string())),
    }
}

fn invalid(uid: &str, message: &str, reason: &'static str) -> Answer {
    tracing::warn!(uid, reason, message, "invalid admission review");
    let mut response = AdmissionResponse::invalid(message);
    response.uid = uid.to_owned();
    encode(response, None, Outcome::Error(reason))
}

fn with_warnings(mut response: AdmissionResponse, warnings: Vec<String>) -> AdmissionResponse {
    if !warnings.is_empty() {
        response.warnings = Some(warnings);
    }
    response
}

/// Serializes the answer. The patch is set here as base64, the encoding the API server's
/// `[]byte` field expects, since kube's own helper takes a different json-patch version.
fn encode(response: AdmissionResponse, patch: Option<Vec<u8>>, outcome: Outcome) -> Answer {
    let mut review = serde_json::to_value(response.into_review()).unwrap_or(Value::Null);
    if let (Some(patch), Some(response)) = (
        patch,
        review.get_mut("response").and_then(Value::as_object_mut),
    ) {
        response.insert("patch".into(), Value::String(base64(&patch)));
        response.insert("patchType".into(), Value::String("JSONPatch".into()));
    }
    Answer {
        body: serde_json::to_vec(&review).unwrap_or_default(),
        outcome,
    }
}

/// Standard base64 with padding (RFC 4648).
pub fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Shared state of the admission routes.
pub struct AdmissionState {
    pub cfg: InjectionConfig,
    pub metrics: Arc<Metrics>,
    /// What `auto` chooses now (kept current from the nodes by `run`).
    pub cluster_supports_native_sidecar: crate::nodes::SidecarSupport,
    /// Whether pods may get a preStop `sleep` (Kubernetes ≥ 1.30), for `drain-delay`.
    pub cluster_supports_sleep_action: bool,
}

/// The admission routes: `POST /mutate` and `POST /mutate-namespace`.
pub fn app(state: Arc<AdmissionState>) -> Router {
    Router::new()
        .route("/mutate", post(mutate))
        .route("/mutate-namespace", post(mutate_namespace))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

async fn mutate(
    State(state): State<Arc<AdmissionState>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    handle(&state, OptIn::Annotation, body)
}

async fn mutate_namespace(
    State(state): State<Arc<AdmissionState>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    handle(&state, OptIn::Namespace, body)
}

fn handle(state: &AdmissionState, opt_in: OptIn, body: Result<Bytes, BytesRejection>) -> Response {
    let started = Instant::now();
    let answer = body.map_err(RequestError::from).and_then(|body| {
        review(
            &body,
            &state.cfg,
            opt_in,
            state.cluster_supports_native_sidecar.get(),
            state.cluster_supports_sleep_action,
        )
        .map_err(RequestError::from)
    });
    let outcome = match &answer {
        Ok(answer) => answer.outcome,
        Err(error) => {
            tracing::warn!(%error, "admission request refused");
            Outcome::Error(error.reason())
        }
    };
    state.metrics.observe(outcome, started.elapsed());
    answer.into_response()
}

impl IntoResponse for Answer {
    fn into_response(self) -> Response {
        ([(header::CONTENT_TYPE, "application/json")], self.body).into_response()
    }
}

/// A request that gets no AdmissionReview answer, only an HTTP error saying what was wrong with it.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error(
        "the request body is larger than {MAX_BODY_BYTES} bytes (3 MiB), the most an AdmissionReview can hold"
    )]
    TooLarge,
    #[error("the request body could not be read: {0}")]
    Unreadable(BytesRejection),
    #[error(transparent)]
    Undecodable(#[from] UndecodableReview),
}

impl From<BytesRejection> for RequestError {
    fn from(rejection: BytesRejection) -> Self {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            Self::TooLarge
        } else {
            Self::Unreadable(rejection)
        }
    }
}

impl RequestError {
    /// Short label used in metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::TooLarge => "too_large",
            Self::Unreadable(_) => "unreadable_body",
            Self::Undecodable(_) => "undecodable",
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Unreadable(rejection) => rejection.status(),
            Self::Undecodable(_) => StatusCode::BAD_REQUEST,
        }
    }
}

impl IntoResponse for RequestError {
    fn into_response(self) -> Response {
        (self.status(), format!("{self}\n")).into_response()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::base64;

    #[test]
    fn base64_matches_rfc_4648_vectors() {
        for (input, expected) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(input.as_bytes()), expected);
        }
    }
}
