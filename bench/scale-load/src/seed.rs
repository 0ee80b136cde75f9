//! Creates pods through the API server (and so through the webhook), then waits until the controller has given
//! each injected pod what its agent needs: the pod's ServiceAccount may list and watch that pod, and the group's
//! Service exists. Asked as a SubjectAccessReview, so the figure holds whatever RBAC design the controller uses.
//! With several namespaces the groups are dealt out over them in turn (group `g` in namespace `g mod N`).

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use futures::StreamExt;
use healthbridge_contract::keys;
use k8s_openapi::api::authorization::v1::SubjectAccessReview;
use k8s_openapi::api::core::v1::{Namespace, Pod, Service, ServiceAccount};
use kube::api::{Api, ListParams, PostParams};
use serde_json::json;

use crate::stats::{ms, quantile, result};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// The namespace, or several (comma-separated): group `g` goes to the `g mod N`-th.
    #[arg(
        long = "namespaces",
        alias = "namespace",
        value_delimiter = ',',
        required = true
    )]
    namespaces: Vec<String>,
    /// Index of the first pod to create (pods already there keep their indexes).
    #[arg(long, default_value_t = 0)]
    from: usize,
    /// One past the last index.
    #[arg(long)]
    to: usize,
    /// Pods per group; each group has its own ServiceAccount and Service, like a Deployment.
    #[arg(long, default_value_t = 100)]
    group_size: usize,
    /// The Node object the pods are bound to (no kubelet runs).
    #[arg(long, default_value = "bench-node")]
    node: String,
    /// Annotate the pods for injection and wait until the controller has reconciled them.
    #[arg(long)]
    inject: bool,
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Prefix of the RESULT keys.
    #[arg(long)]
    label: String,
    /// Give up waiting for the controller after this long.
    #[arg(long, default_value = "15m", value_parser = humantime::parse_duration)]
    ready_timeout: Duration,
}

pub fn pod_name(index: usize, group_size: usize) -> String {
    format!("{}-{index:05}", group_name(index, group_size))
}

fn group_name(index: usize, group_size: usize) -> String {
    format!("app-{}", index / group_size.max(1))
}

/// The namespace of pod `index`: its group's, dealt out over `namespaces` in turn.
fn namespace_of(namespaces: &[String], index: usize, group_size: usize) -> &str {
    let group = index / group_size.max(1);
    namespaces
        .get(group % namespaces.len().max(1))
        .map_or("default", String::as_str)
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let client = kube::Client::try_default().await.context("no KUBECONFIG")?;
    ensure_namespaces(&client, &args).await?;
    let created_at: Arc<Mutex<BTreeMap<usize, Instant>>> = Arc::default();
    let waiter = args.inject.then(|| {
        tokio::spawn(wait_reconciled(
            client.clone(),
            args.namespaces.clone(),
            args.group_size,
            args.from..args.to,
            created_at.clone(),
            args.ready_timeout,
        ))
    });
    let started = Instant::now();
    let outcomes = futures::stream::iter(args.from..args.to)
        .map(|index| {
            let pods: Api<Pod> = Api::namespaced(
                client.clone(),
                namespace_of(&args.namespaces, index, args.group_size),
            );
            let created_at = created_at.clone();
            let pod = pod_object(&args, index);
            async move {
                let begin = Instant::now();
                let created = pods.create(&PostParams::default(), &pod).await?;
                let took = begin.elapsed();
                created_at
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .insert(index, begin);
                anyhow::Ok((took, injected(&created)))
            }
        })
        .buffer_unordered(args.concurrency)
        .collect::<Vec<_>>()
        .await;
    let elapsed = started.elapsed();
    let mut latencies = Vec::with_capacity(outcomes.len());
    let mut injected_count = 0;
    for outcome in outcomes {
        let (took, injected) = outcome?;
        latencies.push(took);
        injected_count += usize::from(injected);
    }
    let count = latencies.len();
    let label = &args.label;
    result(&format!("{label}.created"), count);
    result(&format!("{label}.injected"), injected_count);
    result(
        &format!("{label}.create_per_s"),
        format!("{:.0}", count as f64 / elapsed.as_secs_f64()),
    );
    result(
        &format!("{label}.create_p50_ms"),
        format!("{:.1}", ms(quantile(&mut latencies, 0.5))),
    );
    result(
        &format!("{label}.create_p99_ms"),
        format!("{:.1}", ms(quantile(&mut latencies, 0.99))),
    );
    if args.inject && injected_count != count {
        bail!(
            "{} of {count} pods came back without the agent: is the webhook registered and serving?",
            count - injected_count
        );
    }
    if let Some(waiter) = waiter {
        let (mut ready, unready, all_done) = waiter.await??;
        result(
            &format!("{label}.reconcile_all_s"),
            format!("{:.1}", all_done.as_secs_f64()),
        );
        result(
            &format!("{label}.ready_p50_ms"),
            format!("{:.0}", ms(quantile(&mut ready, 0.5))),
        );
        result(
            &format!("{label}.ready_p99_ms"),
            format!("{:.0}", ms(quantile(&mut ready, 0.99))),
        );
        if unready > 0 {
            bail!(
                "{unready} pods still lack their RBAC or Service after {}",
                humantime::format_duration(args.ready_timeout)
            );
        }
    }
    Ok(())
}

fn pod_object(args: &Args, index: usize) -> Pod {
    let group = group_name(index, args.group_size);
    let mut annotations = serde_json::Map::new();
    if args.inject {
        annotations.insert(keys::INJECT.to_owned(), json!("true"));
        annotations.insert(keys::SERVICE.to_owned(), json!(group));
    }
    let pod = json!({
        "metadata": {
            "name": pod_name(index, args.group_size),
            "labels": {"app": group},
            "annotations": annotations,
        },
        "spec": {
            "nodeName": args.node,
            "serviceAccountName": group,
            "containers": [{"name": "app", "image": "registry.example/bench/app:1",
                "ports": [{"containerPort": 8080}]}],
        }
    });
    serde_json::from_value(pod).unwrap_or_default()
}

fn injected(pod: &Pod) -> bool {
    let spec = pod.spec.as_ref();
    spec.into_iter()
        .flat_map(|s| {
            s.containers
                .iter()
                .chain(s.init_containers.iter().flatten())
        })
        .any(|c| c.name == keys::AGENT_CONTAINER)
}

/// The namespaces and, in each, one ServiceAccount per group it holds and `default` (no controller-manager runs
/// to make them).
async fn ensure_namespaces(client: &kube::Client, args: &Args) -> anyhow::Result<()> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let mut accounts: HashSet<(&str, String)> = args
        .namespaces
        .iter()
        .map(|namespace| (namespace.as_str(), "default".to_owned()))
        .collect();
    accounts.extend((args.from..args.to).map(|index| {
        (
            namespace_of(&args.namespaces, index, args.group_size),
            group_name(index, args.group_size),
        )
    }));
    for namespace in &args.namespaces {
        let ns = serde_json::from_value(json!({"metadata": {"name": namespace}}))?;
        ignore_conflict(namespaces.create(&PostParams::default(), &ns).await)?;
    }
    for (namespace, name) in accounts {
        let account = serde_json::from_value(json!({"metadata": {"name": name}}))?;
        let api: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
        ignore_conflict(api.create(&PostParams::default(), &account).await)?;
    }
    Ok(())
}

fn ignore_conflict<T>(outcome: Result<T, kube::Error>) -> anyhow::Result<()> {
    match outcome {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
        Err(error) => Err(error.into()),
    }
}

/// Polls (sweeps over the oldest pods not yet done) until every pod's ServiceAccount may watch the pod and the
/// group's Service exists. Returns each pod's create → ready time, how many never got there, and the time from
/// the first create to the last pod ready.
async fn wait_reconciled(
    client: kube::Client,
    namespaces: Vec<String>,
    group_size: usize,
    indexes: std::ops::Range<usize>,
    created_at: Arc<Mutex<BTreeMap<usize, Instant>>>,
    timeout: Duration,
) -> anyhow::Result<(Vec<Duration>, usize, Duration)> {
    // The controller's Services in every namespace, in one request (its own label).
    let services: Api<Service> = Api::all(client.clone());
    let managed =
        ListParams::default().labels(&format!("{}={}", keys::MANAGED_BY_LABEL, keys::MANAGED_BY));
    let reviews: Api<SubjectAccessReview> = Api::all(client);
    let total = indexes.len();
    let mut pending: std::collections::BTreeSet<usize> = indexes.collect();
    let mut ready = Vec::with_capacity(total);
    let started = Instant::now();
    let mut first_create: Option<Instant> = None;
    let mut last_ready = started;
    let mut delay = Duration::from_millis(20);
    while !pending.is_empty() && started.elapsed() < timeout {
        let created: Vec<(usize, Instant)> = {
            let created_at = created_at
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            first_create = first_create.or_else(|| created_at.values().min().copied());
            // The oldest pending pods only: the controller works roughly in creation order, and asking about
            // every pod on every sweep would load the API server the bench measures.
            pending
                .iter()
                .filter_map(|index| created_at.get(index).map(|at| (*index, *at)))
                .take(WINDOW)
                .collect()
        };
        let existing: HashSet<(String, String)> = services
            .list_metadata(&managed)
            .await?
            .items
            .into_iter()
            .filter_map(|s| Some((s.metadata.namespace?, s.metadata.name?)))
            .collect();
        let candidates: Vec<(usize, Instant)> = created
            .into_iter()
            .filter(|(index, _)| {
                existing.contains(&(
                    namespace_of(&namespaces, *index, group_size).to_owned(),
                    format!("{}-healthbridge", group_name(*index, group_size)),
                ))
            })
            .collect();
        let checked = futures::stream::iter(candidates)
            .map(|(index, at)| {
                let reviews = reviews.clone();
                let namespace = namespace_of(&namespaces, index, group_size).to_owned();
                async move {
                    let allowed = may_watch(&reviews, &namespace, index, group_size).await?;
                    anyhow::Ok((index, at, allowed, Instant::now()))
                }
            })
            .buffer_unordered(32)
            .collect::<Vec<_>>()
            .await;
        let mut progressed = false;
        for outcome in checked {
            let (index, at, allowed, now) = outcome?;
            if allowed {
                pending.remove(&index);
                ready.push(now.duration_since(at));
                last_ready = last_ready.max(now);
                progressed = true;
            }
        }
        if !pending.is_empty() {
            // Poll with backoff while nothing moves; start over fast once something does.
            delay = if progressed {
                Duration::from_millis(20)
            } else {
                (delay * 2).min(Duration::from_secs(1))
            };
            tokio::time::sleep(delay).await;
        }
    }
    let all_done = last_ready.duration_since(first_create.unwrap_or(started));
    Ok((ready, pending.len(), all_done))
}

/// How many of the oldest pending pods each sweep asks about.
const WINDOW: usize = 128;

async fn may_watch(
    reviews: &Api<SubjectAccessReview>,
    namespace: &str,
    index: usize,
    group_size: usize,
) -> anyhow::Result<bool> {
    let account = group_name(index, group_size);
    let review: SubjectAccessReview = serde_json::from_value(json!({
        "spec": {
            "user": format!("system:serviceaccount:{namespace}:{account}"),
            "groups": ["system:serviceaccounts", format!("system:serviceaccounts:{namespace}"), "system:authenticated"],
            "resourceAttributes": {"namespace": namespace, "verb": "watch", "resource": "pods",
                "name": pod_name(index, group_size)}
        }
    }))?;
    let answer = reviews.create(&PostParams::default(), &review).await?;
    Ok(answer.status.is_some_and(|status| status.allowed))
}
