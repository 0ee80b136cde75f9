//! N agents in one process: the agent's own pod-following code (`pod_status::watch`: a GET per round and a
//! long-lived watch), one client per agent (so its own connections, as N sidecars have), each with its pod's
//! ServiceAccount token. Driven by commands on stdin, so the script can restart the API server in between; every
//! request is counted per second and by kind (GET, watch start, list).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context as _, bail};
use futures::StreamExt;
use healthbridge_agent::metrics::Metrics;
use healthbridge_agent::pod_status::watch::{self, Followed};
use healthbridge_agent::pod_status::{PodState, Target};
use healthbridge_contract::keys;
use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;
use tokio::sync::watch::Receiver;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::stats::{ms, quantile, result};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Namespaces whose injected pods get an agent each.
    #[arg(long, value_delimiter = ',', required = true)]
    namespaces: Vec<String>,
    /// How many agents (the first N injected pods).
    #[arg(long)]
    count: usize,
    /// The agents' MAX_STALENESS (the watch rounds are derived from it as in the agent).
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    max_staleness: Duration,
    /// Agents started per second at the beginning (pods do not all start in the same millisecond).
    #[arg(long, default_value_t = 1000)]
    start_rate: usize,
    /// How long `up` and `storm` wait for every agent to be confirmed.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    up_timeout: Duration,
}

/// Requests per second since start, by kind.
struct Timeline {
    start: Instant,
    gets: Vec<AtomicU64>,
    watches: Vec<AtomicU64>,
    lists: Vec<AtomicU64>,
}

/// Requests of each kind in a window.
#[derive(Debug, Clone, Copy, Default)]
struct Counts {
    gets: u64,
    watches: u64,
    lists: u64,
}

impl Counts {
    fn total(self) -> u64 {
        self.gets + self.watches + self.lists
    }
}

const TIMELINE_SECONDS: usize = 4 * 3600;

impl Timeline {
    fn new() -> Self {
        let bins = || (0..TIMELINE_SECONDS).map(|_| AtomicU64::new(0)).collect();
        Self {
            start: Instant::now(),
            gets: bins(),
            watches: bins(),
            lists: bins(),
        }
    }

    fn second(&self, at: Instant) -> usize {
        (at.saturating_duration_since(self.start).as_secs() as usize).min(TIMELINE_SECONDS - 1)
    }

    /// A GET names the pod in its path (`.../pods/NAME`); a watch and a list go to the collection.
    fn note(&self, request: &http::Request<kube::client::Body>) {
        let uri = request.uri();
        let watch = uri
            .query()
            .is_some_and(|q| q.split('&').any(|p| p == "watch=true"));
        let bins = if watch {
            &self.watches
        } else if uri.path().ends_with("/pods") {
            &self.lists
        } else {
            &self.gets
        };
        bins[self.second(Instant::now())].fetch_add(1, Ordering::Relaxed);
    }

    /// Requests sent in the whole seconds `[from, to)`.
    fn between(&self, from: Instant, to: Instant) -> Counts {
        let (a, b) = (self.second(from), self.second(to));
        let sum = |bins: &[AtomicU64]| {
            bins[a..b.max(a)]
                .iter()
                .map(|c| c.load(Ordering::Relaxed))
                .sum()
        };
        Counts {
            gets: sum(&self.gets),
            watches: sum(&self.watches),
            lists: sum(&self.lists),
        }
    }
}

struct Agent {
    namespace: String,
    name: String,
    state: Receiver<PodState>,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let admin = kube::Client::try_default().await.context("no KUBECONFIG")?;
    let base = kube::Config::infer().await?;
    let followed = injected_pods(&admin, &args).await?;
    let timeline = Arc::new(Timeline::new());
    let metrics = Arc::new(Metrics::default());
    let cancel = CancellationToken::new();
    let mut tokens: HashMap<(String, String), String> = HashMap::new();
    let mut agents = Vec::with_capacity(followed.len());
    let pace = Duration::from_secs(1) / u32::try_from(args.start_rate.max(1)).unwrap_or(1000);
    let mut next_start = Instant::now();
    for (namespace, name, account) in followed {
        let key = (namespace.clone(), account.clone());
        if !tokens.contains_key(&key) {
            let token = token_for(&admin, &namespace, &account).await?;
            tokens.insert(key.clone(), token);
        }
        let mut config = base.clone();
        config.auth_info = kube::config::AuthInfo {
            token: tokens.get(&key).cloned().map(Into::into),
            ..Default::default()
        };
        config.default_retry = false;
        let timeline = timeline.clone();
        let client = kube::client::ClientBuilder::try_from(config)?
            .with_layer(&tower::util::MapRequestLayer::new(
                move |request: http::Request<kube::client::Body>| {
                    timeline.note(&request);
                    request
                },
            ))
            .build();
        let pod = Followed {
            name: name.clone(),
            namespace: namespace.clone(),
            target: Target::AllAppContainers {
                except: keys::AGENT_CONTAINER.to_owned(),
            },
        };
        tokio::time::sleep_until(next_start).await;
        next_start += pace;
        let state = watch::spawn(
            client,
            pod,
            args.max_staleness,
            metrics.clone(),
            cancel.clone(),
        );
        agents.push(Agent {
            namespace,
            name,
            state,
        });
    }
    result("agents.count", agents.len());
    result("agents.identities", tokens.len());
    let started = timeline.start;
    let mut mark = Instant::now();
    let mut ready = Instant::now();
    let mut lines = stdin_lines();
    while let Some(line) = lines.recv().await {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["up"] => match all_confirmed_after(&agents, started, args.up_timeout).await {
                Ok(took) => result("agents.up_s", format!("{:.1}", took.as_secs_f64())),
                // An overloaded API server is a result, not a crash: say how far the agents got.
                Err(behind) => {
                    result(
                        "agents.up_s",
                        format!("not within {}", humantime::format_duration(args.up_timeout)),
                    );
                    result("agents.unconfirmed", behind);
                }
            },
            ["rate", seconds] => {
                let seconds: u64 = seconds.parse().context("rate SECONDS")?;
                // A whole round first: every agent is past its first list, in its steady rhythm.
                tokio::time::sleep(args.max_staleness / 2).await;
                let from = Instant::now();
                tokio::time::sleep(Duration::from_secs(seconds)).await;
                let counts = timeline.between(from, Instant::now());
                let per_s = |n: u64| format!("{:.1}", n as f64 / seconds as f64);
                let per_pod = |n: u64| {
                    format!(
                        "{:.4}",
                        n as f64 / seconds as f64 / agents.len().max(1) as f64
                    )
                };
                result("agents.get_per_s", per_s(counts.gets));
                result("agents.watch_per_s", per_s(counts.watches));
                result("agents.list_per_s", per_s(counts.lists));
                result("agents.requests_per_s", per_s(counts.total()));
                result("agents.get_per_s_per_pod", per_pod(counts.gets));
                result("agents.watch_per_s_per_pod", per_pod(counts.watches));
                result("agents.list_per_s_per_pod", per_pod(counts.lists));
                result("agents.requests_per_s_per_pod", per_pod(counts.total()));
            }
            ["latency", writes] => {
                let writes: usize = writes.parse().context("latency WRITES")?;
                event_latency(&admin, &agents, writes).await?;
            }
            ["mark"] => mark = Instant::now(),
            ["ready"] => ready = Instant::now(),
            ["storm", seconds] => {
                let seconds: usize = seconds.parse().context("storm SECONDS")?;
                result(
                    "storm.down_s",
                    format!("{:.1}", (ready - mark).as_secs_f64()),
                );
                match all_confirmed_after(&agents, ready, args.up_timeout).await {
                    Ok(back) => result("storm.all_back_s", format!("{:.1}", back.as_secs_f64())),
                    Err(behind) => {
                        result(
                            "storm.all_back_s",
                            format!("not within {}", humantime::format_duration(args.up_timeout)),
                        );
                        result("storm.unconfirmed", behind);
                    }
                }
                let per_second: Vec<String> = (0..seconds)
                    .map(|s| {
                        let from = ready + Duration::from_secs(s as u64);
                        timeline
                            .between(from, from + Duration::from_secs(1))
                            .total()
                            .to_string()
                    })
                    .collect();
                result("storm.requests_per_s_after_ready", per_second.join(","));
                result(
                    "storm.requests_while_down",
                    timeline.between(mark, ready).total(),
                );
                for cause in healthbridge_agent::metrics::RESTART_CAUSES {
                    result(&format!("agents.restarts.{cause}"), metrics.restarts(cause));
                }
            }
            ["quit"] => break,
            _ => bail!("unknown command {line:?}"),
        }
        println!("DONE {line}");
        use std::io::Write as _;
        let _ = std::io::stdout().flush();
    }
    cancel.cancel();
    Ok(())
}

/// The commands, read by a thread of their own (blocking stdin has no place on the runtime).
fn stdin_lines() -> tokio::sync::mpsc::Receiver<String> {
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    std::thread::spawn(move || {
        for line in std::io::stdin().lines() {
            let Ok(line) = line else { break };
            if tx.blocking_send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// (namespace, pod, service account) of the first `count` injected pods.
async fn injected_pods(
    client: &kube::Client,
    args: &Args,
) -> anyhow::Result<Vec<(String, String, String)>> {
    let mut found = Vec::new();
    for namespace in &args.namespaces {
        let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
        for pod in pods.list(&ListParams::default()).await?.items {
            let spec = pod.spec.as_ref();
            let injected = spec
                .into_iter()
                .flat_map(|s| {
                    s.containers
                        .iter()
                        .chain(s.init_containers.iter().flatten())
                })
                .any(|c| c.name == keys::AGENT_CONTAINER);
            if injected && found.len() < args.count {
                let account = spec
                    .and_then(|s| s.service_account_name.clone())
                    .unwrap_or_else(|| "default".to_owned());
                found.push((
                    namespace.clone(),
                    pod.metadata.name.unwrap_or_default(),
                    account,
                ));
            }
        }
    }
    if found.len() < args.count {
        bail!(
            "only {} injected pods, {} agents asked for",
            found.len(),
            args.count
        );
    }
    Ok(found)
}

/// A token of the ServiceAccount, as the kubelet would project into the agent's pod.
async fn token_for(
    client: &kube::Client,
    namespace: &str,
    account: &str,
) -> anyhow::Result<String> {
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), namespace);
    let request: TokenRequest = serde_json::from_value(json!({
        "spec": {"audiences": [], "expirationSeconds": 7200}
    }))?;
    let answer = accounts
        .create_token_request(account, &PostParams::default(), &request)
        .await
        .with_context(|| format!("TokenRequest for {namespace}/{account}"))?;
    Ok(answer.status.map(|s| s.token).unwrap_or_default())
}

/// Polls until every agent has a confirmed contact after `after` and no failure; the time from `after`, or how
/// many agents were still behind at the timeout.
async fn all_confirmed_after(
    agents: &[Agent],
    after: Instant,
    timeout: Duration,
) -> Result<Duration, usize> {
    let mut delay = Duration::from_millis(10);
    loop {
        let behind = agents
            .iter()
            .filter(|agent| {
                let state = agent.state.borrow();
                state.failure.is_some() || state.confirmed.is_none_or(|c| c.at < after)
            })
            .count();
        if behind == 0 {
            return Ok(after.elapsed());
        }
        if after.elapsed() > timeout {
            return Err(behind);
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(100));
    }
}

/// Marks `writes` pods Ready through the status subresource, one after the other, and times each write until
/// that pod's agent answers healthy.
async fn event_latency(
    client: &kube::Client,
    agents: &[Agent],
    writes: usize,
) -> anyhow::Result<()> {
    let chosen: Vec<&Agent> = agents
        .iter()
        .filter(|agent| {
            agent
                .state
                .borrow()
                .health
                .as_ref()
                .is_some_and(|h| !h.healthy())
        })
        .take(writes)
        .collect();
    let mut seen = Vec::with_capacity(chosen.len());
    let mut written = Vec::with_capacity(chosen.len());
    let waiters = futures::stream::FuturesUnordered::new();
    for agent in chosen {
        let pods: Api<Pod> = Api::namespaced(client.clone(), &agent.namespace);
        let mut state = agent.state.clone();
        let begin = Instant::now();
        waiters.push(tokio::spawn(async move {
            let healthy = state.wait_for(|s| s.health.as_ref().is_some_and(|h| h.healthy()));
            tokio::time::timeout(Duration::from_secs(60), healthy)
                .await
                .map(|_| begin.elapsed())
                .ok()
        }));
        pods.patch_status(
            &agent.name,
            &PatchParams::default(),
            &Patch::Merge(ready_status()),
        )
        .await
        .with_context(|| format!("status of {}/{}", agent.namespace, agent.name))?;
        written.push(begin.elapsed());
        // One write at a time, a few ms apart: the latency of each, not of a queue of them.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let outcomes: Vec<_> = waiters.collect().await;
    let mut lost = 0;
    for outcome in outcomes {
        match outcome? {
            Some(took) => seen.push(took),
            None => lost += 1,
        }
    }
    result("event.writes", written.len());
    result("event.lost", lost);
    result(
        "event.write_p50_ms",
        format!("{:.1}", ms(quantile(&mut written, 0.5))),
    );
    result(
        "event.p50_ms",
        format!("{:.1}", ms(quantile(&mut seen, 0.5))),
    );
    result(
        "event.p99_ms",
        format!("{:.1}", ms(quantile(&mut seen, 0.99))),
    );
    Ok(())
}

fn ready_status() -> serde_json::Value {
    json!({"status": {
        "phase": "Running",
        "conditions": [{"type": "Ready", "status": "True"}, {"type": "ContainersReady", "status": "True"}],
        "containerStatuses": [{"name": "app", "ready": true, "restartCount": 0, "started": true,
            "image": "registry.example/bench/app:1", "imageID": "", "state": {"running": {}}}]
    }})
}
