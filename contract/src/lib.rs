//! The contract between the healthbridge webhook and its agent, written once: the agent's variable names, the
//! syntax of every value the webhook hands over, and the `healthbridge.io/*` keys. Pure: no IO, no client.
//!
//! Each rule's error says what is wrong and what is accepted, without naming where the value came from: the agent
//! prefixes it with its variable and flag, the webhook with the annotation, so both say the same thing.

// Tests may unwrap: a panic there is a failed test with its message.
#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod drain;
pub mod duration;
pub mod endpoint;
pub mod env;
pub mod exec;
pub mod keys;
pub mod quantity;
pub mod service;
pub mod socket;
pub mod value;
