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
    pub admin: AdminConfig,
    pub store: StoreConfig,
    pub sys: SysConfig,
    pub log: LogConfig,
    pub cluster: crate::cluster::ClusterConfig,
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

pub use crds::Limits;

/// The management REST API (`/api/v1`).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    pub enabled: bool,
    pub bind: SocketAddr,
    /// TOML file of `[[users]]` (`username`, `password_hash`) allowed in with HTTP Basic; a
    /// mounted Kubernetes Secret in production. With neither this nor `jwt`, the API accepts
    /// `admin`/`public` and says so in the log.
    pub credentials_file: Option<PathBuf>,
    /// Accept `password = "..."` entries in plain text in `credentials_file`.
    pub allow_plaintext_passwords: bool,
    pub jwt: Option<JwtConfig>,
    /// Largest `_limit` a list request may ask for.
    pub max_page_limit: usize,
    /// Largest request body, in bytes (larger: 413).
    pub max_body_bytes: usize,
    /// Serve `/metrics` (Prometheus) without authentication.
    pub public_metrics: bool,
    /// Where `PUT /api/v1/config` keeps the settings it applied, so they survive a restart
    /// (default: `settings.json` in the data directory).
    pub settings_file: Option<PathBuf>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            bind: ([0, 0, 0, 0], 8081).into(),
            credentials_file: None,
            allow_plaintext_passwords: false,
            jwt: None,
            max_page_limit: 10_000,
            max_body_bytes: 4 * 1024 * 1024,
            public_metrics: false,
            settings_file: None,
        }
    }
}

/// Bearer tokens: a JWT signed with this key is accepted (claims `sub` and `exp` required).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct JwtConfig {
    /// `HS256`, `HS384`, `HS512` (shared secret) or `RS256`, `ES256` (public key).
    pub algorithm: String,
    /// File holding the shared secret (HS*) or the PEM public key (RS*/ES*).
    pub key_file: PathBuf,
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
