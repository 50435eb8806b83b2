//! The demo `cargo run -p e2e -- up` deploys (same `starling_e2e::demo` functions): the chart's
//! in-cluster operator makes the quickstart BrokerCluster Ready, 3 brokers answering MQTT on
//! their pod IPs, their DNS names and the client Service.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use starling_e2e::demo;
use starling_e2e::dns::{self, Answer};
use starling_e2e::mqtt::{self, MQTT_PORT};
use starling_e2e::wait;

use crate::harness::Env;

pub fn quickstart_becomes_a_ready_three_broker_cluster_that_answers_mqtt(env: &Env) -> Result<()> {
    let k = &env.kubectl;
    // A demo somebody left running on this cluster is checked and left in place.
    let existed = k.cmd(["get", "namespace", demo::NAMESPACE]).finish()?.success();
    let result = (|| {
        demo::install(k, &env.helm)?;
        let endpoints = demo::wait_ready(k, Duration::from_secs(240))?;
        ensure!(endpoints.pods.len() == 3, "expected 3 brokers, got {:?}", endpoints.pods);
        for (pod, ip) in &endpoints.pods {
            let name = format!("{pod}.{}.{}.svc.cluster.local", demo::HEADLESS, demo::NAMESPACE);
            wait::until_true(Duration::from_secs(30), format!("{name} to resolve to {ip}"), || {
                Ok(match dns::query_a(env.dns, &name, Duration::from_secs(2))? {
                    Answer::Found(ips) if ips.iter().any(|a| a.to_string() == *ip) => Ok(()),
                    other => Err(format!("{other:?}")),
                })
            })?;
            mqtt::round_trip(ip, MQTT_PORT, Duration::from_secs(10))
                .with_context(|| format!("MQTT to {pod} ({ip})"))?;
        }
        eprintln!("[e2e]   3 brokers Ready, resolvable and answering MQTT; Service {}", endpoints.cluster_ip);
        Ok(())
    })();
    if existed {
        return result;
    }
    result.and(demo::uninstall(k, &env.helm))
}
