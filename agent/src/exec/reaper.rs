//! The agent's only waiter for children: reaps every exited child, its own runs and the orphans re-parented to it
//! (as PID 1, or as the child subreaper it makes itself), and hands each run's exit status to that run.
//!
//! One waiter owns all waits because `waitpid(-1)` cannot tell a run's leader from an orphan before reaping it:
//! a second waiter would steal the status a run waits for. Spawning and reaping take the same lock, so a child
//! is registered before any reap can see it, and the standard library's own wait for a child whose `exec`
//! failed (inside `spawn`) is never raced.

use std::collections::HashMap;
use std::io;
use std::process::{Child, Command};
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

use rustix::io::Errno;
use rustix::process::{
    Pid, WaitId, WaitIdOptions, WaitOptions, WaitStatus, getpid, set_child_subreaper, wait, waitid,
};
use tokio::sync::oneshot;

/// How long the reaper sleeps with no child at all before looking again: processes started by `kubectl exec`
/// are not its children, but their orphans become its children without a spawn to wake it.
const IDLE_LOOK: Duration = Duration::from_secs(1);

/// The one reaper of this process.
pub struct Reaper {
    state: Mutex<State>,
    spawned: Condvar,
}

#[derive(Default)]
struct State {
    /// Runs waiting for their leader's exit status, by pid.
    waiting: HashMap<i32, oneshot::Sender<WaitStatus>>,
    /// Counts spawns, so a spawn between "no children" and going to sleep is not missed.
    spawns: u64,
    /// Orphans reaped (no run waited for them), for tests and diagnostics.
    orphans_reaped: u64,
}

/// The process's reaper, started on first use: it makes the process a child subreaper (so orphans of its runs
/// come back to it even when it is not PID 1) and starts the reaping thread.
pub fn reaper() -> &'static Reaper {
    static REAPER: OnceLock<&'static Reaper> = OnceLock::new();
    REAPER.get_or_init(|| {
        if let Err(error) = set_child_subreaper(Some(getpid())) {
            tracing::warn!(%error, "cannot become a child subreaper; orphans of exec checks are reaped only when the agent is PID 1");
        }
        let reaper: &'static Reaper = Box::leak(Box::new(Reaper {
            state: Mutex::default(),
            spawned: Condvar::new(),
        }));
        let started = std::thread::Builder::new()
            .name("healthbridge-reaper".to_owned())
            .spawn(move || reaper.reap_forever());
        if let Err(error) = started {
            tracing::error!(%error, "cannot start the reaper thread; exec checks will time out");
        }
        reaper
    })
}

impl Reaper {
    /// Spawns `command` and returns the child with a receiver of its exit status. Never wait for the child any
    /// other way: the reaper owns the wait.
    pub fn spawn(
        &self,
        command: &mut Command,
    ) -> io::Result<(Child, oneshot::Receiver<WaitStatus>)> {
        let mut state = self.lock();
        let child = command.spawn()?;
        let (sender, receiver) = oneshot::channel();
        state
            .waiting
            .insert(Pid::from_child(&child).as_raw_pid(), sender);
        state.spawns = state.spawns.wrapping_add(1);
        drop(state);
        self.spawned.notify_one();
        Ok((child, receiver))
    }

    /// How many children were reaped that no run waited for.
    pub fn orphans_reaped(&self) -> u64 {
        self.lock().orphans_reaped
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn reap_forever(&self) {
        loop {
            let spawns = self.lock().spawns;
            // Block until some child has exited, without reaping it: reaping happens under the lock below.
            match waitid(WaitId::All, WaitIdOptions::EXITED | WaitIdOptions::NOWAIT) {
                Ok(_) => self.reap_exited(),
                Err(Errno::INTR) => {}
                Err(Errno::CHILD) => {
                    let state = self.lock();
                    if state.spawns == spawns {
                        let _ = self.spawned.wait_timeout(state, IDLE_LOOK);
                    }
                }
                Err(error) => {
                    tracing::warn!(%error, "waiting for children failed");
                    std::thread::sleep(IDLE_LOOK);
                }
            }
        }
    }

    /// Reaps every child that has exited and gives each run its status.
    fn reap_exited(&self) {
        let mut state = self.lock();
        // `wait`, not `waitpid(None)`: the latter is pid 0, this process group only, and orphans are not in it.
        while let Ok(Some((pid, status))) = wait(WaitOptions::NOHANG) {
            match state.waiting.remove(&pid.as_raw_pid()) {
                // The run may be gone (shutdown); its status then has nobody to tell.
                Some(run) => {
                    let _ = run.send(status);
                }
                None => state.orphans_reaped = state.orphans_reaped.wrapping_add(1),
            }
        }
    }
}
