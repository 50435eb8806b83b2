//! Retained messages per tenant: list, read, set (payload, QoS, expiry), delete, and expire
//! the ones older than a given age (BifroMQ).

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use base64::Engine;
use bytestring::ByteString;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::AppState;
use super::clients::TenantQuery;
use super::error::{ApiError, ApiJson, ApiQuery, ApiResult};
use super::paging::{Page, Paging};
use super::publish::{Encoding, decode_payload, parse_qos};
use crate::message::{Message, MessageProperties, now_ms};
use crate::topic::validate_name;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/api/v1/retained", get(list))
        .route("/api/v1/retained/expire", post(expire))
        .route("/api/v1/retained/{*topic}", get(get_one).put(put).delete(delete))
}

/// A retained message.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RetainedInfo {
    pub tenant: String,
    pub topic: String,
    /// The payload as text if it is UTF-8, else base64 (see `encoding`).
    pub payload: String,
    pub encoding: Encoding,
    pub qos: u8,
    /// Seconds left before it expires, if it has a Message Expiry Interval.
    pub expiry_remaining: Option<u32>,
    /// When it was retained, ms since the Unix epoch.
    pub received_at: u64,
    pub content_type: Option<String>,
}

fn info(m: &Message) -> RetainedInfo {
    let (payload, encoding) = match std::str::from_utf8(&m.payload) {
        Ok(s) => (s.to_string(), Encoding::Plain),
        Err(_) => (base64::engine::general_purpose::STANDARD.encode(&m.payload), Encoding::Base64),
    };
    RetainedInfo {
        tenant: m.tenant.clone(),
        topic: m.topic.to_string(),
        payload,
        encoding,
        qos: u8::from(m.qos),
        expiry_remaining: m.remaining_expiry(now_ms()),
        received_at: m.received_ms,
        content_type: m.properties.content_type.as_ref().map(|c| c.to_string()),
    }
}

/// Retained messages of a tenant (default `global`), sorted by topic.
#[utoipa::path(get, path = "/api/v1/retained", tag = "retained", params(TenantQuery, Paging),
    responses((status = 200, body = inline(Page<RetainedInfo>))))]
pub async fn list(
    State(state): State<Arc<AppState>>,
    ApiQuery(q): ApiQuery<TenantQuery>,
    ApiQuery(paging): ApiQuery<Paging>,
) -> ApiResult<axum::Json<Page<RetainedInfo>>> {
    let tenant = state.tenant(q.tenant.as_deref())?;
    let rows = state.broker.retained.list(&tenant).iter().map(|m| info(m)).collect();
    Ok(axum::Json(paging.page(rows, state.max_page_limit())?))
}

fn checked_topic(state: &AppState, topic: &str) -> ApiResult<()> {
    validate_name(topic, state.broker.limits().max_topic_levels)
        .map_err(|e| ApiError::topic(format!("topic {topic:?}: {e}")))
}

/// The retained message of one topic (the rest of the path; URL-encode as needed).
#[utoipa::path(get, path = "/api/v1/retained/{topic}", tag = "retained", params(("topic" = String, Path), TenantQuery),
    responses((status = 200, body = RetainedInfo), (status = 404, body = super::error::ErrorBody)))]
pub async fn get_one(
    State(state): State<Arc<AppState>>,
    Path(topic): Path<String>,
    ApiQuery(q): ApiQuery<TenantQuery>,
) -> ApiResult<axum::Json<RetainedInfo>> {
    checked_topic(&state, &topic)?;
    let tenant = state.tenant(q.tenant.as_deref())?;
    let m = state
        .broker
        .retained
        .get(&tenant, &topic)
        .ok_or_else(|| ApiError::not_found(format!("retained message on {topic:?}")))?;
    Ok(axum::Json(info(&m)))
}

/// A retained message to set.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetainRequest {
    /// Must not be empty (delete the message instead).
    pub payload: String,
    #[serde(default)]
    pub encoding: Encoding,
    #[serde(default)]
    pub qos: u8,
    /// Message Expiry Interval in seconds; none: never expires.
    pub expiry: Option<u32>,
    pub content_type: Option<String>,
}

/// Sets the retained message of a topic without publishing it to current subscribers.
#[utoipa::path(put, path = "/api/v1/retained/{topic}", tag = "retained", params(("topic" = String, Path), TenantQuery),
    request_body = RetainRequest,
    responses((status = 200, body = RetainedInfo), (status = 400, body = super::error::ErrorBody)))]
pub async fn put(
    State(state): State<Arc<AppState>>,
    Path(topic): Path<String>,
    ApiQuery(q): ApiQuery<TenantQuery>,
    ApiJson(req): ApiJson<RetainRequest>,
) -> ApiResult<axum::Json<RetainedInfo>> {
    checked_topic(&state, &topic)?;
    if topic.starts_with("$SYS") {
        return Err(ApiError::topic("$SYS topics are the broker's"));
    }
    let tenant = state.tenant(q.tenant.as_deref())?;
    let qos = parse_qos(req.qos, "qos")?;
    let payload = decode_payload(req.payload, req.encoding)?;
    if payload.is_empty() {
        return Err(ApiError::bad("`payload` must not be empty; DELETE the retained message instead"));
    }
    let msg = Message {
        tenant: tenant.to_string(),
        topic: ByteString::from(topic.as_str()),
        payload,
        qos,
        retain: true,
        properties: MessageProperties {
            message_expiry: req.expiry,
            content_type: req.content_type.map(ByteString::from),
            ..MessageProperties::default()
        },
        publisher: None,
        received_ms: now_ms(),
    };
    let b = &state.broker;
    match b.set_retained(msg) {
        Ok(Some(t)) => b.store.wait(t).await,
        Ok(None) => {}
        Err(e) => return Err(ApiError::conflict(super::error::code::BAD_PARAMETER, e)),
    }
    let m = b.retained.get(&tenant, &topic).ok_or_else(|| ApiError::internal("retained message vanished"))?;
    Ok(axum::Json(info(&m)))
}

/// Deletes the retained message of a topic.
#[utoipa::path(delete, path = "/api/v1/retained/{topic}", tag = "retained", params(("topic" = String, Path), TenantQuery),
    responses((status = 204, description = "deleted"), (status = 404, body = super::error::ErrorBody)))]
pub async fn delete(
    State(state): State<Arc<AppState>>,
    Path(topic): Path<String>,
    ApiQuery(q): ApiQuery<TenantQuery>,
) -> ApiResult<StatusCode> {
    checked_topic(&state, &topic)?;
    let tenant = state.tenant(q.tenant.as_deref())?;
    if state.broker.delete_retained(&tenant, &topic) {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!("retained message on {topic:?}")))
    }
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetainedExpireRequest {
    /// Retained messages stored at least this long ago are deleted.
    pub expiry_seconds: u64,
    pub tenant: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct RetainedExpired {
    pub expired: usize,
}

/// Deletes a tenant's retained messages older than `expiry_seconds`.
#[utoipa::path(post, path = "/api/v1/retained/expire", tag = "retained", request_body = RetainedExpireRequest,
    responses((status = 200, body = RetainedExpired), (status = 400, body = super::error::ErrorBody)))]
pub async fn expire(
    State(state): State<Arc<AppState>>,
    ApiJson(req): ApiJson<RetainedExpireRequest>,
) -> ApiResult<axum::Json<RetainedExpired>> {
    let tenant = state.tenant(req.tenant.as_deref())?;
    let cutoff = now_ms().saturating_sub(req.expiry_seconds.saturating_mul(1000));
    let b = &state.broker;
    let old: Vec<String> =
        b.retained.list(&tenant).iter().filter(|m| m.received_ms <= cutoff).map(|m| m.topic.to_string()).collect();
    let expired = old.iter().filter(|t| b.delete_retained(&tenant, t)).count();
    Ok(axum::Json(RetainedExpired { expired }))
}
