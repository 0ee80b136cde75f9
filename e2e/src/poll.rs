//! Waiting for cluster state by polling with backoff, never by sleeping a fixed time.

use std::fmt::Debug;
use std::future::Future;
use std::time::Duration;

use anyhow::bail;
use tokio::time::Instant;

/// Calls `check` until it returns `Ok(Some(value))`, backing off from 50 ms to 1 s between
/// calls; fails after `timeout` with `what` and the last observation (`Ok(None)` or an error).
pub async fn poll_until<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = Instant::now() + timeout;
    let mut delay = Duration::from_millis(50);
    loop {
        let last = match check().await {
            Ok(Some(value)) => return Ok(value),
            Ok(None) => "condition not met yet".to_owned(),
            Err(error) => format!("{error:#}"),
        };
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}; last observation: {last}");
        }
        tokio::time::sleep(delay.min(deadline.saturating_duration_since(Instant::now()))).await;
        delay = (delay * 3 / 2).min(Duration::from_secs(1));
    }
}

/// `Some(value)` when `value` satisfies `predicate`, for polls that wait for a specific answer.
pub fn when<T: Debug>(value: T, predicate: impl FnOnce(&T) -> bool) -> Option<T> {
    predicate(&value).then_some(value)
}
