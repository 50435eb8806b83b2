//! Bridges over the API (NanoMQ's shapes): list, read, create or replace (reconnects), delete,
//! add or remove remote subscriptions without reconnecting, and each bridge's status.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use crds::{BridgeConfig, BridgeStatus, BridgeSubscription};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::AppState;
use super::error::{ApiError, ApiJson, ApiResult};
use crate::bridge::{BridgeLink, Put};

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/api/v1/bridges", get(list))
        .route("/api/v1/bridges/{name}", get(get_one).put(put).delete(delete))
        .route(
            "/api/v1/bridges/{name}/subscriptions",
            axum::routing::put(add_subscriptions).delete(remove_subscriptions),
        )
        .route("/api/v1/bridges/{name}/status", get(status))
}

/// A bridge with its status.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct BridgeInfo {
    pub name: String,
    pub config: BridgeConfig,
    pub status: BridgeStatus,
}

fn info(l: &BridgeLink) -> BridgeInfo {
    let mut config = l.config();
    // Never hand the remote password back.
    if config.password.is_some() {
        config.password = Some("******".into());
    }
    BridgeInfo { name: l.name.clone(), config, status: l.status() }
}

fn link(state: &AppState, name: &str) -> ApiResult<Arc<BridgeLink>> {
    state.broker.bridges.get(name).ok_or_else(|| ApiError::not_found(format!("bridge {name:?}")))
}

/// Every bridge.
#[utoipa::path(get, path = "/api/v1/bridges", tag = "bridges", responses((status = 200, body = Vec<BridgeInfo>)))]
pub async fn list(State(state): State<Arc<AppState>>) -> axum::Json<Vec<BridgeInfo>> {
    axum::Json(state.broker.bridges.list().iter().map(|l| info(l)).collect())
}

/// One bridge (the password masked).
#[utoipa::path(get, path = "/api/v1/bridges/{name}", tag = "bridges", params(("name" = String, Path)),
    responses((status = 200, body = BridgeInfo), (status = 404, body = super::error::ErrorBody)))]
pub async fn get_one(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> ApiResult<axum::Json<BridgeInfo>> {
    Ok(axum::Json(info(&*link(&state, &name)?)))
}

/// Creates (201) or replaces (200, reconnects) a bridge; the same config again changes nothing.
#[utoipa::path(put, path = "/api/v1/bridges/{name}", tag = "bridges", params(("name" = String, Path)), request_body = BridgeConfig,
    responses((status = 201, body = BridgeInfo), (status = 200, body = BridgeInfo), (status = 400, body = super::error::ErrorBody)))]
pub async fn put(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    ApiJson(cfg): ApiJson<BridgeConfig>,
) -> ApiResult<(StatusCode, axum::Json<BridgeInfo>)> {
    let outcome = state.broker.bridges.put(&state.broker, &name, cfg).map_err(ApiError::bad)?;
    tracing::info!(bridge = %name, ?outcome, "bridge put");
    let status = if outcome == Put::Created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, axum::Json(info(&*link(&state, &name)?))))
}

/// Stops and deletes a bridge.
#[utoipa::path(delete, path = "/api/v1/bridges/{name}", tag = "bridges", params(("name" = String, Path)),
    responses((status = 204, description = "deleted"), (status = 404, body = super::error::ErrorBody)))]
pub async fn delete(State(state): State<Arc<AppState>>, Path(name): Path<String>) -> ApiResult<StatusCode> {
    if state.broker.bridges.delete(&state.broker, &name) {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!("bridge {name:?}")))
    }
}

/// Remote subscriptions to add.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionsAdd {
    pub subscriptions: Vec<BridgeSubscription>,
}

/// Remote filters to unsubscribe.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubscriptionsRemove {
    pub topics: Vec<String>,
}

/// Adds remote subscriptions without reconnecting.
#[utoipa::path(put, path = "/api/v1/bridges/{name}/subscriptions", tag = "bridges", params(("name" = String, Path)),
    request_body = SubscriptionsAdd,
    responses((status = 200, body = BridgeInfo), (status = 400, body = super::error::ErrorBody), (status = 404, body = super::error::ErrorBody)))]
pub async fn add_subscriptions(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<SubscriptionsAdd>,
) -> ApiResult<axum::Json<BridgeInfo>> {
    let l = link(&state, &name)?;
    state.broker.bridges.subscribe(&state.broker, &name, req.subscriptions).map_err(ApiError::bad)?;
    Ok(axum::Json(info(&l)))
}

/// Removes remote subscriptions without reconnecting.
#[utoipa::path(delete, path = "/api/v1/bridges/{name}/subscriptions", tag = "bridges", params(("name" = String, Path)),
    request_body = SubscriptionsRemove,
    responses((status = 200, body = BridgeInfo), (status = 404, body = super::error::ErrorBody)))]
pub async fn remove_subscriptions(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    ApiJson(req): ApiJson<SubscriptionsRemove>,
) -> ApiResult<axum::Json<BridgeInfo>> {
    let l = link(&state, &name)?;
    state.broker.bridges.unsubscribe(&state.broker, &name, req.topics).map_err(ApiError::bad)?;
    Ok(axum::Json(info(&l)))
}

/// Connected or not, since when, the last error, counts and queue length.
#[utoipa::path(get, path = "/api/v1/bridges/{name}/status", tag = "bridges", params(("name" = String, Path)),
    responses((status = 200, body = BridgeStatus), (status = 404, body = super::error::ErrorBody)))]
pub async fn status(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> ApiResult<axum::Json<BridgeStatus>> {
    Ok(axum::Json(link(&state, &name)?.status()))
}
