//! Rules over the API (NanoMQ's shapes): list, create (generated id), read, create or replace
//! by id, delete, and each rule's metrics. Invalid SQL is a 400 naming position and problem.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use crds::{RuleConfig, RuleMetrics};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::AppState;
use super::error::{ApiError, ApiJson, ApiResult};
use crate::rules::{Put, Rule};

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/api/v1/rules", get(list).post(create))
        .route("/api/v1/rules/{id}", get(get_one).put(put).delete(delete))
        .route("/api/v1/rules/{id}/metrics", get(metrics))
}

/// A rule with its id and counts.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RuleInfo {
    pub id: String,
    #[serde(flatten)]
    pub config: RuleConfig,
    pub metrics: RuleMetrics,
}

fn info(r: &Rule) -> RuleInfo {
    RuleInfo { id: r.id.clone(), config: r.config.clone(), metrics: r.metrics() }
}

fn rule(state: &AppState, id: &str) -> ApiResult<Arc<Rule>> {
    state.broker.rules.get(id).ok_or_else(|| ApiError::not_found(format!("rule {id:?}")))
}

/// Every rule.
#[utoipa::path(get, path = "/api/v1/rules", tag = "rules", responses((status = 200, body = Vec<RuleInfo>)))]
pub async fn list(State(state): State<Arc<AppState>>) -> axum::Json<Vec<RuleInfo>> {
    axum::Json(state.broker.rules.list().iter().map(|r| info(r)).collect())
}

/// Creates a rule with a generated id (`rule-<n>`).
#[utoipa::path(post, path = "/api/v1/rules", tag = "rules", request_body = RuleConfig,
    responses((status = 201, body = RuleInfo), (status = 400, body = super::error::ErrorBody)))]
pub async fn create(
    State(state): State<Arc<AppState>>,
    ApiJson(cfg): ApiJson<RuleConfig>,
) -> ApiResult<(StatusCode, axum::Json<RuleInfo>)> {
    let n = (1..).find(|n| state.broker.rules.get(&format!("rule-{n}")).is_none()).unwrap_or(0);
    let id = format!("rule-{n}");
    state.broker.rules.put(&state.broker, &id, cfg).map_err(ApiError::bad)?;
    Ok((StatusCode::CREATED, axum::Json(info(&*rule(&state, &id)?))))
}

/// One rule.
#[utoipa::path(get, path = "/api/v1/rules/{id}", tag = "rules", params(("id" = String, Path)),
    responses((status = 200, body = RuleInfo), (status = 404, body = super::error::ErrorBody)))]
pub async fn get_one(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> ApiResult<axum::Json<RuleInfo>> {
    Ok(axum::Json(info(&*rule(&state, &id)?)))
}

/// Creates (201) or replaces (200) the rule with this id; the same definition changes nothing.
#[utoipa::path(put, path = "/api/v1/rules/{id}", tag = "rules", params(("id" = String, Path)), request_body = RuleConfig,
    responses((status = 201, body = RuleInfo), (status = 200, body = RuleInfo), (status = 400, body = super::error::ErrorBody)))]
pub async fn put(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
    ApiJson(cfg): ApiJson<RuleConfig>,
) -> ApiResult<(StatusCode, axum::Json<RuleInfo>)> {
    let outcome = state.broker.rules.put(&state.broker, &id, cfg).map_err(ApiError::bad)?;
    let status = if outcome == Put::Created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, axum::Json(info(&*rule(&state, &id)?))))
}

/// Deletes a rule.
#[utoipa::path(delete, path = "/api/v1/rules/{id}", tag = "rules", params(("id" = String, Path)),
    responses((status = 204, description = "deleted"), (status = 404, body = super::error::ErrorBody)))]
pub async fn delete(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> ApiResult<StatusCode> {
    if state.broker.rules.delete(&state.broker, &id) {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!("rule {id:?}")))
    }
}

/// Matched, passed and failed messages, and per-action successes and failures.
#[utoipa::path(get, path = "/api/v1/rules/{id}/metrics", tag = "rules", params(("id" = String, Path)),
    responses((status = 200, body = RuleMetrics), (status = 404, body = super::error::ErrorBody)))]
pub async fn metrics(State(state): State<Arc<AppState>>, Path(id): Path<String>) -> ApiResult<axum::Json<RuleMetrics>> {
    Ok(axum::Json(rule(&state, &id)?.metrics()))
}
