//! `helm` against one kubeconfig: installs and removes the Starling chart (`charts/starling`)
//! the way a user does, with the images the harness loaded.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};

use crate::cmd::Cmd;

/// helm bound to a kubeconfig.
#[derive(Debug, Clone)]
pub struct Helm {
    bin: PathBuf,
    kubeconfig: PathBuf,
}

impl Helm {
    pub fn new(bin: impl Into<PathBuf>, kubeconfig: impl Into<PathBuf>) -> Helm {
        Helm { bin: bin.into(), kubeconfig: kubeconfig.into() }
    }

    fn cmd<I, S>(&self, args: I) -> Cmd
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        Cmd::new(&self.bin).arg("--kubeconfig").arg(&self.kubeconfig).args(args)
    }

    /// `helm upgrade --install RELEASE CHART -n NAMESPACE --create-namespace --set K=V... --wait`:
    /// installs or updates the release and waits (up to `timeout`) until its Deployment is Ready.
    pub fn upgrade_install(
        &self,
        release: &str,
        chart: &Path,
        namespace: &str,
        values: &[(&str, &str)],
        timeout: Duration,
    ) -> Result<()> {
        let mut cmd = self.cmd(["upgrade", "--install", release]).arg(chart).args([
            "--namespace",
            namespace,
            "--create-namespace",
            "--wait",
            &format!("--timeout={}s", timeout.as_secs()),
        ]);
        for (k, v) in values {
            cmd = cmd.arg("--set").arg(format!("{k}={v}"));
        }
        cmd.timeout(timeout + Duration::from_secs(30))
            .output()
            .map(drop)
            .with_context(|| format!("helm upgrade --install {release} in namespace {namespace}"))
    }

    /// `helm uninstall RELEASE -n NAMESPACE --ignore-not-found --wait` (the CRDs stay, as helm
    /// never deletes them).
    pub fn uninstall(&self, release: &str, namespace: &str) -> Result<()> {
        self.cmd(["uninstall", release, "--namespace", namespace, "--ignore-not-found", "--wait", "--timeout=120s"])
            .timeout(Duration::from_secs(150))
            .output()
            .map(drop)
            .with_context(|| format!("helm uninstall {release} in namespace {namespace}"))
    }
}
