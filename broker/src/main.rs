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
        None => {}
    }
    let mut config = Config::load(cli.config.as_deref())?;
    if let Some(n) = cli.node_name {
        config.node.name = n;
    }
    if let Some(a) = cli.mqtt_bind {
        config.listeners.tcp.bind = a;
    }
    if let Some(a) = cli.ws_bind {
        config.listeners.ws.bind = a;
    }
    if let Some(d) = cli.data_dir {
        config.store.data_dir = d;
    }
    if let Some(l) = cli.log_level {
        config.log.level = l;
    }
    init_logging(&config);
    tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(run(config))
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

async fn run(config: Config) -> anyhow::Result<()> {
    tracing::info!(node = %config.node.name, version = env!("CARGO_PKG_VERSION"), "starting");
    let broker = Broker::open(config).context("opening the broker")?;
    let server = Server::start(broker).await.context("starting listeners")?;
    wait_for_signal().await;
    server.stop().await;
    Ok(())
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
