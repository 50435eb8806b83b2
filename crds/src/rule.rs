//! A rule of the broker's rule engine: SQL over the message stream (NanoMQ/EMQX style) and the
//! actions run for each message it selects. `PUT /api/v1/rules/{id}` takes it.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A rule's definition. The id is the API path's (and the custom resource's name).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, JsonSchema, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// `SELECT <fields> FROM "<topic filter>"[, ...] [WHERE <condition>]`.
    pub rawsql: String,
    /// Run, in order, for every message the rule selects.
    #[serde(default)]
    #[schemars(schema_with = "actions_schema")]
    pub actions: Vec<RuleAction>,
    #[serde(default = "default_true")]
    #[schemars(description = "Run the rule (false: keep it, but select nothing).")]
    pub enabled: bool,
    #[serde(default)]
    #[schemars(description = "Free text for people.")]
    pub description: Option<String>,
    /// Tenant whose messages the rule sees (default: the default tenant).
    #[serde(default)]
    pub tenant: Option<String>,
}

fn default_true() -> bool {
    true
}

fn default_timeout_ms() -> u64 {
    5000
}

fn default_retries() -> u32 {
    2
}

/// The JSON schema of `actions` (for the custom resources): one object per action with
/// `name` and the union of every action's `params`, each documented. The derived schema of the
/// adjacently tagged enum is a `oneOf` whose variants give `name` different values, which a
/// Kubernetes structural schema cannot express; CEL rules check each action's required params.
fn actions_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "array",
        "description": "Run, in order, for every message the rule selects.",
        "items": {
            "type": "object",
            "description": "One action: `name` and its `params`.",
            "required": ["name"],
            "properties": {
                "name": {
                    "type": "string",
                    "enum": ["republish", "bridge", "webhook"],
                    "description": "`republish` (publish locally), `bridge` (send through a named bridge) or `webhook` (HTTP POST)."
                },
                "params": {
                    "type": "object",
                    "description": "The action's parameters; `${field}` in templates is a selected field.",
                    "properties": {
                        "topic": {"type": "string", "description": "republish: topic template (required); bridge: remote topic template (default: the message's topic)."},
                        "qos": {"type": "integer", "minimum": 0, "maximum": 2, "description": "republish, bridge: QoS of the published message (default 0)."},
                        "retain": {"type": "boolean", "description": "republish: set the retain flag (default false)."},
                        "payload": {"type": "string", "description": "republish: payload template (default: the selected fields as a JSON object)."},
                        "bridge": {"type": "string", "description": "bridge: the Bridge's name (required)."},
                        "url": {"type": "string", "description": "webhook: http:// or https:// URL (required)."},
                        "headers": {"type": "object", "additionalProperties": {"type": "string"}, "description": "webhook: extra HTTP headers."},
                        "timeout_ms": {"type": "integer", "minimum": 0, "description": "webhook: timeout of one attempt in milliseconds (default 5000)."},
                        "retries": {"type": "integer", "minimum": 0, "description": "webhook: extra attempts after a failure, with back-off (default 2)."}
                    }
                }
            },
            "x-kubernetes-validations": [
                {"rule": "self.name != 'republish' || (has(self.params) && has(self.params.topic))", "message": "a republish action needs params.topic"},
                {"rule": "self.name != 'bridge' || (has(self.params) && has(self.params.bridge))", "message": "a bridge action needs params.bridge"},
                {"rule": "self.name != 'webhook' || (has(self.params) && has(self.params.url))", "message": "a webhook action needs params.url"}
            ]
        }
    })
}

/// What to do with a selected message. `${field}` in templates is a selected field.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, JsonSchema, ToSchema)]
#[serde(tag = "name", content = "params", rename_all = "snake_case", deny_unknown_fields)]
pub enum RuleAction {
    /// Publish to a topic locally.
    Republish {
        /// Topic template, e.g. `alerts/${clientid}`.
        topic: String,
        #[serde(default)]
        qos: u8,
        #[serde(default)]
        retain: bool,
        /// Payload template; default: the selected fields as a JSON object.
        #[serde(default)]
        payload: Option<String>,
    },
    /// Send the selected fields (JSON) through a named bridge to its remote.
    Bridge {
        bridge: String,
        /// Remote topic template; default: the message's topic.
        #[serde(default)]
        topic: Option<String>,
        #[serde(default)]
        qos: u8,
    },
    /// HTTP POST of the selected fields as JSON.
    Webhook {
        url: String,
        #[serde(default)]
        headers: BTreeMap<String, String>,
        #[serde(default = "default_timeout_ms")]
        timeout_ms: u64,
        /// Extra attempts after a failure (with back-off).
        #[serde(default = "default_retries")]
        retries: u32,
    },
}

/// Counts of one rule.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq, JsonSchema, ToSchema)]
pub struct RuleMetrics {
    /// Messages whose topic matched the rule's FROM.
    pub matched: u64,
    /// Of those, the ones the WHERE let through.
    pub passed: u64,
    /// Evaluation errors (e.g. a field of the wrong type).
    pub failed: u64,
    /// Per action, in order.
    pub actions: Vec<ActionMetrics>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq, JsonSchema, ToSchema)]
pub struct ActionMetrics {
    pub success: u64,
    pub failure: u64,
}

impl RuleConfig {
    /// Checks what can be checked without the SQL parser; the message names the field.
    pub fn validate(&self) -> Result<(), String> {
        if self.rawsql.trim().is_empty() {
            return Err("rawsql must not be empty".into());
        }
        for (i, a) in self.actions.iter().enumerate() {
            match a {
                RuleAction::Republish { topic, qos, .. } => {
                    if topic.is_empty() {
                        return Err(format!("actions[{i}].params.topic must not be empty"));
                    }
                    if *qos > 2 {
                        return Err(format!("actions[{i}].params.qos must be 0, 1 or 2"));
                    }
                }
                RuleAction::Bridge { bridge, qos, .. } => {
                    if bridge.is_empty() {
                        return Err(format!("actions[{i}].params.bridge must not be empty"));
                    }
                    if *qos > 2 {
                        return Err(format!("actions[{i}].params.qos must be 0, 1 or 2"));
                    }
                }
                RuleAction::Webhook { url, .. } => {
                    if !(url.starts_with("http://") || url.starts_with("https://")) {
                        return Err(format!("actions[{i}].params.url must be an http:// or https:// URL"));
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nanomq_shaped_actions_parse() {
        let r: RuleConfig = serde_json::from_str(
            r#"{"rawsql":"SELECT * FROM \"t/#\"","actions":[{"name":"republish","params":{"topic":"x/${clientid}","qos":1}},
                {"name":"webhook","params":{"url":"http://127.0.0.1:9/h"}}]}"#,
        )
        .unwrap();
        assert!(r.enabled);
        assert_eq!(r.actions.len(), 2);
        assert!(matches!(&r.actions[1], RuleAction::Webhook { retries: 2, timeout_ms: 5000, .. }));
        assert!(r.validate().is_ok());
        let bad = RuleConfig { rawsql: " ".into(), ..r };
        assert_eq!(bad.validate().unwrap_err(), "rawsql must not be empty");
    }
}
