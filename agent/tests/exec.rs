//! Exec checks with real processes: first result, pass/fail, timeouts that kill the whole group, no zombies or leaked fds.
#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use healthbridge_agent::exec::{
    ExecArgs, ExecChecks, ExecHandle, ExecState, Invocation, OUTPUT_LIMIT, RunEnd, run_once,
};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Tests here count file descriptors and processes of this test binary, so they run one at a time.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn exec_checks(specs: &[&str]) -> ExecArgs {
    ExecArgs {
        exec: specs.iter().map(|s| (*s).to_owned()).collect(),
        ..ExecArgs::default()
    }
}

fn shell(script: &str) -> Invocation {
    Invocation::Shell {
        shell: "/bin/sh".into(),
        script: script.to_owned(),
    }
}

fn started(args: &ExecArgs) -> (ExecHandle, CancellationToken) {
    let shutdown = CancellationToken::new();
    (
        ExecChecks::new(args)
            .unwrap()
            .spawn(Arc::default(), shutdown.clone()),
        shutdown,
    )
}

/// Polls with backoff until `condition` holds; panics with `what` after about ten seconds.
async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let mut delay = Duration::from_millis(5);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(200));
    }
}

/// Processes (zombies included) whose process group is `pgid`.
fn members_of_group(pgid: u32) -> Vec<String> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|entry| std::fs::read_to_string(entry.ok()?.path().join("stat")).ok())
        .filter(|stat| {
            // Fields after the parenthesised command: state ppid pgrp …
            let rest = stat.rsplit_once(") ").map_or("", |(_, rest)| rest);
            rest.split_whitespace()
                .nth(2)
                .and_then(|pgrp| pgrp.parse::<u32>().ok())
                == Some(pgid)
        })
        .collect()
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

#[tokio::test]
async fn before_the_first_run_every_check_answers_no_result_yet() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let (checks, shutdown) = started(&exec_checks(&["/healthz=true"]));
    let status = checks.result("/healthz").unwrap();
    assert_eq!(status.state, ExecState::NoResultYet);
    assert!(!status.healthy());
    assert!(
        checks
            .all()
            .iter()
            .all(|c| !c.healthy && c.reason == "no result yet")
    );
    shutdown.cancel();
}

#[tokio::test]
async fn passing_and_failing_commands_are_reported_per_path() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let (checks, shutdown) = started(&exec_checks(&["/ok=true", "/broken=echo boom; exit 3"]));
    checks.first_results().await;

    assert_eq!(checks.paths().collect::<Vec<_>>(), ["/ok", "/broken"]);
    assert!(checks.result("/ok").unwrap().healthy());
    let broken = checks.result("/broken").unwrap();
    assert!(!broken.healthy());
    assert_eq!(broken.reason(), "exit status 3");
    assert!(
        broken.text_body().contains(r"output: boom\n"),
        "{}",
        broken.text_body()
    );
    assert!(checks.result("/unknown").is_none());

    let all: Vec<_> = checks
        .all()
        .into_iter()
        .map(|c| (c.name, c.healthy))
        .collect();
    assert_eq!(
        all,
        [
            ("exec:/ok".to_owned(), true),
            ("exec:/broken".to_owned(), false)
        ]
    );
    shutdown.cancel();
}

#[tokio::test]
async fn a_check_recovers_when_its_command_starts_passing() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("ready");
    let spec = format!("/healthz=test -e {}", marker.display());
    let args = ExecArgs {
        exec_period: Duration::from_millis(50),
        ..exec_checks(&[&spec])
    };
    let (checks, shutdown) = started(&args);
    checks.first_results().await;
    assert!(!checks.result("/healthz").unwrap().healthy());

    std::fs::write(&marker, "").unwrap();
    let after = Instant::now();
    let recovered = checks.result_after("/healthz", after).await.unwrap();
    assert!(recovered.healthy(), "{}", recovered.text_body());
    shutdown.cancel();
}

#[tokio::test]
async fn a_result_goes_stale_when_no_new_run_arrives() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let args = ExecArgs {
        exec_period: Duration::from_secs(1),
        exec_max_age: Duration::from_secs(2),
        ..exec_checks(&["true"])
    };
    let (checks, shutdown) = started(&args);
    checks.first_results().await;
    shutdown.cancel();
    assert!(checks.result("/healthz").unwrap().healthy());

    tokio::time::pause();
    tokio::time::advance(Duration::from_secs(3)).await;

    let stale = checks.result("/healthz").unwrap();
    assert!(matches!(stale.state, ExecState::Stale { .. }));
    assert!(stale.reason().contains("max age 2s"), "{}", stale.reason());
}

#[tokio::test]
async fn a_run_over_its_timeout_kills_the_whole_group_and_leaves_no_zombie() {
    let _serial = ONE_AT_A_TIME.lock().await;
    // Orphans of the killed group come back to this process, as they would to an agent running as PID 1.
    rustix::process::set_child_subreaper(rustix::process::Pid::from_raw(1)).unwrap();

    let outcome = run_once(
        &shell("echo $$; sleep 300 & sleep 300"),
        Duration::from_secs(2),
    )
    .await;

    assert_eq!(outcome.end, RunEnd::TimedOut { after_ms: 2000 });
    let pgid: u32 = outcome.output.trim().parse().unwrap();
    eventually(
        "no process of the killed group is left, not even a zombie",
        || members_of_group(pgid).is_empty(),
    )
    .await;
}

#[tokio::test]
async fn output_is_bounded_and_marked_truncated() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let outcome = run_once(
        &shell("head -c 100000 /dev/zero | tr '\\0' x; echo done >&2"),
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(outcome.end, RunEnd::Exited { code: 0 });
    assert_eq!(outcome.output.len(), OUTPUT_LIMIT);
    assert!(outcome.truncated);
}

#[tokio::test]
async fn stdout_and_stderr_are_captured_together() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let outcome = run_once(
        &shell("echo out; echo err >&2; exit 1"),
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(outcome.end, RunEnd::Exited { code: 1 });
    assert_eq!(outcome.output, "out\nerr\n");
    assert!(!outcome.truncated);
}

#[tokio::test]
async fn a_command_killed_by_a_signal_is_reported() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let outcome = run_once(&shell("kill -9 $$"), Duration::from_secs(10)).await;
    assert_eq!(outcome.end, RunEnd::Signalled { signal: 9 });
    assert!(!outcome.passed());
}

#[tokio::test]
async fn a_program_that_vanished_after_start_up_is_a_failed_run() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let gone = Invocation::Direct {
        program: "/nonexistent/check".into(),
        args: vec![],
    };
    let outcome = run_once(&gone, Duration::from_secs(1)).await;
    assert!(
        matches!(outcome.end, RunEnd::CouldNotStart { .. }),
        "{:?}",
        outcome.end
    );
}

#[tokio::test]
async fn many_runs_leak_no_file_descriptors() {
    let _serial = ONE_AT_A_TIME.lock().await;
    // The first child process sets up the runtime's SIGCHLD handling, which keeps a few descriptors for good.
    run_once(&shell("true"), Duration::from_secs(10)).await;
    let before = open_fds();
    for _ in 0..30 {
        run_once(&shell("echo hi"), Duration::from_secs(10)).await;
        run_once(&shell("sleep 5"), Duration::from_millis(20)).await;
    }
    // The reaper hands a run's pipes back a moment after its outcome: wait for them, bounded.
    eventually("every descriptor of the runs is closed again", || {
        open_fds() <= before
    })
    .await;
}

#[tokio::test]
async fn shutdown_kills_a_running_command() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("pid");
    let spec = format!("/slow=echo $$ > {}; exec sleep 300", pid_file.display());
    let args = ExecArgs {
        exec_period: Duration::from_secs(60),
        exec_max_age: Duration::from_secs(60),
        ..exec_checks(&[&spec])
    };
    let (_checks, shutdown) = started(&args);
    eventually("the command wrote its pid", || {
        std::fs::read_to_string(&pid_file).is_ok_and(|s| s.ends_with('\n'))
    })
    .await;
    let pid: u32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();

    shutdown.cancel();

    eventually("the command is no longer running", || !is_running(pid)).await;
}

fn is_running(pid: u32) -> bool {
    let stat = Path::new("/proc").join(pid.to_string()).join("stat");
    std::fs::read_to_string(stat).is_ok_and(|s| {
        s.rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z'))
    })
}

/// True while a process `pid` exists at all, zombie included.
fn exists(pid: u32) -> bool {
    Path::new("/proc").join(pid.to_string()).exists()
}

fn pids(output: &str) -> Vec<u32> {
    output
        .split_whitespace()
        .filter_map(|word| word.parse().ok())
        .collect()
}

#[tokio::test]
async fn a_passing_run_ends_with_its_command_and_its_background_children_are_killed_and_reaped() {
    let _serial = ONE_AT_A_TIME.lock().await;
    // Before, `sleep 100` held the output pipe and the run timed out; a child writing elsewhere outlived the
    // run and, re-parented to the agent, stayed a zombie once it exited.
    let outcome = run_once(
        &shell("sleep 100 & echo $!; sleep 0.2 >/dev/null 2>&1 & echo $!; true"),
        Duration::from_secs(10),
    )
    .await;

    assert_eq!(outcome.end, RunEnd::Exited { code: 0 });
    assert!(outcome.took < Duration::from_secs(5), "{:?}", outcome.took);
    let children = pids(&outcome.output);
    assert_eq!(children.len(), 2, "{}", outcome.output);
    eventually(
        "both background children are gone, not even zombies",
        || !children.iter().any(|pid| exists(*pid)),
    )
    .await;
}

#[tokio::test]
async fn a_setsid_escapee_is_killed_with_its_run_on_timeout() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("escapee");
    // The escapee leaves the run's process group and session; killing the group alone missed it.
    let script = format!(
        "setsid sh -c 'echo $$ > {}; exec sleep 300' & sleep 300",
        pid_file.display()
    );

    let outcome = run_once(&shell(&script), Duration::from_millis(500)).await;

    assert_eq!(outcome.end, RunEnd::TimedOut { after_ms: 500 });
    let escapee: u32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    eventually("the escapee is gone, not even a zombie", || {
        !exists(escapee)
    })
    .await;
}

#[tokio::test]
async fn shutdown_kills_a_setsid_escapee_of_a_running_command() {
    let _serial = ONE_AT_A_TIME.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("escapee");
    let spec = format!(
        "/slow=setsid sh -c 'echo $$ > {}; exec sleep 300' & sleep 300",
        pid_file.display()
    );
    let args = ExecArgs {
        exec_period: Duration::from_secs(60),
        exec_max_age: Duration::from_secs(60),
        ..exec_checks(&[&spec])
    };
    let (_checks, shutdown) = started(&args);
    eventually("the escapee wrote its pid", || {
        std::fs::read_to_string(&pid_file).is_ok_and(|s| s.ends_with('\n'))
    })
    .await;
    let escapee: u32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();

    shutdown.cancel();

    eventually("the escapee is gone", || !exists(escapee)).await;
}
