//! Fuzzes the agent's configuration as the webhook or a manifest hands it over: any set of its variables with any
//! values is read by the agent's own clap `Cli` and start-up checks, and is either accepted or refused with a
//! message naming the variable or its flag, never a panic.
#![no_main]

use arbitrary::Arbitrary;
use clap::CommandFactory;
use healthbridge_agent::cli::Cli;
use healthbridge_tests::{agent_start_up, flag_of};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Arbitrary)]
struct Setting {
    /// Index into the agent's variables.
    variable: u8,
    value: String,
}

fuzz_target!(|settings: Vec<Setting>| {
    let variables: Vec<String> = Cli::command()
        .get_arguments()
        .filter_map(|arg| arg.get_env()?.to_str().map(str::to_owned))
        .collect();
    let vars: Vec<(String, String)> = settings
        .into_iter()
        .map(|s| {
            (
                variables[usize::from(s.variable) % variables.len()].clone(),
                s.value,
            )
        })
        .collect();
    match agent_start_up(&vars) {
        Ok(_) => {
            // Accepted once, accepted again: no hidden state.
            assert!(agent_start_up(&vars).is_ok(), "{vars:?} accepted once only");
        }
        Err(message) => {
            assert!(!message.trim().is_empty(), "an empty refusal for {vars:?}");
            // A single bad setting is named, by its variable or flag, so the user knows what to fix.
            if let [(variable, _)] = vars.as_slice() {
                let flag = flag_of(variable).unwrap_or_default();
                assert!(
                    message.contains(variable.as_str()) || message.contains(&flag),
                    "the refusal of {vars:?} names nothing: {message}"
                );
            }
        }
    }
});
