//! The `BrokerCluster` custom resource (`starling.dev/v1alpha1`): what a person asks for (a
//! cluster of Starling brokers) and what the operator reports back in its status.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    Affinity, EnvVar, LocalObjectReference, ResourceRequirements, Toleration, TopologySpreadConstraint,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::Settings;

/// The MQTT over TCP port when none is given.
pub const DEFAULT_MQTT_PORT: i32 = 1883;
/// The MQTT over WebSocket port when none is given.
pub const DEFAULT_WS_PORT: i32 = 8083;
/// The MQTT over TLS port when none is given.
pub const DEFAULT_TLS_PORT: i32 = 8883;
/// The management API port when none is given.
pub const DEFAULT_ADMIN_PORT: i32 = 8081;
/// Replicas when none are given.
pub const DEFAULT_REPLICAS: i32 = 3;

/// A cluster of Starling MQTT brokers: a StatefulSet of broker pods with their configuration,
/// admin credentials, Services and PodDisruptionBudget, kept as this spec says by the
/// Starling operator.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "starling.dev",
    version = "v1alpha1",
    kind = "BrokerCluster",
    plural = "brokerclusters",
    shortname = "bc",
    category = "starling",
    namespaced,
    status = "BrokerClusterStatus",
    derive = "PartialEq",
    validation = Rule::new("size(self.metadata.name) <= 52").message("the name must be at most 52 characters (it prefixes the StatefulSet's pod and Service names)"),
    doc = "A cluster of Starling MQTT brokers managed by the Starling operator.",
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    printcolumn(name = "Replicas", type_ = "integer", json_path = ".spec.replicas", description = "Desired brokers"),
    printcolumn(name = "Ready", type_ = "integer", json_path = ".status.readyReplicas", description = "Ready brokers"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase", description = "Pending, Progressing, Ready or Degraded"),
    printcolumn(name = "Endpoint", type_ = "string", json_path = ".status.endpoint", priority = 1, description = "Where MQTT clients connect"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[x_kube(
    validation = Rule::new("self.listeners.mqtt.port != self.admin.port && self.listeners.websocket.port != self.admin.port && self.listeners.mqtt.port != self.listeners.websocket.port && (!has(self.listeners.tls) || (self.listeners.tls.port != self.admin.port && self.listeners.tls.port != self.listeners.mqtt.port && self.listeners.tls.port != self.listeners.websocket.port))")
        .message("the MQTT, WebSocket, TLS and admin ports must all differ")
        .reason(Reason::FieldValueInvalid)
)]
#[serde(rename_all = "camelCase")]
pub struct BrokerClusterSpec {
    /// Number of broker pods (StatefulSet replicas), at least 1.
    #[serde(default = "default_replicas")]
    #[x_kube(validation = Rule::new("self >= 1").message("replicas must be at least 1"))]
    pub replicas: i32,

    /// Broker container image, e.g. `starling/broker:0.1.0`. When empty the operator's default
    /// repository is used with `version` as the tag (or the operator's default image).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,

    /// Broker version, used as the image tag when `image` is empty. Informational otherwise
    /// (the running version of each node is in `status.nodes[].version`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,

    /// When the kubelet pulls the image: `Always`, `IfNotPresent` (default) or `Never`.
    #[serde(default)]
    pub image_pull_policy: PullPolicy,

    /// Secrets with registry credentials for pulling the image.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub image_pull_secrets: Vec<LocalObjectReference>,

    /// CPU and memory requests and limits of the broker container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,

    /// The MQTT listeners: TCP, WebSocket and (optionally) TLS.
    #[serde(default)]
    pub listeners: Listeners,

    /// The management REST API the operator talks to (and people may too).
    #[serde(default)]
    pub admin: AdminApi,

    /// Where each broker keeps retained messages and persistent sessions. Fixed at creation.
    #[serde(default)]
    #[x_kube(validation = Rule::new("self == oldSelf").message(
        "persistence cannot change after creation (a StatefulSet's volumeClaimTemplates are immutable); create a new BrokerCluster"
    ))]
    pub persistence: Persistence,

    /// The broker's hot-reloadable settings (`GET`/`PUT /api/v1/config`, the same keys as the
    /// broker's API). Changing them reconfigures running brokers without a restart. Unset: the
    /// broker's defaults, and the operator leaves the running settings alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub settings: Option<Settings>,

    /// Group tags of every broker of this cluster (`PUT /api/v1/cluster` `tags`), e.g. a zone.
    /// A TrafficRule's `node_tags` sends its clients to brokers carrying one of its tags.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,

    /// Extra group tags of single brokers, by StatefulSet ordinal: `{"0": ["gold"]}` tags pod
    /// `<name>-0` with `gold` besides `tags`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pod_tags: BTreeMap<String, Vec<String>>,

    /// MQTT client authentication.
    #[serde(default)]
    pub auth: Auth,

    /// The client Service (the one MQTT clients connect to).
    #[serde(default)]
    pub service: ClientService,

    /// Additions to the broker pods: labels, annotations, scheduling.
    #[serde(default)]
    pub pod: PodOverrides,

    /// Extra environment variables of the broker container, e.g. `STARLING_LOG__LEVEL=debug`
    /// (any broker setting as `STARLING_<SECTION>__<KEY>`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<EnvVar>,

    /// How pods are replaced when the pod template changes: `RollingUpdate` (default, one pod
    /// at a time, highest ordinal first) or `OnDelete` (only when a pod is deleted by hand).
    #[serde(default)]
    pub update_strategy: UpdateStrategy,

    /// The PodDisruptionBudget that keeps voluntary evictions (node drains) from taking down
    /// more than `maxUnavailable` brokers at once.
    #[serde(default)]
    pub pod_disruption_budget: PodDisruptionBudgetSpec,
}

fn default_replicas() -> i32 {
    DEFAULT_REPLICAS
}

/// When the kubelet pulls the broker image.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum PullPolicy {
    /// Pull on every pod start.
    Always,
    /// Pull only when the node does not have the image.
    #[default]
    IfNotPresent,
    /// Never pull; the image must be on the node.
    Never,
}

impl PullPolicy {
    /// The value of a container's `imagePullPolicy`.
    pub fn as_str(self) -> &'static str {
        match self {
            PullPolicy::Always => "Always",
            PullPolicy::IfNotPresent => "IfNotPresent",
            PullPolicy::Never => "Never",
        }
    }
}

/// How the StatefulSet replaces pods after a template change.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum UpdateStrategy {
    /// One pod at a time, waiting for each to be Ready.
    #[default]
    RollingUpdate,
    /// Only when a pod is deleted.
    OnDelete,
}

impl UpdateStrategy {
    /// The value of a StatefulSet's `updateStrategy.type`.
    pub fn as_str(self) -> &'static str {
        match self {
            UpdateStrategy::RollingUpdate => "RollingUpdate",
            UpdateStrategy::OnDelete => "OnDelete",
        }
    }
}

/// The broker's MQTT listeners.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[x_kube(validation = Rule::new("self.mqtt.enabled || self.websocket.enabled || has(self.tls)")
    .message("at least one listener (mqtt, websocket or tls) must be enabled"))]
#[serde(rename_all = "camelCase")]
pub struct Listeners {
    /// MQTT over TCP.
    #[serde(default)]
    pub mqtt: TcpListener,
    /// MQTT over WebSocket.
    #[serde(default)]
    pub websocket: WebSocketListener,
    /// MQTT over TLS, with the certificate from a Secret. Off when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsListener>,
}

/// MQTT over plain TCP.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TcpListener {
    /// Serve MQTT over TCP.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Container and Service port.
    #[serde(default = "default_mqtt_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
}

impl Default for TcpListener {
    fn default() -> Self {
        TcpListener { enabled: true, port: DEFAULT_MQTT_PORT }
    }
}

/// MQTT over WebSocket (subprotocol `mqtt`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebSocketListener {
    /// Serve MQTT over WebSocket.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Container and Service port.
    #[serde(default = "default_ws_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    /// HTTP path of the WebSocket endpoint.
    #[serde(default = "default_ws_path")]
    #[schemars(regex(pattern = r"^/"))]
    pub path: String,
}

impl Default for WebSocketListener {
    fn default() -> Self {
        WebSocketListener { enabled: true, port: DEFAULT_WS_PORT, path: default_ws_path() }
    }
}

/// MQTT over TLS.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TlsListener {
    /// Container and Service port.
    #[serde(default = "default_tls_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    /// A Secret in the cluster's namespace with `tls.crt` and `tls.key` (type
    /// `kubernetes.io/tls`, e.g. from cert-manager) and, to verify client certificates,
    /// `ca.crt`.
    #[schemars(length(min = 1))]
    pub secret_name: String,
    /// Ask clients for a certificate signed by the Secret's `ca.crt`.
    #[serde(default)]
    pub verify_client_certs: bool,
    /// With `verifyClientCerts`: refuse clients without a certificate (mutual TLS).
    #[serde(default)]
    pub require_client_cert: bool,
}

/// The broker's management REST API.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AdminApi {
    /// Container port of the management API (also the probes' port).
    #[serde(default = "default_admin_port")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    /// A Secret in the cluster's namespace with the API's credentials: `username` and
    /// `password` (what the operator logs in with) and `credentials.toml` (the broker's
    /// `[[users]]` file, which must contain that user). When unset the operator generates
    /// `<cluster>-admin` with a random password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret: Option<String>,
}

impl Default for AdminApi {
    fn default() -> Self {
        AdminApi { port: DEFAULT_ADMIN_PORT, credentials_secret: None }
    }
}

/// Storage of each broker's data directory.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Persistence {
    /// Keep data in an `emptyDir` that dies with the pod instead of a PersistentVolumeClaim
    /// per broker (for tests and caches; a restarted broker loses its sessions).
    #[serde(default)]
    pub ephemeral: bool,
    /// Size of each broker's PersistentVolumeClaim.
    #[serde(default = "default_storage_size")]
    pub size: Quantity,
    /// StorageClass of the claims; the cluster's default class when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
}

impl Default for Persistence {
    fn default() -> Self {
        Persistence { ephemeral: false, size: default_storage_size(), storage_class_name: None }
    }
}

/// MQTT client authentication (who may connect). Whether anonymous clients may connect is
/// `settings.allow_anonymous` (hot-reloadable).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Auth {
    /// A Secret key holding the broker's credentials file: TOML `[[users]]` with `username`,
    /// `password_hash` (argon2 or bcrypt, see `starling-broker hash-password`) and an optional
    /// `tenant`. No user list when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub users_secret: Option<SecretKeyRef>,
    /// Accept `password = "..."` entries in plain text in the users file.
    #[serde(default)]
    pub allow_plaintext_passwords: bool,
}

/// One key of a Secret in the cluster's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// The Secret's name.
    #[schemars(length(min = 1))]
    pub name: String,
    /// The key within the Secret.
    #[serde(default = "default_users_key")]
    pub key: String,
}

/// The Service MQTT clients connect to.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClientService {
    /// `ClusterIP` (default), `NodePort` or `LoadBalancer`.
    #[serde(default, rename = "type")]
    pub type_: ServiceType,
    /// Annotations of the Service, e.g. for a cloud load balancer.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// The kind of client Service.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ServiceType {
    /// Reachable inside the cluster only.
    #[default]
    ClusterIP,
    /// Also on a port of every node.
    NodePort,
    /// Also through the cloud's load balancer.
    LoadBalancer,
}

impl ServiceType {
    /// The value of a Service's `spec.type`.
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceType::ClusterIP => "ClusterIP",
            ServiceType::NodePort => "NodePort",
            ServiceType::LoadBalancer => "LoadBalancer",
        }
    }
}

/// Additions to every broker pod.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodOverrides {
    /// Extra labels (the operator's own labels win on conflict).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Extra annotations (the operator's own annotations win on conflict).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Schedule only on nodes with these labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Taints the pods tolerate.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    /// Node and pod (anti-)affinity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub affinity: Option<Affinity>,
    /// How pods spread over zones and nodes. Empty `labelSelector`s are filled in with the
    /// cluster's pod labels.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub topology_spread_constraints: Vec<TopologySpreadConstraint>,
    /// PriorityClass of the pods.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,
    /// Seconds a broker has to shut down gracefully (its MQTT 5 clients are told, its store is
    /// committed) before it is killed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub termination_grace_period_seconds: Option<i64>,
    /// ServiceAccount of the pods (the broker itself needs no Kubernetes API access).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
}

/// The cluster's PodDisruptionBudget.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodDisruptionBudgetSpec {
    /// Create the PodDisruptionBudget.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Brokers that may be voluntarily evicted at once: a number or a percentage (`"25%"`).
    #[serde(default = "default_max_unavailable")]
    pub max_unavailable: IntOrString,
}

impl Default for PodDisruptionBudgetSpec {
    fn default() -> Self {
        PodDisruptionBudgetSpec { enabled: true, max_unavailable: default_max_unavailable() }
    }
}

/// What the operator observed.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BrokerClusterStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Broker pods that exist.
    #[serde(default)]
    pub replicas: i32,
    /// Broker pods that are Ready.
    #[serde(default)]
    pub ready_replicas: i32,
    /// The label selector of the broker pods (for `kubectl scale` and autoscalers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// `Pending` (nothing ready yet), `Progressing` (creating, scaling or rolling),
    /// `Ready` (every broker ready and configured) or `Degraded` (something needs a person).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// `Ready`, `Progressing` and `Degraded`, each with a reason and a message.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,
    /// One entry per broker pod, by pod name.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["pod".into()]))]
    pub nodes: Vec<NodeStatus>,
    /// Where MQTT clients connect: `<service>.<namespace>.svc:<port>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// The Secret with the management API's credentials (generated or given).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_secret: Option<String>,
}

/// The cluster's phase, the short form of its conditions.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum Phase {
    /// Created, no broker ready yet.
    Pending,
    /// Creating, scaling or rolling out; not every broker ready and up to date.
    Progressing,
    /// Every broker ready, up to date and configured.
    Ready,
    /// Something is wrong that waiting will not fix (see the `Degraded` condition).
    Degraded,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::Progressing => "Progressing",
            Phase::Ready => "Ready",
            Phase::Degraded => "Degraded",
        }
    }
}

/// One broker pod as the operator last saw it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeStatus {
    /// The pod's name, which is also the broker's node name.
    pub pod: String,
    /// The pod's IP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// The pod is Ready and its management API answered.
    #[serde(default)]
    pub ready: bool,
    /// The broker's version (from `GET /api/v1/brokers`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Connected MQTT clients when the operator last looked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connections: Option<u64>,
    /// Why the node is not ready or could not be configured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

fn yes() -> bool {
    true
}
fn default_mqtt_port() -> i32 {
    DEFAULT_MQTT_PORT
}
fn default_ws_port() -> i32 {
    DEFAULT_WS_PORT
}
fn default_tls_port() -> i32 {
    DEFAULT_TLS_PORT
}
fn default_admin_port() -> i32 {
    DEFAULT_ADMIN_PORT
}
fn default_ws_path() -> String {
    "/mqtt".to_string()
}
fn default_storage_size() -> Quantity {
    Quantity("1Gi".to_string())
}
fn default_users_key() -> String {
    "credentials.toml".to_string()
}
fn default_max_unavailable() -> IntOrString {
    IntOrString::Int(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::CustomResourceExt;

    #[test]
    fn a_minimal_object_gets_every_default() {
        let bc: BrokerCluster = serde_json::from_value(serde_json::json!({
            "apiVersion": "starling.dev/v1alpha1",
            "kind": "BrokerCluster",
            "metadata": {"name": "demo"},
            "spec": {}
        }))
        .unwrap();
        let s = &bc.spec;
        assert_eq!(s.replicas, 3);
        assert_eq!(s.image_pull_policy, PullPolicy::IfNotPresent);
        assert_eq!((s.listeners.mqtt.port, s.listeners.websocket.port, s.admin.port), (1883, 8083, 8081));
        assert!(s.listeners.mqtt.enabled && s.listeners.websocket.enabled && s.listeners.tls.is_none());
        assert_eq!(s.persistence.size.0, "1Gi");
        assert!(s.pod_disruption_budget.enabled);
        assert_eq!(s.settings, None);
    }

    #[test]
    fn settings_are_the_shared_type_with_the_brokers_keys() {
        let bc: BrokerClusterSpec =
            serde_json::from_value(serde_json::json!({"settings": {"limits": {"max_inflight": 32}}})).unwrap();
        let settings = bc.settings.unwrap();
        assert_eq!(settings.limits.max_inflight, 32);
        assert_eq!(settings.limits.max_packet_size, Settings::default().limits.max_packet_size);
    }

    #[test]
    fn the_crd_has_names_columns_subresources_and_rules() {
        let crd = serde_json::to_value(BrokerCluster::crd()).unwrap();
        assert_eq!(crd["metadata"]["name"], "brokerclusters.starling.dev");
        assert_eq!(crd["spec"]["names"]["shortNames"][0], "bc");
        assert_eq!(crd["spec"]["scope"], "Namespaced");
        let v = &crd["spec"]["versions"][0];
        assert_eq!(v["name"], "v1alpha1");
        assert!(v["subresources"]["status"].is_object());
        assert_eq!(v["subresources"]["scale"]["specReplicasPath"], ".spec.replicas");
        let columns: Vec<&str> =
            v["additionalPrinterColumns"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
        assert_eq!(columns, ["Replicas", "Ready", "Phase", "Endpoint", "Age"]);
        let spec = &v["schema"]["openAPIV3Schema"]["properties"]["spec"];
        let text = spec.to_string();
        assert!(text.contains("self >= 1"), "{text}");
        assert!(text.contains("self == oldSelf"), "{text}");
        assert!(text.contains("ports must all differ"), "{text}");
        assert!(spec["properties"]["settings"]["properties"]["limits"]["properties"]["max_inflight"].is_object());
    }
}
