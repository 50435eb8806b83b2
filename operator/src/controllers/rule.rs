//! The Rule controller's own parts: the spec's `RuleConfig` as the broker's
//! `/api/v1/rules/{id}` takes it (the id is the resource's name).

use crds::RuleConfig;
use crds::managed::{DeletionPolicy, ManagedStatus, RuleResource};
use futures::FutureExt;
use futures::future::BoxFuture;

use super::managed::ManagedKind;
use crate::admin_client::{AdminClient, AdminError};

impl ManagedKind for RuleResource {
    const CONTROLLER: &'static str = "rule";
    type Config = RuleConfig;

    fn cluster_ref(&self) -> &str {
        &self.spec.cluster_ref
    }
    fn deletion_policy(&self) -> DeletionPolicy {
        self.spec.deletion_policy
    }
    fn managed_status(&self) -> Option<&ManagedStatus> {
        self.status.as_ref()
    }
    fn desired(&self, _secret: Option<&str>) -> RuleConfig {
        self.spec.rule.clone()
    }
    fn get<'a>(client: &'a AdminClient, name: &'a str) -> BoxFuture<'a, Result<Option<RuleConfig>, AdminError>> {
        client.rule(name).boxed()
    }
    fn put<'a>(
        client: &'a AdminClient,
        name: &'a str,
        config: &'a RuleConfig,
    ) -> BoxFuture<'a, Result<(), AdminError>> {
        client.put_rule(name, config).boxed()
    }
    fn delete<'a>(client: &'a AdminClient, name: &'a str) -> BoxFuture<'a, Result<(), AdminError>> {
        client.delete_rule(name).boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_brokers_copy_with_defaults_spelt_out_is_in_sync() {
        let r: RuleResource = serde_json::from_value(json!({
            "apiVersion": "starling.dev/v1alpha1", "kind": "Rule", "metadata": {"name": "alerts", "namespace": "mqtt"},
            "spec": {"clusterRef": "demo", "rule": {"rawsql": "SELECT * FROM \"t/#\"",
                     "actions": [{"name": "republish", "params": {"topic": "x/${clientid}"}}]}}
        }))
        .unwrap();
        let desired = r.desired(None);
        let observed: RuleConfig = serde_json::from_value(json!({"rawsql": "SELECT * FROM \"t/#\"", "enabled": true,
            "description": null, "tenant": null,
            "actions": [{"name": "republish", "params": {"topic": "x/${clientid}", "qos": 0, "retain": false, "payload": null}}]}))
        .unwrap();
        assert!(!RuleResource::differs(&observed, &desired));
        let disabled = RuleConfig { enabled: false, ..observed };
        assert!(RuleResource::differs(&disabled, &desired));
    }
}
