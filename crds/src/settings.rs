//! The broker's hot-reloadable settings: the core's limits and `allow_anonymous`. The broker
//! reads them from its config file, serves and changes them at `/api/v1/config`.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Everything `/api/v1/config` shows and `PUT` may change without a restart.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, JsonSchema, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Let clients connect without a username.
    pub allow_anonymous: bool,
    pub limits: Limits,
}

/// One changed setting.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, JsonSchema, ToSchema)]
pub struct SettingsChange {
    pub from: serde_json::Value,
    pub to: serde_json::Value,
}

/// The outcome of a `PUT`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, JsonSchema, ToSchema)]
pub struct ConfigUpdate {
    /// Dotted name (`limits.max_packet_size`) to old and new value; empty when nothing changed.
    pub changed: std::collections::BTreeMap<String, SettingsChange>,
    pub settings: Settings,
}

impl Default for Settings {
    fn default() -> Self {
        Self { allow_anonymous: true, limits: Limits::default() }
    }
}

impl Settings {
    /// Checks every value; the message names the field (`limits.max_packet_size ...`).
    pub fn validate(&self) -> Result<(), String> {
        self.limits.validate()
    }
}

/// Limits of the core. All of them are hot-reloadable; each is logged when hit.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, JsonSchema, ToSchema)]
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
    /// Largest total size, in bytes, of a PUBLISH's MQTT 5 properties (user properties,
    /// correlation data, content type, response topic); a larger one is refused (QoS 1/2:
    /// reason 0x83 with a reason string; QoS 0: dropped and counted). 0 for no limit.
    pub max_property_size: u32,
    /// MQTT 3.1.1 only: a QoS 1/2 PUBLISH or PUBREL unacknowledged this many seconds is sent
    /// again (DUP), checked every interval. 0 turns it off. MQTT 5 forbids resending except on
    /// session resume, so v5 clients get their resend when they reconnect. Read at CONNECT.
    pub retry_interval_secs: u64,
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
            max_property_size: 64 * 1024,
            retry_interval_secs: 30,
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
