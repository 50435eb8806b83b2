//! Clients: the filtered list (RMQTT's and gmqtt's fields), lookups by id and username, the
//! online check, kick (ends the session) and disconnect with a v5 server redirect (BifroMQ).

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use rmqtt_codec::v5::DisconnectReasonCode;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::AppState;
use super::error::{ApiError, ApiJson, ApiQuery, ApiResult};
use super::paging::{Page, Paging};
use crate::session::{Kick, Session};

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/api/v1/clients", get(list))
        .route("/api/v1/clients/username/{username}", get(by_username))
        .route("/api/v1/clients/{clientid}", get(get_one).delete(kick))
        .route("/api/v1/clients/{clientid}/online", get(online))
        .route("/api/v1/clients/{clientid}/disconnect", post(disconnect))
}

/// A client (a session, connected or not).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ClientInfo {
    pub node: String,
    pub tenant: String,
    pub clientid: String,
    pub username: Option<String>,
    pub connected: bool,
    pub ip_address: Option<String>,
    pub port: Option<u16>,
    /// `tcp`, `ws` or `tls`.
    pub listener: Option<String>,
    /// 3 (3.1), 4 (3.1.1) or 5.
    pub proto_ver: u8,
    pub clean_start: bool,
    pub keepalive: u16,
    /// Session Expiry Interval, seconds.
    pub expiry_interval: u32,
    pub inflight: usize,
    pub max_inflight: u16,
    pub mqueue_len: usize,
    pub max_mqueue: usize,
    pub subscriptions_cnt: usize,
    /// Whether the connection has a will message.
    pub has_will: bool,
    /// Milliseconds since the Unix epoch.
    pub created_at: u64,
    pub connected_at: Option<u64>,
    pub disconnected_at: Option<u64>,
}

pub fn client_info(node: &str, s: &Session) -> ClientInfo {
    let st = s.lock();
    let conn = st.conn.as_ref();
    ClientInfo {
        node: node.to_string(),
        tenant: s.tenant.to_string(),
        clientid: s.client_id.to_string(),
        username: st.username.clone(),
        connected: conn.is_some(),
        ip_address: conn.map(|c| c.info.peer.ip().to_string()),
        port: conn.map(|c| c.info.peer.port()),
        listener: conn.map(|c| c.info.listener.to_string()),
        proto_ver: st.protocol_level,
        clean_start: conn.map(|c| c.info.clean_start).unwrap_or(false),
        keepalive: conn.map(|c| c.info.keep_alive).unwrap_or(0),
        expiry_interval: st.expiry_secs,
        inflight: st.inflight.len(),
        max_inflight: conn.map(|c| c.receive_max).unwrap_or(0),
        mqueue_len: st.queue.len(),
        max_mqueue: st.max_queue,
        subscriptions_cnt: st.subscriptions.len(),
        has_will: st.will.is_some(),
        created_at: st.created_ms,
        connected_at: st.connected_ms,
        disconnected_at: st.disconnected_ms,
    }
}

/// Filters of the client list; all optional, all must match.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ClientFilter {
    pub tenant: Option<String>,
    pub clientid: Option<String>,
    pub username: Option<String>,
    pub ip_address: Option<String>,
    pub connected: Option<bool>,
    pub clean_start: Option<bool>,
    pub proto_ver: Option<u8>,
    /// Client id contains this.
    pub _like_clientid: Option<String>,
    /// User name contains this.
    pub _like_username: Option<String>,
    /// Created at or after (ms since epoch).
    pub _gte_created_at: Option<u64>,
    pub _lte_created_at: Option<u64>,
    pub _gte_connected_at: Option<u64>,
    pub _lte_connected_at: Option<u64>,
    pub _gte_mqueue_len: Option<usize>,
    pub _lte_mqueue_len: Option<usize>,
}

impl ClientFilter {
    fn matches(&self, c: &ClientInfo) -> bool {
        fn eq<T: PartialEq>(want: &Option<T>, have: T) -> bool {
            want.as_ref().is_none_or(|w| *w == have)
        }
        fn range<T: PartialOrd + Copy>(gte: Option<T>, lte: Option<T>, have: Option<T>) -> bool {
            (gte.is_none() && lte.is_none())
                || have.is_some_and(|h| gte.is_none_or(|g| h >= g) && lte.is_none_or(|l| h <= l))
        }
        let like = |want: &Option<String>, have: Option<&str>| {
            want.as_ref().is_none_or(|w| have.is_some_and(|h| h.contains(w.as_str())))
        };
        eq(&self.clientid.as_deref(), c.clientid.as_str())
            && (self.username.is_none() || self.username.as_deref() == c.username.as_deref())
            && (self.ip_address.is_none() || self.ip_address.as_deref() == c.ip_address.as_deref())
            && eq(&self.connected, c.connected)
            && eq(&self.clean_start, c.clean_start)
            && eq(&self.proto_ver, c.proto_ver)
            && like(&self._like_clientid, Some(&c.clientid))
            && like(&self._like_username, c.username.as_deref())
            && range(self._gte_created_at, self._lte_created_at, Some(c.created_at))
            && range(self._gte_connected_at, self._lte_connected_at, c.connected_at)
            && range(self._gte_mqueue_len, self._lte_mqueue_len, Some(c.mqueue_len))
    }
}

/// Every session of the node's tenants (or of `tenant`), connected or not, filtered.
fn all_clients(state: &AppState, tenant: Option<&str>) -> ApiResult<Vec<ClientInfo>> {
    let tenant = state.tenant_filter(tenant)?;
    let node = state.broker.node_name();
    let mut rows: Vec<ClientInfo> = state
        .broker
        .sessions
        .all()
        .iter()
        .filter(|s| tenant.is_none_or(|t| &*s.tenant == t))
        .map(|s| client_info(node, s))
        .collect();
    rows.sort_by(|a, b| (&a.tenant, &a.clientid).cmp(&(&b.tenant, &b.clientid)));
    Ok(rows)
}

/// Clients, filtered and paged. Without `tenant`, clients of every tenant are listed.
#[utoipa::path(get, path = "/api/v1/clients", tag = "clients", params(ClientFilter, Paging),
    responses((status = 200, body = inline(Page<ClientInfo>)), (status = 400, body = super::error::ErrorBody)))]
pub async fn list(
    State(state): State<Arc<AppState>>,
    ApiQuery(filter): ApiQuery<ClientFilter>,
    ApiQuery(paging): ApiQuery<Paging>,
) -> ApiResult<axum::Json<Page<ClientInfo>>> {
    let rows = all_clients(&state, filter.tenant.as_deref())?.into_iter().filter(|c| filter.matches(c)).collect();
    Ok(axum::Json(paging.page(rows, state.max_page_limit())?))
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TenantQuery {
    /// Default: the default tenant (`global`).
    pub tenant: Option<String>,
}

fn session_of(state: &AppState, tenant: Option<&str>, client_id: &str) -> ApiResult<Arc<Session>> {
    let tenant = state.tenant(tenant)?;
    state.broker.sessions.get(&tenant, client_id).ok_or_else(|| ApiError::not_found(format!("client {client_id:?}")))
}

/// One client.
#[utoipa::path(get, path = "/api/v1/clients/{clientid}", tag = "clients", params(("clientid" = String, Path), TenantQuery),
    responses((status = 200, body = ClientInfo), (status = 404, body = super::error::ErrorBody)))]
pub async fn get_one(
    State(state): State<Arc<AppState>>,
    Path(clientid): Path<String>,
    ApiQuery(q): ApiQuery<TenantQuery>,
) -> ApiResult<axum::Json<ClientInfo>> {
    let s = session_of(&state, q.tenant.as_deref(), &clientid)?;
    Ok(axum::Json(client_info(state.broker.node_name(), &s)))
}

/// Kicks a client and ends its session (v5 clients get DISCONNECT 0x98 Administrative Action).
#[utoipa::path(delete, path = "/api/v1/clients/{clientid}", tag = "clients", params(("clientid" = String, Path), TenantQuery),
    responses((status = 204, description = "kicked, session ended"), (status = 404, body = super::error::ErrorBody)))]
pub async fn kick(
    State(state): State<Arc<AppState>>,
    Path(clientid): Path<String>,
    ApiQuery(q): ApiQuery<TenantQuery>,
) -> ApiResult<StatusCode> {
    let s = session_of(&state, q.tenant.as_deref(), &clientid)?;
    let kicked = {
        let mut st = s.lock();
        let mut k = Kick::new(DisconnectReasonCode::AdministrativeAction);
        k.end_session = true;
        k.reason_string = Some("kicked by an administrator".into());
        st.conn.as_mut().is_some_and(|c| c.kick(k))
    };
    if !kicked {
        // Offline: end the session here.
        let b = &state.broker;
        b.sessions.end(&b.router, &b.store, &s);
    }
    tracing::info!(client_id = %clientid, tenant = %s.tenant, "client kicked");
    Ok(StatusCode::NO_CONTENT)
}

/// Clients logged in with this user name.
#[utoipa::path(get, path = "/api/v1/clients/username/{username}", tag = "clients", params(("username" = String, Path), TenantQuery),
    responses((status = 200, body = Vec<ClientInfo>)))]
pub async fn by_username(
    State(state): State<Arc<AppState>>,
    Path(username): Path<String>,
    ApiQuery(q): ApiQuery<TenantQuery>,
) -> ApiResult<axum::Json<Vec<ClientInfo>>> {
    let rows = all_clients(&state, q.tenant.as_deref())?
        .into_iter()
        .filter(|c| c.username.as_deref() == Some(username.as_str()))
        .collect();
    Ok(axum::Json(rows))
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Online {
    pub online: bool,
}

/// Whether the client is connected now.
#[utoipa::path(get, path = "/api/v1/clients/{clientid}/online", tag = "clients", params(("clientid" = String, Path), TenantQuery),
    responses((status = 200, body = Online)))]
pub async fn online(
    State(state): State<Arc<AppState>>,
    Path(clientid): Path<String>,
    ApiQuery(q): ApiQuery<TenantQuery>,
) -> ApiResult<axum::Json<Online>> {
    let tenant = state.tenant(q.tenant.as_deref())?;
    let online = state.broker.sessions.get(&tenant, &clientid).is_some_and(|s| s.is_online());
    Ok(axum::Json(Online { online }))
}

/// How to send the client elsewhere (MQTT 5 Server Reference).
#[derive(Debug, Default, Clone, Copy, Deserialize, Serialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ServerRedirect {
    /// Plain DISCONNECT 0x98 Administrative Action.
    #[default]
    No,
    /// 0x9D Server Moved.
    Move,
    /// 0x9C Use Another Server.
    TempUse,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DisconnectRequest {
    #[serde(default)]
    pub server_redirect: ServerRedirect,
    /// `host:port` for the client to go to; required with a redirect.
    pub server_reference: Option<String>,
    pub tenant: Option<String>,
}

/// Disconnects a client and keeps its session; optionally redirects it (v5 Server Reference).
#[utoipa::path(post, path = "/api/v1/clients/{clientid}/disconnect", tag = "clients", params(("clientid" = String, Path)),
    request_body = DisconnectRequest,
    responses((status = 204, description = "disconnected"), (status = 400, body = super::error::ErrorBody), (status = 404, body = super::error::ErrorBody)))]
pub async fn disconnect(
    State(state): State<Arc<AppState>>,
    Path(clientid): Path<String>,
    ApiJson(req): ApiJson<DisconnectRequest>,
) -> ApiResult<StatusCode> {
    let reason = match req.server_redirect {
        ServerRedirect::No => DisconnectReasonCode::AdministrativeAction,
        ServerRedirect::Move => DisconnectReasonCode::ServerMoved,
        ServerRedirect::TempUse => DisconnectReasonCode::UseAnotherServer,
    };
    if req.server_redirect != ServerRedirect::No && req.server_reference.as_deref().is_none_or(str::is_empty) {
        return Err(ApiError::missing("server_reference"));
    }
    let s = session_of(&state, req.tenant.as_deref(), &clientid)?;
    let mut k = Kick::new(reason);
    k.server_reference = req.server_reference;
    if !s.lock().conn.as_mut().is_some_and(|c| c.kick(k)) {
        return Err(ApiError::not_online(&clientid));
    }
    Ok(StatusCode::NO_CONTENT)
}
