//! One run of a command in its own process group: bounded output, and when it ends (exit, timeout, shutdown)
//! everything it started is killed, `setsid` escapees included; the reaper collects every exit, so no zombies.

use std::os::fd::OwnedFd;
use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::time::{Duration, SystemTime};

use rustix::process::Pid;
use tokio::io::AsyncReadExt;
use tokio::time::Instant;

use super::reaper::reaper;
use super::spec::Invocation;
use super::status::{RunEnd, RunOutcome};
use super::tree::{RUN_ENV, RunTree, new_run_id};

/// Output kept per run; the rest is read and thrown away so the command never blocks on a full pipe.
pub const OUTPUT_LIMIT: usize = 4 * 1024;
/// How long, after the kill, a run's last output and a killed leader's exit status are waited for.
const DRAIN_GRACE: Duration = Duration::from_secs(1);

/// Kills the whole run if it is abandoned (shutdown) before it ended.
struct RunGuard {
    tree: Option<RunTree>,
}

impl Drop for RunGuard {
    fn drop(&mut self) {
        if let Some(tree) = self.tree.take() {
            tree.kill_all();
        }
    }
}

/// Kills what is left of a run, off the async threads (a scan of `/proc`, a few short pauses).
async fn kill_run(tree: &RunTree) {
    let tree = tree.clone();
    if tokio::task::spawn_blocking(move || tree.kill_all())
        .await
        .is_err()
    {
        tracing::warn!("killing the processes of an exec run failed");
    }
}

/// Runs the command once in a new process group, capturing stdout and stderr together up to `OUTPUT_LIMIT`.
/// The run ends when its command exits: background processes it left behind are killed then, which also ends
/// the output (they held the pipe). On timeout the whole run is killed.
pub async fn run_once(invocation: &Invocation, timeout: Duration) -> RunOutcome {
    let started = Instant::now();
    let could_not_start = |error: std::io::Error| {
        outcome(
            RunEnd::CouldNotStart {
                error: error.to_string(),
            },
            started,
            Instant::now(),
            Vec::new(),
            false,
        )
    };
    let (reader, writer) = match std::io::pipe() {
        Ok(pipe) => pipe,
        Err(e) => return could_not_start(e),
    };
    let writer_for_stderr = match writer.try_clone() {
        Ok(w) => w,
        Err(e) => return could_not_start(e),
    };
    let mut command = match invocation {
        Invocation::Direct { program, args } => {
            let mut command = std::process::Command::new(program);
            command.args(args);
            command
        }
        Invocation::Shell { shell, script } => {
            let mut command = std::process::Command::new(shell);
            command.arg("-c").arg(script);
            command
        }
    };
    let run_id = new_run_id();
    command
        .env(RUN_ENV, &run_id)
        .stdin(Stdio::null())
        .stdout(writer)
        .stderr(writer_for_stderr)
        .process_group(0);
    let spawned = reaper().spawn(&mut command);
    // The command holds our copies of the pipe's write end; drop it so the read side sees EOF when the run is done.
    drop(command);
    let (child, exited) = match spawned {
        Ok(spawned) => spawned,
        Err(e) => return could_not_start(e),
    };
    let tree = RunTree::new(Pid::from_child(&child), &run_id);
    let mut guard = RunGuard {
        tree: Some(tree.clone()),
    };
    let mut receiver = match tokio::net::unix::pipe::Receiver::from_owned_fd(OwnedFd::from(reader))
    {
        Ok(receiver) => receiver,
        Err(e) => return could_not_start(e),
    };

    let mut output = Vec::with_capacity(256);
    let mut truncated = false;
    let mut exited = exited;
    // Boxed so it can be dropped, ending its borrows of the output, once the run is over.
    let mut reading = Box::pin(read_bounded(&mut receiver, &mut output, &mut truncated));
    let mut at_eof = false;
    // The run is its command: it ends when the command exits (or times out), not when the output closes.
    let leader = tokio::time::timeout(timeout, async {
        loop {
            tokio::select! {
                () = &mut reading, if !at_eof => at_eof = true,
                status = &mut exited => return status,
            }
        }
    })
    .await;
    let ended = Instant::now();
    // Whatever the run left running goes now (background children, escapees), which also closes the pipe.
    guard.tree = None;
    kill_run(&tree).await;
    let end = match leader {
        Ok(Ok(status)) => match (status.exit_status(), status.terminating_signal()) {
            (Some(code), _) => RunEnd::Exited { code },
            (None, Some(signal)) => RunEnd::Signalled { signal },
            (None, None) => RunEnd::CouldNotStart {
                error: "unknown exit status".to_owned(),
            },
        },
        Ok(Err(_)) => RunEnd::CouldNotStart {
            error: "the exit status was lost".to_owned(),
        },
        Err(_) => {
            // Killed: its status comes from the reaper in a moment; the run is over either way.
            let _ = tokio::time::timeout(DRAIN_GRACE, &mut exited).await;
            RunEnd::TimedOut {
                after_ms: timeout.as_millis(),
            }
        }
    };
    if !at_eof {
        // Every writer is dead: the rest of the output is in the pipe. Bounded in case one escaped the kill.
        let _ = tokio::time::timeout(DRAIN_GRACE, &mut reading).await;
    }
    drop(reading);
    drop(receiver);
    outcome(end, started, ended, output, truncated)
}

fn outcome(
    end: RunEnd,
    started: Instant,
    finished: Instant,
    output: Vec<u8>,
    truncated: bool,
) -> RunOutcome {
    RunOutcome {
        end,
        finished_at: SystemTime::now(),
        finished,
        took: finished.saturating_duration_since(started),
        output: String::from_utf8_lossy(&output).into_owned(),
        truncated,
    }
}

async fn read_bounded(
    receiver: &mut tokio::net::unix::pipe::Receiver,
    output: &mut Vec<u8>,
    truncated: &mut bool,
) {
    let mut chunk = [0_u8; 4096];
    loop {
        match receiver.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                let room = OUTPUT_LIMIT.saturating_sub(output.len());
                output.extend_from_slice(&chunk[..n.min(room)]);
                if n > room {
                    *truncated = true;
                }
            }
        }
    }
}
