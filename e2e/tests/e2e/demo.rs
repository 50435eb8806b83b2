//! The demo `cargo run -p e2e -- up` deploys (same `starling_e2e::demo` functions): the chart's
//! in-cluster operator makes the quickstart BrokerCluster Ready, 3 brokers answering MQTT on
//! their pod IPs, their DNS names and the client Service; the quickstart's Rule turns a hot
//! reading into an alert on every broker and the demo's Bridge carries it to Mosquitto.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use starling_e2e::demo;
use starling_e2e::dns::{self, Answer};
use starling_e2e::mqtt::{self, MQTT_PORT, Session};
use starling_e2e::remote::{Mosquitto, REMOTE_PORT};
use starling_e2e::wait;

use crate::harness::Env;

pub fn quickstart_becomes_a_ready_three_broker_cluster_that_answers_mqtt(env: &Env) -> Result<()> {
    let k = &env.kubectl;
    let remote = Mosquitto::start(&env.host_ip()?, REMOTE_PORT)?;
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

        demo::wait_synced(k, &format!("rules.starling.dev/{}", demo::RULE), Duration::from_secs(60))?;
        demo::apply_bridge(k, &remote.url())?;
        demo::wait_synced(k, &format!("bridges.starling.dev/{}", demo::BRIDGE), Duration::from_secs(60))?;
        let t = Duration::from_secs(10);
        let mut cloud = Session::connect_as(&remote.ip, remote.port, "e2e-cloud", t)?;
        cloud.subscribe("starling/#", t)?;
        for (i, (pod, ip)) in endpoints.pods.iter().enumerate() {
            let sensor = format!("sensor-{i}");
            let mut local = Session::connect_as(ip, MQTT_PORT, &format!("e2e-watch-{i}"), t)?;
            local.subscribe("alerts/#", t)?;
            let mut s = Session::connect_as(ip, MQTT_PORT, &sensor, t)?;
            s.publish("sensors/room1", r#"{"temp": 20}"#, t)?;
            s.publish("sensors/room1", r#"{"temp": 35}"#, t)?;
            let alert = local.next_publish(t).with_context(|| format!("the alert on {pod}"))?;
            ensure!(alert == (format!("alerts/{sensor}"), "hot: 35".to_string()), "{pod}: alert {alert:?}");
            // The bridge may still be connecting to the remote: the alert is queued for it.
            let up =
                cloud.next_publish(Duration::from_secs(30)).with_context(|| format!("{pod}'s alert at Mosquitto"))?;
            ensure!(up == (format!("starling/alerts/{sensor}"), "hot: 35".to_string()), "{pod}: bridged {up:?}");
        }
        eprintln!(
            "[e2e]   Rule {} alerts on every broker; Bridge {} carries them to Mosquitto",
            demo::RULE,
            demo::BRIDGE
        );
        Ok(())
    })();
    if existed {
        return result;
    }
    result.and(demo::uninstall(k, &env.helm))
}
