//! One run of a command in its own process group: bounded output, a timeout that kills the whole group, no zombies.

use std::os::fd::OwnedFd;
use std::process::Stdio;
use std::time::{Duration, SystemTime};

use rustix::process::{Pid, Signal, WaitOptions, kill_process_group, waitpgid};
use tokio::io::AsyncReadExt;
use tokio::time::Instant;

use super::spec::Invocation;
use super::status::{RunEnd, RunOutcome};

/// Output kept per run; the rest is read and thrown away so the command never blocks on a full pipe.
pub const OUTPUT_LIMIT: usize = 4 * 1024;

/// Kills the process group if the run is abandoned (shutdown) before the leader was reaped.
struct GroupGuard {
    pgid: Option<Pid>,
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pgid) = self.pgid.take() {
            let _ = kill_process_group(pgid, Signal::KILL);
        }
    }
}

/// Runs the command once in a new process group, capturing stdout and stderr together up to `OUTPUT_LIMIT`.
pub async fn run_once(invocation: &Invocation, timeout: Duration) -> RunOutcome {
    let started = Instant::now();
    let could_not_start = |error: std::io::Error| {
        outcome(
            RunEnd::CouldNotStart {
                error: error.to_string(),
            },
            started,
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
            let mut command = tokio::process::Command::new(program);
            command.args(args);
            command
        }
        Invocation::Shell { shell, script } => {
            let mut command = tokio::process::Command::new(shell);
            command.arg("-c").arg(script);
            command
        }
    };
    command
        .stdin(Stdio::null())
        .stdout(writer)
        .stderr(writer_for_stderr)
        .process_group(0)
        .kill_on_drop(true);
    let spawned = command.spawn();
    // The command holds our copies of the pipe's write end; drop it so the read side sees EOF when the group is done.
    drop(command);
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) => return could_not_start(e),
    };
    let pgid = child.id().and_then(|id| Pid::from_raw(id as i32));
    let mut guard = GroupGuard { pgid };
    let mut receiver = match tokio::net::unix::pipe::Receiver::from_owned_fd(OwnedFd::from(reader))
    {
        Ok(receiver) => receiver,
        Err(e) => return could_not_start(e),
    };

    let mut output = Vec::with_capacity(256);
    let mut truncated = false;
    let finished = tokio::time::timeout(timeout, async {
        let (_, status) = tokio::join!(
            read_bounded(&mut receiver, &mut output, &mut truncated),
            child.wait()
        );
        status
    })
    .await;
    let end = match finished {
        Ok(Ok(status)) => {
            guard.pgid = None;
            use std::os::unix::process::ExitStatusExt;
            match (status.code(), status.signal()) {
                (Some(code), _) => RunEnd::Exited { code },
                (None, Some(signal)) => RunEnd::Signalled { signal },
                (None, None) => RunEnd::CouldNotStart {
                    error: "unknown exit status".to_owned(),
                },
            }
        }
        Ok(Err(e)) => RunEnd::CouldNotStart {
            error: e.to_string(),
        },
        Err(_) => {
            if let Some(pgid) = guard.pgid.take() {
                let _ = kill_process_group(pgid, Signal::KILL);
                let _ = child.wait().await;
                reap_group(pgid).await;
            }
            RunEnd::TimedOut {
                after_ms: timeout.as_millis(),
            }
        }
    };
    drop(receiver);
    outcome(end, started, output, truncated)
}

fn outcome(end: RunEnd, started: Instant, output: Vec<u8>, truncated: bool) -> RunOutcome {
    let finished = Instant::now();
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

/// When the agent is PID 1 (or a subreaper), killed grandchildren are re-parented to it: reap them so none stays a zombie.
async fn reap_group(pgid: Pid) {
    for _ in 0..50 {
        loop {
            match waitpgid(pgid, WaitOptions::NOHANG) {
                Ok(Some(_)) => {}
                Ok(None) => break,
                // No child of ours is left in the group: the usual case when we are not PID 1.
                Err(_) => return,
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
