//! A controller context over the fake API server, with caches the test fills as the reflectors would.
#![allow(dead_code, clippy::unwrap_used)]

use std::sync::{Arc, Mutex};

use healthbridge_webhook::controller::NodePortRange;
use healthbridge_webhook::controller::cached::CachedPod;
use healthbridge_webhook::controller::context::{Context, Stores};
use healthbridge_webhook::controller::rbac::{mark_all, sync_pending};
use healthbridge_webhook::controller::reconcile::{ReconcileError, error_policy, reconcile};
use http::{Method, StatusCode};
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::runtime::controller::Action;
use kube::runtime::events::Reporter;
use kube::runtime::reflector::{self, ObjectRef, Store, store::Writer};
use kube::runtime::watcher;
use serde_json::Value;

use super::{Recorded, accepting, agent_images, fake_api};

/// The caches as the controller's reflectors would fill them, writable by the test.
pub struct World {
    pub ctx: Arc<Context>,
    pub log: Arc<Mutex<Vec<Recorded>>>,
    pub pods: Writer<CachedPod>,
    pub roles: Writer<Role>,
    pub role_bindings: Writer<RoleBinding>,
    pub services: Writer<Service>,
    roles_reader: Store<Role>,
    bindings_reader: Store<RoleBinding>,
}

pub fn world(respond: impl Fn(&Recorded) -> (StatusCode, Value) + Send + Sync + 'static) -> World {
    let (client, log) = fake_api(respond);
    let (pods_reader, pods) = reflector::store();
    let (roles_reader, roles) = reflector::store();
    let (bindings_reader, role_bindings) = reflector::store();
    let (services_reader, services) = reflector::store();
    let stores = Stores {
        pods: pods_reader,
        roles: roles_reader.clone(),
        role_bindings: bindings_reader.clone(),
        services: services_reader,
    };
    let reporter = Reporter {
        controller: "healthbridge".to_owned(),
        instance: Some("test".to_owned()),
    };
    let ctx = Arc::new(Context::new(
        client,
        stores,
        reporter,
        NodePortRange::default(),
        agent_images(),
    ));
    World {
        ctx,
        log,
        pods,
        roles,
        role_bindings,
        services,
        roles_reader,
        bindings_reader,
    }
}

impl World {
    pub fn with_pods(mut self, pods: &[Pod]) -> Self {
        for pod in pods {
            self.pods
                .apply_watcher_event(&watcher::Event::Apply(CachedPod::from(pod)));
        }
        self
    }

    /// [`Self::with_pods`] with one pod.
    pub fn with_pod(self, pod: &Pod) -> Self {
        self.with_pods(std::slice::from_ref(pod))
    }

    /// The pod is gone: its watch delivered the deletion.
    pub fn without_pod(&mut self, pod: &Pod) {
        self.pods
            .apply_watcher_event(&watcher::Event::Delete(CachedPod::from(pod)));
    }

    /// Feeds what the fake API server answered to applies and deletes back into the caches, as the watches would
    /// (with a UID and resourceVersion, as the API server sets them).
    pub fn observe_applied(&mut self) {
        for request in self.requests() {
            let name = request
                .path
                .rsplit('/')
                .next()
                .unwrap_or_default()
                .to_owned();
            let namespace = request
                .path
                .split("/namespaces/")
                .nth(1)
                .and_then(|rest| rest.split('/').next())
                .unwrap_or_default()
                .to_owned();
            match request.method {
                Method::PATCH => {
                    let (_, mut answer) = accepting(&request);
                    answer["metadata"]["uid"] = format!("uid-{name}").into();
                    answer["metadata"]["resourceVersion"] = "1".into();
                    if request.path.contains("/roles/") {
                        self.roles.apply_watcher_event(&watcher::Event::Apply(
                            serde_json::from_value(answer).unwrap(),
                        ));
                    } else if request.path.contains("/rolebindings/") {
                        self.role_bindings
                            .apply_watcher_event(&watcher::Event::Apply(
                                serde_json::from_value(answer).unwrap(),
                            ));
                    } else if request.path.contains("/services/") {
                        self.services.apply_watcher_event(&watcher::Event::Apply(
                            serde_json::from_value(answer).unwrap(),
                        ));
                    }
                }
                Method::DELETE => {
                    let reference = |name: &str| (name.to_owned(), namespace.clone());
                    let (name, namespace) = reference(&name);
                    if request.path.contains("/roles/") {
                        if let Some(role) = self
                            .roles_reader
                            .get(&ObjectRef::new(&name).within(&namespace))
                        {
                            self.roles
                                .apply_watcher_event(&watcher::Event::Delete((*role).clone()));
                        }
                    } else if request.path.contains("/rolebindings/")
                        && let Some(binding) = self
                            .bindings_reader
                            .get(&ObjectRef::new(&name).within(&namespace))
                    {
                        self.role_bindings
                            .apply_watcher_event(&watcher::Event::Delete((*binding).clone()));
                    }
                }
                _ => {}
            }
        }
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.log.lock().unwrap().clone()
    }

    pub fn forget_requests(&self) {
        self.log.lock().unwrap().clear();
    }

    pub fn writes(&self) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|request| request.is_write() && !request.is_event())
            .collect()
    }

    /// The paths written with `method`, in order.
    pub fn written(&self, method: Method) -> Vec<String> {
        self.writes()
            .into_iter()
            .filter(|request| request.method == method)
            .map(|request| request.path)
            .collect()
    }

    pub fn events(&self) -> Vec<Value> {
        self.requests()
            .into_iter()
            .filter(Recorded::is_event)
            .map(|request| request.body)
            .collect()
    }

    /// `(reason, kind of the object it is about)` of every event sent, in order.
    pub fn event_reasons_and_kinds(&self) -> Vec<(Value, Value)> {
        self.events()
            .iter()
            .map(|event| (event["reason"].clone(), event["regarding"]["kind"].clone()))
            .collect()
    }

    pub async fn reconcile(&self, pod: &Pod) -> Result<Action, ReconcileError> {
        reconcile(Arc::new(CachedPod::from(pod)), self.ctx.clone()).await
    }

    /// When the controller retries `pod` after its reconcile failed with `error`.
    pub fn retry_of(&self, pod: &Pod, error: &ReconcileError) -> Action {
        error_policy(Arc::new(CachedPod::from(pod)), error, self.ctx.clone())
    }

    /// The pods of one ServiceAccount changed, as the pod watch reports it: the account is asked for, then synced.
    pub async fn sync_account(&self, namespace: &str, name: &str) -> usize {
        self.ctx
            .accounts
            .mark((namespace.to_owned(), name.to_owned()));
        self.sync().await
    }

    /// What the background loop does once its window is over: syncs the ServiceAccounts asked for.
    pub async fn sync(&self) -> usize {
        sync_pending(&self.ctx).await
    }

    /// What the periodic housekeeping does: every ServiceAccount with agent Roles comes up for a sync.
    pub async fn resync_accounts(&self) -> usize {
        mark_all(&self.ctx);
        sync_pending(&self.ctx).await
    }

    /// Reconciles the pods, syncs their accounts and reconciles again (each is now `Ready`), with the caches
    /// following every write; then forgets the requests.
    pub async fn settle(&mut self, pods: &[Pod]) {
        for pod in pods {
            self.reconcile(pod).await.unwrap();
        }
        self.sync().await;
        self.observe_applied();
        self.forget_requests();
        for pod in pods {
            self.reconcile(pod).await.unwrap();
        }
        self.observe_applied();
        self.forget_requests();
    }
}
