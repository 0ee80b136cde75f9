//! Everything one run started, found in `/proc`: its process group, every process carrying the run's marker in
//! its environment (a `setsid` escapee leaves the group but keeps the environment it inherited), and their
//! descendants; killed together.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rustix::process::{Pid, Signal, getpid, kill_process};

/// Variable put into each run's environment; its value names the run.
pub const RUN_ENV: &str = "HEALTHBRIDGE_EXEC_RUN";
/// Passes of scan-and-kill before giving up on a run that keeps forking.
const KILL_ROUNDS: usize = 20;

/// The processes of one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunTree {
    leader: Pid,
    /// `RUN_ENV=<id>`, exactly as it appears in `/proc/<pid>/environ`.
    marker: Vec<u8>,
}

/// A run identifier unique within this agent's life.
pub fn new_run_id() -> String {
    static RUNS: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}",
        getpid().as_raw_pid(),
        RUNS.fetch_add(1, Ordering::Relaxed)
    )
}

impl RunTree {
    /// The run whose leader is `leader` (a process group leader) and whose environment has `RUN_ENV=run_id`.
    pub fn new(leader: Pid, run_id: &str) -> Self {
        Self {
            leader,
            marker: format!("{RUN_ENV}={run_id}").into_bytes(),
        }
    }

    /// Every live (not yet exited) process of the run, this agent never included.
    pub fn members(&self) -> Vec<Pid> {
        let me = getpid().as_raw_pid();
        let processes: Vec<Stat> = std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
            .filter(|pid| *pid != me)
            .filter_map(read_stat)
            .filter(|stat| !matches!(stat.state, 'Z' | 'X'))
            .collect();
        let leader = self.leader.as_raw_pid();
        let mut members: HashSet<i32> = processes
            .iter()
            .filter(|stat| stat.pgrp == leader || self.marked(stat.pid))
            .map(|stat| stat.pid)
            .collect();
        // Descendants that dropped the marker (a cleared environment) still descend from a member.
        loop {
            let before = members.len();
            for stat in &processes {
                if members.contains(&stat.ppid) {
                    members.insert(stat.pid);
                }
            }
            if members.len() == before {
                break;
            }
        }
        members.into_iter().filter_map(Pid::from_raw).collect()
    }

    /// Sends SIGKILL to every process of the run until none is left alive (or a run forking faster than it is
    /// killed has had [`KILL_ROUNDS`] passes); returns how many signals were sent. The reaper collects the dead.
    pub fn kill_all(&self) -> usize {
        let mut sent = 0;
        for round in 0..KILL_ROUNDS {
            let members = self.members();
            if members.is_empty() {
                break;
            }
            for pid in members {
                if kill_process(pid, Signal::KILL).is_ok() {
                    sent += 1;
                }
            }
            // Killed processes turn into zombies within moments; look again once they had the chance.
            std::thread::sleep(Duration::from_millis(1 << round.min(4)));
        }
        sent
    }

    fn marked(&self, pid: i32) -> bool {
        std::fs::read(format!("/proc/{pid}/environ"))
            .is_ok_and(|environ| environ.split(|b| *b == 0).any(|var| var == self.marker))
    }
}

/// The fields of `/proc/<pid>/stat` a run's membership needs.
struct Stat {
    pid: i32,
    state: char,
    ppid: i32,
    pgrp: i32,
}

fn read_stat(pid: i32) -> Option<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain anything, spaces and parentheses included: the fields start after the last ')'.
    let (_, rest) = text.rsplit_once(") ")?;
    let mut fields = rest.split_ascii_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    let pgrp = fields.next()?.parse().ok()?;
    Some(Stat {
        pid,
        state,
        ppid,
        pgrp,
    })
}
