//! The StatefulSet of broker pods: image, config and credentials mounts, probes on the admin
//! API, a hardened security context, the data volume, and the spec's pod overrides.

use std::collections::BTreeMap;

use crds::broker_cluster::BrokerCluster;
use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetSpec, StatefulSetUpdateStrategy};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource,
    HTTPGetAction, KeyToPath, ObjectFieldSelector, PersistentVolumeClaim, PersistentVolumeClaimSpec,
    PodSecurityContext, PodSpec, PodTemplateSpec, Probe, SeccompProfile, SecretVolumeSource, SecurityContext, Volume,
    VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::admin_secret::CREDENTIALS_KEY;
use super::config_map::CONFIG_KEY;
use super::{Names, RESTART_HASH_ANNOTATION, labels, named_ports, owned_meta, paths, selector_labels};

/// The broker container's name.
pub const CONTAINER: &str = "broker";
/// The user and group the broker runs as (distroless' `nonroot`, as in the broker image).
pub const NONROOT: i64 = 65532;
/// The data volume (claim template or emptyDir).
pub const DATA_VOLUME: &str = "data";

/// What the StatefulSet needs besides the spec.
#[derive(Clone, Debug)]
pub struct PodInputs<'a> {
    /// The resolved image (the spec's, or the operator's default repository and version).
    pub image: &'a str,
    /// Digest of what needs a restart to take effect; see [`RESTART_HASH_ANNOTATION`].
    pub restart_hash: &'a str,
    /// The admin Secret mounted for the broker's `[admin] credentials_file`.
    pub admin_secret: &'a str,
}

/// The StatefulSet `<cluster>` with its pods `<cluster>-N`.
pub fn stateful_set(bc: &BrokerCluster, inputs: &PodInputs<'_>) -> StatefulSet {
    let spec = &bc.spec;
    let names = Names::of(bc);

    let mut pod_labels = spec.pod.labels.clone();
    pod_labels.extend(labels(bc));
    let mut pod_annotations = spec.pod.annotations.clone();
    pod_annotations.insert(RESTART_HASH_ANNOTATION.into(), inputs.restart_hash.into());

    let mut volumes = vec![
        Volume {
            name: "config".into(),
            config_map: Some(ConfigMapVolumeSource {
                name: names.config_map.clone(),
                items: Some(vec![key_to_path(CONFIG_KEY, CONFIG_KEY)]),
                default_mode: Some(0o444),
                ..ConfigMapVolumeSource::default()
            }),
            ..Volume::default()
        },
        secret_volume("admin", inputs.admin_secret, vec![key_to_path(CREDENTIALS_KEY, CREDENTIALS_KEY)]),
    ];
    let mut mounts = vec![mount("config", paths::CONFIG_DIR), mount("admin", paths::ADMIN_DIR)];
    if let Some(users) = &spec.auth.users_secret {
        volumes.push(secret_volume("users", &users.name, vec![key_to_path(&users.key, "credentials.toml")]));
        mounts.push(mount("users", paths::USERS_DIR));
    }
    if let Some(tls) = &spec.listeners.tls {
        let mut items = vec![key_to_path("tls.crt", "tls.crt"), key_to_path("tls.key", "tls.key")];
        if tls.verify_client_certs {
            items.push(key_to_path("ca.crt", "ca.crt"));
        }
        volumes.push(secret_volume("tls", &tls.secret_name, items));
        mounts.push(mount("tls", paths::TLS_DIR));
    }
    mounts.push(mount(DATA_VOLUME, paths::DATA_DIR));
    let claim_templates = if spec.persistence.ephemeral {
        volumes.push(Volume {
            name: DATA_VOLUME.into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Volume::default()
        });
        None
    } else {
        Some(vec![PersistentVolumeClaim {
            metadata: ObjectMeta {
                name: Some(DATA_VOLUME.into()),
                labels: Some(selector_labels(bc)),
                ..ObjectMeta::default()
            },
            spec: Some(PersistentVolumeClaimSpec {
                access_modes: Some(vec!["ReadWriteOnce".into()]),
                storage_class_name: spec.persistence.storage_class_name.clone(),
                resources: Some(VolumeResourceRequirements {
                    requests: Some(BTreeMap::from([("storage".to_string(), spec.persistence.size.clone())])),
                    ..VolumeResourceRequirements::default()
                }),
                ..PersistentVolumeClaimSpec::default()
            }),
            ..PersistentVolumeClaim::default()
        }])
    };

    let mut env = vec![EnvVar {
        // The node name is the pod name: stable across restarts, unique in the cluster, and
        // what the operator lists as the member's name.
        name: "STARLING_NODE__NAME".into(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector {
                field_path: "metadata.name".into(),
                ..ObjectFieldSelector::default()
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }];
    env.extend(spec.env.iter().cloned());

    let container = Container {
        name: CONTAINER.into(),
        image: Some(inputs.image.into()),
        image_pull_policy: Some(spec.image_pull_policy.as_str().into()),
        args: Some(vec!["--config".into(), paths::CONFIG_FILE.into()]),
        env: Some(env),
        ports: Some(container_ports(bc)),
        readiness_probe: Some(http_probe("/readyz", 2, 3)),
        liveness_probe: Some(http_probe("/healthz", 10, 6)),
        startup_probe: Some(http_probe("/healthz", 1, 60)),
        resources: spec.resources.clone(),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities { drop: Some(vec!["ALL".into()]), ..Capabilities::default() }),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(mounts),
        ..Container::default()
    };

    let topology_spread = (!spec.pod.topology_spread_constraints.is_empty()).then(|| {
        spec.pod
            .topology_spread_constraints
            .iter()
            .cloned()
            .map(|mut c| {
                if c.label_selector.is_none() {
                    c.label_selector =
                        Some(LabelSelector { match_labels: Some(selector_labels(bc)), ..LabelSelector::default() });
                }
                c
            })
            .collect()
    });
    let non_empty = |m: &BTreeMap<String, String>| (!m.is_empty()).then(|| m.clone());

    StatefulSet {
        metadata: owned_meta(bc, &names.stateful_set),
        spec: StatefulSetSpec {
            replicas: Some(spec.replicas),
            service_name: Some(names.headless_service.clone()),
            // Brokers do not need ordered start-up: all pods start (and are replaced) in parallel.
            pod_management_policy: Some("Parallel".into()),
            selector: LabelSelector { match_labels: Some(selector_labels(bc)), ..LabelSelector::default() },
            update_strategy: Some(StatefulSetUpdateStrategy {
                type_: Some(spec.update_strategy.as_str().into()),
                ..StatefulSetUpdateStrategy::default()
            }),
            volume_claim_templates: claim_templates,
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    annotations: Some(pod_annotations),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    volumes: Some(volumes),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(NONROOT),
                        run_as_group: Some(NONROOT),
                        fs_group: Some(NONROOT),
                        seccomp_profile: Some(SeccompProfile {
                            type_: "RuntimeDefault".into(),
                            ..SeccompProfile::default()
                        }),
                        ..PodSecurityContext::default()
                    }),
                    // The broker needs no Kubernetes API access and no service links.
                    automount_service_account_token: Some(false),
                    enable_service_links: Some(false),
                    service_account_name: spec.pod.service_account_name.clone(),
                    image_pull_secrets: (!spec.image_pull_secrets.is_empty()).then(|| spec.image_pull_secrets.clone()),
                    node_selector: non_empty(&spec.pod.node_selector),
                    tolerations: (!spec.pod.tolerations.is_empty()).then(|| spec.pod.tolerations.clone()),
                    affinity: spec.pod.affinity.clone(),
                    topology_spread_constraints: topology_spread,
                    priority_class_name: spec.pod.priority_class_name.clone(),
                    termination_grace_period_seconds: spec.pod.termination_grace_period_seconds,
                    ..PodSpec::default()
                }),
            },
            ..StatefulSetSpec::default()
        },
        ..StatefulSet::default()
    }
}

fn container_ports(bc: &BrokerCluster) -> Vec<ContainerPort> {
    named_ports(bc, true)
        .into_iter()
        .map(|(name, port)| ContainerPort {
            name: Some(name.into()),
            container_port: port,
            protocol: Some("TCP".into()),
            ..ContainerPort::default()
        })
        .collect()
}

fn http_probe(path: &str, period: i32, failures: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String("admin".into()),
            scheme: Some("HTTP".into()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failures),
        timeout_seconds: Some(2),
        ..Probe::default()
    }
}

fn key_to_path(key: &str, path: &str) -> KeyToPath {
    KeyToPath { key: key.into(), path: path.into(), ..KeyToPath::default() }
}

fn secret_volume(name: &str, secret: &str, items: Vec<KeyToPath>) -> Volume {
    Volume {
        name: name.into(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(secret.into()),
            items: Some(items),
            // Owner-less, group-readable: the files belong to root and the pod's fsGroup.
            default_mode: Some(0o440),
            ..SecretVolumeSource::default()
        }),
        ..Volume::default()
    }
}

fn mount(name: &str, path: &str) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        read_only: Some(name != DATA_VOLUME),
        ..VolumeMount::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::testing::cluster;
    use serde_json::json;

    fn build(spec: serde_json::Value) -> StatefulSet {
        let bc = cluster("demo", spec);
        stateful_set(&bc, &PodInputs { image: "starling/broker:dev", restart_hash: "abc", admin_secret: "demo-admin" })
    }

    fn pod_spec(sts: &StatefulSet) -> &PodSpec {
        sts.spec.template.spec.as_ref().unwrap()
    }

    #[test]
    fn defaults_are_hardened_probed_and_persistent() {
        let sts = build(json!({}));
        let spec = &sts.spec;
        assert_eq!(spec.replicas, Some(3));
        assert_eq!(spec.service_name.as_deref(), Some("demo-headless"));
        assert_eq!(spec.update_strategy.as_ref().unwrap().type_.as_deref(), Some("RollingUpdate"));
        let meta = spec.template.metadata.as_ref().unwrap();
        assert_eq!(meta.annotations.as_ref().unwrap()[RESTART_HASH_ANNOTATION], "abc");
        assert_eq!(meta.labels.as_ref().unwrap()["app.kubernetes.io/instance"], "demo");

        let pod = pod_spec(&sts);
        let psc = pod.security_context.as_ref().unwrap();
        assert_eq!((psc.run_as_non_root, psc.run_as_user, psc.fs_group), (Some(true), Some(65532), Some(65532)));
        assert_eq!(pod.automount_service_account_token, Some(false));
        let c = &pod.containers[0];
        assert_eq!(c.image.as_deref(), Some("starling/broker:dev"));
        assert_eq!(c.image_pull_policy.as_deref(), Some("IfNotPresent"));
        assert_eq!(c.args.as_ref().unwrap(), &["--config", "/etc/starling/config/starling.toml"]);
        let sc = c.security_context.as_ref().unwrap();
        assert_eq!((sc.read_only_root_filesystem, sc.allow_privilege_escalation), (Some(true), Some(false)));
        let ready = c.readiness_probe.as_ref().unwrap().http_get.as_ref().unwrap();
        assert_eq!((ready.path.as_deref(), &ready.port), (Some("/readyz"), &IntOrString::String("admin".into())));
        let live = c.liveness_probe.as_ref().unwrap().http_get.as_ref().unwrap();
        assert_eq!(live.path.as_deref(), Some("/healthz"));
        let node_env = &c.env.as_ref().unwrap()[0];
        assert_eq!(node_env.name, "STARLING_NODE__NAME");
        assert_eq!(node_env.value_from.as_ref().unwrap().field_ref.as_ref().unwrap().field_path, "metadata.name");
        let ports: Vec<i32> = c.ports.as_ref().unwrap().iter().map(|p| p.container_port).collect();
        assert_eq!(ports, [1883, 8083, 8081]);

        let claims = spec.volume_claim_templates.as_ref().unwrap();
        assert_eq!(
            claims[0].spec.as_ref().unwrap().resources.as_ref().unwrap().requests.as_ref().unwrap()["storage"].0,
            "1Gi"
        );
        assert!(!pod.volumes.as_ref().unwrap().iter().any(|v| v.name == DATA_VOLUME));
        let admin = pod.volumes.as_ref().unwrap().iter().find(|v| v.name == "admin").unwrap();
        let items = admin.secret.as_ref().unwrap().items.as_ref().unwrap();
        assert_eq!(items.len(), 1, "only the broker's file is mounted, not the plain password");
        assert_eq!(items[0].key, "credentials.toml");
        let data = c.volume_mounts.as_ref().unwrap().iter().find(|m| m.name == DATA_VOLUME).unwrap();
        assert_eq!((data.mount_path.as_str(), data.read_only), ("/var/lib/starling", Some(false)));
    }

    #[test]
    fn ephemeral_storage_pull_policy_and_overrides() {
        let sts = build(json!({
            "replicas": 5, "imagePullPolicy": "Never", "updateStrategy": "OnDelete",
            "persistence": {"ephemeral": true},
            "auth": {"usersSecret": {"name": "users", "key": "users.toml"}},
            "listeners": {"tls": {"secretName": "demo-tls"}},
            "env": [{"name": "STARLING_LOG__LEVEL", "value": "debug"}],
            "pod": {"labels": {"team": "iot", "app.kubernetes.io/instance": "hijack"}, "annotations": {"a": "b"},
                    "nodeSelector": {"disk": "ssd"}, "tolerations": [{"key": "mqtt", "operator": "Exists"}],
                    "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "kubernetes.io/hostname", "whenUnsatisfiable": "DoNotSchedule"}],
                    "terminationGracePeriodSeconds": 20}
        }));
        let spec = &sts.spec;
        assert_eq!(spec.replicas, Some(5));
        assert!(spec.volume_claim_templates.is_none());
        assert_eq!(spec.update_strategy.as_ref().unwrap().type_.as_deref(), Some("OnDelete"));
        let meta = spec.template.metadata.as_ref().unwrap();
        let labels = meta.labels.as_ref().unwrap();
        assert_eq!((labels["team"].as_str(), labels["app.kubernetes.io/instance"].as_str()), ("iot", "demo"));
        assert_eq!(meta.annotations.as_ref().unwrap()["a"], "b");
        let pod = pod_spec(&sts);
        assert!(pod.volumes.as_ref().unwrap().iter().any(|v| v.name == DATA_VOLUME && v.empty_dir.is_some()));
        let users = pod.volumes.as_ref().unwrap().iter().find(|v| v.name == "users").unwrap();
        let item = &users.secret.as_ref().unwrap().items.as_ref().unwrap()[0];
        assert_eq!((item.key.as_str(), item.path.as_str()), ("users.toml", "credentials.toml"));
        assert!(pod.volumes.as_ref().unwrap().iter().any(|v| v.name == "tls"));
        assert_eq!(pod.node_selector.as_ref().unwrap()["disk"], "ssd");
        assert_eq!(pod.tolerations.as_ref().unwrap()[0].key.as_deref(), Some("mqtt"));
        let spread = &pod.topology_spread_constraints.as_ref().unwrap()[0];
        assert_eq!(
            spread.label_selector.as_ref().unwrap().match_labels.as_ref().unwrap()["app.kubernetes.io/instance"],
            "demo"
        );
        assert_eq!(pod.termination_grace_period_seconds, Some(20));
        let c = &pod.containers[0];
        assert_eq!(c.image_pull_policy.as_deref(), Some("Never"));
        assert_eq!(c.env.as_ref().unwrap()[1].name, "STARLING_LOG__LEVEL");
        let ports: Vec<&str> = c.ports.as_ref().unwrap().iter().filter_map(|p| p.name.as_deref()).collect();
        assert_eq!(ports, ["mqtt", "ws", "mqtts", "admin"]);
    }
}
