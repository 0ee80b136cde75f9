//! Both sides of the webhook–agent contract as a test sees them: a pod admitted (or denied) by the webhook's own
//! `patch_for`, and an agent environment read by the agent's own clap `Cli` and start-up checks.

use std::collections::BTreeMap;

use clap::{CommandFactory, Parser};
use healthbridge_agent::cli::{Cli, Invocation};
use healthbridge_agent::config::ServeArgs;
use healthbridge_agent::endpoints::EndpointChecker;
use healthbridge_contract::{env, keys};
use healthbridge_webhook::config::InjectionConfig;
use healthbridge_webhook::patch::{AdmissionContext, Decision, DenyReason, OptIn, patch_for};
use json_patch::PatchOperation;
use k8s_openapi::api::core::v1::Pod;
use serde_json::{Value, json};

/// The container of every test pod; a `target-container` naming it is valid.
pub const APP_CONTAINER: &str = "app";

/// A pod of one container named [`APP_CONTAINER`], opted in, carrying `annotations` besides.
pub fn opted_in_pod(annotations: &BTreeMap<String, String>) -> Pod {
    let mut all = annotations.clone();
    all.insert(keys::INJECT.to_owned(), "true".to_owned());
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": { "name": "web-0", "namespace": "shop", "annotations": all },
        "spec": { "containers": [{ "name": APP_CONTAINER, "image": "registry.example/app:1" }] }
    }))
    .unwrap_or_else(|e| panic!("test pod does not decode: {e}"))
}

/// What the webhook answered: the agent's env (name, literal value; downward-API values left out) or the denial.
pub fn admit(pod: &Pod) -> Result<Vec<(String, String)>, DenyReason> {
    let cfg = InjectionConfig::new(
        "registry.example/healthbridge-agent:test",
        Some("healthbridge-system"),
    );
    let ctx = AdmissionContext {
        namespace: "shop",
        opt_in: OptIn::Annotation,
        cluster_supports_native_sidecar: true,
        cluster_supports_sleep_action: true,
    };
    match patch_for(pod, &cfg, &ctx)? {
        Decision::Inject { patch, .. } => Ok(agent_env(&patch.0)),
        Decision::Skip { reason, .. } => panic!("an opted-in pod was skipped: {reason}"),
    }
}

/// The literal env of the agent container the patch adds.
fn agent_env(ops: &[PatchOperation]) -> Vec<(String, String)> {
    let agent = ops
        .iter()
        .filter_map(|op| match op {
            PatchOperation::Add(add) => Some(&add.value),
            _ => None,
        })
        .flat_map(|value| match value {
            Value::Array(items) => items.iter().collect::<Vec<_>>(),
            other => vec![other],
        })
        .find(|value| value["name"] == keys::AGENT_CONTAINER)
        .unwrap_or_else(|| panic!("the patch adds no agent container: {ops:?}"));
    agent["env"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|var| {
            Some((
                var["name"].as_str()?.to_owned(),
                var["value"].as_str()?.to_owned(),
            ))
        })
        .collect()
}

/// The agent's flag for `variable`, found in the agent's own clap definitions: every variable is also a flag
/// parsed by the same value parser, so `--flag=value` is what clap does with the variable (without touching
/// this process's environment).
pub fn flag_of(variable: &str) -> Option<String> {
    let command = Cli::command();
    command
        .get_arguments()
        .find(|arg| arg.get_env().is_some_and(|name| name == variable))
        .and_then(|arg| arg.get_long())
        .map(|long| format!("--{long}"))
}

/// The agent's `serve` settings read from `vars` by its own `Cli`, then its start-up checks of endpoints and
/// every exec and socket spec with no path taken twice (all but the look-up of exec programs, which only the agent's own container can answer).
/// `Err` is the message the agent would stop with.
pub fn agent_start_up(vars: &[(String, String)]) -> Result<ServeArgs, String> {
    let mut argv = vec!["healthbridge-agent".to_owned()];
    for (name, value) in vars {
        let flag = flag_of(name).ok_or_else(|| format!("the agent has no variable {name}"))?;
        argv.push(format!("{flag}={value}"));
    }
    let args = match Cli::try_parse_from(&argv)
        .map_err(|e| e.to_string())?
        .into_invocation()
    {
        Invocation::Serve { args, .. } => args,
        Invocation::Probe(_) | Invocation::GrpcHealthProbe(_) => {
            return Err(format!("parsed as probe: {argv:?}"));
        }
    };
    EndpointChecker::new(&args.endpoints).map_err(|e| e.to_string())?;
    args.validate_check_specs().map_err(|e| e.to_string())?;
    Ok(args)
}

/// The agent variable each agent-bound annotation sets, with the annotation's value as written.
pub const AGENT_BOUND: [(&str, &str); 10] = [
    (keys::PORT, env::PORT),
    (keys::TARGET_CONTAINER, env::TARGET_CONTAINER),
    (keys::STATE_OVERRIDE, env::STATE_OVERRIDE),
    (keys::ENDPOINTS, env::ENDPOINTS),
    (keys::TIMEOUT, env::TIMEOUT),
    (keys::EXEC, env::EXEC),
    (keys::TCP, env::TCP),
    (keys::UDP, env::UDP),
    (keys::GRPC, env::GRPC),
    (keys::UNHEALTHY_STATUS, env::UNHEALTHY_STATUS),
];
