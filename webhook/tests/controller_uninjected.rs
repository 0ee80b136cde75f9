//! Opted-in pods the webhook missed, found from a metadata-only watch: one Warning each, counted, forgotten when gone.
#![allow(clippy::unwrap_used)]

mod controller_support;

use controller_support::accepting;
use controller_support::world::world;
use healthbridge_webhook::controller::uninjected::follow;
use healthbridge_webhook::keys;
use k8s_openapi::api::core::v1::Pod;
use kube::core::PartialObjectMeta;
use kube::runtime::watcher::Event;
use serde_json::json;

fn meta(name: &str, namespace: &str, annotations: serde_json::Value) -> PartialObjectMeta<Pod> {
    serde_json::from_value(json!({
        "apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
        "metadata": {"name": name, "namespace": namespace, "uid": format!("uid-{name}"), "annotations": annotations}
    }))
    .unwrap()
}

#[tokio::test]
async fn an_opted_in_pod_without_the_marker_is_warned_once_and_counted_until_it_goes() {
    let world = world(accepting);
    let missed = meta("web-1", "shop", json!({keys::INJECT: "true"}));
    let injected = meta(
        "web-2",
        "shop",
        json!({keys::INJECT: "true", keys::STATUS: keys::STATUS_INJECTED}),
    );
    let system = meta("coredns-1", "kube-system", json!({keys::INJECT: "true"}));

    follow(&world.ctx, Event::Init).await;
    for pod in [&missed, &injected, &system] {
        follow(&world.ctx, Event::InitApply(pod.clone())).await;
    }
    follow(&world.ctx, Event::InitDone).await;
    follow(&world.ctx, Event::Apply(missed.clone())).await;

    assert_eq!(world.ctx.uninjected.len(), 1);
    let events = world.events();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0]["reason"], "Uninjected");
    assert_eq!(events[0]["regarding"]["name"], "web-1");
    assert!(world.writes().is_empty());

    follow(&world.ctx, Event::Delete(missed)).await;
    assert!(world.ctx.uninjected.is_empty());
}

#[tokio::test]
async fn a_relist_forgets_pods_that_went_while_the_watch_was_down() {
    let world = world(accepting);
    follow(
        &world.ctx,
        Event::Apply(meta("web-1", "shop", json!({keys::INJECT: "true"}))),
    )
    .await;

    follow(&world.ctx, Event::Init).await;
    assert_eq!(
        world.ctx.uninjected.len(),
        1,
        "the old set holds until the relist ends"
    );
    follow(&world.ctx, Event::InitDone).await;

    assert!(world.ctx.uninjected.is_empty());
}
