//! What a node says about itself at `GET /api/v1/brokers` and `/nodes`: identity, version,
//! uptime, connections and resource use. The operator reads it for its status.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// One broker node.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, JsonSchema, ToSchema)]
#[serde(default)]
pub struct NodeInfo {
    pub node: String,
    /// `running` for this node; peers this node only knows by name are `unknown`.
    pub node_status: String,
    pub version: String,
    pub sysdescr: String,
    pub uptime_secs: u64,
    /// Human-readable uptime, e.g. `2h 3m 4s`.
    pub uptime: String,
    /// Now, RFC 3339 UTC.
    pub datetime: String,
    pub connections: u64,
    /// Resident memory of the process, bytes.
    pub memory_used: u64,
    pub memory_total: u64,
    /// CPU seconds the process used since start.
    pub cpu_seconds: f64,
    pub cpus: usize,
    pub load1: f64,
    pub load5: f64,
    pub load15: f64,
    /// The peer's management address (peers only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
}
