//! Broker configuration: every setting with its embedded default, loaded from a TOML file,
//! `STARLING_*` environment variables and command-line flags, in that order of precedence.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

/// The whole broker configuration. Unknown keys are rejected so typos do not pass silently.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub node: NodeConfig,
    pub listeners: ListenersConfig,
    pub auth: AuthConfig,
    pub tenancy: TenancyConfig,
    pub limits: Limits,
    pub store: StoreConfig,
    pub sys: SysConfig,
    pub log: LogConfig,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    /// Stable node name (the StatefulSet pod name on Kubernetes); used in `$SYS` topics.
    pub name: String,
}

impl Default for NodeConfig {
    fn default() -> Self {
        let name = std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()).unwrap_or_else(|| "starling-1".to_string());
        Self { name }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ListenersConfig {
    pub tcp: TcpListenerConfig,
    pub ws: WsListenerConfig,
    pub tls: TlsListenerConfig,
}

impl Default for ListenersConfig {
    fn default() -> Self {
        Self {
            tcp: TcpListenerConfig { enabled: true, bind: ([0, 0, 0, 0], 1883).into() },
            ws: WsListenerConfig { enabled: true, bind: ([0, 0, 0, 0], 8083).into(), path: "/mqtt".to_string() },
            tls: TlsListenerConfig::default(),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TcpListenerConfig {
    pub enabled: bool,
    pub bind: SocketAddr,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WsListenerConfig {
    pub enabled: bool,
    pub bind: SocketAddr,
    /// HTTP path of the WebSocket endpoint.
    pub path: String,
}

/// MQTT over TLS (rustls). Certificates and keys are PEM files.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TlsListenerConfig {
    pub enabled: bool,
    pub bind: SocketAddr,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// CA bundle used to verify client certificates; client certificates are only asked for when set.
    pub ca_file: Option<PathBuf>,
    /// With `ca_file`: refuse clients that present no certificate (mutual TLS).
    pub require_client_cert: bool,
}

impl Default for TlsListenerConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            bind: ([0, 0, 0, 0], 8883).into(),
            cert_file: PathBuf::from("server.crt"),
            key_file: PathBuf::from("server.key"),
            ca_file: None,
            require_client_cert: false,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Let clients connect without a username. Hot-reloadable.
    pub allow_anonymous: bool,
    /// TOML file of `[[users]]` with `username`, `password_hash` (argon2 PHC or bcrypt) and optional `tenant`.
    pub credentials_file: Option<PathBuf>,
    /// Accept `password = "..."` entries in plain text. Off unless explicitly enabled.
    pub allow_plaintext_passwords: bool,
    /// With TLS client certificates: use the certificate's Common Name as the username.
    pub use_identity_as_username: bool,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            allow_anonymous: true,
            credentials_file: None,
            allow_plaintext_passwords: false,
            use_identity_as_username: false,
        }
    }
}

/// How a connection's tenant is derived. Tenants never see each other's topics, retained
/// messages or sessions.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TenancyConfig {
    pub default_tenant: String,
    pub rule: TenantRule,
    /// Separator for `username_prefix`: `acme/alice` is user `acme/alice` in tenant `acme`.
    pub separator: String,
}

impl Default for TenancyConfig {
    fn default() -> Self {
        Self { default_tenant: "global".into(), rule: TenantRule::Fixed, separator: "/".into() }
    }
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum TenantRule {
    /// Every connection is in the default tenant (unless its credentials entry names one).
    Fixed,
    /// The part of the username before the separator.
    UsernamePrefix,
    /// The Organization (O) of the client certificate.
    CertOrganization,
    /// The Common Name (CN) of the client certificate.
    CertCommonName,
}

/// Limits of the core. All of them are hot-reloadable; each is logged when hit.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Concurrent client connections; further CONNECTs get Quota Exceeded / Server Unavailable.
    pub max_connections: usize,
    /// Largest MQTT packet accepted (and advertised as v5 Maximum Packet Size), in bytes.
    pub max_packet_size: u32,
    /// Our v5 Receive Maximum: unacknowledged QoS 1/2 PUBLISHes a client may have in flight to us.
    pub receive_maximum: u16,
    /// Outbound inflight window per client; a v5 client's smaller Receive Maximum wins.
    pub max_inflight: u16,
    /// Messages queued per session beyond the inflight window; overflow is dropped and counted.
    pub max_queued_messages: usize,
    /// Subscriptions per client, 0 for no limit.
    pub max_subscriptions_per_client: usize,
    /// Levels in a topic name or filter.
    pub max_topic_levels: usize,
    /// Topic Alias Maximum offered to v5 clients (0 disables inbound aliases).
    pub max_topic_alias: u16,
    /// Largest keep-alive granted; a larger or zero request gets this as v5 Server Keep Alive.
    pub max_keepalive: u16,
    /// A connection silent for this many keep-alive periods is closed.
    pub keepalive_multiplier: f32,
    /// Cap on the v5 Session Expiry Interval, in seconds.
    pub max_session_expiry: u32,
    /// Longest client identifier accepted.
    pub max_client_id_len: usize,
    /// Seconds a new connection has to send CONNECT.
    pub connect_timeout_secs: u64,
    /// Retained messages per tenant, 0 for no limit.
    pub max_retained_messages: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 1_000_000,
            max_packet_size: 1024 * 1024,
            receive_maximum: 128,
            max_inflight: 64,
            max_queued_messages: 1000,
            max_subscriptions_per_client: 0,
            max_topic_levels: 64,
            max_topic_alias: 64,
            max_keepalive: 65535,
            keepalive_multiplier: 1.5,
            max_session_expiry: u32::MAX,
            max_client_id_len: 256,
            connect_timeout_secs: 10,
            max_retained_messages: 0,
        }
    }
}

impl Limits {
    /// Checks the values a person may get wrong; the message names the field.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_packet_size < 64 {
            return Err("limits.max_packet_size must be at least 64".into());
        }
        if self.receive_maximum == 0 {
            return Err("limits.receive_maximum must be at least 1".into());
        }
        if self.max_inflight == 0 {
            return Err("limits.max_inflight must be at least 1".into());
        }
        if self.max_topic_levels == 0 {
            return Err("limits.max_topic_levels must be at least 1".into());
        }
        if !(self.keepalive_multiplier >= 1.0 && self.keepalive_multiplier <= 10.0) {
            return Err("limits.keepalive_multiplier must be between 1.0 and 10.0".into());
        }
        if self.max_client_id_len < 23 {
            return Err("limits.max_client_id_len must be at least 23 (the MQTT minimum)".into());
        }
        Ok(())
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// Directory of the embedded store (retained messages, persistent sessions).
    pub data_dir: PathBuf,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self { data_dir: PathBuf::from("data") }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SysConfig {
    /// Seconds between `$SYS/brokers/{node}/...` updates; 0 turns them off.
    pub interval_secs: u64,
}

impl Default for SysConfig {
    fn default() -> Self {
        Self { interval_secs: 10 }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// A `tracing` filter such as `info` or `starling_broker=debug`.
    pub level: String,
    pub format: LogFormat,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { level: "info".into(), format: LogFormat::Text }
    }
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Parse(#[from] Box<figment::Error>),
    #[error("configuration: {0}")]
    Invalid(String),
}

impl Config {
    /// Embedded defaults, then the TOML file (if any), then `STARLING_SECTION__KEY` variables.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            if !path.exists() {
                return Err(ConfigError::Invalid(format!("config file {} does not exist", path.display())));
            }
            figment = figment.merge(Toml::file(path));
        }
        figment = figment.merge(Env::prefixed("STARLING_").split("__"));
        let config: Config = figment.extract().map_err(Box::new)?;
        config.limits.validate().map_err(ConfigError::Invalid)?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_overrides_defaults_and_rejects_unknown_keys() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("b.toml");
        std::fs::write(&path, "[limits]\nmax_packet_size = 2048\n").unwrap();
        let c = Config::load(Some(&path)).unwrap();
        assert_eq!(c.limits.max_packet_size, 2048);
        assert_eq!(c.limits.max_inflight, Limits::default().max_inflight);

        std::fs::write(&path, "[limits]\nmax_pakcet_size = 2048\n").unwrap();
        let err = Config::load(Some(&path)).unwrap_err().to_string();
        assert!(err.contains("max_pakcet_size"), "{err}");
    }

    #[test]
    fn invalid_limit_is_refused_with_its_name() {
        let l = Limits { receive_maximum: 0, ..Limits::default() };
        assert!(l.validate().unwrap_err().contains("receive_maximum"));
    }
}
