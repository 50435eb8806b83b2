//! The objects the cases create, as JSON (kubectl applies JSON as well as YAML): broker pods,
//! Deployments, StatefulSets and Services, all with the broker's restricted security context.

use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::{Value, json};
use starling_e2e::kubectl::Kubectl;
use starling_e2e::wait;

/// A pod spec running the broker image with `args` (the pod name is the node name unless `args`
/// say otherwise), its store in an emptyDir and a TCP readiness probe on the MQTT port.
pub fn broker_pod_spec(image: &str, args: &[&str], probe: bool) -> Value {
    let mut container = json!({
        "name": "broker",
        "image": image,
        // Loaded into the cluster beforehand; never pulled.
        "imagePullPolicy": "Never",
        "args": args,
        "env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
        "ports": [{"name": "mqtt", "containerPort": 1883}],
        "securityContext": {
            "allowPrivilegeEscalation": false,
            "readOnlyRootFilesystem": true,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [{"name": "data", "mountPath": "/var/lib/starling"}],
    });
    if probe {
        container["readinessProbe"] = json!({"tcpSocket": {"port": "mqtt"}, "periodSeconds": 1});
    }
    json!({
        "terminationGracePeriodSeconds": 5,
        "enableServiceLinks": false,
        "automountServiceAccountToken": false,
        "securityContext": {
            "runAsNonRoot": true,
            "runAsUser": 65532,
            "runAsGroup": 65532,
            "fsGroup": 65532,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container],
        "volumes": [{"name": "data", "emptyDir": {}}],
    })
}

/// The default broker arguments: node name = pod name.
pub const BROKER_ARGS: &[&str] = &["--node-name=$(POD_NAME)"];

pub fn pod(ns: &str, name: &str, spec: Value) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": {"app": name}},
        "spec": spec,
    })
}

pub fn deployment(ns: &str, name: &str, replicas: u32, spec: Value) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": spec},
        },
    })
}

pub fn statefulset(ns: &str, name: &str, service: &str, replicas: u32, spec: Value) -> Value {
    json!({
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "serviceName": service,
            "replicas": replicas,
            "podManagementPolicy": "Parallel",
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": spec},
        },
    })
}

/// A Service on the MQTT port selecting `app=<app>`; `headless` makes it `clusterIP: None`.
pub fn service(ns: &str, name: &str, app: &str, headless: bool) -> Value {
    let mut svc = json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "selector": {"app": app},
            "ports": [{"name": "mqtt", "port": 1883, "targetPort": "mqtt"}],
        },
    });
    if headless {
        svc["spec"]["clusterIP"] = json!("None");
    }
    svc
}

/// `kubectl apply` of several objects at once (as a v1 List).
pub fn apply(k: &Kubectl, objects: Vec<Value>) -> Result<()> {
    let list = json!({"apiVersion": "v1", "kind": "List", "items": objects});
    k.apply(&list.to_string())
}

/// A pod's JSON.
pub fn get_pod(k: &Kubectl, ns: &str, name: &str) -> Result<Value> {
    k.get_json(&["-n", ns, "pod", name])
}

/// Waits until pod `name` is Ready and returns its IP; a timeout reports the pod's phase and
/// why its container waits (e.g. `ErrImageNeverPull`).
pub fn wait_pod_ready(k: &Kubectl, ns: &str, name: &str, timeout: Duration) -> Result<String> {
    wait::until(timeout, format!("pod {ns}/{name} Ready with an IP"), || {
        let pod = get_pod(k, ns, name)?;
        let ready = pod["status"]["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|c| c["type"] == "Ready" && c["status"] == "True");
        match pod["status"]["podIP"].as_str() {
            Some(ip) if ready => Ok(Some(ip.to_string())),
            _ => {
                let state = container_status(&pod).map(|c| c["state"].to_string()).unwrap_or_default();
                anyhow::bail!("phase {}, container state {state}", pod["status"]["phase"])
            }
        }
    })
}

/// `status.containerStatuses[0]` of a pod.
pub fn container_status(pod: &Value) -> Result<&Value> {
    pod["status"]["containerStatuses"].get(0).context("no container status yet")
}
