//! The broker and operator images for clusters that can neither pull nor `docker build`: each
//! release binary and the host's copies of its shared libraries, packed by `mkimage.py` like the
//! Dockerfiles' images (same path, user, entrypoint, environment, ports).

use std::fs;
use std::os::unix::fs::chown;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::cluster::{repo_root, scripts_dir};
use crate::cmd::Cmd;

/// The broker's tag the samples and tests use; `imagePullPolicy: IfNotPresent`/`Never` finds it
/// once loaded (here by `load-image.sh`, on kind by `kind load docker-image`).
pub const BROKER_IMAGE: &str = "starling/broker:dev";
/// The operator's tag the chart is installed with.
pub const OPERATOR_IMAGE: &str = "starling/operator:dev";

/// The non-root user (and group) both images run as, as in distroless' `nonroot`.
pub const NONROOT: u32 = 65532;

/// Where the broker image keeps the store (`STARLING_STORE__DATA_DIR`), owned by [`NONROOT`].
pub const DATA_DIR: &str = "/var/lib/starling";

/// One of the two images: what `broker/Dockerfile` or `operator/Dockerfile` would build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Component {
    Broker,
    Operator,
}

impl Component {
    /// The cargo package, which is also the binary's name.
    pub fn package(self) -> &'static str {
        match self {
            Component::Broker => "starling-broker",
            Component::Operator => "starling-operator",
        }
    }

    /// The tag the harness loads it as.
    pub fn default_tag(self) -> &'static str {
        match self {
            Component::Broker => BROKER_IMAGE,
            Component::Operator => OPERATOR_IMAGE,
        }
    }

    /// `$STARLING_E2E_BROKER_BIN` / `$STARLING_E2E_OPERATOR_BIN`: a prebuilt binary to pack.
    fn prebuilt_var(self) -> &'static str {
        match self {
            Component::Broker => "STARLING_E2E_BROKER_BIN",
            Component::Operator => "STARLING_E2E_OPERATOR_BIN",
        }
    }

    fn binary_in_image(self) -> String {
        format!("/usr/local/bin/{}", self.package())
    }
}

/// Cargo's target directory for this workspace.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) => repo_root().join(d),
        None => repo_root().join("target"),
    }
}

/// The release binaries of `components`: the `$STARLING_E2E_*_BIN` ones as given, the others
/// built by one `cargo build --release -p ... -p ...`.
pub fn release_binaries(components: &[Component]) -> Result<Vec<PathBuf>> {
    let to_build: Vec<Component> =
        components.iter().copied().filter(|c| std::env::var_os(c.prebuilt_var()).is_none()).collect();
    if !to_build.is_empty() {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        // Under `cargo test`/`cargo run` the variables cargo sets for the running crate leak
        // in; ring's build script reruns when CARGO_MANIFEST_DIR changes, which would rebuild
        // half the release tree each time the harness and a plain `cargo build` alternate.
        let mut cmd = Cmd::new(cargo).args(["build", "--release"]);
        for (key, _) in std::env::vars_os() {
            let k = key.to_string_lossy();
            if ["CARGO_MANIFEST_", "CARGO_PKG_", "CARGO_CRATE_", "CARGO_BIN_", "CARGO_PRIMARY_PACKAGE"]
                .iter()
                .any(|p| k.starts_with(p))
            {
                cmd = cmd.env_remove(&key);
            }
        }
        for c in &to_build {
            cmd = cmd.args(["-p", c.package()]);
        }
        cmd.arg("--manifest-path")
            .arg(repo_root().join("Cargo.toml"))
            .timeout(Duration::from_secs(60 * 60))
            .run()
            .context("building the release binaries")?;
    }
    components
        .iter()
        .map(|c| {
            let bin = match std::env::var_os(c.prebuilt_var()) {
                Some(bin) => PathBuf::from(bin),
                None => target_dir().join("release").join(c.package()),
            };
            if !bin.is_file() {
                bail!("no {} binary at {}", c.package(), bin.display());
            }
            Ok(bin)
        })
        .collect()
}

/// Builds (or takes prebuilt) release binaries and packs each component as its tag (`tags`,
/// default [`Component::default_tag`]) into `<target>/e2e/<package>-image.tar`; returns the
/// tarballs in the order given.
pub fn build_images(images: &[(Component, &str)]) -> Result<Vec<PathBuf>> {
    let components: Vec<Component> = images.iter().map(|(c, _)| *c).collect();
    let binaries = release_binaries(&components)?;
    images
        .iter()
        .zip(binaries)
        .map(|((component, tag), binary)| {
            let out = target_dir().join(format!("e2e/{}-image.tar", component.package()));
            pack_image(*component, &binary, tag, &out)?;
            Ok(out)
        })
        .collect()
}

/// Packs `binary` into a docker-archive at `out`: one layer with the shared libraries `ldd`
/// names (copied from the host), `/etc/passwd` and `/etc/group` with `nonroot` (65532) and, for
/// the broker, the data dir owned by it; one layer with the binary (debug info stripped).
pub fn pack_image(component: Component, binary: &Path, tag: &str, out: &Path) -> Result<()> {
    let work = out.with_extension("d");
    if work.exists() {
        fs::remove_dir_all(&work).with_context(|| format!("removing {}", work.display()))?;
    }
    let rootfs = work.join("rootfs");
    fs::create_dir_all(&rootfs)?;
    for lib in shared_libraries(binary)? {
        let dest = rootfs.join(lib.strip_prefix("/").unwrap_or(&lib));
        if let Some(parent) = dest.parent() {
            fs::create_dir_all(parent)?;
        }
        // Copies the file the (possibly symlinked) path resolves to, under the path the loader
        // looks for, so the image needs none of the host's symlinks.
        fs::copy(&lib, &dest).with_context(|| format!("copying {}", lib.display()))?;
    }

    let stripped = work.join(component.package());
    let strip = Cmd::new("strip").arg("--strip-debug").arg("-o").arg(&stripped).arg(binary).finish();
    if !matches!(strip, Ok(ref f) if f.success()) {
        fs::copy(binary, &stripped).with_context(|| format!("copying {}", binary.display()))?;
    }
    if let Some(parent) = out.parent() {
        fs::create_dir_all(parent)?;
    }
    let in_image = component.binary_in_image();
    let mut cmd = Cmd::new("python3")
        .arg(scripts_dir().join("mkimage.py"))
        .args(["--tag", tag, "--base-files", "--keep-owner", "--rootfs"])
        .arg(&rootfs)
        .arg("--file")
        .arg(format!("{}:{in_image}:0755", stripped.display()))
        .args(["--entrypoint", &format!("[\"{in_image}\"]")])
        .args(["--user", &format!("{NONROOT}:{NONROOT}")])
        .args(["--label", &format!("org.opencontainers.image.title={}", component.package())]);
    cmd = match component {
        Component::Broker => {
            let data = rootfs.join(DATA_DIR.trim_start_matches('/'));
            fs::create_dir_all(&data)?;
            chown(&data, Some(NONROOT), Some(NONROOT))
                .with_context(|| format!("chown {NONROOT} {}", data.display()))?;
            cmd.args(["--env", &format!("STARLING_STORE__DATA_DIR={DATA_DIR}")])
                .args(["--workdir", DATA_DIR])
                .args(["--expose", "1883", "--expose", "8083", "--expose", "8081"])
        }
        Component::Operator => cmd.args(["--cmd", "[\"run\"]", "--workdir", "/", "--expose", "8080"]),
    };
    cmd.arg("-o")
        .arg(out)
        .timeout(Duration::from_secs(300))
        .run()
        .with_context(|| format!("packing the {} image (mkimage.py)", component.package()))?;
    fs::remove_dir_all(&work).ok();
    Ok(())
}

/// The shared libraries (and the ELF interpreter) `ldd` says `binary` loads, as the paths the
/// loader uses; empty for a static binary.
fn shared_libraries(binary: &Path) -> Result<Vec<PathBuf>> {
    let f = Cmd::new("ldd").arg(binary).finish()?;
    if !f.success() {
        if f.stdout.contains("not a dynamic executable") || f.stderr.contains("not a dynamic executable") {
            return Ok(Vec::new());
        }
        bail!("ldd {} failed: {}", binary.display(), f.stderr.trim());
    }
    Ok(parse_ldd(&f.stdout))
}

/// `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x..)` and `/lib64/ld-linux-x86-64.so.2 (0x..)`
/// give their paths; `linux-vdso.so.1 (0x..)` (no file) gives none.
fn parse_ldd(out: &str) -> Vec<PathBuf> {
    out.lines()
        .filter_map(|line| {
            let line = line.trim();
            let path = match line.split_once("=>") {
                Some((_, rest)) => rest.split_whitespace().next()?,
                None => line.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ldd_output_gives_library_paths() {
        let out = "\tlinux-vdso.so.1 (0x00007ffd)\n\
                   \tlibgcc_s.so.1 => /lib/x86_64-linux-gnu/libgcc_s.so.1 (0x00007f94)\n\
                   \tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f94)\n\
                   \t/lib64/ld-linux-x86-64.so.2 (0x00007f94)\n";
        let got = parse_ldd(out);
        let want: Vec<PathBuf> =
            ["/lib/x86_64-linux-gnu/libgcc_s.so.1", "/lib/x86_64-linux-gnu/libc.so.6", "/lib64/ld-linux-x86-64.so.2"]
                .into_iter()
                .map(PathBuf::from)
                .collect();
        assert_eq!(got, want);
    }
}
