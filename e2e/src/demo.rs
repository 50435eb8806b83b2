//! The demo `up` installs and the suite checks: the Helm chart (CRDs and the operator, running
//! in-cluster as a Pod), `samples/quickstart.yaml` (a 3-broker BrokerCluster and a Rule) and a
//! Bridge that forwards the Rule's alerts to a Mosquitto on the host.

use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::cluster::{e2e_dir, repo_root};
use crate::helm::Helm;
use crate::image::{BROKER_IMAGE, OPERATOR_IMAGE};
use crate::kubectl::Kubectl;
use crate::mqtt::{self, MQTT_PORT};
use crate::wait;

/// The chart's release name and namespace.
pub const RELEASE: &str = "starling";
pub const OPERATOR_NAMESPACE: &str = "starling-system";
/// The operator's Deployment (the chart's full name for release `starling`).
pub const OPERATOR_DEPLOYMENT: &str = "deployment/starling";
/// Selects the operator's pods.
pub const OPERATOR_SELECTOR: &str = "app.kubernetes.io/instance=starling,app.kubernetes.io/component=operator";
/// The Lease the operator's leader holds (values.yaml `leaderElection.leaseName`).
pub const OPERATOR_LEASE: &str = "starling-operator";

/// The BrokerCluster `up` applies, relative to `e2e/`.
pub const SAMPLE: &str = "samples/quickstart.yaml";
/// Namespace the sample deploys into.
pub const NAMESPACE: &str = "starling";
/// The sample's BrokerCluster.
pub const CLUSTER: &str = "demo";
/// Selects the demo's broker pods (the operator's labels).
pub const SELECTOR: &str = "app.kubernetes.io/name=starling-broker,app.kubernetes.io/instance=demo";
/// What the operator makes and rolls out.
pub const WORKLOAD: &str = "statefulset/demo";
/// The client Service in front of all brokers.
pub const SERVICE: &str = "demo";
/// The headless Service that gives each pod a DNS name.
pub const HEADLESS: &str = "demo-headless";
/// The quickstart's Rule and the demo's Bridge.
pub const RULE: &str = "hot-alerts";
pub const BRIDGE: &str = "alerts-to-host";

/// Where the demo answers.
#[derive(Debug, Clone)]
pub struct Endpoints {
    /// (pod name, pod IP), sorted by name.
    pub pods: Vec<(String, String)>,
    pub cluster_ip: String,
}

/// The chart's values for images loaded into the node: `IfNotPresent` with the exact tags, so
/// nothing is pulled.
pub fn chart_values() -> Vec<(&'static str, &'static str)> {
    let (op_repo, op_tag) = split_tag(OPERATOR_IMAGE);
    let (broker_repo, broker_tag) = split_tag(BROKER_IMAGE);
    vec![
        ("image.repository", op_repo),
        ("image.tag", op_tag),
        ("image.pullPolicy", "IfNotPresent"),
        ("broker.image.repository", broker_repo),
        ("broker.image.tag", broker_tag),
    ]
}

fn split_tag(image: &'static str) -> (&'static str, &'static str) {
    image.rsplit_once(':').unwrap_or((image, "latest"))
}

/// `helm upgrade --install` of `charts/starling` into [`OPERATOR_NAMESPACE`], waiting until the
/// operator's Deployment is Ready (its readiness probe passes once it can list BrokerClusters
/// through the API server).
pub fn install_chart(k: &Kubectl, helm: &Helm, timeout: Duration) -> Result<()> {
    let chart = repo_root().join("charts/starling");
    let installed = helm.upgrade_install(RELEASE, &chart, OPERATOR_NAMESPACE, &chart_values(), timeout);
    if installed.is_err() {
        eprintln!("{}", k.diagnostics(OPERATOR_NAMESPACE));
    }
    installed
}

/// Installs the chart, then applies the quickstart BrokerCluster.
pub fn install(k: &Kubectl, helm: &Helm) -> Result<()> {
    install_chart(k, helm, Duration::from_secs(180))?;
    k.apply_file(&e2e_dir().join(SAMPLE)).with_context(|| format!("applying {SAMPLE}"))
}

/// The demo's Bridge: every broker forwards `alerts/#` to the remote broker at `server` (a
/// `mqtt-tcp://` URL) as `starling/alerts/...`.
pub fn bridge_manifest(server: &str) -> String {
    format!(
        "apiVersion: starling.dev/v1alpha1\nkind: Bridge\nmetadata:\n  name: {BRIDGE}\n  namespace: {NAMESPACE}\n\
         spec:\n  clusterRef: {CLUSTER}\n  bridge:\n    server: {server}\n    proto_ver: 4\n    forwards:\n      \
         - local_topic: alerts/#\n        remote_topic: starling/${{topic}}\n"
    )
}

/// Applies [`bridge_manifest`] (after [`install`]).
pub fn apply_bridge(k: &Kubectl, server: &str) -> Result<()> {
    k.apply(&bridge_manifest(server)).context("applying the demo's Bridge")
}

/// Waits until a managed resource (`rule/NAME`, `bridge/NAME`, ...) in the demo namespace is
/// Ready on every broker.
pub fn wait_synced(k: &Kubectl, what: &str, timeout: Duration) -> Result<()> {
    wait::until(timeout, format!("{what} to be Ready on every broker"), || {
        let s = k.get_json(&["-n", NAMESPACE, what])?;
        let status = &s["status"];
        let ready = status["conditions"]
            .as_array()
            .is_some_and(|cs| cs.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"));
        let (applied, total) = (status["nodesApplied"].as_i64(), status["nodesTotal"].as_i64());
        Ok((ready && applied == total && total.unwrap_or(0) > 0).then_some(()))
    })
}

/// Waits until the operator reports the BrokerCluster Ready, every broker pod is Ready and the
/// client Service routes an MQTT round trip; prints diagnostics and fails when that does not
/// happen within `timeout`.
pub fn wait_ready(k: &Kubectl, timeout: Duration) -> Result<Endpoints> {
    let ready = wait::until(timeout, format!("BrokerCluster {NAMESPACE}/{CLUSTER} to be Ready"), || {
        let phase = k.run(&["-n", NAMESPACE, "get", "brokercluster", CLUSTER, "-o", "jsonpath={.status.phase}"])?;
        Ok((phase.trim() == "Ready").then_some(()))
    })
    .and_then(|()| {
        k.rollout_status(NAMESPACE, WORKLOAD, Duration::from_secs(60))?;
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
        eprintln!("{}", k.diagnostics(OPERATOR_NAMESPACE));
    }
    ready
}

/// Removes the demo: the quickstart's namespace first (the operator removes its finalizers),
/// then the chart. The CRDs and the cluster stay.
pub fn uninstall(k: &Kubectl, helm: &Helm) -> Result<()> {
    k.delete_namespace(NAMESPACE, true)?;
    helm.uninstall(RELEASE, OPERATOR_NAMESPACE)?;
    k.delete_namespace(OPERATOR_NAMESPACE, true)
}

/// The name of the pod holding the operator's Lease, once one does.
pub fn lease_holder(k: &Kubectl) -> Result<String> {
    let holder =
        k.run(&["-n", OPERATOR_NAMESPACE, "get", "lease", OPERATOR_LEASE, "-o", "jsonpath={.spec.holderIdentity}"])?;
    match holder.trim() {
        "" => bail!("Lease {OPERATOR_NAMESPACE}/{OPERATOR_LEASE} has no holder"),
        h => Ok(h.to_string()),
    }
}

/// How to use the running demo, for the terminal; `remote` is the Bridge's Mosquitto
/// (`host:port`) when there is one.
pub fn usage(k: &Kubectl, e: &Endpoints, dns_ip: Option<&str>, remote: Option<(&str, u16)>) -> String {
    let kubeconfig = k.kubeconfig().display();
    let first_ip = e.pods.first().map(|(_, ip)| ip.as_str()).unwrap_or("<pod IP>");
    let first_pod = e.pods.first().map(|(name, _)| name.as_str()).unwrap_or("demo-0");
    let mut s = format!(
        "\nStarling is running: the operator (Helm release {RELEASE} in {OPERATOR_NAMESPACE}) and BrokerCluster \
         {CLUSTER} with {n} brokers in namespace {NAMESPACE}.\n\n\
         Use kubectl:\n  export KUBECONFIG={kubeconfig}\n  kubectl -n {NAMESPACE} get brokerclusters\n  \
         kubectl -n {NAMESPACE} get pods -o wide\n  kubectl -n {NAMESPACE} logs {first_pod}\n  \
         kubectl -n {OPERATOR_NAMESPACE} logs {OPERATOR_DEPLOYMENT}\n  \
         kubectl -n {NAMESPACE} patch brokercluster {CLUSTER} --type merge -p '{{\"spec\":{{\"replicas\":5}}}}'\n\n\
         Brokers:\n",
        n = e.pods.len(),
    );
    for (name, ip) in &e.pods {
        s.push_str(&format!("  {name:<10} {ip}:{MQTT_PORT}  {name}.{HEADLESS}.{NAMESPACE}.svc.cluster.local\n"));
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
    s.push_str(&format!(
        "\nRule {RULE} (kubectl -n {NAMESPACE} get mqrule): a hot reading becomes an alert on every broker:\n  \
         mosquitto_sub -h {first_ip} -t 'alerts/#' -v &\n  \
         mosquitto_pub -h {first_ip} -i sensor-1 -t sensors/room1 -m '{{\"temp\": 35}}'\n"
    ));
    if let Some((host, port)) = remote {
        s.push_str(&format!(
            "\nBridge {BRIDGE} (kubectl -n {NAMESPACE} get mqbridge): every broker forwards alerts/# to the \
             Mosquitto on this host ({host}:{port}) as starling/alerts/#:\n  \
             mosquitto_sub -h {host} -p {port} -t 'starling/#' -v\n"
        ));
    }
    s.push_str("\nCtrl-C stops the demo and tears the cluster down.\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_chart_is_installed_with_the_images_the_harness_loads() {
        let values = chart_values();
        let get = |k: &str| values.iter().find(|(key, _)| *key == k).map(|(_, v)| *v).unwrap();
        assert_eq!(format!("{}:{}", get("image.repository"), get("image.tag")), OPERATOR_IMAGE);
        assert_eq!(format!("{}:{}", get("broker.image.repository"), get("broker.image.tag")), BROKER_IMAGE);
    }

    #[test]
    fn the_quickstart_names_the_cluster_and_namespace_the_demo_waits_for() {
        let sample = std::fs::read_to_string(e2e_dir().join(SAMPLE)).unwrap();
        assert!(sample.contains("kind: BrokerCluster"), "{SAMPLE} has no BrokerCluster");
        assert!(sample.contains(&format!("  name: {CLUSTER}\n  namespace: {NAMESPACE}\n")), "{SAMPLE}");
    }
}
