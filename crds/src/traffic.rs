//! A traffic rule (BifroMQ's traffic rules, per tenant): which clients it covers and the
//! quotas, rate limits and node placement it applies. `PUT /api/v1/traffic-rules/{name}` takes it.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A traffic rule. Rules are tried in name order; the first that matches a client applies.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, JsonSchema, ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct TrafficRule {
    /// Tenant of the clients it covers (default: the default tenant).
    pub tenant: Option<String>,
    /// Client ids it covers, with `*` and `?` wildcards (default: all).
    pub client_id_pattern: Option<String>,
    /// User names it covers, with `*` and `?` wildcards (default: all, including anonymous).
    pub username_pattern: Option<String>,
    /// Connections at once of all clients the rule covers; more are refused (v5: Quota Exceeded).
    pub max_connections: Option<u32>,
    /// PUBLISHes per second per client; over it a v5 QoS 1/2 PUBLISH gets Quota Exceeded and
    /// is dropped, and QoS 0 (or 3.1.1) ones are dropped.
    pub publish_rate: Option<u32>,
    /// Bytes per second per client (topic + payload, token bucket of one second).
    pub bandwidth: Option<u64>,
    /// Subscriptions per client; more get SUBACK Quota Exceeded.
    pub max_subscriptions: Option<u32>,
    /// Nodes the clients belong on, by group tag: a client that connects to a node without any
    /// of these tags is sent (v5 Server Reference, reason Use Another Server) to a cluster
    /// member that has one, or refused (3.1.1).
    pub node_tags: Vec<String>,
}

impl TrafficRule {
    /// Checks the values; the message names the field.
    pub fn validate(&self) -> Result<(), String> {
        if self.publish_rate == Some(0) {
            return Err("publish_rate must be at least 1 (leave it out for no limit)".into());
        }
        if self.bandwidth == Some(0) {
            return Err("bandwidth must be at least 1 (leave it out for no limit)".into());
        }
        for (i, t) in self.node_tags.iter().enumerate() {
            if t.is_empty() {
                return Err(format!("node_tags[{i}] must not be empty"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_limits_are_refused_by_name() {
        let r = TrafficRule { publish_rate: Some(0), ..Default::default() };
        assert!(r.validate().unwrap_err().starts_with("publish_rate"));
        let r: TrafficRule = serde_json::from_str(r#"{"max_connections": 2, "node_tags": ["edge"]}"#).unwrap();
        assert_eq!(r.validate(), Ok(()));
        assert!(serde_json::from_str::<TrafficRule>(r#"{"max_conections": 2}"#).is_err());
    }
}
