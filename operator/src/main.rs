//! `starling-operator`: runs the operator (`run`, the default) or prints the CustomResource-
//! Definitions it serves (`crd`, also how `charts/starling/crds/` is written).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use starling_operator::controllers::broker_cluster::ImageDefaults;
use starling_operator::operator::{self, RunConfig};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(name = "starling-operator", version, about = "Kubernetes operator for Starling MQTT broker clusters")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    run: RunArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Run the operator (the default).
    Run(RunArgs),
    /// Print every CRD as YAML (documents separated by `---`), or write one file per CRD.
    Crd {
        /// Write `<plural>.<group>.yaml` files into this directory instead of printing.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Args, Clone)]
struct RunArgs {
    /// Namespaces to watch (repeat or comma-separate); all namespaces when none.
    #[arg(long = "namespace", env = "STARLING_OPERATOR_NAMESPACES", value_delimiter = ',')]
    namespaces: Vec<String>,
    /// Address of `/metrics`, `/healthz` and `/readyz`.
    #[arg(long, env = "STARLING_OPERATOR_HTTP_ADDR", default_value = "0.0.0.0:8080")]
    http_addr: SocketAddr,
    /// Reconcile without taking the leader Lease (a single replica only).
    #[arg(long, env = "STARLING_OPERATOR_NO_LEADER_ELECTION")]
    no_leader_election: bool,
    /// Name of the leader-election Lease.
    #[arg(long, env = "STARLING_OPERATOR_LEASE_NAME", default_value = "starling-operator")]
    lease_name: String,
    /// Namespace of the Lease (default: the operator pod's namespace, `POD_NAMESPACE`).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    lease_namespace: String,
    /// This replica's identity in the Lease and Events (default: `POD_NAME`, else the hostname).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// Image repository for clusters whose spec names no image.
    #[arg(long, env = "STARLING_OPERATOR_BROKER_REPOSITORY", default_value = "starling/broker")]
    broker_repository: String,
    /// Image tag for clusters whose spec names neither image nor version.
    #[arg(long, env = "STARLING_OPERATOR_BROKER_VERSION", default_value = env!("CARGO_PKG_VERSION"))]
    broker_version: String,
    /// Reconciles running at once.
    #[arg(long, env = "STARLING_OPERATOR_CONCURRENCY", default_value_t = 4)]
    concurrency: u16,
    /// Log filter, e.g. `info` or `starling_operator=debug,kube=info` (`RUST_LOG` wins when set).
    #[arg(long, env = "STARLING_OPERATOR_LOG_LEVEL", default_value = "info")]
    log_level: String,
    /// Log format.
    #[arg(long, env = "STARLING_OPERATOR_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(Command::Crd { out }) => print_crds(out),
        Some(Command::Run(args)) => run(args),
        None => run(cli.run),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("starling-operator: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn print_crds(out: Option<PathBuf>) -> Result<()> {
    let files = starling_operator::crd::files().context("serializing the CRDs")?;
    match out {
        Some(dir) => {
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            for (name, yaml) in files {
                let path = dir.join(name);
                std::fs::write(&path, yaml).with_context(|| format!("writing {}", path.display()))?;
                println!("wrote {}", path.display());
            }
        }
        None => {
            let docs: Vec<String> = files.into_iter().map(|(_, yaml)| yaml).collect();
            print!("{}", docs.join("---\n"));
        }
    }
    Ok(())
}

fn run(args: RunArgs) -> Result<()> {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&args.log_level))
        .context("--log-level is not a valid filter")?;
    // Colours only on a terminal: a container's log (`kubectl logs`) gets plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi);
    match args.log_format {
        LogFormat::Json => logs.json().flatten_event(true).with_current_span(false).init(),
        LogFormat::Text => logs.init(),
    }
    let identity = args
        .identity
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| format!("starling-operator-{}", std::process::id()));
    let cfg = RunConfig {
        namespaces: args.namespaces.into_iter().filter(|n| !n.is_empty()).collect(),
        http_addr: args.http_addr,
        leader_election: !args.no_leader_election,
        lease_name: args.lease_name,
        lease_namespace: args.lease_namespace,
        identity,
        images: ImageDefaults { repository: args.broker_repository, version: args.broker_version },
        concurrency: args.concurrency.max(1),
    };
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async move {
        tracing::info!(version = env!("CARGO_PKG_VERSION"), "starting starling-operator");
        operator::run(cfg, shutdown_signal()).await.context("operator")
    })
}

/// SIGTERM (Kubernetes stopping the pod) or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; Ctrl-C only");
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutting down");
}
