//! `cargo run -p e2e -- up|down|image`: the local Kubernetes demo of Starling (cluster, images,
//! chart, quickstart BrokerCluster, Rule and Bridge) in the foreground until Ctrl-C, its cleanup,
//! and the images.

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use clap::{Parser, Subcommand};
use signal_hook::consts::{SIGINT, SIGTERM};
use starling_e2e::helm::Helm;
use starling_e2e::image::{BROKER_IMAGE, Component, OPERATOR_IMAGE};
use starling_e2e::kubectl::Kubectl;
use starling_e2e::remote::{Mosquitto, REMOTE_PORT};
use starling_e2e::{cluster, demo, image};

#[derive(Parser)]
#[command(
    name = "e2e",
    about = "Starling on a local single-node Kubernetes (run as root)",
    after_help = "Environment: STARLING_E2E_BROKER_BIN=PATH and STARLING_E2E_OPERATOR_BIN=PATH pack those \
                  binaries instead of building target/release/starling-{broker,operator}; the STARLING_* variables of e2e/cluster/common.sh set the \
                  cluster's name, state dir and addresses."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Install the cluster's binaries (cached), bring the cluster up, build and load the broker
    /// and operator images, `helm install` the chart, apply samples/quickstart.yaml (3 brokers
    /// and a Rule), bridge the alerts to a Mosquitto on this host, and stay until Ctrl-C
    /// (SIGINT/SIGTERM); then tear it all down.
    Up {
        /// Skip `e2e/cluster/install.sh` (when you know everything is installed).
        #[arg(long)]
        skip_install: bool,
        /// Seconds to wait for the brokers to become Ready.
        #[arg(long, default_value_t = 300)]
        ready_timeout: u64,
    },
    /// Tear down a cluster left behind (idempotent): processes, mounts, cgroups, netns, veth.
    Down {
        /// Also remove the state dir with the daemons' logs.
        #[arg(long)]
        purge: bool,
    },
    /// Build the broker and operator image tarballs from the release binaries (mkimage.py) and
    /// print their paths.
    Image {
        #[arg(long, default_value = BROKER_IMAGE)]
        broker_tag: String,
        #[arg(long, default_value = OPERATOR_IMAGE)]
        operator_tag: String,
    },
}

fn main() -> ExitCode {
    match run(Cli::parse().command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("[e2e] error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> Result<()> {
    match command {
        Command::Up { skip_install, ready_timeout } => up(skip_install, Duration::from_secs(ready_timeout)),
        Command::Down { purge } => cluster::down(purge),
        Command::Image { broker_tag, operator_tag } => {
            for tar in image::build_images(&[(Component::Broker, &broker_tag), (Component::Operator, &operator_tag)])? {
                println!("{}", tar.display());
            }
            Ok(())
        }
    }
}

fn up(skip_install: bool, ready_timeout: Duration) -> Result<()> {
    // From here on SIGINT/SIGTERM only set the flag: the demo ends, and always tears down.
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [SIGINT, SIGTERM] {
        signal_hook::flag::register(sig, Arc::clone(&stop))?;
    }
    let started = Instant::now();
    let result = bring_up(skip_install, ready_timeout, &stop);
    match &result {
        Ok((usage, _remote)) => {
            println!("{usage}");
            eprintln!("[e2e] demo up in {}s; waiting for Ctrl-C", started.elapsed().as_secs());
            while !stop.load(Ordering::SeqCst) {
                thread::sleep(Duration::from_millis(200));
            }
            eprintln!("[e2e] stopping");
        }
        Err(e) => eprintln!("[e2e] up failed: {e:#}\n[e2e] the daemons' logs stay in the cluster's state dir (logs/)"),
    }
    eprintln!("[e2e] tearing the cluster down (e2e/cluster/down.sh)");
    let down = cluster::down(false);
    result.map(drop).and(down)
}

/// Everything up to a Ready demo; returns the usage text and the Bridge's remote broker (which
/// runs until dropped). Checks for Ctrl-C between steps.
fn bring_up(skip_install: bool, ready_timeout: Duration, stop: &AtomicBool) -> Result<(String, Mosquitto)> {
    let step = |what: &str| -> Result<()> {
        if stop.load(Ordering::SeqCst) {
            bail!("interrupted before {what}");
        }
        eprintln!("[e2e] {what}");
        Ok(())
    };
    if !skip_install {
        step("installing the cluster's binaries (e2e/cluster/install.sh; cached after the first run)")?;
        cluster::install()?;
    }
    step("bringing the cluster up (e2e/cluster/up.sh)")?;
    let kubeconfig = cluster::up()?;
    let layout = cluster::Layout::load()?;
    let k = Kubectl::new(layout.kubectl_bin(), &kubeconfig);
    let helm = Helm::new(layout.helm_bin(), &kubeconfig);
    step("building the broker and operator images (release binaries, mkimage.py)")?;
    let tars = image::build_images(&[(Component::Broker, BROKER_IMAGE), (Component::Operator, OPERATOR_IMAGE)])?;
    step("loading the images into the cluster (e2e/cluster/load-image.sh)")?;
    for tar in &tars {
        cluster::load_image(tar)?;
    }
    step(&format!(
        "helm install of charts/starling (the operator, in {}), then {}",
        demo::OPERATOR_NAMESPACE,
        demo::SAMPLE
    ))?;
    demo::install(&k, &helm)?;
    step("waiting until the operator makes BrokerCluster demo Ready")?;
    let endpoints = demo::wait_ready(&k, ready_timeout)?;
    demo::wait_synced(&k, &format!("rules.starling.dev/{}", demo::RULE), Duration::from_secs(60))?;
    step(&format!("starting Mosquitto on {}:{REMOTE_PORT} and bridging the alerts to it", layout.host_ip))?;
    let remote = Mosquitto::start(&layout.host_ip, REMOTE_PORT)?;
    demo::apply_bridge(&k, &remote.url())?;
    demo::wait_synced(&k, &format!("bridges.starling.dev/{}", demo::BRIDGE), Duration::from_secs(60))?;
    step("demo ready")?;
    let usage = demo::usage(&k, &endpoints, Some(&layout.dns_svc_ip), Some((&layout.host_ip, REMOTE_PORT)));
    Ok((usage, remote))
}
