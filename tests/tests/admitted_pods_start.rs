//! The contract as a property: every pod the webhook admits gets an agent env that the agent's own parser
//! accepts, and every value the agent would refuse is denied at admission naming its annotation.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use healthbridge_contract::keys;
use healthbridge_tests::{AGENT_BOUND, admit, agent_start_up, opted_in_pod};
use proptest::prelude::*;
use proptest::sample::select;

/// Durations as people write them: bare numbers, the agent's units, other tools' units and compounds.
fn duration() -> impl Strategy<Value = String> {
    let number = prop_oneof![
        (0u32..200).prop_map(|n| n.to_string()),
        (0u32..50, 0u32..10).prop_map(|(a, b)| format!("{a}.{b}")),
    ];
    let unit = select(vec![
        "", "s", "ms", "m", "min", "h", "us", "sec", "secs", "mins", "hours", "d", "ns", " s",
    ]);
    let part = (number, unit).prop_map(|(n, u)| format!("{n}{u}"));
    prop_oneof![
        3 => part.clone(),
        1 => (part.clone(), select(vec!["", " "]), part).prop_map(|(a, sep, b)| format!("{a}{sep}{b}")),
        1 => "[ -~]{0,8}",
    ]
}

/// `URL=COMMAND` lines: paths the agent serves or keeps for itself, commands plain, quoted or blank.
fn exec() -> impl Strategy<Value = String> {
    let path = prop_oneof![
        select(vec![
            "/healthz", "/health", "/all", "/self", "/metrics", "/db", "/ready", "/a?b", "/x#y",
            "",
        ])
        .prop_map(str::to_owned),
        "/[a-z]{1,6}",
    ];
    let command = select(vec![
        "true",
        "pg_isready",
        "ls /tmp",
        "redis-cli ping",
        "' '",
        "''",
        "\"ok\"",
        "",
        "  ",
        "test -f /tmp/x && true",
    ]);
    let line = (path, command).prop_map(|(path, command)| {
        if path.is_empty() {
            command.to_owned()
        } else {
            format!("{path}={command}")
        }
    });
    prop::collection::vec(line, 1..4).prop_map(|lines| lines.join("\n"))
}

/// `PATH=URL` lines for socket checks: every scheme in every annotation, addresses, parameters and escapes good
/// and bad, and paths that clash with each other and with exec checks.
fn socket_checks() -> impl Strategy<Value = String> {
    let path = select(vec![
        "/db", "/healthz", "/ready", "/health", "/metrics", "/a b", "/x?y", "", "db",
    ]);
    let scheme = select(vec![
        "tcp://", "udp://", "grpc://", "grpcs://", "http://", "",
    ]);
    let address = select(vec![
        "127.0.0.1:5432",
        "localhost:53",
        "[::1]:50051",
        "db.shop.svc:6379",
        "127.0.0.1",
        "127.0.0.1:0",
        ":80",
        "[x]:1",
        "u@h:1",
    ]);
    let rest = select(vec![
        "",
        "/shop.Cart",
        "?send=PING%0D%0A&expect=%2BPONG",
        r"?send=\x00\x01&expect=\x00",
        "?send=q",
        "?expect=x",
        "?timeout=500ms",
        "?timeout=0",
        "?timeout=1min 30s",
        "?send=%zz",
        "?sned=x",
        "?send=a&send=b",
    ]);
    let line = (path, scheme, address, rest).prop_map(|(path, scheme, address, rest)| {
        if path.is_empty() {
            format!("{scheme}{address}{rest}")
        } else {
            format!("{path}={scheme}{address}{rest}")
        }
    });
    prop::collection::vec(line, 1..3).prop_map(|lines| lines.join("\n"))
}

/// Endpoint lists: schemes, hosts and ports good and bad, separated as users separate them.
fn endpoints() -> impl Strategy<Value = String> {
    let scheme = select(vec!["http://", "https://", "ftp://", "", "http:/"]);
    let host = select(vec![
        "localhost",
        "127.0.0.1",
        "db.shop.svc",
        "[::1]",
        "",
        "[",
        "a b",
    ]);
    let port = select(vec!["", ":8080", ":0", ":99999", ":x"]);
    let path = select(vec!["", "/", "/ready", "/a?b=c"]);
    let url = (scheme, host, port, path).prop_map(|(s, h, p, q)| format!("{s}{h}{p}{q}"));
    let separator = select(vec![",", ", ", " ", "\n"]);
    (prop::collection::vec(url, 1..4), separator).prop_map(|(urls, sep)| urls.join(sep))
}

/// A value for one agent-bound annotation.
fn value_for(key: &'static str) -> BoxedStrategy<String> {
    match key {
        keys::PORT => prop_oneof![
            (0u32..70000).prop_map(|p| p.to_string()),
            select(vec!["http", " 8080 ", "-1", "8080.0"]).prop_map(str::to_owned),
        ]
        .boxed(),
        keys::TARGET_CONTAINER => select(vec!["app", " app ", "sidecar", ""])
            .prop_map(str::to_owned)
            .boxed(),
        keys::STATE_OVERRIDE => select(vec!["true", "false", "TRUE", "False", "yes", "1", "", " "])
            .prop_map(str::to_owned)
            .boxed(),
        keys::ENDPOINTS => endpoints().boxed(),
        keys::TIMEOUT => duration().boxed(),
        keys::EXEC => exec().boxed(),
        keys::TCP | keys::UDP | keys::GRPC => socket_checks().boxed(),
        keys::UNHEALTHY_STATUS => prop_oneof![
            (100u32..1000).prop_map(|s| s.to_string()),
            select(vec!["", "5O3", " 503 "]).prop_map(str::to_owned),
        ]
        .boxed(),
        other => panic!("no generator for {other}"),
    }
}

/// Any subset of the agent-bound annotations, each with a generated value.
fn agent_annotations() -> impl Strategy<Value = BTreeMap<String, String>> {
    let each: Vec<_> = AGENT_BOUND
        .iter()
        .map(|(key, _)| prop::option::weighted(0.6, value_for(key)).prop_map(move |v| (*key, v)))
        .collect();
    each.prop_map(|pairs| {
        pairs
            .into_iter()
            .filter_map(|(key, value)| Some((key.to_owned(), value?)))
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 512,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn every_admitted_pod_gets_an_env_its_agent_accepts(annotations in agent_annotations()) {
        let pod = opted_in_pod(&annotations);
        match admit(&pod) {
            Ok(env) => {
                if let Err(refusal) = agent_start_up(&env) {
                    prop_assert!(false, "admitted with {annotations:?}, but the agent refuses {env:?}: {refusal}");
                }
            }
            Err(denial) => {
                // A denial must name an annotation that is really wrong: checked by the next property.
                let message = denial.to_string();
                prop_assert!(message.contains(keys::PREFIX), "{message}");
            }
        }
    }

    #[test]
    fn every_value_the_agent_refuses_is_denied_naming_its_annotation(annotations in agent_annotations()) {
        let denial = admit(&opted_in_pod(&annotations)).err().map(|d| d.to_string());
        for (key, variable) in AGENT_BOUND {
            let Some(value) = annotations.get(key) else { continue };
            let Err(refusal) = agent_start_up(&[(variable.to_owned(), value.clone())]) else { continue };
            let named = denial.as_deref().is_some_and(|message| message.contains(&format!("annotation {key}:")));
            prop_assert!(
                named,
                "the agent refuses {variable}={value:?} ({refusal}), but admission said {denial:?}"
            );
        }
    }
}
