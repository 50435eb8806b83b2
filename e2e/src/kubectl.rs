//! `kubectl` against one kubeconfig: apply, get as JSON, rollout waits, and the diagnostics
//! (`get`, `describe`, `logs`, events) printed when something does not become Ready.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::Value;

use crate::cmd::Cmd;

/// kubectl bound to a kubeconfig.
#[derive(Debug, Clone)]
pub struct Kubectl {
    bin: PathBuf,
    kubeconfig: PathBuf,
}

impl Kubectl {
    pub fn new(bin: impl Into<PathBuf>, kubeconfig: impl Into<PathBuf>) -> Kubectl {
        Kubectl { bin: bin.into(), kubeconfig: kubeconfig.into() }
    }

    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// A kubectl command with `--kubeconfig` set and a 60 s limit.
    pub fn cmd<I, S>(&self, args: I) -> Cmd
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        Cmd::new(&self.bin).arg("--kubeconfig").arg(&self.kubeconfig).args(args)
    }

    /// Runs kubectl and returns its stdout.
    pub fn run(&self, args: &[&str]) -> Result<String> {
        self.cmd(args).output()
    }

    /// `kubectl apply -f -` with `yaml` on stdin.
    pub fn apply(&self, yaml: &str) -> Result<()> {
        self.cmd(["apply", "-f", "-"]).stdin(yaml).output().map(drop)
    }

    /// `kubectl apply -f FILE`.
    pub fn apply_file(&self, file: &Path) -> Result<()> {
        self.cmd(["apply", "-f"]).arg(file).output().map(drop)
    }

    /// `kubectl get ARGS -o json`, parsed.
    pub fn get_json(&self, args: &[&str]) -> Result<Value> {
        let out = self.cmd(["get"]).args(args).args(["-o", "json"]).output()?;
        serde_json::from_str(&out).with_context(|| format!("kubectl get {} printed no JSON", args.join(" ")))
    }

    /// `kubectl rollout status KIND/NAME`, bounded by `timeout`.
    pub fn rollout_status(&self, namespace: &str, what: &str, timeout: Duration) -> Result<()> {
        let t = format!("--timeout={}s", timeout.as_secs());
        self.cmd(["-n", namespace, "rollout", "status", what, &t])
            .timeout(timeout + Duration::from_secs(15))
            .output()
            .map(drop)
            .with_context(|| format!("{what} in namespace {namespace} did not roll out"))
    }

    /// Creates `namespace` (after deleting a leftover of the same name) and waits for its
    /// default ServiceAccount, which pods need before they can be created.
    pub fn fresh_namespace(&self, namespace: &str) -> Result<()> {
        self.delete_namespace(namespace, true)?;
        self.run(&["create", "namespace", namespace])?;
        crate::wait::until(Duration::from_secs(30), format!("namespace {namespace}'s default ServiceAccount"), || {
            Ok(self.run(&["-n", namespace, "get", "serviceaccount", "default"]).ok().map(drop))
        })
    }

    /// Deletes `namespace` if it exists; `wait` blocks (up to 120 s) until it is gone.
    pub fn delete_namespace(&self, namespace: &str, wait: bool) -> Result<()> {
        let w = format!("--wait={wait}");
        self.cmd(["delete", "namespace", namespace, "--ignore-not-found", &w, "--timeout=120s"])
            .timeout(Duration::from_secs(135))
            .output()
            .map(drop)
    }

    /// Names and IPs of the pods matching `selector` that have an IP.
    pub fn pod_ips(&self, namespace: &str, selector: &str) -> Result<Vec<(String, String)>> {
        let pods = self.get_json(&["-n", namespace, "pods", "-l", selector])?;
        Ok(items(&pods)
            .iter()
            .filter_map(|p| {
                let name = p["metadata"]["name"].as_str()?;
                let ip = p["status"]["podIP"].as_str()?;
                Some((name.to_string(), ip.to_string()))
            })
            .collect())
    }

    /// A Service's ClusterIP.
    pub fn cluster_ip(&self, namespace: &str, service: &str) -> Result<String> {
        let svc = self.get_json(&["-n", namespace, "service", service])?;
        svc["spec"]["clusterIP"]
            .as_str()
            .map(str::to_string)
            .with_context(|| format!("service {namespace}/{service} has no clusterIP"))
    }

    /// Everything worth reading when something in `namespace` is not as expected: objects,
    /// events, `describe pods`, and every container's current and previous log (tails).
    /// Never fails: what cannot be fetched is reported inline.
    pub fn diagnostics(&self, namespace: &str) -> String {
        let mut out = format!("===== diagnostics for namespace {namespace} =====\n");
        let mut section = |title: &str, args: &[&str]| {
            out.push_str(&format!("----- kubectl {title}\n"));
            match self.cmd(args).timeout(Duration::from_secs(30)).finish() {
                Ok(f) => {
                    out.push_str(&f.stdout);
                    if !f.success() {
                        out.push_str(&f.stderr);
                    }
                }
                Err(e) => out.push_str(&format!("({e:#})\n")),
            }
        };
        section("get all,endpointslices -o wide", &["-n", namespace, "get", "all,endpointslices", "-o", "wide"]);
        section("get events", &["-n", namespace, "get", "events", "--sort-by=.lastTimestamp"]);
        section("describe pods", &["-n", namespace, "describe", "pods"]);
        let pods = self.get_json(&["-n", namespace, "pods"]).map(|v| {
            items(&v).iter().filter_map(|p| p["metadata"]["name"].as_str().map(str::to_string)).collect::<Vec<_>>()
        });
        for pod in pods.unwrap_or_default() {
            section(&format!("logs {pod}"), &["-n", namespace, "logs", &pod, "--all-containers", "--tail=40"]);
            section(
                &format!("logs --previous {pod}"),
                &["-n", namespace, "logs", &pod, "--all-containers", "--previous", "--tail=20"],
            );
        }
        out.push_str("===== end of diagnostics =====\n");
        out
    }
}

/// `.items` of a list object (empty when absent).
pub fn items(list: &Value) -> &[Value] {
    list["items"].as_array().map(Vec::as_slice).unwrap_or(&[])
}
