//! Stopping and restarting the node over HTTP (NanoMQ's `ctrl`): both graceful, as on SIGTERM;
//! a restart reloads the config file and the store in the same process.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::post;
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;
use super::error::{ApiError, ApiResult};

pub fn routes() -> Router<Arc<AppState>> {
    Router::new().route("/api/v1/ctrl/{action}", post(ctrl))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct CtrlAccepted {
    pub action: String,
}

/// `stop` or `restart` the node gracefully (clients get 0x8B Server Shutting Down). Answered
/// before the node goes down.
#[utoipa::path(post, path = "/api/v1/ctrl/{action}", tag = "ctrl", params(("action" = String, Path, description = "stop or restart")),
    responses((status = 202, body = CtrlAccepted), (status = 400, body = super::error::ErrorBody)))]
pub async fn ctrl(
    State(state): State<Arc<AppState>>,
    Path(action): Path<String>,
) -> ApiResult<(StatusCode, axum::Json<CtrlAccepted>)> {
    let restart = match action.as_str() {
        "stop" => false,
        "restart" => true,
        other => return Err(ApiError::bad(format!("action must be stop or restart, got {other:?}"))),
    };
    tracing::warn!(action, "node {action} requested through the admin API");
    let broker = state.broker.clone();
    broker.restart_requested.store(restart, Ordering::Relaxed);
    tokio::spawn(async move {
        // Let the response leave first.
        tokio::time::sleep(Duration::from_millis(200)).await;
        broker.shutdown.cancel();
    });
    Ok((StatusCode::ACCEPTED, axum::Json(CtrlAccepted { action })))
}
