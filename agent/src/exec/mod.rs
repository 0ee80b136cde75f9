//! Exec checks: commands run every period in their own process group, with a timeout, served per URL path.

pub mod process;
pub mod reaper;
pub mod runner;
pub mod spec;
pub mod status;
pub mod tree;

pub use self::process::{OUTPUT_LIMIT, run_once};
pub use self::runner::ExecHandle;
pub use self::spec::{
    DEFAULT_PATH, ExecAnswer, ExecArgs, ExecCheck, ExecChecks, ExecConfigError, ExecSpec,
    ExecSpecError, Invocation, RESERVED_PATHS,
};
pub use self::status::{ExecState, ExecStatus, RunEnd, RunOutcome, evaluate};
