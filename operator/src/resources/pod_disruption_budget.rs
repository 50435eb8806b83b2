//! The PodDisruptionBudget that limits how many brokers voluntary evictions (node drains,
//! cluster upgrades) may take down at once.

use crds::broker_cluster::BrokerCluster;
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use super::{Names, owned_meta, selector_labels};

/// The budget, or `None` when the spec turns it off (the controller then deletes it).
pub fn pod_disruption_budget(bc: &BrokerCluster) -> Option<PodDisruptionBudget> {
    let spec = &bc.spec.pod_disruption_budget;
    spec.enabled.then(|| PodDisruptionBudget {
        metadata: owned_meta(bc, &Names::of(bc).pod_disruption_budget),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(spec.max_unavailable.clone()),
            selector: Some(LabelSelector { match_labels: Some(selector_labels(bc)), ..LabelSelector::default() }),
            // Pods that are not Ready yet may be evicted: a broken broker must not block a drain.
            unhealthy_pod_eviction_policy: Some("AlwaysAllow".into()),
            ..PodDisruptionBudgetSpec::default()
        }),
        ..PodDisruptionBudget::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::testing::cluster;
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

    #[test]
    fn one_broker_at_a_time_by_default() {
        let pdb = pod_disruption_budget(&cluster("demo", serde_json::json!({}))).unwrap();
        let spec = pdb.spec.unwrap();
        assert_eq!(spec.max_unavailable, Some(IntOrString::Int(1)));
        assert_eq!(spec.selector.unwrap().match_labels.unwrap()["app.kubernetes.io/name"], "starling-broker");
    }

    #[test]
    fn percentage_and_disabled() {
        let bc = cluster("demo", serde_json::json!({"podDisruptionBudget": {"maxUnavailable": "25%"}}));
        let spec = pod_disruption_budget(&bc).unwrap().spec.unwrap();
        assert_eq!(spec.max_unavailable, Some(IntOrString::String("25%".into())));
        let off = cluster("demo", serde_json::json!({"podDisruptionBudget": {"enabled": false}}));
        assert!(pod_disruption_budget(&off).is_none());
    }
}
