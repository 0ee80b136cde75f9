//! The open-file limit: raised to its hard maximum at start so the connection bound, not EMFILE, is what refuses.

use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

/// Sets the soft `RLIMIT_NOFILE` to the hard one; answers the soft limit in force afterwards (`u64::MAX` = unlimited).
pub fn raise_nofile() -> u64 {
    let limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        let raised = Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        if let Err(error) = setrlimit(Resource::Nofile, raised) {
            tracing::debug!(%error, "cannot raise the open-file limit");
        }
    }
    getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX)
}
