//! The demo deployment `up` installs and a test checks (`e2e/samples/broker.yaml` today; the chart
//! and `samples/quickstart.yaml` once the operator lands: only `install` and the names change).

use std::time::Duration;

use anyhow::{Context, Result};

use crate::cluster::e2e_dir;
use crate::kubectl::Kubectl;
use crate::mqtt::{self, MQTT_PORT};
use crate::wait;

/// The manifests `up` applies, relative to `e2e/`.
pub const SAMPLE: &str = "samples/broker.yaml";
/// Namespace the sample deploys into.
pub const NAMESPACE: &str = "starling";
/// Selects the demo's broker pods.
pub const SELECTOR: &str = "app.kubernetes.io/name=starling-broker,app.kubernetes.io/instance=demo";
/// What becomes Ready.
pub const WORKLOAD: &str = "statefulset/starling-broker";
/// The ClusterIP Service in front of all brokers.
pub const SERVICE: &str = "starling-broker";
/// The headless Service that gives each pod a DNS name.
pub const HEADLESS: &str = "starling-broker-headless";

/// Where the demo answers.
#[derive(Debug, Clone)]
pub struct Endpoints {
    /// (pod name, pod IP), sorted by name.
    pub pods: Vec<(String, String)>,
    pub cluster_ip: String,
}

/// Installs the demo brokers.
pub fn install(k: &Kubectl) -> Result<()> {
    k.apply_file(&e2e_dir().join(SAMPLE)).with_context(|| format!("applying {SAMPLE}"))
}

/// Waits until every broker is Ready and the ClusterIP Service routes an MQTT round trip;
/// prints diagnostics and fails when that does not happen within `timeout`.
pub fn wait_ready(k: &Kubectl, timeout: Duration) -> Result<Endpoints> {
    let ready = k.rollout_status(NAMESPACE, WORKLOAD, timeout).and_then(|()| {
        let mut pods = k.pod_ips(NAMESPACE, SELECTOR)?;
        pods.sort();
        let cluster_ip = k.cluster_ip(NAMESPACE, SERVICE)?;
        // kube-proxy programs a new Service within a few seconds: wait for its first answer.
        wait::until(Duration::from_secs(30), format!("MQTT through Service {SERVICE} ({cluster_ip})"), || {
            mqtt::self_round_trip(&cluster_ip, MQTT_PORT, Duration::from_secs(3)).map(Some)
        })?;
        Ok(Endpoints { pods, cluster_ip })
    });
    if ready.is_err() {
        eprintln!("{}", k.diagnostics(NAMESPACE));
    }
    ready
}

/// Removes the demo (the cluster stays).
pub fn uninstall(k: &Kubectl) -> Result<()> {
    k.delete_namespace(NAMESPACE, true)
}

/// How to use the running demo, for the terminal.
pub fn usage(k: &Kubectl, e: &Endpoints, dns_ip: Option<&str>) -> String {
    let kubeconfig = k.kubeconfig().display();
    let first_ip = e.pods.first().map(|(_, ip)| ip.as_str()).unwrap_or("<pod IP>");
    let first_pod = e.pods.first().map(|(name, _)| name.as_str()).unwrap_or("starling-broker-0");
    let mut s = format!(
        "\nStarling is running: {n} brokers in namespace {NAMESPACE}.\n\n\
         Use kubectl:\n  export KUBECONFIG={kubeconfig}\n  kubectl -n {NAMESPACE} get pods -o wide\n  \
         kubectl -n {NAMESPACE} logs {first_pod}\n\nBrokers:\n",
        n = e.pods.len(),
    );
    for (name, ip) in &e.pods {
        s.push_str(&format!("  {name:<20} {ip}:{MQTT_PORT}  {name}.{HEADLESS}.{NAMESPACE}.svc.cluster.local\n"));
    }
    s.push_str(&format!(
        "  Service {SERVICE} (ClusterIP) {ip}:{MQTT_PORT}\n\n\
         Publish and subscribe (mosquitto-clients):\n  \
         mosquitto_sub -h {first_ip} -t 'demo/#' -v &\n  \
         mosquitto_pub -h {first_ip} -t demo/hello -m 'hello from the host'\n  \
         mosquitto_pub -h {ip} -t demo/hello -m 'to whichever broker the ClusterIP Service picks'\n",
        ip = e.cluster_ip,
    ));
    if let Some(dns) = dns_ip {
        s.push_str(&format!("  dig +short @{dns} {first_pod}.{HEADLESS}.{NAMESPACE}.svc.cluster.local\n"));
    }
    s.push_str("\nCtrl-C stops the demo and tears the cluster down.\n");
    s
}
