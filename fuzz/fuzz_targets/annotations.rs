//! Fuzzes annotation validation on both sides of the contract: any healthbridge.io annotations get settings or
//! errors naming each bad key, never a panic; a pod the webhook admits gets an agent env the agent accepts; and a
//! value the agent refuses is denied at admission naming its annotation.
#![no_main]

use std::collections::BTreeMap;

use arbitrary::Arbitrary;
use healthbridge_contract::keys;
use healthbridge_contract::service::NodePortRange;
use healthbridge_tests::{AGENT_BOUND, admit, agent_start_up, opted_in_pod};
use healthbridge_webhook::annotations::{KNOWN, parse};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
struct Annotation {
    /// Index into the known keys; past them, `suffix` makes an unknown healthbridge.io key.
    key: u8,
    suffix: String,
    value: String,
}

fuzz_target!(|input: Vec<Annotation>| {
    let annotations: BTreeMap<String, String> = input
        .into_iter()
        .map(|a| {
            let key = KNOWN.get(usize::from(a.key)).map_or_else(
                || format!("{}{}", keys::PREFIX, a.suffix),
                |known| (*known).to_owned(),
            );
            (key, a.value)
        })
        .collect();
    if let Err(invalid) = parse(Some(&annotations), NodePortRange::default()) {
        for bad in &invalid {
            assert!(
                annotations.contains_key(&bad.key),
                "{bad:?} is not one of {annotations:?}"
            );
            assert!(bad.to_string().contains(&bad.key), "{bad}");
        }
    }

    // The webhook's whole admission, then the agent's start-up on what it was given.
    if annotations.contains_key(keys::INJECT) {
        return; // `opted_in_pod` sets inject itself; an explicit "false" would make it a skip
    }
    let pod = opted_in_pod(&annotations);
    let admitted = admit(&pod);
    if let Ok(env) = &admitted {
        if let Err(refusal) = agent_start_up(env) {
            panic!("admitted with {annotations:?}, but the agent refuses {env:?}: {refusal}");
        }
    }
    let denial = admitted.err().map(|d| d.to_string());
    for (key, variable) in AGENT_BOUND {
        let Some(value) = annotations.get(key) else {
            continue;
        };
        if agent_start_up(&[(variable.to_owned(), value.clone())]).is_ok() {
            continue;
        }
        let named = denial
            .as_deref()
            .is_some_and(|m| m.contains(&format!("annotation {key}:")));
        assert!(
            named,
            "the agent refuses {variable}={value:?}, but admission said {denial:?}"
        );
    }
});
