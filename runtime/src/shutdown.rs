//! The one shutdown signal of a process: a cancellation token cancelled by SIGTERM or ctrl-c, cloned into every task.

use tokio_util::sync::CancellationToken;

/// Returns a token that is cancelled on the first SIGTERM or ctrl-c; must be called inside a Tokio runtime.
pub fn on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown requested: draining in-flight requests");
        cancel.cancel();
    });
    token
}

#[cfg(unix)]
async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut sigterm) => {
            tokio::select! {
                _ = sigterm.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(error) => {
            // Without a SIGTERM handler the kubelet's stop still kills the process; ctrl-c stays useful locally.
            tracing::warn!(%error, "cannot listen for SIGTERM; only ctrl-c shuts down gracefully");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() {
    let _ = tokio::signal::ctrl_c().await;
}
