//! `down` leaves nothing behind: after `down.sh` (run here, last) no netns, veth, routes, processes
//! of the state dir, mounts under it or cgroups remain. Sends no traffic: the routes are gone.

use std::fs;
use std::path::Path;

use anyhow::{Result, bail};
use starling_e2e::cluster::Layout;
use starling_e2e::cmd::Cmd;

use crate::harness::{self, Env};

pub fn down_leaves_nothing_behind(layout: &Layout) -> Result<()> {
    harness::teardown()?;
    let mut left = Vec::new();
    if Path::new("/run/netns").join(&layout.netns).exists() {
        left.push(format!("network namespace {}", layout.netns));
    }
    if Cmd::new("ip").args(["link", "show", &layout.host_veth]).finish()?.success() {
        left.push(format!("veth {}", layout.host_veth));
    }
    for cidr in [&layout.pod_cidr, &layout.service_cidr] {
        let routes = Cmd::new("ip").args(["route", "show", cidr]).output()?;
        if !routes.trim().is_empty() {
            left.push(format!("host route {}", routes.trim()));
        }
    }
    let state = format!("{}/", layout.state.display());
    for entry in fs::read_dir("/proc")?.flatten() {
        let pid = entry.file_name().to_string_lossy().into_owned();
        if !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(cmdline) = fs::read(entry.path().join("cmdline")) else { continue };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        let zombie = fs::read_to_string(entry.path().join("stat"))
            .map(|s| s.rsplit_once(") ").is_some_and(|(_, rest)| rest.starts_with('Z')))
            .unwrap_or(false);
        if cmdline.contains(&state) && !zombie {
            left.push(format!("process {pid}: {}", cmdline.trim()));
        }
    }
    let mountinfo = fs::read_to_string("/proc/self/mountinfo")?;
    let base = layout.state.display().to_string();
    for line in mountinfo.lines() {
        if let Some(mount_point) = line.split(' ').nth(4)
            && (mount_point == base || mount_point.starts_with(&state))
        {
            left.push(format!("mount {mount_point}"));
        }
    }
    for hierarchy in fs::read_dir("/sys/fs/cgroup")?.flatten() {
        let dir = hierarchy.path().join(layout.cgroup_root.trim_start_matches('/'));
        if dir.exists() {
            left.push(format!("cgroup {}", dir.display()));
        }
    }
    if !left.is_empty() {
        bail!("down.sh left behind:\n  {}", left.join("\n  "));
    }
    eprintln!("[e2e]   nothing left: netns, veth, routes, processes, mounts and cgroups are gone");
    Ok(())
}

/// The case's entry: only a cluster this process brought up is torn down and checked.
pub fn run(env: &Env) -> Result<Option<()>> {
    match &env.local {
        Some(layout) => down_leaves_nothing_behind(layout).map(Some),
        None => Ok(None),
    }
}
