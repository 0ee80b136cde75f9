//! Writes what `bench/webhook` needs into a directory: a CA and serving certificate for
//! `localhost`, and AdmissionReview bodies for a small and a large pod.
#![allow(clippy::unwrap_used)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use healthbridge_webhook::certs::CertBundle;

fn main() {
    let dir = PathBuf::from(std::env::args().nth(1).expect("usage: bench_inputs DIR"));
    std::fs::create_dir_all(&dir).unwrap();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let bundle =
        CertBundle::generate(&["localhost".to_owned()], i64::try_from(now).unwrap()).unwrap();
    std::fs::write(dir.join("ca.crt"), &bundle.ca_cert).unwrap();
    std::fs::write(dir.join("tls.crt"), &bundle.cert).unwrap();
    std::fs::write(dir.join("tls.key"), &bundle.key).unwrap();
    let small = common::review(&common::fixture("deployment-pod"), "CREATE", false);
    let big = common::review(&common::big_pod(30, 50), "CREATE", false);
    std::fs::write(
        dir.join("review-small.json"),
        serde_json::to_vec(&small).unwrap(),
    )
    .unwrap();
    std::fs::write(
        dir.join("review-big.json"),
        serde_json::to_vec(&big).unwrap(),
    )
    .unwrap();
}
