//! The agent following pod `shop/web-0` (every app container but the agent's) through a given client, as `serve`
//! does: for the tests that answer its API requests with a fake server.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use healthbridge_agent::metrics::Metrics;
use healthbridge_agent::pod_status::watch::{self, Followed, PodState};
use healthbridge_agent::pod_status::{Freshness, OnStale, PodStatusSource, Target};
use tokio::sync::watch as channel;
use tokio_util::sync::{CancellationToken, DropGuard};

/// The agent's side of following the pod; it stops following when this is dropped.
pub struct Following {
    pub state: channel::Receiver<PodState>,
    /// What `/health` reads.
    pub source: PodStatusSource,
    pub metrics: Arc<Metrics>,
    pub cancel: DropGuard,
}

/// Starts following `shop/web-0` through `client`.
pub fn web_0(client: kube::Client, max_staleness: Duration, on_stale: OnStale) -> Following {
    let metrics = Arc::new(Metrics::default());
    let cancel = CancellationToken::new();
    let followed = Followed {
        name: "web-0".into(),
        namespace: "shop".into(),
        target: Target::AllAppContainers {
            except: "healthbridge-agent".into(),
        },
    };
    let state = watch::spawn(
        client,
        followed,
        max_staleness,
        Arc::clone(&metrics),
        cancel.clone(),
    );
    let source = PodStatusSource::watching(
        state.clone(),
        Freshness {
            max_staleness,
            on_stale,
        },
    );
    Following {
        state,
        source,
        metrics,
        cancel: cancel.drop_guard(),
    }
}
