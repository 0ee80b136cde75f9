//! The agent's least privilege: its pod's ServiceAccount may read that pod and no other.

use std::time::Duration;

use anyhow::ensure;
use healthbridge_e2e::poll::{poll_until, when};
use healthbridge_e2e::{Scenario, demo_pod};
use k8s_openapi::api::authorization::v1::SubjectAccessReview;
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Api, PostParams};
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
        Ok(())
    })
    .await
}
