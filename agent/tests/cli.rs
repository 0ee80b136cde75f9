//! The binary's start-up: bad configuration is refused with a message naming the variable and exit code 2.
#![allow(clippy::unwrap_used)]

mod process_support;

use std::process::Command;

use process_support::{agent, eventually, free_port, http_get};

#[test]
fn a_state_override_other_than_true_or_false_is_a_start_up_error() {
    let output = agent()
        .env("HTTP_HEALTHCHECK_SIDECAR_STATE_OVERRIDE", "yes")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("HTTP_HEALTHCHECK_SIDECAR_STATE_OVERRIDE"),
        "{stderr}"
    );
    assert!(stderr.contains("`true` or `false`"), "{stderr}");
}

#[test]
fn an_unhealthy_status_that_is_not_an_error_code_is_a_start_up_error() {
    let output = agent()
        .env("HTTP_HEALTHCHECK_SIDECAR_UNHEALTHY_STATUS", "200")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("HTTP_HEALTHCHECK_SIDECAR_UNHEALTHY_STATUS"),
        "{stderr}"
    );
}

#[test]
fn an_unknown_flag_is_a_start_up_error() {
    let output = agent().arg("--prot").arg("3000").output().unwrap();
    assert_eq!(output.status.code(), Some(2));
}

#[test]
fn sigterm_stops_the_server_and_exits_zero() {
    let port = free_port();
    let mut child = agent()
        .env("HTTP_HEALTHCHECK_SIDECAR_STATE_OVERRIDE", "true")
        .env("HTTP_HEALTHCHECK_SIDECAR_PORT", port.to_string())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let answer = eventually("the agent answering /health", || http_get(port, "/health"));
    assert!(answer.starts_with("HTTP/1.0 200"), "{answer}");
    assert!(answer.ends_with("OK"), "{answer}");

    let killed = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    assert!(killed.success());
    let status = eventually("the agent exiting", || child.try_wait().unwrap());
    assert_eq!(status.code(), Some(0));
}

#[test]
fn a_bad_port_in_the_old_positional_form_is_a_start_up_error_naming_it() {
    let output = agent()
        .args(["80x", "3", "http://127.0.0.1:8080/health"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("PORT `80x` is not a port number"),
        "{stderr}"
    );
}

#[test]
fn probe_is_a_subcommand_that_reports_a_refused_connection_with_exit_3() {
    let port = free_port();
    let output = agent()
        .args(["probe", "--url", &format!("http://127.0.0.1:{port}/ready")])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
}

#[test]
fn help_lists_serve_and_probe() {
    let output = agent().arg("--help").output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("serve") && stdout.contains("probe"),
        "{stdout}"
    );
}
