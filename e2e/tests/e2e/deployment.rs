//! A Deployment of the broker image becomes Ready and answers MQTT (a publish/subscribe round
//! trip) on each pod IP and through a ClusterIP Service.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use starling_e2e::mqtt::{self, MQTT_PORT};
use starling_e2e::wait;

use crate::harness::{Env, in_namespace};
use crate::manifests::{BROKER_ARGS, apply, broker_pod_spec, deployment, service};

pub fn deployment_becomes_ready_and_answers_mqtt_on_pod_ips_and_cluster_ip(env: &Env) -> Result<()> {
    in_namespace(env, "e2e-deployment", |ns| {
        let k = &env.kubectl;
        let spec = broker_pod_spec(&env.image, BROKER_ARGS, true);
        apply(k, vec![deployment(ns, "broker", 2, spec), service(ns, "broker", "broker", false)])?;
        k.rollout_status(ns, "deployment/broker", Duration::from_secs(120))?;

        let pods = k.pod_ips(ns, "app=broker")?;
        ensure!(pods.len() == 2, "expected 2 broker pods with IPs, got {pods:?}");
        for (name, ip) in &pods {
            mqtt::round_trip(ip, MQTT_PORT, Duration::from_secs(10))
                .with_context(|| format!("MQTT round trip on pod {name} ({ip})"))?;
            eprintln!("[e2e]   pod {name} {ip}: MQTT round trip ok");
        }

        let cluster_ip = k.cluster_ip(ns, "broker")?;
        // kube-proxy programs a new Service within a few seconds: wait for its first answer.
        wait::until(Duration::from_secs(30), format!("MQTT through Service broker ({cluster_ip})"), || {
            mqtt::self_round_trip(&cluster_ip, MQTT_PORT, Duration::from_secs(3)).map(Some)
        })?;
        for i in 0..4 {
            mqtt::self_round_trip(&cluster_ip, MQTT_PORT, Duration::from_secs(10))
                .with_context(|| format!("round trip {i} through Service broker ({cluster_ip})"))?;
        }
        eprintln!("[e2e]   Service broker {cluster_ip}: 5 MQTT round trips ok");
        Ok(())
    })
}
