//! The objects a BrokerCluster owns, one pure builder per object (`&BrokerCluster` in, the
//! desired Kubernetes object out), plus the names, labels and owner reference they share.

pub mod admin_secret;
pub mod client_service;
pub mod config_map;
pub mod headless_service;
pub mod pod_disruption_budget;
pub mod stateful_set;

use std::collections::BTreeMap;

use crds::broker_cluster::BrokerCluster;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::{Resource, ResourceExt};

/// The field manager of every server-side apply, and the `managed-by` label value.
pub const MANAGER: &str = "starling-operator";

/// Setting this annotation to `"true"` on a BrokerCluster stops every write for it.
pub const PAUSE_ANNOTATION: &str = "starling.dev/pause-reconciliation";

/// Pod-template annotation: a digest of everything that only takes effect on a restart (the
/// config file without the hot-reloadable settings, the admin credentials file). When it
/// changes the StatefulSet rolls the pods.
pub const RESTART_HASH_ANNOTATION: &str = "starling.dev/restart-hash";

/// Label keys (the recommended `app.kubernetes.io/*` set).
pub const LABEL_NAME: &str = "app.kubernetes.io/name";
pub const LABEL_INSTANCE: &str = "app.kubernetes.io/instance";
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const LABEL_PART_OF: &str = "app.kubernetes.io/part-of";
pub const LABEL_COMPONENT: &str = "app.kubernetes.io/component";

/// `app.kubernetes.io/name` of every broker pod.
pub const APP_NAME: &str = "starling-broker";

/// Where the broker container finds what the operator mounts.
pub mod paths {
    /// The ConfigMap (`starling.toml`).
    pub const CONFIG_DIR: &str = "/etc/starling/config";
    pub const CONFIG_FILE: &str = "/etc/starling/config/starling.toml";
    /// The admin Secret's `credentials.toml` (only that key).
    pub const ADMIN_DIR: &str = "/etc/starling/admin";
    pub const ADMIN_CREDENTIALS_FILE: &str = "/etc/starling/admin/credentials.toml";
    /// The MQTT users Secret key, mounted as `credentials.toml`.
    pub const USERS_DIR: &str = "/etc/starling/users";
    pub const USERS_FILE: &str = "/etc/starling/users/credentials.toml";
    /// The TLS Secret (`tls.crt`, `tls.key`, `ca.crt`).
    pub const TLS_DIR: &str = "/etc/starling/tls";
    /// The broker's store (a PersistentVolumeClaim or an emptyDir).
    pub const DATA_DIR: &str = "/var/lib/starling";
}

/// The broker container's named ports: each enabled MQTT listener (`mqtt`, `ws`, `mqtts`),
/// then `admin` when asked for. The container, the Services and the probes use these names.
pub fn named_ports(bc: &BrokerCluster, admin: bool) -> Vec<(&'static str, i32)> {
    let l = &bc.spec.listeners;
    let mut ports = Vec::new();
    if l.mqtt.enabled {
        ports.push(("mqtt", l.mqtt.port));
    }
    if l.websocket.enabled {
        ports.push(("ws", l.websocket.port));
    }
    if let Some(tls) = &l.tls {
        ports.push(("mqtts", tls.port));
    }
    if admin {
        ports.push(("admin", bc.spec.admin.port));
    }
    ports
}

/// The names of everything a BrokerCluster owns, derived from its name (at most 52
/// characters, which the CRD enforces, so `<name>-headless` and the StatefulSet's
/// `controller-revision-hash` labels stay within 63).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Names {
    /// The StatefulSet; its pods are `<name>-0`, `<name>-1`, ...
    pub stateful_set: String,
    /// The headless Service that gives each pod a DNS name.
    pub headless_service: String,
    /// The client Service.
    pub client_service: String,
    pub config_map: String,
    /// The generated admin Secret (when the spec names none).
    pub generated_admin_secret: String,
    pub pod_disruption_budget: String,
}

impl Names {
    pub fn of(bc: &BrokerCluster) -> Names {
        let name = bc.name_any();
        Names {
            stateful_set: name.clone(),
            headless_service: format!("{name}-headless"),
            client_service: name.clone(),
            config_map: format!("{name}-config"),
            generated_admin_secret: format!("{name}-admin"),
            pod_disruption_budget: name,
        }
    }

    /// The admin Secret in use: the one the spec names, else the generated one.
    pub fn admin_secret(bc: &BrokerCluster) -> String {
        bc.spec.admin.credentials_secret.clone().unwrap_or_else(|| Names::of(bc).generated_admin_secret)
    }

    /// The pod of ordinal `i`.
    pub fn pod(&self, i: i32) -> String {
        format!("{}-{i}", self.stateful_set)
    }
}

/// The labels that select a cluster's pods (stable for the StatefulSet's lifetime).
pub fn selector_labels(bc: &BrokerCluster) -> BTreeMap<String, String> {
    BTreeMap::from([(LABEL_NAME.to_string(), APP_NAME.to_string()), (LABEL_INSTANCE.to_string(), bc.name_any())])
}

/// The selector as a string, for `status.selector` and list calls.
pub fn selector_string(bc: &BrokerCluster) -> String {
    selector_labels(bc).iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
}

/// Labels of every owned object.
pub fn labels(bc: &BrokerCluster) -> BTreeMap<String, String> {
    let mut l = selector_labels(bc);
    l.insert(LABEL_MANAGED_BY.into(), MANAGER.into());
    l.insert(LABEL_PART_OF.into(), "starling".into());
    l.insert(LABEL_COMPONENT.into(), "broker".into());
    l
}

/// Metadata of an owned object: its name, the cluster's namespace, labels and a controller
/// owner reference (so deleting the BrokerCluster deletes it; an object read back from the API
/// always has a uid, a hand-made one in a test may not, and then gets no reference).
pub fn owned_meta(bc: &BrokerCluster, name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_string()),
        namespace: bc.namespace(),
        labels: Some(labels(bc)),
        owner_references: bc.controller_owner_ref(&()).map(|o| vec![o]),
        ..ObjectMeta::default()
    }
}

/// Hex SHA-256 of some text: stable across operator versions and Rust releases (unlike
/// `DefaultHasher`), so an operator upgrade alone never rolls the brokers.
pub fn digest(parts: &[&str]) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for p in parts {
        h.update((p.len() as u64).to_be_bytes());
        h.update(p.as_bytes());
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
pub(crate) mod testing {
    use crds::broker_cluster::{BrokerCluster, BrokerClusterSpec};

    /// A BrokerCluster as the API server would return it (defaults filled, uid set).
    pub fn cluster(name: &str, spec: serde_json::Value) -> BrokerCluster {
        let spec: BrokerClusterSpec = serde_json::from_value(spec).expect("test spec");
        let mut bc = BrokerCluster::new(name, spec);
        bc.metadata.namespace = Some("mqtt".into());
        bc.metadata.uid = Some("0c4e9a7e-0000-4000-8000-000000000001".into());
        bc.metadata.generation = Some(1);
        bc
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use testing::cluster;

    #[test]
    fn names_and_labels_derive_from_the_cluster() {
        let bc = cluster("demo", serde_json::json!({}));
        let n = Names::of(&bc);
        assert_eq!(n.headless_service, "demo-headless");
        assert_eq!(n.pod(2), "demo-2");
        assert_eq!(Names::admin_secret(&bc), "demo-admin");
        assert_eq!(selector_string(&bc), "app.kubernetes.io/instance=demo,app.kubernetes.io/name=starling-broker");
        let meta = owned_meta(&bc, "x");
        let owner = &meta.owner_references.unwrap()[0];
        assert_eq!((owner.kind.as_str(), owner.controller), ("BrokerCluster", Some(true)));
        assert_eq!(meta.labels.unwrap()[LABEL_MANAGED_BY], MANAGER);
    }

    #[test]
    fn digest_is_stable() {
        assert_eq!(digest(&["a"]), digest(&["a"]));
        assert_ne!(digest(&["ab", "c"]), digest(&["a", "bc"]));
        assert_eq!(digest(&[]).len(), 64);
    }
}
