//! Starling's contract: every object that crosses the broker's management API has its one Rust
//! type here, used by the broker's handlers, the operator's client and the custom resources.
//!
//! The broker depends on this crate without Kubernetes; the custom-resource wrappers (which
//! need `kube`) come behind a feature.

pub mod bridge;
#[cfg(feature = "kube")]
pub mod broker_cluster;
pub mod cluster;
#[cfg(feature = "kube")]
pub mod managed;
pub mod node;
pub mod rule;
pub mod settings;
pub mod traffic;

pub use bridge::{BridgeConfig, BridgeConnectProperties, BridgeForward, BridgeStatus, BridgeSubscription};
pub use cluster::{ClusterMember, ClusterMembership};
pub use node::NodeInfo;
pub use rule::{ActionMetrics, RuleAction, RuleConfig, RuleMetrics};
pub use settings::{ConfigUpdate, Limits, Settings, SettingsChange};
pub use traffic::TrafficRule;

#[cfg(all(test, feature = "kube"))]
mod tests {
    use kube::CustomResourceExt;

    /// `kubectl explain` shows descriptions: every property of every CRD's spec and status has one.
    #[test]
    fn every_field_is_documented() {
        fn walk(path: &str, schema: &serde_json::Value, missing: &mut Vec<String>) {
            if let Some(props) = schema.get("properties").and_then(|p| p.as_object()) {
                for (name, sub) in props {
                    let p = format!("{path}.{name}");
                    if sub.get("description").and_then(|d| d.as_str()).is_none_or(str::is_empty) {
                        missing.push(p.clone());
                    }
                    walk(&p, sub, missing);
                }
            }
            if let Some(items) = schema.get("items") {
                walk(&format!("{path}[]"), items, missing);
            }
        }
        for crd in [
            crate::broker_cluster::BrokerCluster::crd(),
            crate::managed::BridgeResource::crd(),
            crate::managed::RuleResource::crd(),
            crate::managed::TrafficRuleResource::crd(),
        ] {
            let crd = serde_json::to_value(crd).unwrap();
            let root = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"];
            let mut missing = Vec::new();
            walk("", &root["properties"]["spec"], &mut missing);
            walk("", &root["properties"]["status"], &mut missing);
            assert!(missing.is_empty(), "{}: fields without a description: {missing:?}", crd["metadata"]["name"]);
        }
    }
}
