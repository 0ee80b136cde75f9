//! The controller: least-privilege RBAC per ServiceAccount and per-group NodePort Services for injected pods.

pub mod apply;
pub mod cached;
pub mod claim;
pub mod context;
pub mod desired;
pub mod events;
pub mod group_index;
pub mod housekeeping;
pub mod leader;
pub mod metrics;
pub mod names;
pub mod owner;
pub mod rbac;
pub mod reconcile;
pub mod uninjected;

use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{Config as ControllerConfig, Controller};
use kube::runtime::events::Reporter;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use tokio_util::sync::CancellationToken;

use self::cached::{CachedPod, PodMarks, PodView};
use self::context::{Context, Stores};
pub use self::desired::NodePortRange;
use self::group_index::GroupIndex;
pub use self::leader::{LeaderError, LeaseLock, Timing};
pub use self::metrics::register;
use crate::keys;
use crate::trust::AgentImages;

/// How often unused group Services are collected and the gauges refreshed.
const HOUSEKEEPING_PERIOD: Duration = Duration::from_secs(15);

/// Flags of the controller (also env vars with the `HEALTHBRIDGE_` prefix).
#[derive(Debug, Clone, Args)]
pub struct ControllerArgs {
    /// Name of the coordination.k8s.io Lease that elects the active replica.
    #[arg(
        long,
        env = "HEALTHBRIDGE_LEASE_NAME",
        default_value = "healthbridge-controller"
    )]
    pub lease_name: String,
    /// Namespace of the Lease: the controller's own namespace (downward API).
    #[arg(
        long = "namespace",
        env = "POD_NAMESPACE",
        default_value = "healthbridge-system"
    )]
    pub lease_namespace: String,
    /// Holder identity written into the Lease: the pod name (downward API), else the hostname.
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,
    /// Others take the Lease over this long after the holder's last renewal.
    #[arg(long, env = "HEALTHBRIDGE_LEASE_DURATION", default_value = "15s", value_parser = humantime::parse_duration)]
    pub lease_duration: Duration,
    /// The leader stops reconciling when it could not renew the Lease for this long (< lease duration).
    #[arg(long, env = "HEALTHBRIDGE_RENEW_DEADLINE", default_value = "10s", value_parser = humantime::parse_duration)]
    pub renew_deadline: Duration,
    /// How often the leader renews and the others try to acquire.
    #[arg(long, env = "HEALTHBRIDGE_RETRY_PERIOD", default_value = "2s", value_parser = humantime::parse_duration)]
    pub retry_period: Duration,
    /// The API server's `--service-node-port-range`: pinned nodePorts outside it are reported, not applied.
    #[arg(
        long,
        env = "HEALTHBRIDGE_NODE_PORT_RANGE",
        default_value = "30000-32767"
    )]
    pub node_port_range: NodePortRange,
    /// Pods reconciled at the same time.
    #[arg(long, env = "HEALTHBRIDGE_CONCURRENCY", default_value_t = 16)]
    pub concurrency: u16,
}

impl ControllerArgs {
    fn timing(&self) -> Timing {
        Timing {
            lease_duration: self.lease_duration,
            renew_deadline: self.renew_deadline,
            retry_period: self.retry_period,
        }
    }
}

/// Why the controller stopped.
#[derive(Debug, thiserror::Error)]
pub enum ControllerError {
    #[error("the Kubernetes API failed: {0}")]
    Kube(#[from] kube::Error),
    #[error("no identity for the Lease: set POD_NAME (downward API metadata.name) or --identity")]
    NoIdentity,
    #[error(transparent)]
    Leader(#[from] LeaderError),
}

/// Runs the controller until `shutdown` is cancelled, reconciling only while this replica holds the Lease.
pub async fn run(
    args: ControllerArgs,
    agent_images: AgentImages,
    client: kube::Client,
    shutdown: CancellationToken,
) -> Result<(), ControllerError> {
    let identity = args
        .identity
        .clone()
        .filter(|identity| !identity.is_empty())
        .or_else(|| {
            std::env::var("HOSTNAME")
                .ok()
                .filter(|host| !host.is_empty())
        })
        .ok_or(ControllerError::NoIdentity)?;
    let lock = LeaseLock::new(
        client.clone(),
        &args.lease_namespace,
        &args.lease_name,
        &identity,
        args.timing(),
    );
    lock.run_while_leading(shutdown, |leading| {
        run_leading(
            args.clone(),
            agent_images.clone(),
            client.clone(),
            identity.clone(),
            leading,
        )
    })
    .await?;
    Ok(())
}

/// Selects the objects the controller created.
fn managed_selector() -> watcher::Config {
    watcher::Config::default().labels(&format!("{}={}", keys::MANAGED_BY_LABEL, keys::MANAGED_BY))
}

/// Starts a reflector for managed objects of one kind, managedFields dropped before they are cached; `seen`
/// hears of every object it delivers; its task ends with `stop`.
fn managed_store<K>(
    client: &kube::Client,
    stop: &CancellationToken,
    seen: impl Fn(&K) + Send + 'static,
) -> Store<K>
where
    K: Resource<DynamicType = ()>
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store();
    let objects = watcher(Api::<K>::all(client.clone()), managed_selector())
        .default_backoff()
        .modify(|object| object.meta_mut().managed_fields = None)
        .inspect_ok(move |event| {
            if let watcher::Event::Apply(object)
            | watcher::Event::InitApply(object)
            | watcher::Event::Delete(object) = event
            {
                seen(object);
            }
        });
    let stream = reflector::reflector(writer, objects).for_each(|event| async move {
        if let Err(err) = event {
            tracing::warn!(kind = %K::kind(&()), error = %err, "watch of managed objects failed; retrying");
        }
    });
    let stop = stop.clone();
    tokio::spawn(async move {
        tokio::select! {
            () = stop.cancelled() => {}
            () = stream => {}
        }
    });
    reader
}

/// The controller proper: watches, caches, reconciles and housekeeping, until `leading` is cancelled.
pub async fn run_leading(
    args: ControllerArgs,
    agent_images: AgentImages,
    client: kube::Client,
    identity: String,
    leading: CancellationToken,
) {
    // A change to an agent Role or RoleBinding (ours, or a user's edit) brings its ServiceAccount up for a sync.
    let (requeue, requeued) = futures::channel::mpsc::unbounded();
    let accounts = Arc::new(std::sync::OnceLock::<Arc<Context>>::new());
    let mark = |accounts: &Arc<std::sync::OnceLock<Arc<Context>>>| {
        let accounts = accounts.clone();
        move |meta: &kube::api::ObjectMeta| {
            if let (Some(ctx), Some(account)) = (accounts.get(), rbac::account_annotated(meta)) {
                ctx.accounts.mark(account);
            }
        }
    };
    let roles = {
        let mark = mark(&accounts);
        managed_store::<Role>(&client, &leading, move |role| mark(&role.metadata))
    };
    let role_bindings = {
        let mark = mark(&accounts);
        managed_store::<RoleBinding>(&client, &leading, move |binding| mark(&binding.metadata))
    };
    let services = managed_store::<Service>(&client, &leading, |_| {});

    // Only pods the webhook injected carry its group label: the API server filters, and each pod is stripped to
    // what reconcile reads as it is decoded (see `cached`). Opted-in pods the webhook missed are found by the
    // metadata-only watch below.
    // What Controller::new does, plus the group and ServiceAccount indexes fed from the same events right after the
    // store, so that a reconcile (which runs after its event has passed) finds a group's or an account's pods
    // without scanning every pod.
    let (pods, writer) = reflector::store();
    let group_index = Arc::new(GroupIndex::default());
    let account_index = Arc::new(GroupIndex::by_service_account());
    let pod_events = {
        let group_index = group_index.clone();
        let account_index = account_index.clone();
        let accounts = accounts.clone();
        reflector::reflector(
            writer,
            watcher(
                Api::<CachedPod>::all(client.clone()),
                // Paginated lists (500 a page), not `any_semantic`: an API server answers resourceVersion=0 from its
                // watch cache in one piece, whatever the limit, and that peak is what bounds our memory.
                watcher::Config::default().labels(keys::GROUP_LABEL),
            )
            .default_backoff(),
        )
        .inspect_ok(move |event| {
            group_index.apply_watcher_event(event);
            account_index.apply_watcher_event(event);
            // A pod gone (or no longer labelled) leaves its account's Role.
            if let (watcher::Event::Delete(pod), Some(ctx)) = (event, accounts.get()) {
                let namespace = pod.namespace().unwrap_or_default();
                let account = pod.service_account_name().unwrap_or("default").to_owned();
                ctx.accounts.mark((namespace, account));
            }
        })
        .applied_objects()
    };
    let service_pods = (pods.clone(), group_index.clone());
    let controller = Controller::for_stream(pod_events, pods.clone())
        .with_config(ControllerConfig::default().concurrency(args.concurrency))
        .reconcile_on(requeued)
        .watches(
            Api::<Service>::all(client.clone()),
            managed_selector(),
            move |service| pods_of_service(&service_pods.0, &service_pods.1, &service),
        );

    // Compare against complete caches only: a half-filled cache would look like missing objects and cause writes.
    let ready = async {
        let waits = (
            roles.wait_until_ready(),
            role_bindings.wait_until_ready(),
            services.wait_until_ready(),
        );
        let (a, b, c) = tokio::join!(waits.0, waits.1, waits.2);
        a.is_ok() && b.is_ok() && c.is_ok()
    };
    tokio::select! {
        () = leading.cancelled() => return,
        synced = ready => if !synced { return },
    }

    let reporter = Reporter {
        controller: keys::MANAGED_BY.to_owned(),
        instance: Some(identity),
    };
    let stores = Stores {
        pods: pods.clone(),
        roles,
        role_bindings,
        services,
    };
    let ctx = Arc::new(
        Context::new(
            client.clone(),
            stores,
            reporter,
            args.node_port_range,
            agent_images,
        )
        .never_injecting([args.lease_namespace.clone()])
        .with_group_index(group_index)
        .with_account_index(account_index)
        .with_accounts(rbac::AgentAccounts::with_requeue(requeue)),
    );

    // Every pod's metadata, kept as nothing but the set of uninjected pods' UIDs.
    let uninjected = {
        let ctx = ctx.clone();
        watcher(
            Api::<PartialObjectMeta<Pod>>::all(client),
            watcher::Config::default(),
        )
        .default_backoff()
        .for_each(move |event| {
            let ctx = ctx.clone();
            async move {
                match event {
                    Ok(event) => uninjected::follow(&ctx, event).await,
                    Err(err) => {
                        tracing::warn!(error = %err, "metadata watch of pods failed; retrying");
                    }
                }
            }
        })
    };

    let housekeeping = {
        let ctx = ctx.clone();
        let leading = leading.clone();
        async move {
            if ctx.pods.wait_until_ready().await.is_err() {
                return;
            }
            // Only now may the account syncs run: against a half-filled pod cache they would drop names.
            let _ = accounts.set(ctx.clone());
            rbac::mark_all(&ctx);
            let syncing = rbac::run(ctx.clone(), leading.clone());
            let periodic = async {
                let mut tick = tokio::time::interval(HOUSEKEEPING_PERIOD);
                loop {
                    tick.tick().await;
                    housekeeping::update_gauges(&ctx);
                    housekeeping::collect_garbage(&ctx).await;
                    rbac::mark_all(&ctx);
                }
            };
            tokio::select! {
                () = leading.cancelled() => {}
                () = syncing => {}
                () = periodic => {}
            }
        }
    };
    let reconciling = controller
        .graceful_shutdown_on(leading.clone().cancelled_owned())
        .run(reconcile::reconcile, reconcile::error_policy, ctx)
        .for_each(|result| async move {
            if let Err(err) = result {
                tracing::debug!(error = %err, "controller event");
            }
        });
    let uninjected = async {
        tokio::select! {
            () = leading.cancelled() => {}
            () = uninjected => {}
        }
    };
    tokio::join!(reconciling, housekeeping, uninjected);
}

/// The pods whose reconcile a change to a managed Service should trigger: its owner pod for a per-pod Service,
/// the group's pods for a group Service.
fn pods_of_service(
    pods: &Store<CachedPod>,
    groups: &GroupIndex,
    service: &Service,
) -> Vec<ObjectRef<CachedPod>> {
    let namespace = service.namespace().unwrap_or_default();
    if let Some(owner) = service
        .owner_references()
        .iter()
        .find(|owner| owner.kind == "Pod")
    {
        return vec![ObjectRef::new(&owner.name).within(&namespace)];
    }
    let Some(group) = service.labels().get(keys::GROUP_LABEL) else {
        return Vec::new();
    };
    groups
        .members(&namespace, group)
        .into_iter()
        .filter(|reference| {
            pods.get(reference)
                .is_some_and(|pod| pod.label(keys::GROUP_LABEL) == Some(group.as_str()))
        })
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use kube::runtime::watcher::Event;

    fn object<K: serde::de::DeserializeOwned>(value: serde_json::Value) -> K {
        serde_json::from_value(value).unwrap()
    }

    fn grouped_pod(name: &str, namespace: &str, group: &str) -> CachedPod {
        object::<Pod>(
            serde_json::json!({"metadata": {"name": name, "namespace": namespace, "labels": {keys::GROUP_LABEL: group}}}),
        )
        .into()
    }

    #[test]
    fn a_group_service_change_reconciles_the_pods_of_that_group_in_its_namespace() {
        let (pods, mut writer) = reflector::store();
        let groups = GroupIndex::default();
        for pod in [
            grouped_pod("web-1", "shop", "web"),
            grouped_pod("web-2", "shop", "web"),
            grouped_pod("web-1", "other", "web"),
            grouped_pod("api-1", "shop", "api"),
        ] {
            let event = Event::Apply(pod);
            writer.apply_watcher_event(&event);
            groups.apply_watcher_event(&event);
        }
        let service: Service = object(
            serde_json::json!({"metadata": {"name": "web-healthbridge", "namespace": "shop", "labels": {keys::GROUP_LABEL: "web"}}}),
        );

        let mut names: Vec<String> = pods_of_service(&pods, &groups, &service)
            .into_iter()
            .map(|pod| format!("{}/{}", pod.namespace.unwrap_or_default(), pod.name))
            .collect();
        names.sort();

        assert_eq!(names, ["shop/web-1", "shop/web-2"]);
    }

    #[test]
    fn a_per_pod_service_change_reconciles_its_owner_pod() {
        let (pods, _writer) = reflector::store::<CachedPod>();
        let service: Service = object(
            serde_json::json!({"metadata": {"name": "debug-healthbridge", "namespace": "shop",
            "ownerReferences": [{"apiVersion": "v1", "kind": "Pod", "name": "debug", "uid": "u", "controller": true}]}}),
        );

        let refs = pods_of_service(&pods, &GroupIndex::default(), &service);

        assert_eq!(refs, [ObjectRef::new("debug").within("shop")]);
    }
}
