//! The Service MQTT clients connect to: the enabled listeners (not the management API),
//! balanced over the Ready brokers, of the spec's type and with its annotations.

use crds::broker_cluster::BrokerCluster;
use k8s_openapi::api::core::v1::{Service, ServiceSpec};
use kube::ResourceExt;

use super::headless_service::pod_ports;
use super::{Names, owned_meta, selector_labels};

/// The client Service `<cluster>`.
pub fn client_service(bc: &BrokerCluster) -> Service {
    let mut metadata = owned_meta(bc, &Names::of(bc).client_service);
    if !bc.spec.service.annotations.is_empty() {
        metadata.annotations = Some(bc.spec.service.annotations.clone());
    }
    Service {
        metadata,
        spec: Some(ServiceSpec {
            type_: Some(bc.spec.service.type_.as_str().into()),
            selector: Some(selector_labels(bc)),
            ports: Some(pod_ports(bc, false)),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// Where clients connect inside the cluster: `<service>.<namespace>.svc:<port>` (the MQTT
/// port, else TLS, else WebSocket with its path).
pub fn client_endpoint(bc: &BrokerCluster) -> String {
    let host = format!("{}.{}.svc", Names::of(bc).client_service, bc.namespace().unwrap_or_default());
    let l = &bc.spec.listeners;
    match (&l.tls, l.mqtt.enabled) {
        (_, true) => format!("{host}:{}", l.mqtt.port),
        (Some(tls), false) => format!("{host}:{}", tls.port),
        (None, false) => format!("ws://{host}:{}{}", l.websocket.port, l.websocket.path),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::testing::cluster;

    #[test]
    fn type_annotations_and_listener_ports() {
        let bc = cluster(
            "demo",
            serde_json::json!({"service": {"type": "LoadBalancer", "annotations": {"lb.example/internal": "true"}}}),
        );
        let svc = client_service(&bc);
        assert_eq!(svc.metadata.name.as_deref(), Some("demo"));
        assert_eq!(svc.metadata.annotations.unwrap()["lb.example/internal"], "true");
        let spec = svc.spec.unwrap();
        assert_eq!(spec.type_.as_deref(), Some("LoadBalancer"));
        let names: Vec<String> = spec.ports.unwrap().into_iter().filter_map(|p| p.name).collect();
        assert_eq!(names, ["mqtt", "ws"], "the admin API stays off the client Service");
        assert_eq!(client_endpoint(&bc), "demo.mqtt.svc:1883");
    }

    #[test]
    fn endpoint_falls_back_to_tls_then_websocket() {
        let tls =
            cluster("demo", serde_json::json!({"listeners": {"mqtt": {"enabled": false}, "tls": {"secretName": "t"}}}));
        assert_eq!(client_endpoint(&tls), "demo.mqtt.svc:8883");
        let ws = cluster("demo", serde_json::json!({"listeners": {"mqtt": {"enabled": false}}}));
        assert_eq!(client_endpoint(&ws), "ws://demo.mqtt.svc:8083/mqtt");
    }
}
