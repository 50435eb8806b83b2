//! The headless Service that gives each broker pod a stable DNS name
//! (`<pod>.<cluster>-headless.<namespace>.svc`), which the brokers use to reach each other.

use crds::broker_cluster::BrokerCluster;
use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{Names, named_ports, owned_meta, selector_labels};

/// The headless Service: no cluster IP, every pod's address published even before it is Ready
/// (peers and the operator must find a starting broker), every port of the pods.
pub fn headless_service(bc: &BrokerCluster) -> Service {
    Service {
        metadata: owned_meta(bc, &Names::of(bc).headless_service),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            publish_not_ready_addresses: Some(true),
            selector: Some(selector_labels(bc)),
            ports: Some(pod_ports(bc, true)),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// The Service ports of the enabled listeners (named as the container ports), and the admin
/// API's when `admin` is set.
pub fn pod_ports(bc: &BrokerCluster, admin: bool) -> Vec<ServicePort> {
    named_ports(bc, admin)
        .into_iter()
        .map(|(name, port)| ServicePort {
            name: Some(name.into()),
            port,
            target_port: Some(IntOrString::String(name.into())),
            protocol: Some("TCP".into()),
            ..ServicePort::default()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::testing::cluster;

    #[test]
    fn headless_with_every_port_and_not_ready_addresses() {
        let bc = cluster("demo", serde_json::json!({"listeners": {"tls": {"secretName": "t"}}}));
        let svc = headless_service(&bc);
        assert_eq!(svc.metadata.name.as_deref(), Some("demo-headless"));
        let spec = svc.spec.unwrap();
        assert_eq!(spec.cluster_ip.as_deref(), Some("None"));
        assert_eq!(spec.publish_not_ready_addresses, Some(true));
        assert_eq!(spec.selector.unwrap()["app.kubernetes.io/instance"], "demo");
        let ports: Vec<(String, i32)> =
            spec.ports.unwrap().into_iter().map(|p| (p.name.unwrap_or_default(), p.port)).collect();
        assert_eq!(ports, [("mqtt".into(), 1883), ("ws".into(), 8083), ("mqtts".into(), 8883), ("admin".into(), 8081)]);
    }

    #[test]
    fn disabled_listeners_have_no_port() {
        let bc = cluster("demo", serde_json::json!({"listeners": {"websocket": {"enabled": false}}}));
        let names: Vec<String> = pod_ports(&bc, false).into_iter().filter_map(|p| p.name).collect();
        assert_eq!(names, ["mqtt"]);
    }
}
