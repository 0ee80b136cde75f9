//! The probe workload of a normal user: `get pod` and `list configmaps` in turn on one keep-alive connection,
//! in each namespace of a pair, interleaved round by round so that the machine's noise hits both alike.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{Api, ListParams};
use kube::config::{KubeConfigOptions, Kubeconfig};

use crate::stats::{median, ms, quantile, result};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Kubeconfig of the probing user (not an admin: the RBAC authorizer must do its work).
    #[arg(long)]
    kubeconfig: PathBuf,
    /// Namespaces to compare, the first against each other one.
    #[arg(long, value_delimiter = ',', required = true)]
    namespaces: Vec<String>,
    /// The pod the probe reads in every namespace.
    #[arg(long, default_value = "probe-target")]
    pod: String,
    /// Requests of each kind per round and namespace.
    #[arg(long, default_value_t = 1000)]
    requests: usize,
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    #[arg(long)]
    label: String,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let kubeconfig = Kubeconfig::read_from(&args.kubeconfig)
        .with_context(|| format!("reading {}", args.kubeconfig.display()))?;
    let config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
    let client = kube::Client::try_from(config)?;
    // Per namespace: each round's p50 and p99 in ms.
    let mut p50s = vec![Vec::new(); args.namespaces.len()];
    let mut p99s = vec![Vec::new(); args.namespaces.len()];
    // Warm the connection and the caches once, unmeasured.
    for namespace in &args.namespaces {
        workload(&client, namespace, &args.pod, 50).await?;
    }
    for round in 0..args.rounds {
        let mut order: Vec<usize> = (0..args.namespaces.len()).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        for index in order {
            let mut samples =
                workload(&client, &args.namespaces[index], &args.pod, args.requests).await?;
            p50s[index].push(ms(quantile(&mut samples, 0.5)));
            p99s[index].push(ms(quantile(&mut samples, 0.99)));
        }
    }
    let label = &args.label;
    let base50 = median(&mut p50s[0].clone());
    let base99 = median(&mut p99s[0].clone());
    for (index, namespace) in args.namespaces.iter().enumerate() {
        let p50 = median(&mut p50s[index]);
        let p99 = median(&mut p99s[index]);
        result(&format!("{label}.{namespace}.p50_ms"), format!("{p50:.2}"));
        result(&format!("{label}.{namespace}.p99_ms"), format!("{p99:.2}"));
        if index > 0 {
            result(
                &format!("{label}.{namespace}.p50_ratio"),
                format!("{:.2}", p50 / base50),
            );
            result(
                &format!("{label}.{namespace}.p99_ratio"),
                format!("{:.2}", p99 / base99),
            );
        }
    }
    Ok(())
}

/// `requests` gets of the pod and as many configmap lists, alternating; the latency of each.
async fn workload(
    client: &kube::Client,
    namespace: &str,
    pod: &str,
    requests: usize,
) -> anyhow::Result<Vec<Duration>> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let mut samples = Vec::with_capacity(2 * requests);
    for _ in 0..requests {
        let begin = Instant::now();
        pods.get(pod)
            .await
            .with_context(|| format!("get pod {namespace}/{pod}"))?;
        samples.push(begin.elapsed());
        let begin = Instant::now();
        maps.list(&ListParams::default())
            .await
            .with_context(|| format!("list configmaps in {namespace}"))?;
        samples.push(begin.elapsed());
    }
    Ok(samples)
}
