//! A StatefulSet of brokers scales 1 to 3 to 1; each pod resolves by its DNS name (asked of the
//! cluster DNS) to its own IP, MQTT there works, and a removed pod's name disappears.

use std::net::Ipv4Addr;
use std::time::Duration;

use anyhow::{Context, Result};
use starling_e2e::dns::{self, Answer};
use starling_e2e::kubectl::Kubectl;
use starling_e2e::mqtt::{self, MQTT_PORT};
use starling_e2e::wait;

use crate::harness::{Env, in_namespace};
use crate::manifests::{BROKER_ARGS, apply, broker_pod_spec, service, statefulset};

const TIMEOUT: Duration = Duration::from_secs(120);

pub fn statefulset_scales_1_to_3_to_1_and_each_pod_resolves_by_dns_name(env: &Env) -> Result<()> {
    in_namespace(env, "e2e-statefulset", |ns| {
        let k = &env.kubectl;
        let spec = broker_pod_spec(&env.image, BROKER_ARGS, true);
        apply(k, vec![service(ns, "broker", "broker", true), statefulset(ns, "broker", "broker", 1, spec)])?;
        wait_ready_replicas(k, ns, 1)?;
        check_pods_by_name(env, ns, &[0])?;

        k.run(&["-n", ns, "scale", "statefulset/broker", "--replicas=3"])?;
        wait_ready_replicas(k, ns, 3)?;
        check_pods_by_name(env, ns, &[0, 1, 2])?;

        k.run(&["-n", ns, "scale", "statefulset/broker", "--replicas=1"])?;
        wait::until_true(TIMEOUT, "broker-1 and broker-2 to be removed", || {
            let pods = k.pod_ips(ns, "app=broker")?;
            let names: Vec<_> = pods.iter().map(|(n, _)| n.as_str()).collect();
            Ok(if names == ["broker-0"] { Ok(()) } else { Err(format!("pods: {names:?}")) })
        })?;
        wait_ready_replicas(k, ns, 1)?;
        for gone in [1, 2] {
            let name = dns_name(ns, gone);
            wait::until_true(Duration::from_secs(30), format!("{name} to disappear from DNS"), || {
                Ok(if is_gone(env, &name)? { Ok(()) } else { Err(format!("{name} still resolves")) })
            })?;
        }
        eprintln!("[e2e]   scaled back to 1: broker-1 and broker-2 gone from DNS");
        check_pods_by_name(env, ns, &[0])
    })
}

fn dns_name(ns: &str, ordinal: usize) -> String {
    format!("broker-{ordinal}.broker.{ns}.svc.cluster.local")
}

/// A removed pod's name answers NXDOMAIN or no A record.
fn is_gone(env: &Env, name: &str) -> Result<bool> {
    Ok(match dns::query_a(env.dns, name, Duration::from_secs(2))? {
        Answer::NoSuchName => true,
        Answer::Found(ips) => ips.is_empty(),
    })
}

fn wait_ready_replicas(k: &Kubectl, ns: &str, n: u64) -> Result<()> {
    wait::until_true(TIMEOUT, format!("statefulset broker with {n} ready replicas"), || {
        let sts = k.get_json(&["-n", ns, "statefulset", "broker"])?;
        let ready = sts["status"]["readyReplicas"].as_u64().unwrap_or(0);
        let current = sts["status"]["replicas"].as_u64().unwrap_or(0);
        Ok(if ready == n && current == n { Ok(()) } else { Err(format!("{ready} ready of {current}")) })
    })?;
    eprintln!("[e2e]   statefulset broker: {n} ready");
    Ok(())
}

/// Each `broker-N` resolves, through the cluster DNS, to its pod's IP, and MQTT there works.
fn check_pods_by_name(env: &Env, ns: &str, ordinals: &[usize]) -> Result<()> {
    let pods = env.kubectl.pod_ips(ns, "app=broker")?;
    for &i in ordinals {
        let pod = format!("broker-{i}");
        let ip: Ipv4Addr = pods
            .iter()
            .find(|(n, _)| *n == pod)
            .and_then(|(_, ip)| ip.parse().ok())
            .with_context(|| format!("pod {pod} has no IPv4 address: {pods:?}"))?;
        let name = dns_name(ns, i);
        wait::until_true(Duration::from_secs(30), format!("{name} to resolve to {ip} via {}", env.dns), || {
            Ok(match dns::query_a(env.dns, &name, Duration::from_secs(2))? {
                Answer::Found(ips) if ips == [ip] => Ok(()),
                other => Err(format!("{name} -> {other:?}")),
            })
        })?;
        mqtt::round_trip(&ip.to_string(), MQTT_PORT, Duration::from_secs(10))
            .with_context(|| format!("MQTT round trip to {name} ({ip})"))?;
        eprintln!("[e2e]   {name} -> {ip}: MQTT round trip ok");
    }
    Ok(())
}
