//! The Bridge controller's own parts: the spec's `BridgeConfig` with the password from its
//! Secret, and a comparison that sees through the broker's masked password.

use crds::BridgeConfig;
use crds::managed::{BridgeResource, DeletionPolicy, ManagedStatus, PasswordSecretRef};
use futures::FutureExt;
use futures::future::BoxFuture;

use super::managed::ManagedKind;
use crate::admin_client::{AdminClient, AdminError, MASKED_PASSWORD};

impl ManagedKind for BridgeResource {
    const CONTROLLER: &'static str = "bridge";
    type Config = BridgeConfig;

    fn cluster_ref(&self) -> &str {
        &self.spec.cluster_ref
    }
    fn deletion_policy(&self) -> DeletionPolicy {
        self.spec.deletion_policy
    }
    fn managed_status(&self) -> Option<&ManagedStatus> {
        self.status.as_ref()
    }
    fn secret_ref(&self) -> Option<&PasswordSecretRef> {
        self.spec.password_secret_ref.as_ref()
    }
    fn desired(&self, secret: Option<&str>) -> BridgeConfig {
        let mut config = self.spec.bridge.clone();
        if let Some(password) = secret {
            config.password = Some(password.to_string());
        }
        config
    }
    fn differs(observed: &BridgeConfig, desired: &BridgeConfig) -> bool {
        bridge_differs(observed, desired)
    }
    fn get<'a>(client: &'a AdminClient, name: &'a str) -> BoxFuture<'a, Result<Option<BridgeConfig>, AdminError>> {
        client.bridge(name).boxed()
    }
    fn put<'a>(
        client: &'a AdminClient,
        name: &'a str,
        config: &'a BridgeConfig,
    ) -> BoxFuture<'a, Result<(), AdminError>> {
        client.put_bridge(name, config).boxed()
    }
    fn delete<'a>(client: &'a AdminClient, name: &'a str) -> BoxFuture<'a, Result<(), AdminError>> {
        client.delete_bridge(name).boxed()
    }
}

/// Whether a broker's bridge differs from the desired one. The broker shows a set password as
/// [`MASKED_PASSWORD`]: that matches any desired password (a changed Secret is caught by the
/// status's `appliedSecretHash` instead), but not a desired absence of one.
pub fn bridge_differs(observed: &BridgeConfig, desired: &BridgeConfig) -> bool {
    let password_matches = match (&observed.password, &desired.password) {
        (Some(o), Some(_)) if o == MASKED_PASSWORD => true,
        (o, d) => o == d,
    };
    let without_password = |c: &BridgeConfig| BridgeConfig { password: None, ..c.clone() };
    !password_matches || without_password(observed) != without_password(desired)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config(v: serde_json::Value) -> BridgeConfig {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn a_masked_password_matches_the_secrets() {
        let desired = config(json!({"server": "mqtt-tcp://r:1883", "username": "u", "password": "s3cret"}));
        let observed = config(json!({"server": "mqtt-tcp://r:1883", "username": "u", "password": "******"}));
        assert!(!bridge_differs(&observed, &desired));
        // No password on the broker, one wanted (and the other way round): write.
        let bare = config(json!({"server": "mqtt-tcp://r:1883", "username": "u"}));
        assert!(bridge_differs(&bare, &desired));
        assert!(bridge_differs(&observed, &bare));
        assert!(!bridge_differs(&bare, &bare));
    }

    #[test]
    fn any_other_field_differing_is_a_write() {
        let desired =
            config(json!({"server": "mqtt-tcp://r:1883", "password": "p", "forwards": [{"local_topic": "a/#"}]}));
        let observed =
            config(json!({"server": "mqtt-tcp://r:1883", "password": "******", "forwards": [{"local_topic": "b/#"}]}));
        assert!(bridge_differs(&observed, &desired));
        // Defaults filled in on both sides compare equal.
        let explicit =
            config(json!({"server": "mqtt-tcp://r:1883", "password": "******", "proto_ver": 4, "keepalive": 60,
                                     "forwards": [{"local_topic": "a/#", "remote_topic": "${topic}", "qos": 1}]}));
        assert!(!bridge_differs(&explicit, &desired));
    }

    #[test]
    fn the_secret_fills_the_password() {
        let b: BridgeResource = serde_json::from_value(json!({
            "apiVersion": "starling.dev/v1alpha1", "kind": "Bridge", "metadata": {"name": "up", "namespace": "mqtt"},
            "spec": {"clusterRef": "demo", "bridge": {"server": "mqtt-tcp://r:1883"}, "passwordSecretRef": {"name": "remote"}}
        }))
        .unwrap();
        assert_eq!(b.desired(Some("pw")).password.as_deref(), Some("pw"));
        assert_eq!(b.desired(None).password, None);
        assert_eq!((b.cluster_ref(), b.secret_ref().map(|r| r.key.as_str())), ("demo", Some("password")));
    }
}
