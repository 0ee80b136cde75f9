//! Pod status: a pure evaluation of one pod and a watch that keeps its latest answer in memory.

pub mod evaluate;
pub mod watch;

pub use evaluate::{Health, Target, evaluate, missing_pod};
pub use watch::{PodState, PodStatusSource};
