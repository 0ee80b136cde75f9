//! Benchmark of the controller: reconcile N injected pods, then a full resync that must write nothing.
//!
//! `controller_bench fake-apiserver --pods N` serves an in-memory API (list/watch, server-side apply, events)
//! on loopback over plain HTTP; `controller_bench run --server URL` (or with `KUBECONFIG`, against a real
//! cluster: it creates N unschedulable injected pods in a scratch namespace) times the controller.

use std::collections::{BTreeMap, HashMap};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use clap::{Parser, Subcommand};
use futures::StreamExt;
use healthbridge_webhook::controller::{self, ControllerArgs, metrics};
use healthbridge_webhook::keys;
use healthbridge_webhook::trust::AgentImages;
use k8s_openapi::api::core::v1::{Namespace, Pod, ServiceAccount};
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use serde_json::{Value, json};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// In-memory API server with N injected pods (groups of 10, owned by ReplicaSets of Deployments).
    FakeApiserver {
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
        #[arg(long, default_value_t = 1000)]
        pods: usize,
    },
    /// Runs the controller until every pod is reconciled, then once more from empty caches (a full resync).
    Run {
        /// Plain-HTTP URL of `fake-apiserver`; without it, KUBECONFIG's cluster is used and pods are created there.
        #[arg(long)]
        server: Option<String>,
        #[arg(long, default_value_t = 1000)]
        pods: usize,
        #[arg(long, default_value = "healthbridge-bench")]
        namespace: String,
        /// The pods were reconciled by an earlier process: one pass from empty caches, as after a restart, that
        /// must write nothing.
        #[arg(long)]
        restarted: bool,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // RUST_LOG=healthbridge_webhook=debug shows what the controller does (quiet by default).
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::FakeApiserver { listen, pods } => fake_apiserver(listen, pods).await,
        Command::Run {
            server,
            pods,
            namespace,
            restarted,
        } => run(server, pods, &namespace, restarted).await,
    }
}

// ---------------------------------------------------------------- the controller side

async fn run(
    server: Option<String>,
    pods: usize,
    namespace: &str,
    restarted: bool,
) -> anyhow::Result<()> {
    let real = server.is_none();
    let client = match server {
        Some(url) => {
            let config = kube::Config::new(url.parse().context("--server is not a URL")?);
            kube::Client::try_from(config)?
        }
        None => kube::Client::try_default()
            .await
            .context("no KUBECONFIG and no --server")?,
    };
    if !real {
        if restarted {
            return measure_restart(&client, pods, "in-process fake API server").await;
        }
        return measure(&client, pods, "in-process fake API server").await;
    }
    let seeded = seed_real_cluster(&client, namespace, pods).await;
    let measured = match seeded {
        Ok(()) => measure(&client, pods, "real API server").await,
        Err(error) => Err(error),
    };
    // The scratch namespace goes whatever happened; its pods take their Roles, RoleBindings and Services along.
    Api::<Namespace>::all(client)
        .delete(namespace, &DeleteParams::default())
        .await?;
    measured
}

async fn measure(client: &kube::Client, pods: usize, against: &str) -> anyhow::Result<()> {
    let writes_before = metrics::metrics().total_writes();
    let (first, rss_first) = reconcile_all(client, pods).await?;
    let writes_first = metrics::metrics().total_writes() - writes_before;
    // A second leader term in the same process (the Lease lost and taken again): fresh caches, every pod reconciled
    // again, the first term's memory freed (or kept by the allocator).
    let (second, rss_second) = reconcile_all(client, pods).await?;
    let writes_resync = metrics::metrics().total_writes() - writes_before - writes_first;
    println!("pods: {pods} ({against})");
    println!(
        "first reconcile of all pods: {:.2}s, {writes_first} API writes",
        first.as_secs_f64()
    );
    println!(
        "second leader term (fresh caches, same process): {:.2}s, {writes_resync} API writes (must be 0)",
        second.as_secs_f64()
    );
    println!(
        "controller RSS after the first pass: {rss_first} KiB; after the second term: {rss_second} KiB; peak (VmHWM): {} KiB",
        status_kib("VmHWM:")
    );
    if writes_resync != 0 {
        bail!("steady state wrote {writes_resync} times");
    }
    Ok(())
}

/// A fresh process over pods an earlier one reconciled: what a restart costs (full relist, every pod reconciled).
async fn measure_restart(client: &kube::Client, pods: usize, against: &str) -> anyhow::Result<()> {
    let (took, rss) = reconcile_all(client, pods).await?;
    let writes = metrics::metrics().total_writes();
    println!(
        "restart (new process, {pods} pods, {against}): {:.2}s, {writes} API writes (must be 0)",
        took.as_secs_f64()
    );
    println!(
        "controller RSS after the restart: {rss} KiB; peak (VmHWM): {} KiB",
        status_kib("VmHWM:")
    );
    if writes != 0 {
        bail!("a restart over reconciled pods wrote {writes} times");
    }
    Ok(())
}

/// Runs one controller until `pods` more successful reconciles than before; returns how long it took and the RSS
/// (KiB) once it is done, taken while the controller still runs with its caches full.
async fn reconcile_all(client: &kube::Client, pods: usize) -> anyhow::Result<(Duration, u64)> {
    let args = ControllerArgs {
        lease_name: "bench".to_owned(),
        // Not the pods' namespace: the controller ignores pods in its own namespace (the webhook never injects there).
        lease_namespace: "healthbridge-system".to_owned(),
        identity: Some("bench".to_owned()),
        lease_duration: Duration::from_secs(15),
        renew_deadline: Duration::from_secs(10),
        retry_period: Duration::from_secs(2),
        node_port_range: controller::NodePortRange::default(),
        concurrency: 16,
    };
    let succeeded = || {
        metrics::metrics()
            .reconciles
            .get_or_create(&metrics::OutcomeLabels {
                result: metrics::Outcome::Success,
            })
            .get()
    };
    let target = succeeded() + u64::try_from(pods)?;
    let stop = CancellationToken::new();
    let started = Instant::now();
    let running = tokio::spawn(controller::run_leading(
        args,
        AgentImages::new(
            "docker.io/healthbridge/agent:bench",
            std::iter::empty::<&str>(),
        ),
        client.clone(),
        "bench".to_owned(),
        stop.clone(),
    ));
    let deadline = started + Duration::from_secs(150);
    // Owned objects' events trigger their pod again, so "N successes" is not "N pods": done is at least N
    // successes and then one quiet second; the time reported is that of the last reconcile.
    let (mut last_count, mut last_change) = (succeeded(), Instant::now());
    loop {
        let count = succeeded();
        if count != last_count {
            (last_count, last_change) = (count, Instant::now());
        }
        if count >= target && last_change.elapsed() >= Duration::from_secs(1) {
            break;
        }
        if Instant::now() > deadline {
            stop.cancel();
            bail!(
                "only {} successful reconciles for {pods} pods in 150s",
                count + u64::try_from(pods)? - target
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = last_change - started;
    let rss = rss_kib();
    stop.cancel();
    running.await?;
    Ok((elapsed, rss))
}

async fn seed_real_cluster(
    client: &kube::Client,
    namespace: &str,
    pods: usize,
) -> anyhow::Result<()> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns: Namespace = serde_json::from_value(json!({"metadata": {"name": namespace}}))?;
    namespaces
        .create(&PostParams::default(), &ns)
        .await
        .context("creating the bench namespace")?;
    // Pods are refused until the namespace's default ServiceAccount exists; the ServiceAccount controller
    // makes it, but may not run (an API-server-only cluster), so create it and accept that it exists.
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    let account: ServiceAccount = serde_json::from_value(json!({"metadata": {"name": "default"}}))?;
    match accounts.create(&PostParams::default(), &account).await {
        Ok(_) => {}
        Err(kube::Error::Api(status)) if status.code == 409 => {}
        Err(error) => return Err(error).context("creating the default ServiceAccount"),
    }
    let api: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let created = futures::stream::iter(0..pods)
        .map(|index| {
            let api = api.clone();
            async move {
                // Unschedulable on purpose: the bench measures the controller, not the node.
                let mut pod = fake_pod(namespace, index);
                pod["spec"]["nodeSelector"] = json!({"healthbridge.io/bench": "nowhere"});
                pod["metadata"]["ownerReferences"] = Value::Null;
                api.create(&PostParams::default(), &serde_json::from_value(pod)?)
                    .await?;
                anyhow::Ok(())
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await;
    created.into_iter().collect::<Result<Vec<_>, _>>()?;
    let listed = api.list_metadata(&ListParams::default()).await?.items.len();
    println!("created {listed} pods in namespace {namespace}");
    Ok(())
}

fn rss_kib() -> u64 {
    status_kib("VmRSS:")
}

/// A `/proc/self/status` figure in KiB (`VmRSS:` now, `VmHWM:` the peak).
fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with(field))
                .map(str::to_owned)
        })
        .and_then(|line| {
            line.split_whitespace()
                .nth(1)
                .and_then(|kib| kib.parse().ok())
        })
        .unwrap_or(0)
}

// ---------------------------------------------------------------- the fake API server

fn fake_pod(namespace: &str, index: usize) -> Value {
    let group = format!("app-{}", index / 10);
    let replica_set = format!("{group}-5d8f7c9b6d");
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": format!("{replica_set}-{index:05}"), "namespace": namespace,
            "labels": {keys::GROUP_LABEL: group},
            "annotations": {keys::INJECT: "true", keys::STATUS: keys::STATUS_INJECTED, keys::SERVICE: group},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": replica_set,
                "uid": format!("uid-{replica_set}"), "controller": true, "blockOwnerDeletion": true}]
        },
        // The agent as the webhook injects it (the in-cluster webhook admits the marker only so), the group named
        // by annotation so the webhook's group is the label's.
        "spec": {
            "containers": [{"name": "app", "image": "docker.io/healthbridge/demo:bench"}],
            "initContainers": [{"name": keys::AGENT_CONTAINER, "image": "docker.io/healthbridge/agent:bench", "restartPolicy": "Always",
                "ports": [{"name": "health", "containerPort": 13000}],
                "env": [{"name": "HTTP_HEALTHCHECK_SIDECAR_PORT", "value": "13000"}]}]
        }
    })
}

/// One change, kept so a watch from an older resourceVersion misses nothing.
#[derive(Clone)]
struct Change {
    version: u64,
    resource: String,
    kind: &'static str,
    object: Value,
}

#[derive(Default)]
struct Objects {
    version: u64,
    /// (resource, namespace, name) → object.
    stored: BTreeMap<(String, String, String), Value>,
    history: Vec<Change>,
    writes: u64,
    next_node_port: u16,
}

#[derive(Clone)]
struct Fake {
    objects: Arc<Mutex<Objects>>,
    changes: broadcast::Sender<Change>,
}

impl Fake {
    fn store(&self, resource: &str, mut object: Value, kind: &'static str) -> Value {
        let mut objects = self
            .objects
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        objects.version += 1;
        let version = objects.version;
        let namespace = object["metadata"]["namespace"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let name = object["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        object["metadata"]["resourceVersion"] = json!(version.to_string());
        if object["metadata"]["uid"].is_null() {
            object["metadata"]["uid"] = json!(format!("uid-{resource}-{namespace}-{name}"));
        }
        object["metadata"]["creationTimestamp"] = json!("2026-11-22T00:00:00Z");
        let key = (resource.to_owned(), namespace, name);
        let kind = if kind == "MODIFIED" && !objects.stored.contains_key(&key) {
            "ADDED"
        } else {
            kind
        };
        if kind == "DELETED" {
            objects.stored.remove(&key);
        } else {
            objects.stored.insert(key, object.clone());
        }
        let change = Change {
            version,
            resource: resource.to_owned(),
            kind,
            object: object.clone(),
        };
        objects.history.push(change.clone());
        let _ = self.changes.send(change);
        object
    }
}

async fn fake_apiserver(listen: SocketAddr, pods: usize) -> anyhow::Result<()> {
    let (changes, _) = broadcast::channel(1 << 16);
    let fake = Fake {
        objects: Arc::default(),
        changes,
    };
    fake.objects
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .next_node_port = 30000;
    for index in 0..pods {
        fake.store("pods", fake_pod("bench", index), "ADDED");
    }
    let app = axum::Router::new()
        .route("/stats", axum::routing::get(stats))
        .fallback(handle)
        .with_state(fake);
    let listener = tokio::net::TcpListener::bind(listen).await?;
    println!("http://{}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}

async fn stats(State(fake): State<Fake>) -> String {
    let objects = fake
        .objects
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let count = |resource: &str| {
        objects
            .stored
            .keys()
            .filter(|(kind, _, _)| kind == resource)
            .count()
    };
    format!(
        "writes {} roles {} rolebindings {} services {}\n",
        objects.writes,
        count("roles"),
        count("rolebindings"),
        count("services")
    )
}

fn matches_selector(object: &Value, selector: Option<&String>) -> bool {
    let Some(selector) = selector.filter(|selector| !selector.is_empty()) else {
        return true;
    };
    selector.split(',').all(|term| match term.split_once('=') {
        Some((key, value)) => object["metadata"]["labels"][key].as_str() == Some(value),
        None => !object["metadata"]["labels"][term].is_null(),
    })
}

fn status(code: StatusCode, message: &str) -> Response {
    // The reason as the API server sets it: kube's `get_opt` reads a 404 as "absent" only with reason NotFound.
    let reason = match code {
        StatusCode::NOT_FOUND => "NotFound",
        StatusCode::CONFLICT => "Conflict",
        _ => "",
    };
    let body = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "code": code.as_u16(), "reason": reason, "message": message});
    (code, axum::Json(body)).into_response()
}

async fn handle(
    State(fake): State<Fake>,
    method: Method,
    uri: Uri,
    Query(query): Query<HashMap<String, String>>,
    body: Bytes,
) -> Response {
    let segments: Vec<&str> = uri.path().trim_matches('/').split('/').collect();
    let namespaced = segments.iter().position(|segment| *segment == "namespaces");
    let (namespace, rest) = match namespaced {
        Some(at) if segments.len() > at + 2 => (Some(segments[at + 1]), &segments[at + 2..]),
        _ => (
            None,
            segments.last().map(std::slice::from_ref).unwrap_or(&[]),
        ),
    };
    let resource = rest.first().copied().unwrap_or_default().to_owned();
    let name = rest.get(1).copied();
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);

    match (method, name) {
        (Method::GET, None)
            if query
                .get("watch")
                .is_some_and(|watch| watch == "true" || watch == "1") =>
        {
            watch(&fake, &resource, &query)
        }
        (Method::GET, None) => {
            let objects = fake
                .objects
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            // Pages as the API server serves a list with `limit` (the watcher asks for 500): `continue` is the offset.
            let offset: usize = query
                .get("continue")
                .and_then(|token| token.parse().ok())
                .unwrap_or(0);
            let limit: usize = query
                .get("limit")
                .and_then(|limit| limit.parse().ok())
                .filter(|limit| *limit > 0)
                .unwrap_or(usize::MAX);
            // Only the page is copied: the objects of one resource are a contiguous range of the ordered map.
            let mut matching = objects
                .stored
                .range((resource.clone(), String::new(), String::new())..)
                .take_while(|((kind, _, _), _)| *kind == resource)
                .filter(|((_, ns, _), object)| {
                    namespace.is_none_or(|want| want == ns)
                        && matches_selector(object, query.get("labelSelector"))
                })
                .skip(offset);
            let page: Vec<Value> = matching
                .by_ref()
                .take(limit)
                .map(|(_, object)| object.clone())
                .collect();
            let more = matching.next().is_some();
            let mut metadata = json!({"resourceVersion": objects.version.to_string()});
            if more {
                metadata["continue"] = json!((offset + limit).to_string());
            }
            axum::Json(
                json!({"apiVersion": "v1", "kind": "List", "metadata": metadata, "items": page}),
            )
            .into_response()
        }
        (Method::GET, Some(name)) if resource == "replicasets" => {
            let deployment = name.rsplit_once('-').map_or(name, |(head, _)| head);
            axum::Json(json!({
                "apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
                "metadata": {"name": name, "namespace": namespace, "uid": format!("uid-{name}"),
                    "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": deployment,
                        "uid": format!("uid-{deployment}"), "controller": true, "blockOwnerDeletion": true}]}
            }))
            .into_response()
        }
        (Method::GET, Some(name)) => {
            let key = (
                resource.clone(),
                namespace.unwrap_or_default().to_owned(),
                name.to_owned(),
            );
            let stored = fake
                .objects
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .stored
                .get(&key)
                .cloned();
            match stored {
                Some(object) => axum::Json(object).into_response(),
                None => status(StatusCode::NOT_FOUND, "not found"),
            }
        }
        (Method::POST | Method::PATCH, _) if resource == "events" => {
            (StatusCode::CREATED, axum::Json(body)).into_response()
        }
        (Method::PATCH, Some(name)) => {
            let key = (
                resource.clone(),
                namespace.unwrap_or_default().to_owned(),
                name.to_owned(),
            );
            let mut applied = body;
            {
                let mut objects = fake
                    .objects
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                objects.writes += 1;
                if resource == "pods" {
                    // Only labels are ever applied to pods: merge them into the stored pod.
                    let Some(mut stored) = objects.stored.get(&key).cloned() else {
                        return status(StatusCode::NOT_FOUND, "no such pod");
                    };
                    if let (Some(labels), Some(new)) = (
                        stored["metadata"]["labels"].as_object_mut(),
                        applied["metadata"]["labels"].as_object(),
                    ) {
                        labels.extend(new.clone());
                    }
                    applied = stored;
                } else if resource == "services"
                    && applied["spec"]["ports"][0]["nodePort"].is_null()
                {
                    let previous = objects
                        .stored
                        .get(&key)
                        .map(|service| service["spec"]["ports"][0]["nodePort"].clone());
                    let port = match previous {
                        Some(Value::Number(port)) => json!(port),
                        _ => {
                            objects.next_node_port += 1;
                            json!(objects.next_node_port)
                        }
                    };
                    applied["spec"]["ports"][0]["nodePort"] = port;
                }
            }
            (
                StatusCode::OK,
                axum::Json(fake.store(&resource, applied, "MODIFIED")),
            )
                .into_response()
        }
        (Method::DELETE, Some(name)) => {
            let key = (
                resource.clone(),
                namespace.unwrap_or_default().to_owned(),
                name.to_owned(),
            );
            let stored = {
                let mut objects = fake
                    .objects
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                objects.writes += 1;
                objects.stored.get(&key).cloned()
            };
            match stored {
                Some(object) => {
                    axum::Json(fake.store(&resource, object, "DELETED")).into_response()
                }
                None => status(StatusCode::NOT_FOUND, "not found"),
            }
        }
        _ => status(StatusCode::NOT_FOUND, "not served by the fake API server"),
    }
}

/// A watch: the changes after the requested resourceVersion, then live ones, as JSON lines.
fn watch(fake: &Fake, resource: &str, query: &HashMap<String, String>) -> Response {
    let since: u64 = query
        .get("resourceVersion")
        .and_then(|version| version.parse().ok())
        .unwrap_or(0);
    let selector = query.get("labelSelector").cloned();
    let (backlog, live) = {
        let objects = fake
            .objects
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let backlog: Vec<Change> = objects
            .history
            .iter()
            .filter(|change| change.version > since)
            .cloned()
            .collect();
        (backlog, fake.changes.subscribe())
    };
    let resource = resource.to_owned();
    let live = tokio_stream_from(live);
    let lines = futures::stream::iter(backlog)
        .chain(live)
        .filter(move |change| {
            let keep =
                change.resource == resource && matches_selector(&change.object, selector.as_ref());
            async move { keep }
        })
        .map(|change| {
            let mut line =
                serde_json::to_vec(&json!({"type": change.kind, "object": change.object}))
                    .unwrap_or_default();
            line.push(b'\n');
            Ok::<_, Infallible>(Bytes::from(line))
        });
    Response::new(Body::from_stream(lines))
}

fn tokio_stream_from(receiver: broadcast::Receiver<Change>) -> impl futures::Stream<Item = Change> {
    futures::stream::unfold(receiver, |mut receiver| async move {
        loop {
            match receiver.recv().await {
                Ok(change) => return Some((change, receiver)),
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
}
