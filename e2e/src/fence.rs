//! A process-wide switch that stops the harness's own traffic to the cluster before teardown
//! removes the cluster's routes (after that, a cluster address would route off the machine).

use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{Result, bail};

static CLOSED: AtomicBool = AtomicBool::new(false);

/// From now on [`check`] fails: every MQTT connection, TCP probe and DNS query is refused.
pub fn close() {
    CLOSED.store(true, Ordering::SeqCst);
}

/// Fails once [`close`] was called; called before every connection to a cluster address.
pub fn check(to: &str) -> Result<()> {
    if CLOSED.load(Ordering::SeqCst) {
        bail!("not contacting {to}: the cluster is being torn down");
    }
    Ok(())
}
