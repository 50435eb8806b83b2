//! The local single-node cluster, as thin wrappers over `e2e/cluster/*.sh` (install, up, down,
//! load-image) and its layout (paths, addresses) read from `common.sh` so nothing is duplicated.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::cmd::Cmd;

/// The repository root (this crate lives in `<root>/e2e`).
pub fn repo_root() -> PathBuf {
    let e2e = Path::new(env!("CARGO_MANIFEST_DIR"));
    e2e.parent().map(Path::to_path_buf).unwrap_or_else(|| e2e.to_path_buf())
}

/// `<root>/e2e`.
pub fn e2e_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Where the scripts and `mkimage.py` live.
pub fn scripts_dir() -> PathBuf {
    e2e_dir().join("cluster")
}

/// Paths and addresses of the cluster, as `common.sh` computes them from the `STARLING_*`
/// variables (so an overridden address plan is honoured here too).
#[derive(Debug, Clone)]
pub struct Layout {
    /// `~/.cache/starling/bin`: kubectl, crictl, helm, ...
    pub bin_dir: PathBuf,
    /// `/var/lib/starling-e2e/<cluster>`
    pub state: PathBuf,
    pub kubeconfig: PathBuf,
    pub containerd_sock: PathBuf,
    pub netns: String,
    pub host_veth: String,
    /// The host's end of the veth: what pods reach the host as.
    pub host_ip: String,
    pub node_ip: String,
    pub pod_cidr: String,
    pub service_cidr: String,
    pub dns_svc_ip: String,
    /// `/starling-<cluster>`, created in every cgroup v1 hierarchy.
    pub cgroup_root: String,
}

impl Layout {
    /// Reads the layout by sourcing `common.sh` in bash.
    pub fn load() -> Result<Layout> {
        const VARS: [&str; 12] = [
            "BIN_DIR",
            "STATE",
            "KUBECONFIG_FILE",
            "CONTAINERD_SOCK",
            "NETNS",
            "HOST_VETH",
            "HOST_IP",
            "NODE_IP",
            "POD_CIDR",
            "SERVICE_CIDR",
            "DNS_SVC_IP",
            "CGROUP_ROOT",
        ];
        let common = scripts_dir().join("common.sh");
        let script =
            format!("source \"$1\"; for v in {}; do printf '%s=%s\\n' \"$v\" \"${{!v}}\"; done", VARS.join(" "));
        let out = Cmd::new("bash").args(["-c", &script, "layout"]).arg(&common).output()?;
        let vars: HashMap<&str, &str> = out.lines().filter_map(|l| l.split_once('=')).collect();
        let get = |k: &str| -> Result<String> {
            match vars.get(k) {
                Some(v) if !v.is_empty() => Ok((*v).to_string()),
                _ => bail!("{} does not define {k}", common.display()),
            }
        };
        Ok(Layout {
            bin_dir: get("BIN_DIR")?.into(),
            state: get("STATE")?.into(),
            kubeconfig: get("KUBECONFIG_FILE")?.into(),
            containerd_sock: get("CONTAINERD_SOCK")?.into(),
            netns: get("NETNS")?,
            host_veth: get("HOST_VETH")?,
            host_ip: get("HOST_IP")?,
            node_ip: get("NODE_IP")?,
            pod_cidr: get("POD_CIDR")?,
            service_cidr: get("SERVICE_CIDR")?,
            dns_svc_ip: get("DNS_SVC_IP")?,
            cgroup_root: get("CGROUP_ROOT")?,
        })
    }

    pub fn kubectl_bin(&self) -> PathBuf {
        self.bin_dir.join("kubectl")
    }

    pub fn helm_bin(&self) -> PathBuf {
        self.bin_dir.join("helm")
    }

    pub fn crictl(&self) -> Cmd {
        let endpoint = format!("unix://{}", self.containerd_sock.display());
        Cmd::new(self.bin_dir.join("crictl")).args(["--runtime-endpoint", &endpoint, "--image-endpoint", &endpoint])
    }
}

fn script(name: &str) -> Cmd {
    Cmd::new(scripts_dir().join(name))
}

/// `install.sh`: Debian packages and the pinned Kubernetes binaries. Idempotent; under a second
/// when everything is cached, about 20 minutes cold on 2 cores.
pub fn install() -> Result<()> {
    script("install.sh").timeout(Duration::from_secs(90 * 60)).run().context("installing the cluster's binaries")
}

/// `up.sh`: a fresh cluster (removing leftovers of a crashed one first). Returns the admin
/// kubeconfig path up.sh printed. up.sh takes 10-15 s here; one that fails or hangs (seen once:
/// `ctr images import` of the pause image never returned on a loaded machine) is reported with
/// the daemons' log tails, cleaned up with down.sh and tried once more.
pub fn up() -> Result<PathBuf> {
    match up_once() {
        Ok(kubeconfig) => Ok(kubeconfig),
        Err(first) => {
            eprintln!("[e2e] {first:#}");
            if let Ok(layout) = Layout::load() {
                eprintln!("{}", log_tails(&layout.state.join("logs"), 15));
            }
            eprintln!("[e2e] cleaning up (down.sh) and running up.sh once more");
            down(false)?;
            up_once().with_context(|| format!("up.sh failed twice; the first time: {first:#}"))
        }
    }
}

fn up_once() -> Result<PathBuf> {
    let shown = "e2e/cluster/up.sh";
    // up.sh logs to stderr (shown as it goes) and prints `export KUBECONFIG=...` on stdout.
    let f = script("up.sh").timeout(Duration::from_secs(120)).show_stderr().finish()?;
    if !f.success() {
        bail!("{shown} failed ({})", f.status);
    }
    f.stdout
        .lines()
        .find_map(|l| l.trim().strip_prefix("export KUBECONFIG="))
        .map(PathBuf::from)
        .with_context(|| format!("{shown} printed no `export KUBECONFIG=` line: {}", f.stdout.trim()))
}

/// The last `lines` lines of every `*.log` in `dir`, for failure reports.
pub fn log_tails(dir: &Path, lines: usize) -> String {
    let mut out = String::new();
    let mut logs: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "log")).collect())
        .unwrap_or_default();
    logs.sort();
    for log in logs {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        out.push_str(&format!("----- {} (last {lines} lines)\n", log.display()));
        for line in &all[all.len().saturating_sub(lines)..] {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// `down.sh [--purge]`: stops everything up.sh started and removes its namespaces, links,
/// routes, mounts and cgroups. Idempotent.
pub fn down(purge: bool) -> Result<()> {
    let mut cmd = script("down.sh").timeout(Duration::from_secs(240));
    if purge {
        cmd = cmd.arg("--purge");
    }
    cmd.run().context("tearing the cluster down")
}

/// `load-image.sh TAR`: imports a docker-archive into the cluster's containerd.
pub fn load_image(tar: &Path) -> Result<()> {
    script("load-image.sh").arg(tar).timeout(Duration::from_secs(180)).run()
}
