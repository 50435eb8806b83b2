//! Traffic rules over the API: the whole set (GET/PUT) and one rule by name (GET/PUT/DELETE).
//! Changes apply at once to new and existing connections.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use crds::TrafficRule;

use super::AppState;
use super::error::{ApiError, ApiJson, ApiResult};

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/api/v1/traffic-rules", get(list).put(replace_all))
        .route("/api/v1/traffic-rules/{name}", get(get_one).put(put).delete(delete))
}

/// Every traffic rule, by name (applied in name order; the first match wins).
#[utoipa::path(get, path = "/api/v1/traffic-rules", tag = "traffic", responses((status = 200, body = BTreeMap<String, TrafficRule>)))]
pub async fn list(State(state): State<Arc<AppState>>) -> axum::Json<BTreeMap<String, TrafficRule>> {
    axum::Json(state.broker.traffic.list())
}

/// Replaces the whole set (all or nothing).
#[utoipa::path(put, path = "/api/v1/traffic-rules", tag = "traffic", request_body = BTreeMap<String, TrafficRule>,
    responses((status = 200, body = BTreeMap<String, TrafficRule>), (status = 400, body = super::error::ErrorBody)))]
pub async fn replace_all(
    State(state): State<Arc<AppState>>,
    ApiJson(all): ApiJson<BTreeMap<String, TrafficRule>>,
) -> ApiResult<axum::Json<BTreeMap<String, TrafficRule>>> {
    state.broker.traffic.replace_all(&state.broker, all).map_err(ApiError::bad)?;
    Ok(axum::Json(state.broker.traffic.list()))
}

/// One traffic rule.
#[utoipa::path(get, path = "/api/v1/traffic-rules/{name}", tag = "traffic", params(("name" = String, Path)),
    responses((status = 200, body = TrafficRule), (status = 404, body = super::error::ErrorBody)))]
pub async fn get_one(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> ApiResult<axum::Json<TrafficRule>> {
    state.broker.traffic.get(&name).map(axum::Json).ok_or_else(|| ApiError::not_found(format!("traffic rule {name:?}")))
}

/// Creates (201) or replaces (200) one traffic rule.
#[utoipa::path(put, path = "/api/v1/traffic-rules/{name}", tag = "traffic", params(("name" = String, Path)), request_body = TrafficRule,
    responses((status = 201, body = TrafficRule), (status = 200, body = TrafficRule), (status = 400, body = super::error::ErrorBody)))]
pub async fn put(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    ApiJson(rule): ApiJson<TrafficRule>,
) -> ApiResult<(StatusCode, axum::Json<TrafficRule>)> {
    let existed = state.broker.traffic.put(&state.broker, &name, rule.clone()).map_err(ApiError::bad)?;
    Ok((if existed { StatusCode::OK } else { StatusCode::CREATED }, axum::Json(rule)))
}

/// Deletes a traffic rule.
#[utoipa::path(delete, path = "/api/v1/traffic-rules/{name}", tag = "traffic", params(("name" = String, Path)),
    responses((status = 204, description = "deleted"), (status = 404, body = super::error::ErrorBody)))]
pub async fn delete(State(state): State<Arc<AppState>>, Path(name): Path<String>) -> ApiResult<StatusCode> {
    if state.broker.traffic.delete(&state.broker, &name) {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!("traffic rule {name:?}")))
    }
}
