//! The custom resources that put one object into every broker of a BrokerCluster (`Bridge`,
//! `Rule`, `TrafficRule`, `starling.dev/v1alpha1`) and the spec and status parts they share.
//!
//! Each spec embeds the broker's own type (`BridgeConfig`, `RuleConfig`, `TrafficRule`): what
//! the operator `PUT`s to `/api/v1/{bridges,rules,traffic-rules}/<metadata.name>` on every pod.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::{BridgeConfig, RuleConfig, TrafficRule};

/// The status condition that says the object is in force on every broker of the cluster.
pub const CONDITION_READY: &str = "Ready";
/// The status condition that says the last pass reached every Ready broker with the spec.
pub const CONDITION_SYNCED: &str = "Synced";

/// What happens to the brokers' copy when the custom resource is deleted.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum DeletionPolicy {
    /// Delete the object from every broker of the cluster.
    #[default]
    Delete,
    /// Leave it in the brokers (only the custom resource goes).
    Retain,
}

/// A key of a Secret in the object's namespace that holds a password.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PasswordSecretRef {
    /// The Secret's name.
    #[schemars(length(min = 1))]
    pub name: String,
    /// The key within the Secret (default `password`).
    #[serde(default = "default_password_key")]
    pub key: String,
}

fn default_password_key() -> String {
    "password".to_string()
}

/// A Bridge, a Rule or a TrafficRule as the operator last saw it on the cluster's brokers.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ManagedStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready` (in force on every broker of the cluster) and `Synced` (the last pass reached
    /// every Ready broker with this spec), each with a reason and a message; when a broker
    /// refuses the object (e.g. invalid SQL) the reason is `Rejected` and the message is the
    /// broker's own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// Brokers that hold the object as the spec says.
    #[serde(default)]
    pub nodes_applied: i32,
    /// Brokers the cluster should have (its `spec.replicas`).
    #[serde(default)]
    pub nodes_total: i32,
    /// One entry per broker pod, by pod name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["pod".into()]))]
    pub nodes: Vec<NodeResult>,
    /// SHA-256 of the Secret values (a Bridge's password) last applied to every Ready broker;
    /// when the Secret changes the object is written again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_secret_hash: Option<String>,
}

/// What one broker pod holds.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeResult {
    /// The broker pod (also the broker's node name).
    pub pod: String,
    /// The broker holds the object as the spec says.
    #[serde(default)]
    pub applied: bool,
    /// Why not: the pod is not Ready, the broker refused the object (its message), or its API
    /// could not be reached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// An MQTT bridge from every broker of a BrokerCluster to a remote broker.
// Several printer columns share a `type_`; clippy reads the derive's helper as one attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "starling.dev",
    version = "v1alpha1",
    kind = "Bridge",
    root = "BridgeResource",
    plural = "bridges",
    shortname = "mqbridge",
    category = "starling",
    namespaced,
    status = "ManagedStatus",
    derive = "PartialEq",
    doc = "An MQTT bridge from every broker of a Starling BrokerCluster to a remote broker.",
    printcolumn(name = "Cluster", type_ = "string", json_path = ".spec.clusterRef", description = "The BrokerCluster"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status",
        description = "In force on every broker"
    ),
    printcolumn(
        name = "Synced",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Synced\")].status",
        description = "Every Ready broker has the spec"
    ),
    printcolumn(
        name = "Applied",
        type_ = "integer",
        json_path = ".status.nodesApplied",
        description = "Brokers that have it"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    printcolumn(
        name = "Message",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].message",
        priority = 1,
        description = "Why it is not Ready"
    )
)]
#[x_kube(
    validation = Rule::new("!has(self.bridge.password)")
        .message("put the remote password in a Secret and name it in passwordSecretRef, not in bridge.password")
        .reason(Reason::FieldValueForbidden)
)]
#[serde(rename_all = "camelCase")]
pub struct BridgeSpec {
    /// The BrokerCluster (in this namespace) whose brokers get the bridge. Immutable.
    #[schemars(length(min = 1))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("clusterRef is immutable"))]
    pub cluster_ref: String,
    /// `Delete` (default): deleting this resource deletes the bridge from every broker;
    /// `Retain`: the brokers keep it.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
    /// The bridge as the broker's API takes it (`PUT /api/v1/bridges/<metadata.name>`); the
    /// password comes from `passwordSecretRef`.
    pub bridge: BridgeConfig,
    /// The Secret key holding the password on the remote broker; the operator fills it in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_secret_ref: Option<PasswordSecretRef>,
}

/// A rule of the broker's rule engine on every broker of a BrokerCluster.
// Several printer columns share a `type_`; clippy reads the derive's helper as one attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "starling.dev",
    version = "v1alpha1",
    kind = "Rule",
    root = "RuleResource",
    plural = "rules",
    shortname = "mqrule",
    category = "starling",
    namespaced,
    status = "ManagedStatus",
    derive = "PartialEq",
    doc = "A rule-engine rule (SQL over the message stream and its actions) on every broker of a Starling BrokerCluster.",
    printcolumn(name = "Cluster", type_ = "string", json_path = ".spec.clusterRef", description = "The BrokerCluster"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status",
        description = "In force on every broker"
    ),
    printcolumn(
        name = "Synced",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Synced\")].status",
        description = "Every Ready broker has the spec"
    ),
    printcolumn(
        name = "Applied",
        type_ = "integer",
        json_path = ".status.nodesApplied",
        description = "Brokers that have it"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    printcolumn(
        name = "Message",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].message",
        priority = 1,
        description = "Why it is not Ready (e.g. the broker's SQL error)"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct RuleSpec {
    /// The BrokerCluster (in this namespace) whose brokers get the rule. Immutable.
    #[schemars(length(min = 1))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("clusterRef is immutable"))]
    pub cluster_ref: String,
    /// `Delete` (default): deleting this resource deletes the rule from every broker;
    /// `Retain`: the brokers keep it.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
    /// The rule as the broker's API takes it (`PUT /api/v1/rules/<metadata.name>`).
    #[x_kube(validation = Rule::new("!self.rawsql.matches('^\\\\s*$')").message("rule.rawsql must not be empty"))]
    pub rule: RuleConfig,
}

/// A traffic rule (quotas, rate limits, node placement) on every broker of a BrokerCluster.
// Several printer columns share a `type_`; clippy reads the derive's helper as one attribute.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "starling.dev",
    version = "v1alpha1",
    kind = "TrafficRule",
    root = "TrafficRuleResource",
    plural = "trafficrules",
    shortname = "mqtr",
    category = "starling",
    namespaced,
    status = "ManagedStatus",
    derive = "PartialEq",
    doc = "A traffic rule (connection quotas, rate limits, node placement) on every broker of a Starling BrokerCluster.",
    printcolumn(name = "Cluster", type_ = "string", json_path = ".spec.clusterRef", description = "The BrokerCluster"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status",
        description = "In force on every broker"
    ),
    printcolumn(
        name = "Synced",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Synced\")].status",
        description = "Every Ready broker has the spec"
    ),
    printcolumn(
        name = "Applied",
        type_ = "integer",
        json_path = ".status.nodesApplied",
        description = "Brokers that have it"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    printcolumn(
        name = "Message",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].message",
        priority = 1,
        description = "Why it is not Ready"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct TrafficRuleSpec {
    /// The BrokerCluster (in this namespace) whose brokers get the traffic rule. Immutable.
    #[schemars(length(min = 1))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("clusterRef is immutable"))]
    pub cluster_ref: String,
    /// `Delete` (default): deleting this resource deletes the traffic rule from every broker;
    /// `Retain`: the brokers keep it.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
    /// The traffic rule as the broker's API takes it
    /// (`PUT /api/v1/traffic-rules/<metadata.name>`).
    #[serde(default)]
    pub traffic_rule: TrafficRule,
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::CustomResourceExt;

    #[test]
    fn specs_embed_the_brokers_types_with_their_defaults() {
        let b: BridgeResource = serde_json::from_value(serde_json::json!({
            "apiVersion": "starling.dev/v1alpha1", "kind": "Bridge", "metadata": {"name": "up"},
            "spec": {"clusterRef": "demo", "bridge": {"server": "mqtt-tcp://r:1883"},
                     "passwordSecretRef": {"name": "remote"}}
        }))
        .unwrap();
        assert_eq!(b.spec.deletion_policy, DeletionPolicy::Delete);
        assert_eq!((b.spec.bridge.proto_ver, b.spec.bridge.keepalive), (4, 60));
        assert_eq!(b.spec.password_secret_ref.unwrap().key, "password");
        let r: RuleSpec = serde_json::from_value(serde_json::json!({
            "clusterRef": "demo", "deletionPolicy": "Retain", "rule": {"rawsql": "SELECT * FROM \"t/#\""}
        }))
        .unwrap();
        assert!(r.rule.enabled && r.deletion_policy == DeletionPolicy::Retain);
        let t: TrafficRuleSpec = serde_json::from_value(serde_json::json!({"clusterRef": "demo"})).unwrap();
        assert_eq!(t.traffic_rule, TrafficRule::default());
    }

    #[test]
    fn the_crds_have_names_columns_and_a_status() {
        for (crd, plural, short) in [
            (BridgeResource::crd(), "bridges", "mqbridge"),
            (RuleResource::crd(), "rules", "mqrule"),
            (TrafficRuleResource::crd(), "trafficrules", "mqtr"),
        ] {
            let crd = serde_json::to_value(crd).unwrap();
            assert_eq!(crd["metadata"]["name"], format!("{plural}.starling.dev"));
            assert_eq!(crd["spec"]["names"]["shortNames"][0], short);
            assert_eq!(crd["spec"]["scope"], "Namespaced");
            let v = &crd["spec"]["versions"][0];
            assert!(v["subresources"]["status"].is_object());
            let columns: Vec<&str> =
                v["additionalPrinterColumns"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
            assert_eq!(columns, ["Cluster", "Ready", "Synced", "Applied", "Age", "Message"]);
            let spec = &v["schema"]["openAPIV3Schema"]["properties"]["spec"];
            assert!(spec.to_string().contains("clusterRef is immutable"));
        }
    }
}
