//! Sessions, offline persistent ones included: state (inflight, queue, awaiting PUBREL,
//! delivered and dropped counts, subscriptions, expiry) and expiring inactive ones (BifroMQ).

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::AppState;
use super::clients::TenantQuery;
use super::error::{ApiError, ApiJson, ApiQuery, ApiResult};
use super::paging::{Page, Paging};
use super::subscriptions::{SubscriptionInfo, subscriptions_of};
use crate::message::now_ms;
use crate::session::Session;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/api/v1/sessions", get(list))
        .route("/api/v1/sessions/expire", post(expire))
        .route("/api/v1/sessions/{clientid}", get(get_one))
}

/// The state of a session.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct SessionInfo {
    pub tenant: String,
    pub clientid: String,
    pub connected: bool,
    /// Session Expiry Interval, seconds (4294967295: never).
    pub expiry_interval: u32,
    /// QoS 1/2 messages sent and not yet acknowledged.
    pub inflight: usize,
    /// Messages waiting for the inflight window or for the client to come back.
    pub mqueue_len: usize,
    pub max_mqueue: usize,
    /// Inbound QoS 2 packet ids waiting for PUBREL.
    pub awaiting_rel: usize,
    /// Messages delivered, by QoS 0, 1, 2.
    pub delivered: [u64; 3],
    pub dropped_queue_full: u64,
    pub dropped_expired: u64,
    pub dropped_offline_qos0: u64,
    pub subscriptions: Vec<SubscriptionInfo>,
    pub created_at: u64,
    pub connected_at: Option<u64>,
    pub disconnected_at: Option<u64>,
}

fn session_info(node: &str, s: &Session) -> SessionInfo {
    let subscriptions = subscriptions_of(node, s);
    let st = s.lock();
    SessionInfo {
        tenant: s.tenant.to_string(),
        clientid: s.client_id.to_string(),
        connected: st.conn.is_some(),
        expiry_interval: st.expiry_secs,
        inflight: st.inflight.len(),
        mqueue_len: st.queue.len(),
        max_mqueue: st.max_queue,
        awaiting_rel: st.awaiting_rel.len(),
        delivered: st.counters.delivered,
        dropped_queue_full: st.counters.dropped_queue_full,
        dropped_expired: st.counters.dropped_expired,
        dropped_offline_qos0: st.counters.dropped_offline_qos0,
        subscriptions,
        created_at: st.created_ms,
        connected_at: st.connected_ms,
        disconnected_at: st.disconnected_ms,
    }
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SessionFilter {
    /// Only this tenant (default: all tenants).
    pub tenant: Option<String>,
    pub clientid: Option<String>,
    pub connected: Option<bool>,
}

/// Sessions, connected and offline.
#[utoipa::path(get, path = "/api/v1/sessions", tag = "sessions", params(SessionFilter, Paging),
    responses((status = 200, body = inline(Page<SessionInfo>))))]
pub async fn list(
    State(state): State<Arc<AppState>>,
    ApiQuery(f): ApiQuery<SessionFilter>,
    ApiQuery(paging): ApiQuery<Paging>,
) -> ApiResult<axum::Json<Page<SessionInfo>>> {
    state.tenant_filter(f.tenant.as_deref())?;
    let node = state.broker.node_name();
    let mut rows: Vec<SessionInfo> = state
        .broker
        .sessions
        .all()
        .iter()
        .filter(|s| f.tenant.as_deref().is_none_or(|t| &*s.tenant == t))
        .filter(|s| f.clientid.as_deref().is_none_or(|c| &*s.client_id == c))
        .filter(|s| f.connected.is_none_or(|c| s.is_online() == c))
        .map(|s| session_info(node, s))
        .collect();
    rows.sort_by(|a, b| (&a.tenant, &a.clientid).cmp(&(&b.tenant, &b.clientid)));
    Ok(axum::Json(paging.page(rows, state.max_page_limit())?))
}

/// One session.
#[utoipa::path(get, path = "/api/v1/sessions/{clientid}", tag = "sessions", params(("clientid" = String, Path), TenantQuery),
    responses((status = 200, body = SessionInfo), (status = 404, body = super::error::ErrorBody)))]
pub async fn get_one(
    State(state): State<Arc<AppState>>,
    Path(clientid): Path<String>,
    ApiQuery(q): ApiQuery<TenantQuery>,
) -> ApiResult<axum::Json<SessionInfo>> {
    let tenant = state.tenant(q.tenant.as_deref())?;
    let s = state
        .broker
        .sessions
        .get(&tenant, &clientid)
        .ok_or_else(|| ApiError::not_found(format!("session {clientid:?}")))?;
    Ok(axum::Json(session_info(state.broker.node_name(), &s)))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExpireRequest {
    /// Offline sessions disconnected at least this long ago are ended.
    pub expiry_seconds: u64,
    /// Only this tenant (default: the default tenant).
    pub tenant: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Expired {
    /// How many were ended.
    pub expired: usize,
}

/// Ends offline sessions inactive for at least `expiry_seconds` (their wills are published).
#[utoipa::path(post, path = "/api/v1/sessions/expire", tag = "sessions", request_body = ExpireRequest,
    responses((status = 200, body = Expired), (status = 400, body = super::error::ErrorBody)))]
pub async fn expire(
    State(state): State<Arc<AppState>>,
    ApiJson(req): ApiJson<ExpireRequest>,
) -> ApiResult<axum::Json<Expired>> {
    let tenant = state.tenant(req.tenant.as_deref())?;
    let cutoff = now_ms().saturating_sub(req.expiry_seconds.saturating_mul(1000));
    let b = &state.broker;
    let victims: Vec<Arc<Session>> = b
        .sessions
        .all()
        .into_iter()
        .filter(|s| s.tenant == tenant)
        .filter(|s| {
            let st = s.lock();
            st.conn.is_none() && st.disconnected_ms.is_some_and(|d| d <= cutoff)
        })
        .collect();
    for s in &victims {
        let will = s.lock().pending_will.take();
        if let Some((w, timer)) = will {
            timer.abort();
            b.publish_will(w);
        }
        b.sessions.end(&b.router, &b.store, s);
    }
    tracing::info!(%tenant, expired = victims.len(), expiry_seconds = req.expiry_seconds, "sessions expired by request");
    Ok(axum::Json(Expired { expired: victims.len() }))
}
