//! Deleting a Pod stops its container: the pod object goes, its IP stops answering MQTT's port,
//! and (on the local cluster) containerd no longer runs the container and its process is gone.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use serde_json::Value;
use starling_e2e::cluster::Layout;
use starling_e2e::mqtt::{self, MQTT_PORT};
use starling_e2e::wait;

use crate::harness::{Env, in_namespace};
use crate::manifests::{BROKER_ARGS, apply, broker_pod_spec, container_status, get_pod, pod, wait_pod_ready};

pub fn deleting_a_pod_stops_its_container(env: &Env) -> Result<()> {
    in_namespace(env, "e2e-delete", |ns| {
        let k = &env.kubectl;
        apply(k, vec![pod(ns, "victim", broker_pod_spec(&env.image, BROKER_ARGS, true))])?;
        let ip = wait_pod_ready(k, ns, "victim", Duration::from_secs(90))?;
        mqtt::round_trip(&ip, MQTT_PORT, Duration::from_secs(10)).context("MQTT before the delete")?;
        let pod = get_pod(k, ns, "victim")?;
        let id = container_status(&pod)?["containerID"]
            .as_str()
            .and_then(|s| s.split_once("://").map(|(_, id)| id.to_string()))
            .context("pod victim has no containerID")?;
        let pid = match &env.local {
            Some(layout) => {
                let info = crictl_inspect(layout, &id)?.context("crictl does not know the running container")?;
                ensure!(info["status"]["state"] == "CONTAINER_RUNNING", "container {id}: {}", info["status"]["state"]);
                let pid = info["info"]["pid"].as_u64().context("crictl inspect gives no pid")?;
                ensure!(Path::new(&format!("/proc/{pid}")).exists(), "container process {pid} not found");
                eprintln!("[e2e]   container {} runs as pid {pid}", &id[..12.min(id.len())]);
                Some(pid)
            }
            None => None,
        };

        k.cmd(["-n", ns, "delete", "pod", "victim", "--wait=true", "--timeout=60s"])
            .timeout(Duration::from_secs(75))
            .output()?;
        let gone = k.cmd(["-n", ns, "get", "pod", "victim"]).finish()?;
        ensure!(!gone.success() && gone.stderr.contains("NotFound"), "pod victim still exists: {}", gone.stdout);
        wait::until(Duration::from_secs(30), format!("{ip}:{MQTT_PORT} to stop answering"), || {
            Ok((!mqtt::tcp_answers(&ip, MQTT_PORT, Duration::from_secs(1))).then_some(()))
        })?;
        eprintln!("[e2e]   pod deleted; {ip}:{MQTT_PORT} no longer answers");

        if let (Some(layout), Some(pid)) = (&env.local, pid) {
            wait::until_true(Duration::from_secs(30), format!("container {id} to stop"), || {
                Ok(match crictl_inspect(layout, &id)? {
                    Some(info) if info["status"]["state"] == "CONTAINER_RUNNING" => Err("still running".into()),
                    _ => Ok(()),
                })
            })?;
            wait::until_true(Duration::from_secs(30), format!("process {pid} to exit"), || {
                Ok(match std::fs::read(format!("/proc/{pid}/cmdline")) {
                    Ok(cmd) if String::from_utf8_lossy(&cmd).contains("starling-broker") => Err("still alive".into()),
                    _ => Ok(()),
                })
            })?;
            eprintln!("[e2e]   containerd stopped the container; its process is gone");
        }
        Ok(())
    })
}

/// `crictl inspect ID` on the local cluster; `None` once the container is removed.
fn crictl_inspect(layout: &Layout, id: &str) -> Result<Option<Value>> {
    let f = layout.crictl().args(["inspect", "-o", "json", id]).finish()?;
    if !f.success() {
        if f.stderr.contains("not found") || f.stderr.contains("NotFound") {
            return Ok(None);
        }
        anyhow::bail!("crictl inspect {id}: {}", f.stderr.trim());
    }
    Ok(Some(serde_json::from_str(&f.stdout).context("crictl inspect printed no JSON")?))
}
