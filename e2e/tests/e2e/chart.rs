//! The Helm chart as a user installs it: the operator runs in-cluster as a non-root Pod with its
//! own ServiceAccount, reaches the API server (Ready, holds its Lease) and has only its rights.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use starling_e2e::demo::{self, OPERATOR_NAMESPACE, OPERATOR_SELECTOR};
use starling_e2e::image::{NONROOT, OPERATOR_IMAGE};
use starling_e2e::kubectl::items;
use starling_e2e::wait;

use crate::harness::Env;

pub fn chart_installs_and_the_operator_pod_runs_and_reaches_the_api_server_in_cluster(env: &Env) -> Result<()> {
    let k = &env.kubectl;
    // `helm --wait` returns once the Deployment is Ready: the readiness probe passes only after
    // the operator listed BrokerClusters through the API server with its ServiceAccount token.
    demo::install_chart(k, &env.helm, Duration::from_secs(180))?;
    let result = check_operator(env);
    if result.is_err() {
        eprintln!("{}", k.diagnostics(OPERATOR_NAMESPACE));
    }
    result
}

fn check_operator(env: &Env) -> Result<()> {
    let k = &env.kubectl;
    let pods = k.get_json(&["-n", OPERATOR_NAMESPACE, "pods", "-l", OPERATOR_SELECTOR])?;
    let pods = items(&pods);
    ensure!(pods.len() == 1, "expected one operator pod, got {}", pods.len());
    let pod = &pods[0];
    let name = pod["metadata"]["name"].as_str().context("pod without a name")?;
    let ip = pod["status"]["podIP"].as_str().context("operator pod without an IP")?;
    let container = &pod["status"]["containerStatuses"][0];
    ensure!(container["ready"] == true, "operator container not ready: {container}");
    ensure!(container["image"].as_str().is_some_and(|i| i.ends_with(OPERATOR_IMAGE)), "image: {container}");
    ensure!(pod["spec"]["serviceAccountName"] == "starling", "ServiceAccount: {}", pod["spec"]["serviceAccountName"]);

    // Non-root, read-only root filesystem, no privilege escalation (the kubelet refuses to start
    // a runAsNonRoot container whose user is root, so Ready proves the image's user too).
    let sc = &pod["spec"]["containers"][0]["securityContext"];
    ensure!(sc["readOnlyRootFilesystem"] == true && sc["allowPrivilegeEscalation"] == false, "securityContext: {sc}");
    ensure!(pod["spec"]["securityContext"]["runAsUser"] == NONROOT, "pod securityContext: {}", pod["spec"]);

    // Leader election wrote the Lease through the API server, as this pod.
    let holder = wait::until(Duration::from_secs(60), "the operator pod to hold its Lease", || {
        Ok(demo::lease_holder(k).ok().filter(|h| h == name))
    })?;
    eprintln!("[e2e]   operator pod {name} ({ip}) is Ready and holds Lease {}", holder);

    // Its own figures, from the pod IP: leader, and watching.
    let metrics = http_get(SocketAddr::new(ip.parse()?, 8080), "/metrics")?;
    ensure!(metrics.contains("starling_operator_leader 1"), "the operator does not report itself leader:\n{metrics}");

    // Least privilege: what the controllers need, nothing more.
    let sa = format!("system:serviceaccount:{OPERATOR_NAMESPACE}:starling");
    for (verb, resource, subresource, want) in [
        ("create", "statefulsets.apps", "", true),
        ("patch", "brokerclusters.starling.dev", "status", true),
        ("update", "brokerclusters.starling.dev", "", false),
        ("create", "pods", "", false),
        ("delete", "secrets", "", false),
        ("create", "clusterroles.rbac.authorization.k8s.io", "", false),
        ("delete", "nodes", "", false),
    ] {
        let sub = format!("--subresource={subresource}");
        let mut args = vec!["auth", "can-i", verb, resource, "--as", &sa, "-n", "default"];
        if !subresource.is_empty() {
            args.push(&sub);
        }
        let f = k.cmd(args).finish()?;
        let got = f.stdout.trim() == "yes";
        ensure!(
            got == want,
            "the operator's ServiceAccount can {verb} {resource} {subresource}: {got}, expected {want} ({})",
            f.stderr.trim()
        );
    }
    Ok(())
}

/// A plain HTTP/1.0 GET; the body of a 200.
fn http_get(addr: SocketAddr, path: &str) -> Result<String> {
    starling_e2e::fence::check(&addr.to_string())?;
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).with_context(|| format!("{addr}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())?;
    let mut response = String::new();
    s.read_to_string(&mut response)?;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    if !head.starts_with("HTTP/1.0 200") && !head.starts_with("HTTP/1.1 200") {
        bail!("GET http://{addr}{path}: {head}");
    }
    Ok(body.to_string())
}
