//! `kubectl logs` shows the broker's log: its start line with the node name, the listener, and
//! the connection of an MQTT client made by the test.

use std::time::Duration;

use anyhow::Result;
use starling_e2e::mqtt::{self, MQTT_PORT};
use starling_e2e::wait;

use crate::harness::{Env, in_namespace};
use crate::manifests::{apply, broker_pod_spec, pod, wait_pod_ready};

pub fn kubectl_logs_shows_the_broker_log(env: &Env) -> Result<()> {
    in_namespace(env, "e2e-logs", |ns| {
        let k = &env.kubectl;
        let spec = broker_pod_spec(&env.image, &["--node-name=e2e-logs-node", "--log-level=info"], true);
        apply(k, vec![pod(ns, "logger", spec)])?;
        let ip = wait_pod_ready(k, ns, "logger", Duration::from_secs(90))?;
        mqtt::round_trip(&ip, MQTT_PORT, Duration::from_secs(10))?;
        let want = ["starting", "e2e-logs-node", "MQTT over TCP listening", "connected"];
        wait::until_true(Duration::from_secs(30), format!("kubectl logs logger to show {want:?}"), || {
            let log = k.run(&["-n", ns, "logs", "logger"])?;
            let missing: Vec<_> = want.iter().filter(|w| !log.contains(*w)).collect();
            Ok(if missing.is_empty() { Ok(()) } else { Err(format!("missing {missing:?} in:\n{log}")) })
        })?;
        eprintln!("[e2e]   kubectl logs shows the start, the listener and the client's connection");
        Ok(())
    })
}
