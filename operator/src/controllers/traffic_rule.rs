//! The TrafficRule controller's own parts: the spec's `TrafficRule` as the broker's
//! `/api/v1/traffic-rules/{name}` takes it.

use crds::TrafficRule;
use crds::managed::{DeletionPolicy, ManagedStatus, TrafficRuleResource};
use futures::FutureExt;
use futures::future::BoxFuture;

use super::managed::ManagedKind;
use crate::admin_client::{AdminClient, AdminError};

impl ManagedKind for TrafficRuleResource {
    const CONTROLLER: &'static str = "trafficrule";
    type Config = TrafficRule;

    fn cluster_ref(&self) -> &str {
        &self.spec.cluster_ref
    }
    fn deletion_policy(&self) -> DeletionPolicy {
        self.spec.deletion_policy
    }
    fn managed_status(&self) -> Option<&ManagedStatus> {
        self.status.as_ref()
    }
    fn desired(&self, _secret: Option<&str>) -> TrafficRule {
        self.spec.traffic_rule.clone()
    }
    fn get<'a>(client: &'a AdminClient, name: &'a str) -> BoxFuture<'a, Result<Option<TrafficRule>, AdminError>> {
        client.traffic_rule(name).boxed()
    }
    fn put<'a>(client: &'a AdminClient, name: &'a str, rule: &'a TrafficRule) -> BoxFuture<'a, Result<(), AdminError>> {
        client.put_traffic_rule(name, rule).boxed()
    }
    fn delete<'a>(client: &'a AdminClient, name: &'a str) -> BoxFuture<'a, Result<(), AdminError>> {
        client.delete_traffic_rule(name).boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn spec_to_broker_and_back() {
        let t: TrafficRuleResource = serde_json::from_value(json!({
            "apiVersion": "starling.dev/v1alpha1", "kind": "TrafficRule", "metadata": {"name": "slow", "namespace": "mqtt"},
            "spec": {"clusterRef": "demo", "deletionPolicy": "Retain", "trafficRule": {"publish_rate": 10}}
        }))
        .unwrap();
        assert_eq!(t.deletion_policy(), DeletionPolicy::Retain);
        let desired = t.desired(None);
        let observed: TrafficRule = serde_json::from_value(json!({"publish_rate": 10, "node_tags": []})).unwrap();
        assert!(!TrafficRuleResource::differs(&observed, &desired));
        assert!(TrafficRuleResource::differs(&TrafficRule::default(), &desired));
    }
}
