//! The agent's least privilege: its pod's ServiceAccount may read the injected pods that run as it in its namespace
//! (one Role per ServiceAccount, `<account>-healthbridge-agent`), and no other pod.

use std::time::Duration;

use anyhow::ensure;
use healthbridge_e2e::poll::{poll_until, when};
use healthbridge_e2e::{Scenario, demo_pod};
use k8s_openapi::api::authorization::v1::SubjectAccessReview;
use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::json;

/// Whether the ServiceAccount may `verb` pods (one pod when `name` is given) in its namespace.
async fn may(s: &Scenario, account: &str, verb: &str, name: Option<&str>) -> anyhow::Result<bool> {
    let reviews: Api<SubjectAccessReview> = Api::all(s.cluster.client.clone());
    let namespace = s.namespace.as_str();
    let review: SubjectAccessReview = serde_json::from_value(json!({
        "spec": {
            "user": format!("system:serviceaccount:{namespace}:{account}"),
            "groups": ["system:serviceaccounts", format!("system:serviceaccounts:{namespace}"), "system:authenticated"],
            "resourceAttributes": { "namespace": namespace, "verb": verb, "resource": "pods", "name": name },
        },
    }))?;
    let answer = reviews.create(&PostParams::default(), &review).await?;
    Ok(answer.status.is_some_and(|status| status.allowed))
}

#[tokio::test]
async fn the_pods_service_account_may_read_its_own_pod_and_is_denied_another() -> anyhow::Result<()>
{
    Scenario::run("rbac", |s| async move {
        let accounts: Api<ServiceAccount> = s.api();
        let account: ServiceAccount = serde_json::from_value(json!({ "metadata": { "name": "echo" } }))?;
        accounts.create(&PostParams::default(), &account).await?;
        s.create_pod(&demo_pod("other")).await?;
        s.create_pod(&demo_pod("own").opted_in().with_service_account("echo")).await?;

        // The controller grants the Role once the pod exists; wait for it rather than for a fixed time.
        poll_until("the controller to let the agent get its own pod", Duration::from_secs(60), || async {
            Ok(when(may(&s, "echo", "get", Some("own")).await?, |allowed| *allowed))
        })
        .await?;
        for verb in ["list", "watch"] {
            ensure!(
                may(&s, "echo", verb, Some("own")).await?,
                "the agent may not {verb} its own pod (it watches it with a metadata.name field selector)"
            );
        }
        ensure!(!may(&s, "echo", "get", Some("other")).await?, "the agent may get another pod of its namespace");
        ensure!(!may(&s, "echo", "list", None).await?, "the agent may list every pod of its namespace");
        ensure!(!may(&s, "echo", "update", Some("own")).await?, "the agent may update its own pod");

        // One Role and one RoleBinding per ServiceAccount, not per pod.
        let roles: Api<Role> = s.api();
        let role = roles.get("echo-healthbridge-agent").await?;
        let names = role.rules.as_deref().and_then(|rules| rules.first()?.resource_names.clone()).unwrap_or_default();
        ensure!(names == ["own"], "echo-healthbridge-agent grants {names:?}, expected [\"own\"]");
        let bindings: Api<RoleBinding> = s.api();
        let binding = bindings.get("echo-healthbridge-agent").await?;
        let subjects: Vec<String> = binding.subjects.iter().flatten().map(|subject| subject.name.clone()).collect();
        ensure!(subjects == ["echo"], "echo-healthbridge-agent binds {subjects:?}, expected [\"echo\"]");
        ensure!(
            roles.get_opt("own-healthbridge").await?.is_none(),
            "a per-pod Role own-healthbridge exists: the controller should make one per ServiceAccount"
        );

        // A second pod of the same ServiceAccount joins its Role (they may read each other: documented); a pod of
        // another ServiceAccount gets its own and stays out of reach.
        s.create_pod(&demo_pod("sibling").opted_in().with_service_account("echo")).await?;
        s.create_pod(&demo_pod("stranger").opted_in()).await?;
        poll_until("the controller to add the second pod of echo to its Role", Duration::from_secs(60), || async {
            Ok(when(may(&s, "echo", "get", Some("sibling")).await?, |allowed| *allowed))
        })
        .await?;
        poll_until("the controller to let default read its own pod", Duration::from_secs(60), || async {
            Ok(when(may(&s, "default", "get", Some("stranger")).await?, |allowed| *allowed))
        })
        .await?;
        ensure!(!may(&s, "echo", "get", Some("stranger")).await?, "echo may get a pod of another ServiceAccount");
        ensure!(!may(&s, "default", "get", Some("own")).await?, "default may get a pod of echo");

        // After the account's last pod, its Role and RoleBinding go.
        let pods: Api<Pod> = s.api();
        for name in ["own", "sibling"] {
            pods.delete(name, &DeleteParams { grace_period_seconds: Some(0), ..DeleteParams::default() }).await?;
        }
        poll_until("the controller to delete echo's Role after its last pod", Duration::from_secs(90), || async {
            let left = (roles.get_opt("echo-healthbridge-agent").await?, bindings.get_opt("echo-healthbridge-agent").await?);
            Ok(when(left, |left| left.0.is_none() && left.1.is_none()))
        })
        .await?;
        Ok(())
    })
    .await
}
