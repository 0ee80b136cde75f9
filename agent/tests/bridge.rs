//! The exec-to-HTTP bridge's command lines, unchanged, against the real binary over real HTTP: `ok` on success, the
//! last result and its time on failure, and our fixes kept (no 200 before the first result, timeout, process group).
#![allow(clippy::unwrap_used)]

mod process_support;

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};

use process_support::{AGENT, KilledOnDrop, eventually, free_port, get};

/// The agent started with `args`, its admin port moved out of the way of parallel tests; killed when dropped.
struct Agent(KilledOnDrop);

impl Agent {
    fn start(program: &Path, args: &[&str]) -> Self {
        let child = Command::new(program)
            .args(args)
            .env_remove("HTTP_HEALTHCHECK_SIDECAR_PORT")
            .env(
                "HTTP_HEALTHCHECK_SIDECAR_ADMIN_PORT",
                free_port().to_string(),
            )
            .env("HTTP_HEALTHCHECK_SIDECAR_STATE_OVERRIDE", "true")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        Self(KilledOnDrop(child))
    }

    fn has_exited(&mut self) -> bool {
        self.0.0.try_wait().unwrap().is_some()
    }

    fn stderr(mut self) -> String {
        let _ = self.0.0.kill();
        let mut text = String::new();
        if let Some(mut stderr) = self.0.0.stderr.take() {
            let _ = stderr.read_to_string(&mut text);
        }
        text
    }
}

#[test]
fn the_readme_invocation_answers_ok_once_the_file_exists_and_the_last_result_before() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("test");
    let port = free_port();
    let cmd = format!("ls {}", file.display());
    let port_text = port.to_string();
    let _agent = Agent::start(
        Path::new(AGENT),
        &[
            "-cmd", &cmd, "-port", &port_text, "-period", "200ms", "-latency", "5s", "-url",
            "/healthz",
        ],
    );
    let (status, body) = eventually("a failed run reported", || {
        get(port, "/healthz").filter(|(_, body)| body.contains("Result of last exec"))
    });
    assert_eq!(status, 503, "{body}");
    assert!(
        body.starts_with("Healthz probe on /healthz error: Result of last exec: "),
        "{body}"
    );
    assert!(body.contains("No such file or directory"), "{body}");
    assert!(body.contains(", at 20"), "the time of the result: {body}");
    assert!(body.trim_end().ends_with("error exit status 2"), "{body}");

    std::fs::write(&file, "").unwrap();
    let (status, body) = eventually("ok once the file exists", || {
        get(port, "/healthz").filter(|(status, _)| *status == 200)
    });
    assert_eq!((status, body.as_str()), (200, "ok"));
}

#[test]
fn double_dash_pairs_serve_each_command_at_its_url() {
    let port = free_port();
    let port_text = port.to_string();
    let _agent = Agent::start(
        Path::new(AGENT),
        &[
            "--cmd=true",
            "--url=/healthz1",
            "--cmd=false",
            "--url=/healthz2",
            "-quiet",
            "-period=100ms",
            &format!("-port={port_text}"),
        ],
    );
    let (status, body) = eventually("/healthz1 ok", || {
        get(port, "/healthz1").filter(|(status, _)| *status == 200)
    });
    assert_eq!(body, "ok");
    let (status2, body2) = eventually("/healthz2 failed", || {
        get(port, "/healthz2").filter(|(_, body)| body.contains("Result of last exec"))
    });
    assert_eq!(status2, 503, "{body2}");
    assert!(body2.contains("error exit status 1"), "{body2}");
    assert_eq!(status, 200);
}

#[test]
fn no_ok_before_the_first_result_and_a_hung_command_is_killed_with_its_group() {
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("pid");
    let port = free_port();
    let port_text = port.to_string();
    // The command leaves a child in its group and hangs: the old bridge answered 200 until it returned (never).
    let cmd = format!("sleep 60 & echo $! > {}; wait", pid_file.display());
    let _agent = Agent::start(
        Path::new(AGENT),
        &["-cmd", &cmd, "-port", &port_text, "-period", "1s"],
    );
    let (status, body) = eventually("listening", || get(port, "/healthz"));
    assert_eq!(status, 503, "{body}");
    assert_eq!(body, "Healthz probe on /healthz error: no result yet\n");

    let (status, body) = eventually("the timeout reported", || {
        get(port, "/healthz").filter(|(_, body)| body.contains("timed out"))
    });
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("error timed out after 1s, process group killed"),
        "{body}"
    );
    let pid: u32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    eventually("the command's child is gone", || {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok();
        // Gone, or a zombie not yet reaped by its new parent.
        stat.is_none_or(|stat| stat.contains(") Z ")).then_some(())
    });
}

#[test]
fn under_its_old_name_without_a_port_it_takes_8080() {
    let dir = tempfile::tempdir().unwrap();
    let old_name = dir.path().join("exechealthz");
    std::os::unix::fs::symlink(AGENT, &old_name).unwrap();
    let mut agent = Agent::start(&old_name, &["--cmd", "true", "-period", "100ms"]);
    // Port 8080 may be taken on a shared machine: then the agent must stop saying it cannot listen on 8080.
    let served = eventually("serving on 8080, or refusing naming that port", || {
        if agent.has_exited() {
            return Some(false);
        }
        get(8080, "/healthz")
            .filter(|answer| *answer == (200, "ok".to_owned()))
            .map(|_| true)
    });
    if !served {
        let stderr = agent.stderr();
        assert!(stderr.contains("cannot listen on port 8080"), "{stderr}");
    }
}
