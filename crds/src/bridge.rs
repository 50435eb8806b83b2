//! A bridge: an outbound MQTT link from a broker to a remote broker, what it forwards there and
//! what it subscribes to there (NanoMQ's bridge object). `PUT /api/v1/bridges/{name}` takes it.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A bridge's configuration. The name is the API path's (and the custom resource's).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, JsonSchema, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub struct BridgeConfig {
    /// Remote broker: `mqtt-tcp://host:port`, `tls+mqtt-tcp://host:port` or `ws://host:port/path`.
    pub server: String,
    /// MQTT protocol level towards the remote: 4 (3.1.1) or 5.
    #[serde(default = "default_proto_ver")]
    pub proto_ver: u8,
    /// Client id on the remote; `${node}` stands for the broker's node name (default
    /// `starling-bridge-<node>-<name>`). Every broker of a cluster runs the bridge, so an id
    /// set here should contain `${node}`; extra `parallel` connections append `-<n>`.
    #[serde(default)]
    pub clientid: Option<String>,
    #[serde(default)]
    #[schemars(description = "User name on the remote.")]
    pub username: Option<String>,
    /// On Kubernetes the operator fills this in from a Secret.
    #[serde(default)]
    pub password: Option<String>,
    /// Keep-alive towards the remote, seconds.
    #[serde(default = "default_keepalive")]
    pub keepalive: u16,
    /// Start a clean session on the remote at every (re)connect.
    #[serde(default = "default_true")]
    pub clean_start: bool,
    /// MQTT 5: Session Expiry Interval asked of the remote, seconds.
    #[serde(default)]
    pub session_expiry_interval: Option<u32>,
    /// MQTT 5: further CONNECT properties sent to the remote.
    #[serde(default)]
    pub connect_properties: Option<BridgeConnectProperties>,
    /// Local topics sent to the remote.
    #[serde(default)]
    pub forwards: Vec<BridgeForward>,
    /// Remote topics subscribed to and published locally.
    #[serde(default)]
    pub subscriptions: Vec<BridgeSubscription>,
    /// Messages waiting for the remote (while it is away) before the oldest are dropped.
    #[serde(default = "default_queue")]
    pub max_send_queue_len: usize,
    /// Connections to the remote sharing the send queue (client ids get `-1`, `-2`, ... after
    /// the first); remote subscriptions use the first only.
    #[serde(default = "default_parallel")]
    pub parallel: u16,
    /// Local tenant whose topics are bridged (default: the default tenant).
    #[serde(default)]
    pub tenant: Option<String>,
    /// PEM CA bundle to verify a TLS remote (default: none; TLS then needs it).
    #[serde(default)]
    pub ca_pem: Option<String>,
}

/// MQTT 5 CONNECT properties of a bridge.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq, JsonSchema, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct BridgeConnectProperties {
    /// Receive Maximum: QoS 1/2 messages the remote may have in flight to us.
    pub receive_maximum: Option<u16>,
    /// Maximum Packet Size we accept from the remote.
    pub maximum_packet_size: Option<u32>,
    /// Topic Alias Maximum we offer the remote.
    pub topic_alias_maximum: Option<u16>,
    #[schemars(description = "User Properties sent in CONNECT.")]
    pub user_properties: std::collections::BTreeMap<String, String>,
}

/// A local filter whose messages go to the remote.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, JsonSchema, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BridgeForward {
    /// Local topic filter.
    pub local_topic: String,
    /// Remote topic; `${topic}` stands for the local topic (default `${topic}`).
    #[serde(default = "default_template")]
    pub remote_topic: String,
    /// QoS on the remote (capped by the message's own).
    #[serde(default = "default_qos1")]
    pub qos: u8,
}

/// A remote filter whose messages are published locally.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq, JsonSchema, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BridgeSubscription {
    /// Remote topic filter.
    pub remote_topic: String,
    /// Local topic; `${topic}` stands for the remote topic (default `${topic}`).
    #[serde(default = "default_template")]
    pub local_topic: String,
    #[serde(default = "default_qos1")]
    #[schemars(description = "QoS of the subscription on the remote (default 1).")]
    pub qos: u8,
}

/// What a bridge is doing.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq, JsonSchema, ToSchema)]
pub struct BridgeStatus {
    pub connected: bool,
    /// Since when (ms since the Unix epoch) it is connected or disconnected.
    pub since: u64,
    pub last_error: Option<String>,
    /// Messages sent to the remote (acknowledged for QoS 1/2).
    pub forwarded: u64,
    /// Messages received from the remote and published locally.
    pub received: u64,
    /// Messages dropped because the send queue was full.
    pub dropped: u64,
    /// Messages waiting to be sent.
    pub queue_len: usize,
}

fn default_proto_ver() -> u8 {
    4
}
fn default_keepalive() -> u16 {
    60
}
fn default_true() -> bool {
    true
}
fn default_queue() -> usize {
    10_000
}
fn default_parallel() -> u16 {
    1
}
fn default_template() -> String {
    "${topic}".into()
}
fn default_qos1() -> u8 {
    1
}

/// What the URL in `server` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BridgeTransport {
    Tcp { host: String, port: u16 },
    Tls { host: String, port: u16 },
    Ws { url: String, host: String, port: u16 },
}

impl BridgeConfig {
    /// Checks the fields a person may get wrong; the message names the field.
    pub fn validate(&self) -> Result<BridgeTransport, String> {
        if !matches!(self.proto_ver, 4 | 5) {
            return Err(format!("proto_ver must be 4 or 5, got {}", self.proto_ver));
        }
        if let Some(p) = &self.connect_properties {
            if p.receive_maximum == Some(0) {
                return Err("connect_properties.receive_maximum must be at least 1".into());
            }
            if p.maximum_packet_size == Some(0) {
                return Err("connect_properties.maximum_packet_size must be at least 1".into());
            }
            if self.proto_ver != 5 {
                return Err("connect_properties need proto_ver 5".into());
            }
        }
        if !(1..=16).contains(&self.parallel) {
            return Err(format!("parallel must be 1 to 16, got {}", self.parallel));
        }
        if self.max_send_queue_len == 0 {
            return Err("max_send_queue_len must be at least 1".into());
        }
        for (i, f) in self.forwards.iter().enumerate() {
            if f.local_topic.is_empty() || f.remote_topic.is_empty() {
                return Err(format!("forwards[{i}]: local_topic and remote_topic must not be empty"));
            }
            if f.qos > 2 {
                return Err(format!("forwards[{i}].qos must be 0, 1 or 2"));
            }
        }
        for (i, s) in self.subscriptions.iter().enumerate() {
            if s.remote_topic.is_empty() || s.local_topic.is_empty() {
                return Err(format!("subscriptions[{i}]: remote_topic and local_topic must not be empty"));
            }
            if s.qos > 2 {
                return Err(format!("subscriptions[{i}].qos must be 0, 1 or 2"));
            }
        }
        let t = parse_server(&self.server)?;
        if matches!(t, BridgeTransport::Tls { .. }) && self.ca_pem.is_none() {
            return Err("ca_pem is required for a TLS remote".into());
        }
        Ok(t)
    }
}

fn host_port(rest: &str, default_port: u16) -> Result<(String, u16), String> {
    let authority = rest.split('/').next().unwrap_or("");
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (h, p.parse::<u16>().map_err(|_| format!("server: bad port {p:?}"))?),
        None => (authority, default_port),
    };
    if host.is_empty() {
        return Err("server: missing host".into());
    }
    Ok((host.trim_matches(['[', ']']).to_string(), port))
}

/// Parses `server`.
pub fn parse_server(server: &str) -> Result<BridgeTransport, String> {
    if let Some(rest) = server.strip_prefix("mqtt-tcp://").or_else(|| server.strip_prefix("tcp://")) {
        let (host, port) = host_port(rest, 1883)?;
        Ok(BridgeTransport::Tcp { host, port })
    } else if let Some(rest) = server.strip_prefix("tls+mqtt-tcp://").or_else(|| server.strip_prefix("mqtts://")) {
        let (host, port) = host_port(rest, 8883)?;
        Ok(BridgeTransport::Tls { host, port })
    } else if let Some(rest) = server.strip_prefix("ws://") {
        let (host, port) = host_port(rest, 80)?;
        Ok(BridgeTransport::Ws { url: server.to_string(), host, port })
    } else {
        Err(format!("server must start with mqtt-tcp://, tls+mqtt-tcp:// or ws://, got {server:?}"))
    }
}

/// Expands `${topic}` in a topic template.
pub fn expand_topic(template: &str, topic: &str) -> String {
    template.replace("${topic}", topic)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_urls_parse_and_bad_ones_name_the_field() {
        assert_eq!(parse_server("mqtt-tcp://a:1884"), Ok(BridgeTransport::Tcp { host: "a".into(), port: 1884 }));
        assert_eq!(parse_server("tls+mqtt-tcp://b"), Ok(BridgeTransport::Tls { host: "b".into(), port: 8883 }));
        assert!(matches!(parse_server("ws://c:8083/mqtt"), Ok(BridgeTransport::Ws { port: 8083, .. })));
        assert!(parse_server("http://x").unwrap_err().starts_with("server"));
        assert!(parse_server("mqtt-tcp://x:99999").unwrap_err().contains("port"));
        assert_eq!(expand_topic("remote/${topic}", "a/b"), "remote/a/b");
    }

    #[test]
    fn defaults_fill_in_and_unknown_fields_are_refused() {
        let b: BridgeConfig =
            serde_json::from_str(r#"{"server":"mqtt-tcp://r:1883","forwards":[{"local_topic":"a/#"}]}"#).unwrap();
        assert_eq!((b.proto_ver, b.forwards[0].remote_topic.as_str(), b.forwards[0].qos), (4, "${topic}", 1));
        assert!(
            serde_json::from_str::<BridgeConfig>(r#"{"server":"x","sever":"y"}"#)
                .unwrap_err()
                .to_string()
                .contains("sever")
        );
    }
}
