//! Pod status: a pure evaluation of one pod, GETs and a watch that keep its latest answer in memory, and how fresh it must be.

pub mod evaluate;
pub mod schedule;
pub mod state;
pub mod tracker;
pub mod watch;

pub use evaluate::{Health, Target, evaluate, missing_pod};
pub use state::{Freshness, OnStale, PodAnswer, PodState, PodStatusSource};
