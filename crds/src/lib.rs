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
