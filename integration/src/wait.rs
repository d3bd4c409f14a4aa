//! Polling: the one way the harness waits for a condition with a deadline.

use std::time::{Duration, Instant};

/// Pause between two checks: short enough that tests do not idle, long enough not to
/// burn one of the machine's two cores.
pub(crate) const POLL_INTERVAL: Duration = Duration::from_millis(25);

/// Calls `cond` until it returns true or `timeout` has passed (it is always called at
/// least once, and once more at the deadline). The error names `what` was awaited.
pub fn wait_until(
    what: &str,
    timeout: Duration,
    mut cond: impl FnMut() -> bool,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return Ok(());
        }
        let now = Instant::now();
        if now >= deadline {
            anyhow::bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(POLL_INTERVAL.min(deadline - now));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_once_condition_holds_and_fails_with_the_name_otherwise() {
        let mut calls = 0;
        wait_until("third call", Duration::from_secs(5), || {
            calls += 1;
            calls == 3
        })
        .unwrap();
        assert_eq!(calls, 3);

        let err = wait_until("never", Duration::from_millis(60), || false).unwrap_err();
        assert!(err.to_string().contains("never"), "{err}");
    }
}
