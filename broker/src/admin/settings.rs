//! The hot-reloadable settings (`/api/v1/config`): read them, change them without a restart
//! (validated, applied at once, kept in `settings.json` across restarts), refuse the rest.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use crds::{ConfigUpdate, Settings, SettingsChange as Change};
use serde_json::Value;

use super::AppState;
use super::error::{ApiError, ApiResult, code, parse_json};
use crate::broker::Broker;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new().route("/api/v1/config", get(get_config).put(put_config))
}

/// Config sections that only change with a restart (edit the config file instead).
const NEEDS_RESTART: &[&str] = &["node", "listeners", "auth", "tenancy", "store", "sys", "log", "admin", "cluster"];

/// The settings in force.
#[utoipa::path(get, path = "/api/v1/config", tag = "config", responses((status = 200, body = Settings)))]
pub async fn get_config(State(state): State<Arc<AppState>>) -> axum::Json<Settings> {
    axum::Json(state.broker.settings())
}

/// Changes settings: give any subset of `GET`'s fields (`limits` merges field by field). New
/// values apply at once to what happens next (new connections, packets, subscriptions) and are
/// kept across restarts. Sections that need a restart are refused with a message saying so.
#[utoipa::path(put, path = "/api/v1/config", tag = "config", request_body = Settings,
    responses((status = 200, body = ConfigUpdate), (status = 400, body = super::error::ErrorBody), (status = 500, body = super::error::ErrorBody)))]
pub async fn put_config(
    State(state): State<Arc<AppState>>,
    body: axum::body::Bytes,
) -> ApiResult<axum::Json<ConfigUpdate>> {
    let patch: Value = parse_json(&body)?;
    let Value::Object(patch) = patch else {
        return Err(ApiError::bad("the body must be a JSON object"));
    };
    for key in patch.keys() {
        if NEEDS_RESTART.contains(&key.as_str()) {
            return Err(ApiError::bad(format!(
                "`{key}` cannot change at runtime: it needs a restart; change it in the config file"
            )));
        }
    }
    let old = state.broker.settings();
    let mut merged = serde_json::to_value(&old).map_err(|e| ApiError::internal(e.to_string()))?;
    merge(&mut merged, Value::Object(patch));
    let text = serde_json::to_vec(&merged).map_err(|e| ApiError::internal(e.to_string()))?;
    let new: Settings = parse_json(&text)?;
    new.validate().map_err(ApiError::bad)?;
    let mut changed = BTreeMap::new();
    diff(
        "",
        &serde_json::to_value(&old).unwrap_or_default(),
        &serde_json::to_value(&new).unwrap_or_default(),
        &mut changed,
    );
    if !changed.is_empty() {
        persist(&state.settings_file, &new)
            .map_err(|e| ApiError::new(axum::http::StatusCode::INTERNAL_SERVER_ERROR, code::WRITE_FAILED, e))?;
        state.broker.set_settings(new.clone());
        tracing::info!(changed = ?changed.keys().collect::<Vec<_>>(), "settings changed");
    }
    Ok(axum::Json(ConfigUpdate { changed, settings: new }))
}

fn merge(base: &mut Value, patch: Value) {
    match (base, patch) {
        (Value::Object(b), Value::Object(p)) => {
            for (k, v) in p {
                match b.get_mut(&k) {
                    Some(slot) if slot.is_object() && v.is_object() => merge(slot, v),
                    _ => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, p) => *b = p,
    }
}

fn diff(prefix: &str, old: &Value, new: &Value, out: &mut BTreeMap<String, Change>) {
    match (old, new) {
        (Value::Object(o), Value::Object(n)) => {
            for (k, nv) in n {
                let name = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                diff(&name, o.get(k).unwrap_or(&Value::Null), nv, out);
            }
        }
        (o, n) if o != n => {
            out.insert(prefix.to_string(), Change { from: o.clone(), to: n.clone() });
        }
        _ => {}
    }
}

fn persist(path: &Path, settings: &Settings) -> Result<(), String> {
    let text = serde_json::to_string_pretty(settings).map_err(|e| e.to_string())?;
    let tmp = path.with_extension("json.tmp");
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    std::fs::write(&tmp, text).map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, path).map_err(|e| format!("{}: {e}", path.display()))
}

/// Applies settings a previous `PUT` kept, over the config file's. A broken file is logged and
/// ignored (the config file's values stay).
pub fn load_persisted(broker: &Broker, path: &Path) {
    let Ok(text) = std::fs::read_to_string(path) else { return };
    match serde_json::from_str::<Settings>(&text).map_err(|e| e.to_string()).and_then(|s| s.validate().map(|()| s)) {
        Ok(s) => {
            tracing::info!(file = %path.display(), "applying settings changed through the admin API");
            broker.set_settings(s);
        }
        Err(e) => tracing::warn!(file = %path.display(), error = %e, "ignoring saved settings"),
    }
}
