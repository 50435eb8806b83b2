//! `starling-broker`: runs a node with embedded defaults, a TOML file, `STARLING_*` variables
//! and flags; `hash-password` prints an argon2 hash for the credentials file.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use starling_broker::Broker;
use starling_broker::config::{Config, LogFormat};
use starling_broker::server::Server;

#[derive(Parser)]
#[command(name = "starling-broker", version, about = "Starling MQTT 3.1.1/5.0 broker")]
struct Cli {
    /// TOML configuration file.
    #[arg(long, short, env = "STARLING_CONFIG")]
    config: Option<PathBuf>,
    /// Node name (default: $HOSTNAME).
    #[arg(long)]
    node_name: Option<String>,
    /// MQTT over TCP bind address.
    #[arg(long)]
    mqtt_bind: Option<SocketAddr>,
    /// MQTT over WebSocket bind address.
    #[arg(long)]
    ws_bind: Option<SocketAddr>,
    /// Data directory of the embedded store.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Management API bind address.
    #[arg(long)]
    admin_bind: Option<SocketAddr>,
    /// Log filter, e.g. `info` or `starling_broker=debug`.
    #[arg(long)]
    log_level: Option<String>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Print an argon2id hash of a password (read from stdin when not given).
    HashPassword { password: Option<String> },
    /// Print the embedded default configuration as TOML.
    DefaultConfig,
    /// Print the management API's OpenAPI document (as checked in at broker/openapi.json).
    Openapi,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::HashPassword { password }) => {
            let password = match password {
                Some(p) => p,
                None => {
                    let mut s = String::new();
                    std::io::stdin().read_line(&mut s)?;
                    s.trim_end_matches(['\r', '\n']).to_string()
                }
            };
            println!("{}", starling_broker::auth::hash_password(&password)?);
            return Ok(());
        }
        Some(Command::DefaultConfig) => {
            print!("{}", toml::to_string_pretty(&Config::default())?);
            return Ok(());
        }
        Some(Command::Openapi) => {
            print!("{}", starling_broker::admin::openapi_document());
            return Ok(());
        }
        None => {}
    }
    let config = load_config(&cli)?;
    init_logging(&config);
    tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(run(&cli, config))
}

/// The config file, then `STARLING_*` variables, then flags.
fn load_config(cli: &Cli) -> anyhow::Result<Config> {
    let mut config = Config::load(cli.config.as_deref())?;
    if let Some(n) = &cli.node_name {
        config.node.name = n.clone();
    }
    if let Some(a) = cli.mqtt_bind {
        config.listeners.tcp.bind = a;
    }
    if let Some(a) = cli.ws_bind {
        config.listeners.ws.bind = a;
    }
    if let Some(a) = cli.admin_bind {
        config.admin.bind = a;
    }
    if let Some(d) = &cli.data_dir {
        config.store.data_dir = d.clone();
    }
    if let Some(l) = &cli.log_level {
        config.log.level = l.clone();
    }
    Ok(config)
}

fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log.level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi);
    match config.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

/// Runs the node until a signal or `POST /api/v1/ctrl/stop`; `ctrl/restart` starts it again
/// with the config file read anew.
async fn run(cli: &Cli, mut config: Config) -> anyhow::Result<()> {
    let signal = wait_for_signal();
    tokio::pin!(signal);
    let (mut restarted, mut attempts) = (false, 0);
    loop {
        tracing::info!(node = %config.node.name, version = env!("CARGO_PKG_VERSION"), "starting");
        let broker = Broker::open(config.clone()).context("opening the broker")?;
        let server = match Server::start(broker.clone()).await {
            Ok(s) => s,
            // After an in-process restart a port may still be held for a moment: retry briefly.
            Err(e) if restarted && attempts < 20 => {
                attempts += 1;
                tracing::warn!(error = %e, attempt = attempts, "restart: listeners not ready; retrying");
                broker.shutdown.cancel();
                broker.store.close();
                drop(broker);
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                continue;
            }
            Err(e) => return Err(e).context("starting listeners"),
        };
        attempts = 0;
        let by_signal = tokio::select! {
            _ = &mut signal => true,
            _ = broker.shutdown.cancelled() => false,
        };
        server.stop().await;
        if by_signal || !broker.restart_requested.load(std::sync::atomic::Ordering::Relaxed) {
            return Ok(());
        }
        drop(broker);
        tracing::info!("restarting");
        config = load_config(cli)?;
        restarted = true;
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        tracing::error!("cannot install signal handlers; stopping");
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM"),
        _ = int.recv() => tracing::info!("SIGINT"),
    }
}
