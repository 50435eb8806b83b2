//! Bounded polling: every wait in the harness and the tests goes through [`until`], which gives up
//! after its timeout and reports the last thing it saw.

use std::fmt::Display;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

/// How often [`until`] polls.
pub const POLL: Duration = Duration::from_millis(500);

/// Calls `check` every [`POLL`] until it returns `Ok(Some(value))` or `timeout` passes.
/// `Ok(None)` means "not yet"; an `Err` is remembered as the last observation and retried (API
/// calls fail transiently while things settle). The timeout error names `what` and that
/// observation.
pub fn until<T>(timeout: Duration, what: impl Display, mut check: impl FnMut() -> Result<Option<T>>) -> Result<T> {
    let start = Instant::now();
    loop {
        let last = match check() {
            Ok(Some(value)) => return Ok(value),
            Ok(None) => String::from("condition not met"),
            Err(e) => format!("{e:#}"),
        };
        if start.elapsed() >= timeout {
            bail!("timed out after {timeout:?} waiting for {what}; last observation: {last}");
        }
        thread::sleep(POLL);
    }
}

/// [`until`] for a yes/no condition: `Ok(Err(why))` is a "no", and `why` appears in the timeout error.
pub fn until_true(
    timeout: Duration,
    what: impl Display,
    mut check: impl FnMut() -> Result<std::result::Result<(), String>>,
) -> Result<()> {
    until(timeout, what, || match check()? {
        Ok(()) => Ok(Some(())),
        Err(why) => bail!("{why}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn returns_the_first_value() {
        let mut n = 0;
        let v = until(Duration::from_secs(5), "n reaches 2", || {
            n += 1;
            Ok((n >= 2).then_some(n))
        })
        .unwrap();
        assert_eq!(v, 2);
    }

    #[test]
    fn times_out_with_the_last_error() {
        let err = until::<()>(Duration::from_millis(10), "never", || bail!("still broken")).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("never") && msg.contains("still broken"), "{msg}");
    }

    #[test]
    fn until_true_reports_why_not() {
        let err = until_true(Duration::from_millis(10), "x", || Ok(Err("x is 3".into()))).unwrap_err();
        assert!(err.to_string().contains("x is 3"), "{err}");
    }
}
