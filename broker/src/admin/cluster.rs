//! This node's view of cluster membership: its name, group tags and member list, set by the
//! operator and kept across restarts, and the state of the links to its peers.

use std::path::Path;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use crds::ClusterMembership;

use crate::cluster::PeerStatus;

use super::AppState;
use super::error::{ApiError, ApiJson, ApiResult, code};

pub fn routes() -> Router<Arc<AppState>> {
    Router::new().route("/api/v1/cluster", get(get_cluster).put(put_cluster)).route("/api/v1/cluster/peers", get(peers))
}

/// The file in the data directory that keeps the membership across restarts.
pub const FILE: &str = "cluster.json";

/// Reads the membership kept by the last `PUT`, or a cluster of this node alone.
pub fn load(path: &Path, node: &str) -> ClusterMembership {
    let saved = std::fs::read_to_string(path).ok().and_then(|t| serde_json::from_str::<ClusterMembership>(&t).ok());
    match saved {
        Some(mut m) => {
            m.node = node.to_string();
            m
        }
        None => ClusterMembership { node: node.to_string(), tags: Vec::new(), members: Vec::new() },
    }
}

/// This node's cluster membership.
#[utoipa::path(get, path = "/api/v1/cluster", tag = "cluster", responses((status = 200, body = ClusterMembership)))]
pub async fn get_cluster(State(state): State<Arc<AppState>>) -> axum::Json<ClusterMembership> {
    axum::Json(state.broker.cluster.read().clone())
}

/// The peers this node links to: link status (up while heartbeats answer), messages queued
/// for and forwarded to each, and the last link error (e.g. a refused handshake).
#[utoipa::path(get, path = "/api/v1/cluster/peers", tag = "cluster", responses((status = 200, body = Vec<PeerStatus>)))]
pub async fn peers(State(state): State<Arc<AppState>>) -> axum::Json<Vec<PeerStatus>> {
    axum::Json(state.broker.cluster_links.peers())
}

/// Sets tags and members (the operator does, for every pod). `node` may be left out; if given
/// it must be this node's name. Tags are sorted and deduplicated.
#[utoipa::path(put, path = "/api/v1/cluster", tag = "cluster", request_body = ClusterMembership,
    responses((status = 200, body = ClusterMembership), (status = 400, body = super::error::ErrorBody)))]
pub async fn put_cluster(
    State(state): State<Arc<AppState>>,
    ApiJson(mut m): ApiJson<ClusterMembership>,
) -> ApiResult<axum::Json<ClusterMembership>> {
    let node = state.broker.node_name();
    if !m.node.is_empty() && m.node != node {
        return Err(ApiError::bad(format!("`node` is {:?} but this node is {node:?}", m.node)));
    }
    m.node = node.to_string();
    m.validate().map_err(ApiError::bad)?;
    m.tags.sort();
    m.tags.dedup();
    m.members.sort();
    let text = serde_json::to_string_pretty(&m).map_err(|e| ApiError::internal(e.to_string()))?;
    std::fs::write(&state.cluster_file, text).map_err(|e| {
        ApiError::new(
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            code::WRITE_FAILED,
            format!("{}: {e}", state.cluster_file.display()),
        )
    })?;
    *state.broker.cluster.write() = m.clone();
    state.broker.apply_membership();
    tracing::info!(members = m.members.len(), tags = ?m.tags, "cluster membership set");
    Ok(axum::Json(m))
}
