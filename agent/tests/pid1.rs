//! The agent binary as PID 1 of its own PID namespace (`unshare -pf --mount-proc`), its place in a container:
//! exec checks that leave background children, orphans and `setsid` escapees leave no zombie and no survivor.
//! Needs root for the namespace; elsewhere the test says so and passes nothing off as checked.
#![allow(clippy::unwrap_used)]

mod process_support;

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Stdio};

use process_support::{AGENT, KilledOnDrop, eventually, free_port, http_get};

/// One process as the host's `/proc` shows it.
#[derive(Debug, Clone)]
struct Proc {
    pid: i32,
    state: char,
    ppid: i32,
    session: i32,
    cmdline: String,
}

fn processes() -> HashMap<i32, Proc> {
    let mut all = HashMap::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some((_, rest)) = stat.rsplit_once(") ") else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))
            .map(|raw| {
                String::from_utf8_lossy(&raw)
                    .replace('\0', " ")
                    .trim()
                    .to_owned()
            })
            .unwrap_or_default();
        all.insert(
            pid,
            Proc {
                pid,
                state: fields[0].chars().next().unwrap(),
                ppid: fields[1].parse().unwrap(),
                session: fields[3].parse().unwrap(),
                cmdline,
            },
        );
    }
    all
}

/// Every process below `root` (host pids): in a PID namespace whose init is `root`, all of its processes.
fn below(root: i32) -> Vec<Proc> {
    let all = processes();
    all.values()
        .filter(|proc| {
            let mut at = proc.ppid;
            for _ in 0..64 {
                if at == root {
                    return true;
                }
                match all.get(&at) {
                    Some(parent) => at = parent.ppid,
                    None => return false,
                }
            }
            false
        })
        .cloned()
        .collect()
}

fn lines(path: &Path) -> usize {
    std::fs::read_to_string(path).map_or(0, |text| text.lines().count())
}

#[test]
fn as_pid_1_the_agent_leaves_no_zombie_and_no_escapee_of_its_exec_checks() {
    if !rustix::process::geteuid().is_root() {
        eprintln!(
            "SKIPPED: a PID namespace (unshare -pf) needs root; run this test as root to check the agent as PID 1"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let log = |name: &str| dir.path().join(name);
    let (bg, orphan, escape) = (log("bg.log"), log("orphan.log"), log("escape.log"));
    let port = free_port();
    let admin_port = free_port();
    let checks = [
        // A background child holding the output pipe: the run is over when `true` exits, the child is killed.
        format!("/bg=echo run >> {}; sleep 100 & true", bg.display()),
        // An orphan that exits on its own after the run: re-parented to PID 1, which must reap it.
        format!(
            "/orphan=echo run >> {}; sleep 0.2 >/dev/null 2>&1 & true",
            orphan.display()
        ),
        // A grandchild that leaves the run's process group and session, then the run times out.
        format!(
            "/escape=echo run >> {}; setsid sleep 300 & sleep 300",
            escape.display()
        ),
    ];
    let agent = Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "--kill-child", "--"])
        .arg(AGENT)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HTTP_HEALTHCHECK_SIDECAR_PORT", port.to_string())
        .env(
            "HTTP_HEALTHCHECK_SIDECAR_ADMIN_PORT",
            admin_port.to_string(),
        )
        .env("HTTP_HEALTHCHECK_SIDECAR_STATE_OVERRIDE", "true")
        .env("HTTP_HEALTHCHECK_SIDECAR_EXEC", checks.join("\n"))
        .env("HTTP_HEALTHCHECK_SIDECAR_EXEC_PERIOD", "1s")
        .env("HTTP_HEALTHCHECK_SIDECAR_EXEC_TIMEOUT", "500ms")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("unshare is needed (util-linux)");
    let unshare = i32::try_from(agent.id()).unwrap();
    // Kills the namespace (its init, the agent) when the test ends, pass or fail.
    let _namespace = KilledOnDrop(agent);
    let init = eventually("the agent as PID 1 of the namespace", || {
        processes()
            .into_values()
            .find(|proc| proc.ppid == unshare && proc.cmdline.contains("healthbridge-agent"))
    });
    let status = std::fs::read_to_string(format!("/proc/{}/status", init.pid)).unwrap();
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("NSpid:") && l.trim_end().ends_with("\t1")),
        "the agent is not PID 1 in its namespace: {status}"
    );

    // Three runs of each check: an agent that leaks would by now hold two escapees and two zombies.
    eventually("three runs of every check", || {
        (lines(&bg) >= 3 && lines(&orphan) >= 3 && lines(&escape) >= 3).then_some(())
    });
    let ok = eventually("/bg answered", || http_get(port, "/bg"));
    assert!(
        ok.starts_with("HTTP/1.0 200") || ok.starts_with("HTTP/1.1 200"),
        "a run whose command exited 0 passes even with a background child: {ok}"
    );

    // Only the current run's processes may exist besides the agent; nothing may be a zombie.
    let clean = eventually("no zombie and no survivor of an earlier run", || {
        let inside = below(init.pid);
        let zombies = inside.iter().filter(|p| p.state == 'Z').count();
        let escapees = inside
            .iter()
            .filter(|p| p.session == p.pid && p.cmdline == "sleep 300")
            .count();
        let background = inside.iter().filter(|p| p.cmdline == "sleep 100").count();
        (zombies == 0 && escapees <= 1 && background == 0).then_some(inside)
    });
    // The reason is on the admin port: the published port names the failing check only.
    let escape = http_get(admin_port, "/escape").unwrap();
    assert!(escape.contains("timed out after 500ms"), "{escape}");
    eprintln!("processes of the namespace besides the agent: {clean:?}");
}
