//! One cancellation token for the whole process, cancelled by SIGTERM or ctrl-c and handed to every task.

use tokio_util::sync::CancellationToken;

/// Returns a token that is cancelled on the first SIGTERM or ctrl-c; every long-running task takes a clone.
pub fn on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown requested, draining in-flight requests");
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
            // Without a SIGTERM handler the kubelet's stop would still kill us; ctrl-c remains useful locally.
            tracing::warn!(%error, "cannot listen for SIGTERM; only ctrl-c will shut down gracefully");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() {
    let _ = tokio::signal::ctrl_c().await;
}
