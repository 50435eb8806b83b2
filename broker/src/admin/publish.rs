//! Publishing over HTTP (NanoMQ's shape): one message or a batch, plain or base64 payloads,
//! MQTT 5 properties; answered once what the message put in persistent sessions is durable.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::routing::post;
use base64::Engine;
use bytes::Bytes;
use bytestring::ByteString;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::AppState;
use super::error::{ApiError, ApiJson, ApiResult};
use super::subscriptions::topics_of;
use crate::message::{Message, MessageProperties, now_ms};
use crate::topic::validate_name;
use rmqtt_codec::types::QoS;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new().route("/api/v1/mqtt/publish", post(publish)).route("/api/v1/mqtt/publish_batch", post(publish_batch))
}

#[derive(Debug, Default, Clone, Copy, Deserialize, Serialize, ToSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Encoding {
    #[default]
    Plain,
    Base64,
}

/// MQTT 5 properties of a published message.
#[derive(Debug, Default, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PublishProperties {
    /// 0: bytes, 1: UTF-8 text.
    pub payload_format_indicator: Option<u8>,
    /// Seconds.
    pub message_expiry_interval: Option<u32>,
    pub response_topic: Option<String>,
    /// Text (as UTF-8 bytes).
    pub correlation_data: Option<String>,
    pub content_type: Option<String>,
    #[serde(default)]
    pub user_properties: std::collections::BTreeMap<String, String>,
}

/// A message to publish.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PublishRequest {
    pub topic: Option<String>,
    /// Several topics separated by commas; the message goes to each.
    pub topics: Option<String>,
    /// Shown to subscribers as the publisher (for No Local); default none.
    pub clientid: Option<String>,
    pub payload: String,
    #[serde(default)]
    pub encoding: Encoding,
    #[serde(default)]
    pub qos: u8,
    #[serde(default)]
    pub retain: bool,
    #[serde(default)]
    pub properties: Option<PublishProperties>,
    pub tenant: Option<String>,
}

/// What became of one message (or one topic of it).
#[derive(Debug, Serialize, ToSchema)]
pub struct PublishResult {
    pub topic: String,
    /// 0 for success, else the error code.
    pub code: u16,
    pub message: String,
    /// Sessions the message was handed to.
    pub matched: usize,
}

/// A QoS given as a number; the message names `field`.
pub fn parse_qos(q: u8, field: &str) -> ApiResult<QoS> {
    match q {
        0 => Ok(QoS::AtMostOnce),
        1 => Ok(QoS::AtLeastOnce),
        2 => Ok(QoS::ExactlyOnce),
        _ => Err(ApiError::bad(format!("`{field}` must be 0, 1 or 2, got {q}"))),
    }
}

/// A `payload` as sent: plain text or base64.
pub fn decode_payload(payload: String, encoding: Encoding) -> ApiResult<Bytes> {
    match encoding {
        Encoding::Plain => Ok(Bytes::from(payload.into_bytes())),
        Encoding::Base64 => base64::engine::general_purpose::STANDARD
            .decode(payload.trim())
            .map(Bytes::from)
            .map_err(|e| ApiError::bad(format!("`payload` is not base64: {e}"))),
    }
}

async fn do_publish(state: &AppState, req: PublishRequest) -> ApiResult<Vec<PublishResult>> {
    let b = &state.broker;
    let tenant = state.tenant(req.tenant.as_deref())?;
    let topics = topics_of(&req.topic, &req.topics)?;
    let limits = b.limits();
    for t in &topics {
        validate_name(t, limits.max_topic_levels).map_err(|e| ApiError::topic(format!("topic {t:?}: {e}")))?;
        if t.starts_with("$SYS") {
            return Err(ApiError::topic(format!("topic {t:?}: $SYS topics are the broker's")));
        }
    }
    let qos = parse_qos(req.qos, "qos")?;
    let payload = decode_payload(req.payload, req.encoding)?;
    if payload.len() > limits.max_packet_size as usize {
        return Err(ApiError::new(
            axum::http::StatusCode::PAYLOAD_TOO_LARGE,
            super::error::code::BAD_PARAMETER,
            format!("`payload` is larger than limits.max_packet_size ({})", limits.max_packet_size),
        ));
    }
    let p = req.properties.unwrap_or_default();
    if p.payload_format_indicator.is_some_and(|v| v > 1) {
        return Err(ApiError::bad("`properties.payload_format_indicator` must be 0 or 1"));
    }
    let utf8 = p.payload_format_indicator == Some(1);
    if utf8 && std::str::from_utf8(&payload).is_err() {
        return Err(ApiError::bad("`payload` is not UTF-8 but `properties.payload_format_indicator` is 1"));
    }
    if let Some(rt) = &p.response_topic {
        validate_name(rt, limits.max_topic_levels)
            .map_err(|e| ApiError::topic(format!("`properties.response_topic` {rt:?}: {e}")))?;
    }
    let properties = MessageProperties {
        payload_format_utf8: utf8,
        message_expiry: p.message_expiry_interval,
        content_type: p.content_type.map(ByteString::from),
        response_topic: p.response_topic.map(ByteString::from),
        correlation_data: p.correlation_data.map(|c| Bytes::from(c.into_bytes())),
        user_properties: p
            .user_properties
            .into_iter()
            .map(|(k, v)| (ByteString::from(k), ByteString::from(v)))
            .collect(),
    };
    let mut out = Vec::with_capacity(topics.len());
    for topic in topics {
        let msg = Message {
            tenant: tenant.to_string(),
            topic: ByteString::from(topic.as_str()),
            payload: payload.clone(),
            qos,
            retain: req.retain,
            properties: properties.clone(),
            publisher: req.clientid.as_deref().map(ByteString::from),
            received_ms: now_ms(),
        };
        crate::metrics::Metrics::inc(&b.metrics.messages_origin_http);
        let published = b.publish(msg);
        if let Some(t) = published.ticket {
            b.store.wait(t).await;
        }
        out.push(PublishResult { topic, code: 0, message: "ok".into(), matched: published.matched });
    }
    Ok(out)
}

/// Publishes a message to `topic` (or each of `topics`).
#[utoipa::path(post, path = "/api/v1/mqtt/publish", tag = "publish", request_body = PublishRequest,
    responses((status = 200, body = Vec<PublishResult>), (status = 400, body = super::error::ErrorBody), (status = 413, body = super::error::ErrorBody)))]
pub async fn publish(
    State(state): State<Arc<AppState>>,
    ApiJson(req): ApiJson<PublishRequest>,
) -> ApiResult<axum::Json<Vec<PublishResult>>> {
    Ok(axum::Json(do_publish(&state, req).await?))
}

/// Publishes several messages; each gets its own result (a bad one does not stop the others).
#[utoipa::path(post, path = "/api/v1/mqtt/publish_batch", tag = "publish", request_body = Vec<PublishRequest>,
    responses((status = 200, body = Vec<PublishResult>), (status = 400, body = super::error::ErrorBody)))]
pub async fn publish_batch(
    State(state): State<Arc<AppState>>,
    ApiJson(reqs): ApiJson<Vec<PublishRequest>>,
) -> ApiResult<axum::Json<Vec<PublishResult>>> {
    let mut out = Vec::new();
    for r in reqs {
        let topic = r.topic.clone().or_else(|| r.topics.clone()).unwrap_or_default();
        match do_publish(&state, r).await {
            Ok(mut rs) => out.append(&mut rs),
            Err(e) => out.push(PublishResult { topic, code: e.code, message: e.message, matched: 0 }),
        }
    }
    Ok(axum::Json(out))
}
