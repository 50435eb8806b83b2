//! The suite's cluster: brought up once for the whole test binary (or taken from
//! `STARLING_E2E_KUBECONFIG`), torn down exactly once (end of run, Ctrl-C, or the `down` case).

use std::net::SocketAddr;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};
use std::thread;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use starling_e2e::cluster::{self, Layout};
use starling_e2e::helm::Helm;
use starling_e2e::image::{self, BROKER_IMAGE, Component, OPERATOR_IMAGE};
use starling_e2e::kubectl::Kubectl;

/// What every case gets.
pub struct Env {
    pub kubectl: Kubectl,
    pub helm: Helm,
    /// The broker image, loaded into the cluster.
    pub image: String,
    /// The cluster's DNS Service (kube-dns ClusterIP, port 53).
    pub dns: SocketAddr,
    /// Set when this process brought the local cluster up (and so owns its teardown).
    pub local: Option<Layout>,
}

impl Env {
    /// This host's address as the cluster's pods see it (where a Bridge's remote listens):
    /// `STARLING_E2E_HOST_IP`, else the local cluster's end of the veth.
    pub fn host_ip(&self) -> Result<String> {
        match (std::env::var("STARLING_E2E_HOST_IP"), &self.local) {
            (Ok(ip), _) => Ok(ip),
            (Err(_), Some(layout)) => Ok(layout.host_ip.clone()),
            (Err(_), None) => bail!("set STARLING_E2E_HOST_IP to this host's address as the cluster's pods see it"),
        }
    }
}

/// Whether this process brought a local cluster up that still needs tearing down.
#[derive(PartialEq)]
enum Cluster {
    None,
    Up,
    Down,
}

static ENV: OnceLock<Result<Env, String>> = OnceLock::new();
static CLUSTER: Mutex<Cluster> = Mutex::new(Cluster::None);

/// The shared environment, set up by the first case that asks. A failed setup is reported once
/// and fails every case after it with the same message.
pub fn env() -> Result<&'static Env> {
    match ENV.get_or_init(|| setup().map_err(|e| format!("{e:#}"))) {
        Ok(env) => Ok(env),
        Err(e) => bail!("e2e setup failed: {e}"),
    }
}

fn setup() -> Result<Env> {
    let t = Instant::now();
    let image = std::env::var("STARLING_E2E_IMAGE").unwrap_or_else(|_| BROKER_IMAGE.to_string());
    if let Some(kubeconfig) = std::env::var_os("STARLING_E2E_KUBECONFIG") {
        // kind.sh (or any cluster): the images are loaded and pod/Service IPs are routable.
        let tool = |var: &str, name: &str, cached: fn(&Layout) -> PathBuf| match std::env::var_os(var) {
            Some(bin) => PathBuf::from(bin),
            None => Layout::load().map(|l| cached(&l)).ok().filter(|p| p.is_file()).unwrap_or(name.into()),
        };
        let kubectl = Kubectl::new(tool("STARLING_E2E_KUBECTL", "kubectl", Layout::kubectl_bin), &kubeconfig);
        let helm = Helm::new(tool("STARLING_E2E_HELM", "helm", Layout::helm_bin), &kubeconfig);
        let dns = dns_service(&kubectl)?;
        eprintln!("[e2e] using the cluster of STARLING_E2E_KUBECONFIG={}", kubectl.kubeconfig().display());
        return Ok(Env { kubectl, helm, image, dns, local: None });
    }

    spawn_signal_teardown()?;
    // Marked before up.sh runs, so a half-made cluster is torn down too.
    *lock() = Cluster::Up;
    if std::env::var_os("STARLING_E2E_SKIP_INSTALL").is_none() {
        eprintln!("[e2e] e2e/cluster/install.sh (cached after the first run)");
        cluster::install()?;
    }
    eprintln!("[e2e] e2e/cluster/up.sh");
    let kubeconfig = cluster::up()?;
    let layout = Layout::load()?;
    let kubectl = Kubectl::new(layout.kubectl_bin(), &kubeconfig);
    let helm = Helm::new(layout.helm_bin(), &kubeconfig);
    eprintln!("[e2e] building and loading the images {image} and {OPERATOR_IMAGE}");
    for tar in image::build_images(&[(Component::Broker, &image), (Component::Operator, OPERATOR_IMAGE)])? {
        cluster::load_image(&tar)?;
    }
    let dns = dns_service(&kubectl)?;
    eprintln!("[e2e] local cluster ready in {}s", t.elapsed().as_secs());
    Ok(Env { kubectl, helm, image, dns, local: Some(layout) })
}

fn dns_service(k: &Kubectl) -> Result<SocketAddr> {
    let ip = k.cluster_ip("kube-system", "kube-dns")?;
    format!("{ip}:53").parse().with_context(|| format!("kube-dns ClusterIP {ip:?}"))
}

fn lock() -> std::sync::MutexGuard<'static, Cluster> {
    // A panic while holding the lock cannot leave the state inconsistent (it is one enum).
    CLUSTER.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Tears the local cluster down if this process brought it up and it is not down yet
/// (`down.sh`, which keeps the daemons' logs). Safe to call any number of times.
pub fn teardown() -> Result<()> {
    let mut state = lock();
    if *state != Cluster::Up {
        return Ok(());
    }
    // No more traffic from this process: once down.sh removes the routes, the cluster's
    // addresses would lead off the machine. The pause lets a connection in flight finish.
    starling_e2e::fence::close();
    thread::sleep(std::time::Duration::from_millis(500));
    eprintln!("[e2e] tearing the local cluster down (e2e/cluster/down.sh)");
    let result = cluster::down(false);
    *state = Cluster::Down;
    result
}

/// Ctrl-C or SIGTERM during the run: tear down, then exit 130.
fn spawn_signal_teardown() -> Result<()> {
    let mut signals = Signals::new([SIGINT, SIGTERM]).context("installing signal handlers")?;
    thread::spawn(move || {
        if let Some(sig) = signals.forever().next() {
            eprintln!("[e2e] signal {sig}: tearing down before exiting");
            if let Err(e) = teardown() {
                eprintln!("[e2e] teardown failed: {e:#}");
            }
            std::process::exit(130);
        }
    });
    Ok(())
}

/// Tears down when dropped: `main` holds one so even a panic outside the cases cleans up.
pub struct TeardownGuard;

impl Drop for TeardownGuard {
    fn drop(&mut self) {
        if let Err(e) = teardown() {
            eprintln!("[e2e] teardown failed: {e:#}");
        }
    }
}

/// Runs `body` in a fresh namespace `ns`; on failure (error or panic) prints the namespace's
/// diagnostics first. The namespace is deleted afterwards either way.
pub fn in_namespace(env: &Env, ns: &str, body: impl FnOnce(&str) -> Result<()>) -> Result<()> {
    env.kubectl.fresh_namespace(ns)?;
    let result = catch_unwind(AssertUnwindSafe(|| body(ns)));
    if !matches!(result, Ok(Ok(()))) {
        eprintln!("{}", env.kubectl.diagnostics(ns));
    }
    let cleanup = env.kubectl.delete_namespace(ns, false);
    match result {
        Ok(outcome) => outcome.and(cleanup.with_context(|| format!("deleting namespace {ns}"))),
        Err(panic) => resume_unwind(panic),
    }
}
