//! The broker image for clusters that can neither pull nor `docker build`: the release binary and
//! the host's copies of its shared libraries, packed by `mkimage.py` like `broker/Dockerfile`'s.

use std::fs;
use std::os::unix::fs::chown;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::cluster::{repo_root, scripts_dir};
use crate::cmd::Cmd;

/// The tag the samples and tests use; `imagePullPolicy: IfNotPresent`/`Never` finds it once
/// loaded (here by `load-image.sh`, on kind by `kind load docker-image`).
pub const BROKER_IMAGE: &str = "starling/broker:dev";

/// The non-root user (and group) the broker runs as, as in distroless' `nonroot`.
pub const NONROOT: u32 = 65532;

/// Where the image keeps the broker's store (`STARLING_STORE__DATA_DIR`), owned by [`NONROOT`].
pub const DATA_DIR: &str = "/var/lib/starling";

const BINARY_IN_IMAGE: &str = "/usr/local/bin/starling-broker";

/// Cargo's target directory for this workspace.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(d) => repo_root().join(d),
        None => repo_root().join("target"),
    }
}

/// `cargo build --release -p starling-broker`; returns the binary's path.
pub fn build_broker_binary() -> Result<PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    Cmd::new(cargo)
        .args(["build", "--release", "-p", "starling-broker", "--manifest-path"])
        .arg(repo_root().join("Cargo.toml"))
        .timeout(Duration::from_secs(45 * 60))
        .run()
        .context("building the broker (release)")?;
    let bin = target_dir().join("release/starling-broker");
    if !bin.is_file() {
        bail!("cargo built no {}", bin.display());
    }
    Ok(bin)
}

/// Builds the release binary (or takes `$STARLING_E2E_BROKER_BIN`, a prebuilt one) and packs it
/// as `tag` into `<target>/e2e/broker-image.tar`.
pub fn build_broker_image(tag: &str) -> Result<PathBuf> {
    let binary = match std::env::var_os("STARLING_E2E_BROKER_BIN") {
        Some(bin) => PathBuf::from(bin),
        None => build_broker_binary()?,
    };
    let out = target_dir().join("e2e/broker-image.tar");
    pack_broker_image(&binary, tag, &out)?;
    Ok(out)
}

/// Packs `binary` into a docker-archive at `out`: one layer with the shared libraries `ldd`
/// names (copied from the host), `/etc/passwd` and `/etc/group` with `nonroot` (65532) and the
/// data dir owned by it; one layer with the binary (debug info stripped).
pub fn pack_broker_image(binary: &Path, tag: &str, out: &Path) -> Result<()> {
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
    let data = rootfs.join(DATA_DIR.trim_start_matches('/'));
    fs::create_dir_all(&data)?;
    chown(&data, Some(NONROOT), Some(NONROOT)).with_context(|| format!("chown {NONROOT} {}", data.display()))?;

    let stripped = work.join("starling-broker");
    let strip = Cmd::new("strip").arg("--strip-debug").arg("-o").arg(&stripped).arg(binary).finish();
    if !matches!(strip, Ok(ref f) if f.success()) {
        fs::copy(binary, &stripped).with_context(|| format!("copying {}", binary.display()))?;
    }

    if let Some(parent) = out.parent() {
        fs::create_dir_all(parent)?;
    }
    Cmd::new("python3")
        .arg(scripts_dir().join("mkimage.py"))
        .args(["--tag", tag, "--base-files", "--keep-owner", "--rootfs"])
        .arg(&rootfs)
        .arg("--file")
        .arg(format!("{}:{BINARY_IN_IMAGE}:0755", stripped.display()))
        .args(["--entrypoint", &format!("[\"{BINARY_IN_IMAGE}\"]")])
        .args(["--user", &format!("{NONROOT}:{NONROOT}")])
        .args(["--env", &format!("STARLING_STORE__DATA_DIR={DATA_DIR}")])
        .args(["--workdir", DATA_DIR])
        .args(["--expose", "1883", "--expose", "8083", "--expose", "8081"])
        .args(["--label", "org.opencontainers.image.title=starling-broker"])
        .arg("-o")
        .arg(out)
        .timeout(Duration::from_secs(300))
        .run()
        .context("packing the broker image (mkimage.py)")?;
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

    #[test]
    fn the_samples_use_the_image_the_harness_builds() {
        let sample = fs::read_to_string(crate::cluster::e2e_dir().join(crate::demo::SAMPLE)).unwrap();
        assert!(sample.contains(&format!("image: {BROKER_IMAGE}")), "{} must use {BROKER_IMAGE}", crate::demo::SAMPLE);
    }
}
