//! Waiting on a condition with a deadline (never a fixed sleep in place of a check).

use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

/// How often a condition is checked again.
const POLL: Duration = Duration::from_millis(250);

/// Calls `probe` until it returns `Ok(Ok(value))` or `timeout` passes. `Ok(Err(state))`
/// means "not yet" and says what was seen, so a timeout reports the last state (or error).
pub async fn until<T, F, Fut>(what: &str, timeout: Duration, mut probe: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<std::result::Result<T, String>>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        let last = match probe().await {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(state)) => state,
            Err(e) => format!("error: {e:#}"),
        };
        if Instant::now() >= deadline {
            bail!("timed out after {timeout:?} waiting for {what}; last seen: {last}");
        }
        tokio::time::sleep(POLL).await;
    }
}
