//! The env the webhook emits, read back by the agent's own parser: each setting arrives as the pod asked.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use healthbridge_agent::config::StateOverride;
use healthbridge_contract::{env, keys};
use healthbridge_tests::{AGENT_BOUND, admit, agent_start_up, flag_of, opted_in_pod};

fn annotations(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
        .collect()
}

#[test]
fn every_setting_arrives_at_the_agent_as_the_pod_asked() {
    let pod = opted_in_pod(&annotations(&[
        (keys::PORT, "14000"),
        (keys::TARGET_CONTAINER, "app"),
        (keys::STATE_OVERRIDE, "false"),
        (
            keys::ENDPOINTS,
            "http://localhost:8080/ready, https://db:5432/health",
        ),
        (keys::TIMEOUT, "1.5s"),
        (
            keys::EXEC,
            "/db='pg_isready -h localhost'\n/cache=redis-cli ping",
        ),
        (keys::UNHEALTHY_STATUS, "500"),
    ]));
    let env = admit(&pod).unwrap_or_else(|denial| panic!("denied: {denial}"));
    let args = agent_start_up(&env).unwrap_or_else(|refusal| panic!("{env:?}: {refusal}"));

    assert_eq!(args.port, 14000);
    assert_eq!(args.target_container.as_deref(), Some("app"));
    assert_eq!(args.state_override, StateOverride::AlwaysUnhealthy);
    assert_eq!(
        args.endpoints.urls().collect::<Vec<_>>(),
        ["http://localhost:8080/ready", "https://db:5432/health"]
    );
    assert_eq!(args.endpoints.timeout, Duration::from_millis(1500));
    let specs = args.exec.validate_specs().unwrap_or_else(|e| panic!("{e}"));
    let specs: Vec<(&str, &str)> = specs
        .iter()
        .map(|spec| (spec.path.as_str(), spec.command.as_str()))
        .collect();
    assert_eq!(
        specs,
        [
            ("/db", "pg_isready -h localhost"),
            ("/cache", "redis-cli ping")
        ]
    );
    assert_eq!(args.unhealthy_status.as_u16(), 500);
}

#[test]
fn a_pod_without_settings_gets_the_agent_defaults_and_the_webhooks_port() {
    let env =
        admit(&opted_in_pod(&BTreeMap::new())).unwrap_or_else(|denial| panic!("denied: {denial}"));
    assert_eq!(env, [(env::PORT.to_owned(), "13000".to_owned())]);
    let args = agent_start_up(&env).unwrap_or_else(|refusal| panic!("{refusal}"));
    assert_eq!(args.port, 13000);
    assert_eq!(args.unhealthy_status.as_u16(), 503);
    assert!(args.exec.is_empty() && args.endpoints.urls().next().is_none());
}

#[test]
fn every_variable_the_webhook_can_set_is_one_the_agent_declares() {
    for (annotation, variable) in AGENT_BOUND {
        assert!(
            flag_of(variable).is_some(),
            "{annotation} sets {variable}, which the agent does not read"
        );
    }
}

#[test]
fn the_two_reported_crash_loops_are_denied_with_the_agents_reason() {
    for (key, value, reason) in [
        (
            keys::EXEC,
            "/health=true",
            "/health is the agent's own route",
        ),
        (keys::TIMEOUT, "1min 30s", "unknown unit"),
    ] {
        let denial = admit(&opted_in_pod(&annotations(&[(key, value)])))
            .map(|env| panic!("{key}={value:?} admitted with {env:?}"))
            .unwrap_err()
            .to_string();
        let variable = AGENT_BOUND
            .iter()
            .find(|(annotation, _)| *annotation == key)
            .map(|(_, variable)| (*variable).to_owned())
            .unwrap_or_default();
        let refusal = agent_start_up(&[(variable, value.to_owned())]).unwrap_err();
        assert!(denial.contains(key) && denial.contains(reason), "{denial}");
        assert!(refusal.contains(reason), "{refusal}");
    }
}

#[test]
fn socket_checks_arrive_as_the_pod_asked_and_a_shared_path_is_denied_naming_the_annotation() {
    let pod = opted_in_pod(&annotations(&[
        (
            keys::TCP,
            "/db=tcp://127.0.0.1:5432\n/cache=tcp://127.0.0.1:6379?send=PING%0D%0A&expect=%2BPONG",
        ),
        (
            keys::UDP,
            r"/dns=udp://127.0.0.1:53?send=\x00\x01&timeout=500ms",
        ),
        (keys::GRPC, "/api=grpcs://localhost:8443/shop.Cart"),
    ]));
    let env = admit(&pod).unwrap_or_else(|denial| panic!("denied: {denial}"));
    let args = agent_start_up(&env).unwrap_or_else(|refusal| panic!("{env:?}: {refusal}"));
    let specs = args.sockets.validate_specs().unwrap();
    let paths: Vec<(&str, &str)> = specs
        .iter()
        .map(|spec| (spec.kind.as_str(), spec.path.as_str()))
        .collect();
    assert_eq!(
        paths,
        [
            ("tcp", "/db"),
            ("tcp", "/cache"),
            ("udp", "/dns"),
            ("grpc", "/api")
        ]
    );
    assert_eq!(specs[1].send.as_deref(), Some(&b"PING\r\n"[..]));
    assert_eq!(specs[2].timeout, Some(Duration::from_millis(500)));
    assert!(specs[3].tls && specs[3].service == "shop.Cart");

    let clash = opted_in_pod(&annotations(&[
        (keys::EXEC, "true"),
        (keys::GRPC, "/healthz=grpc://127.0.0.1:50051"),
    ]));
    let denial = admit(&clash).unwrap_err().to_string();
    assert!(
        denial.contains("annotation healthbridge.io/grpc: /healthz is taken by both the exec check and the grpc check"),
        "{denial}"
    );
    let refusal = agent_start_up(&[
        (env::EXEC.to_owned(), "true".to_owned()),
        (
            env::GRPC.to_owned(),
            "/healthz=grpc://127.0.0.1:50051".to_owned(),
        ),
    ])
    .unwrap_err();
    assert!(refusal.contains("/healthz is taken by both"), "{refusal}");
}
