//! Patch generation and whole-review time for a small pod and the 1,500-env/30-container pod.
#![allow(clippy::unwrap_used)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::hint::black_box;

use common::{big_pod, by_annotation, config, fixture, pod, review};
use criterion::{Criterion, criterion_group, criterion_main};
use healthbridge_webhook::admission;
use healthbridge_webhook::patch::{OptIn, patch_for};

fn patch_generation(c: &mut Criterion) {
    let cfg = config();
    let small = pod(&fixture("deployment-pod"));
    let big = pod(&big_pod(30, 50));
    c.bench_function("patch_for/small pod", |b| {
        b.iter(|| patch_for(black_box(&small), &cfg, &by_annotation("shop")))
    });
    c.bench_function("patch_for/30 containers x 50 env", |b| {
        b.iter(|| patch_for(black_box(&big), &cfg, &by_annotation("load")))
    });

    let small_review =
        serde_json::to_vec(&review(&fixture("deployment-pod"), "CREATE", false)).unwrap();
    let big_review = serde_json::to_vec(&review(&big_pod(30, 50), "CREATE", false)).unwrap();
    c.bench_function("review (decode+patch+encode)/small pod", |b| {
        b.iter(|| {
            admission::review(
                black_box(&small_review),
                &cfg,
                OptIn::Annotation,
                true,
                true,
            )
        })
    });
    c.bench_function("review (decode+patch+encode)/30 containers x 50 env", |b| {
        b.iter(|| admission::review(black_box(&big_review), &cfg, OptIn::Annotation, true, true))
    });
}

criterion_group!(benches, patch_generation);
criterion_main!(benches);
