//! The node's built-in modules (RMQTT's plugins): which exist, whether active, their config;
//! `load`/`unload` toggles the ones that can be toggled at runtime.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::{Path, State};
use axum::routing::{get, put};
use serde::Serialize;
use serde_json::{Value, json};
use utoipa::ToSchema;

use super::AppState;
use super::error::{ApiError, ApiResult, code};

pub fn routes() -> Router<Arc<AppState>> {
    Router::new().route("/api/v1/plugins", get(list)).route("/api/v1/plugins/{name}/{action}", put(toggle))
}

/// A built-in module.
#[derive(Debug, Serialize, ToSchema)]
pub struct Plugin {
    pub name: String,
    pub description: String,
    pub active: bool,
    /// Whether `load`/`unload` work at runtime.
    pub toggleable: bool,
    pub config: Value,
}

fn plugins(state: &AppState) -> Vec<Plugin> {
    let b = &state.broker;
    vec![
        Plugin {
            name: "auth".into(),
            description: "username/password from the credentials file, anonymous access, tenancy rule".into(),
            active: true,
            toggleable: false,
            config: json!({
                "allow_anonymous": b.allow_anonymous(),
                "credentials_file": b.config.auth.credentials_file,
                // As spelled in the config file (`username_prefix`), not the Rust variant name.
                "tenancy_rule": b.config.tenancy.rule,
            }),
        },
        Plugin {
            name: "bridges".into(),
            description: "outbound MQTT links to remote brokers (/api/v1/bridges)".into(),
            active: true,
            toggleable: false,
            config: json!({ "bridges": b.bridges.list().len() }),
        },
        Plugin {
            name: "rules".into(),
            description: "the SQL rule engine (/api/v1/rules)".into(),
            active: !b.rules.paused.load(Ordering::Relaxed),
            toggleable: true,
            config: json!({ "rules": b.rules.list().len() }),
        },
        Plugin {
            name: "traffic".into(),
            description: "traffic rules: quotas, rate limits, placement (/api/v1/traffic-rules)".into(),
            active: !b.traffic.is_paused(),
            toggleable: true,
            config: json!({ "rules": b.traffic.list().len() }),
        },
        Plugin {
            name: "sys".into(),
            description: "$SYS/brokers/{node}/... topics".into(),
            active: b.sys_enabled.load(Ordering::Relaxed),
            toggleable: b.config.sys.interval_secs > 0,
            config: json!({ "interval_secs": b.config.sys.interval_secs }),
        },
    ]
}

/// The built-in modules.
#[utoipa::path(get, path = "/api/v1/plugins", tag = "plugins", responses((status = 200, body = Vec<Plugin>)))]
pub async fn list(State(state): State<Arc<AppState>>) -> axum::Json<Vec<Plugin>> {
    axum::Json(plugins(&state))
}

/// `load` or `unload` a module. 409 with code 110/111 when it already is.
#[utoipa::path(put, path = "/api/v1/plugins/{name}/{action}", tag = "plugins",
    params(("name" = String, Path), ("action" = String, Path, description = "load or unload")),
    responses((status = 200, body = Plugin), (status = 400, body = super::error::ErrorBody), (status = 404, body = super::error::ErrorBody), (status = 409, body = super::error::ErrorBody)))]
pub async fn toggle(
    State(state): State<Arc<AppState>>,
    Path((name, action)): Path<(String, String)>,
) -> ApiResult<axum::Json<Plugin>> {
    let load = match action.as_str() {
        "load" => true,
        "unload" => false,
        other => return Err(ApiError::bad(format!("action must be load or unload, got {other:?}"))),
    };
    let p = plugins(&state)
        .into_iter()
        .find(|p| p.name == name)
        .ok_or_else(|| ApiError::not_found(format!("plugin {name:?}")))?;
    if !p.toggleable {
        return Err(ApiError::bad(format!("plugin {name:?} cannot be loaded or unloaded at runtime")));
    }
    if p.active == load {
        let c = if load { code::PLUGIN_LOADED } else { code::PLUGIN_UNLOADED };
        return Err(ApiError::conflict(
            c,
            format!("plugin {name:?} is already {}", if load { "loaded" } else { "unloaded" }),
        ));
    }
    match name.as_str() {
        "sys" => state.broker.sys_enabled.store(load, Ordering::Relaxed),
        "rules" => state.broker.rules.paused.store(!load, Ordering::Relaxed),
        "traffic" => state.broker.traffic.set_paused(!load),
        _ => return Err(ApiError::bad(format!("plugin {name:?} cannot be loaded or unloaded at runtime"))),
    }
    tracing::info!(plugin = %name, active = load, "plugin toggled");
    plugins(&state)
        .into_iter()
        .find(|p| p.name == name)
        .map(axum::Json)
        .ok_or_else(|| ApiError::internal("plugin vanished"))
}
