//! Subscriptions: the filtered list, one client's, and adding or removing a subscription of a
//! session whether online or offline (BifroMQ; RMQTT/NanoMQ/gmqtt `mqtt/subscribe` shapes).

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, get, post};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::AppState;
use super::clients::TenantQuery;
use super::error::{ApiError, ApiJson, ApiQuery, ApiResult};
use super::paging::{Page, Paging};
use super::publish::parse_qos;
use crate::broker::Subscribed;
use crate::router::SubOptions;
use crate::session::Session;
use crate::topic::{FilterSpec, matches};

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/api/v1/subscriptions", get(list))
        .route("/api/v1/subscriptions/{clientid}", get(of_client))
        .route("/api/v1/sessions/{clientid}/subscriptions", post(add_to_session))
        .route("/api/v1/sessions/{clientid}/subscriptions/{*filter}", delete(remove_from_session))
        .route("/api/v1/mqtt/subscribe", post(subscribe))
        .route("/api/v1/mqtt/unsubscribe", post(unsubscribe))
        .route("/api/v1/mqtt/subscribe_batch", post(subscribe_batch))
        .route("/api/v1/mqtt/unsubscribe_batch", post(unsubscribe_batch))
}

/// One subscription of a session.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema, PartialEq)]
pub struct SubscriptionInfo {
    pub node: String,
    pub tenant: String,
    pub clientid: String,
    /// The filter as subscribed, `$share/{group}/...` included.
    pub topic: String,
    pub qos: u8,
    /// The shared-subscription group, if any.
    pub share: Option<String>,
    pub no_local: bool,
    pub retain_as_published: bool,
    pub retain_handling: u8,
    pub subscription_id: Option<u32>,
}

pub fn subscriptions_of(node: &str, s: &Session) -> Vec<SubscriptionInfo> {
    let st = s.lock();
    let mut rows: Vec<SubscriptionInfo> = st
        .subscriptions
        .iter()
        .map(|(raw, (spec, o))| SubscriptionInfo {
            node: node.to_string(),
            tenant: s.tenant.to_string(),
            clientid: s.client_id.to_string(),
            topic: raw.clone(),
            qos: u8::from(o.qos),
            share: spec.share_group.clone(),
            no_local: o.no_local,
            retain_as_published: o.retain_as_published,
            retain_handling: o.retain_handling,
            subscription_id: o.subscription_id.map(|i| i.get()),
        })
        .collect();
    rows.sort_by(|a, b| a.topic.cmp(&b.topic));
    rows
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SubscriptionFilter {
    /// Only this tenant (default: all).
    pub tenant: Option<String>,
    pub clientid: Option<String>,
    /// The filter exactly as subscribed.
    pub topic: Option<String>,
    pub qos: Option<u8>,
    /// Shared-subscription group.
    pub share: Option<String>,
    /// Subscriptions whose filter matches this topic name.
    pub _match_topic: Option<String>,
}

/// Every subscription, filtered and paged.
#[utoipa::path(get, path = "/api/v1/subscriptions", tag = "subscriptions", params(SubscriptionFilter, Paging),
    responses((status = 200, body = inline(Page<SubscriptionInfo>))))]
pub async fn list(
    State(state): State<Arc<AppState>>,
    ApiQuery(f): ApiQuery<SubscriptionFilter>,
    ApiQuery(paging): ApiQuery<Paging>,
) -> ApiResult<axum::Json<Page<SubscriptionInfo>>> {
    if f.qos.is_some_and(|q| q > 2) {
        return Err(ApiError::bad("query parameter `qos` must be 0, 1 or 2"));
    }
    state.tenant_filter(f.tenant.as_deref())?;
    let node = state.broker.node_name();
    let mut rows: Vec<SubscriptionInfo> = state
        .broker
        .sessions
        .all()
        .iter()
        .filter(|s| f.tenant.as_deref().is_none_or(|t| &*s.tenant == t))
        .filter(|s| f.clientid.as_deref().is_none_or(|c| &*s.client_id == c))
        .flat_map(|s| subscriptions_of(node, s))
        .filter(|r| f.topic.as_deref().is_none_or(|t| r.topic == t))
        .filter(|r| f.qos.is_none_or(|q| r.qos == q))
        .filter(|r| f.share.as_deref().is_none_or(|g| r.share.as_deref() == Some(g)))
        .filter(|r| {
            f._match_topic.as_deref().is_none_or(|t| {
                let filter = FilterSpec::parse(&r.topic, usize::MAX).map(|s| s.filter).unwrap_or_default();
                matches(&filter, t)
            })
        })
        .collect();
    rows.sort_by(|a, b| (&a.tenant, &a.clientid, &a.topic).cmp(&(&b.tenant, &b.clientid, &b.topic)));
    Ok(axum::Json(paging.page(rows, state.max_page_limit())?))
}

fn session(state: &AppState, tenant: Option<&str>, client_id: &str) -> ApiResult<Arc<Session>> {
    let tenant = state.tenant(tenant)?;
    state.broker.sessions.get(&tenant, client_id).ok_or_else(|| ApiError::not_found(format!("session {client_id:?}")))
}

/// One client's subscriptions.
#[utoipa::path(get, path = "/api/v1/subscriptions/{clientid}", tag = "subscriptions", params(("clientid" = String, Path), TenantQuery),
    responses((status = 200, body = Vec<SubscriptionInfo>), (status = 404, body = super::error::ErrorBody)))]
pub async fn of_client(
    State(state): State<Arc<AppState>>,
    Path(clientid): Path<String>,
    ApiQuery(q): ApiQuery<TenantQuery>,
) -> ApiResult<axum::Json<Vec<SubscriptionInfo>>> {
    let s = session(&state, q.tenant.as_deref(), &clientid)?;
    Ok(axum::Json(subscriptions_of(state.broker.node_name(), &s)))
}

/// A subscription to add to a session.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewSubscription {
    /// Topic filter, `$share/{group}/{filter}` allowed.
    pub topic_filter: String,
    /// 0, 1 or 2 (default 0).
    #[serde(default)]
    pub qos: u8,
    #[serde(default)]
    pub no_local: bool,
    #[serde(default)]
    pub retain_as_published: bool,
    /// 0: send retained messages now, 1: only if new, 2: never (default 0).
    #[serde(default)]
    pub retain_handling: u8,
    pub tenant: Option<String>,
}

/// Adds one subscription to a session (online or offline), delivers retained messages per
/// Retain Handling, and stores a persistent session. Answers what changed.
fn add(state: &AppState, s: &Session, raw: &str, sub: SubOptions) -> ApiResult<Subscribed> {
    let b = &state.broker;
    let spec = FilterSpec::parse(raw, b.limits().max_topic_levels)
        .map_err(|e| ApiError::topic(format!("topic filter {raw:?}: {e}")))?;
    if spec.share_group.is_some() && sub.no_local {
        return Err(ApiError::bad("`no_local` is not allowed on a shared subscription"));
    }
    let outcome = b.add_subscription(s, raw, &spec, sub);
    let send_retained = match sub.retain_handling {
        0 => outcome != Subscribed::QuotaExceeded,
        1 => outcome == Subscribed::New,
        _ => false,
    };
    if outcome == Subscribed::QuotaExceeded {
        return Err(ApiError::conflict(
            super::error::code::BAD_PARAMETER,
            "limits.max_subscriptions_per_client reached",
        ));
    }
    if spec.share_group.is_none() && send_retained {
        b.deliver_retained(s, &spec.filter, sub.qos, None);
    }
    s.wake();
    Ok(outcome)
}

/// Adds a subscription to a session, online or offline (BifroMQ). Messages for it queue while
/// the session is offline and arrive when the client resumes it.
#[utoipa::path(post, path = "/api/v1/sessions/{clientid}/subscriptions", tag = "subscriptions", params(("clientid" = String, Path)),
    request_body = NewSubscription,
    responses((status = 201, body = SubscriptionInfo), (status = 200, body = SubscriptionInfo, description = "replaced an existing one"),
        (status = 400, body = super::error::ErrorBody), (status = 404, body = super::error::ErrorBody)))]
pub async fn add_to_session(
    State(state): State<Arc<AppState>>,
    Path(clientid): Path<String>,
    ApiJson(req): ApiJson<NewSubscription>,
) -> ApiResult<(StatusCode, axum::Json<SubscriptionInfo>)> {
    let s = session(&state, req.tenant.as_deref(), &clientid)?;
    if req.retain_handling > 2 {
        return Err(ApiError::bad("`retain_handling` must be 0, 1 or 2"));
    }
    let sub = SubOptions {
        qos: parse_qos(req.qos, "qos")?,
        no_local: req.no_local,
        retain_as_published: req.retain_as_published,
        retain_handling: req.retain_handling,
        subscription_id: None,
    };
    let outcome = add(&state, &s, &req.topic_filter, sub)?;
    state.broker.persist_session(&s);
    let row = subscriptions_of(state.broker.node_name(), &s)
        .into_iter()
        .find(|r| r.topic == req.topic_filter)
        .ok_or_else(|| ApiError::internal("subscription vanished"))?;
    let status = if outcome == Subscribed::New { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, axum::Json(row)))
}

/// Removes a subscription of a session. The filter is the rest of the path, URL-encoded where
/// needed (`#` as `%23`, `+` as `%2B`).
#[utoipa::path(delete, path = "/api/v1/sessions/{clientid}/subscriptions/{filter}", tag = "subscriptions",
    params(("clientid" = String, Path), ("filter" = String, Path), TenantQuery),
    responses((status = 204, description = "removed"), (status = 404, body = super::error::ErrorBody)))]
pub async fn remove_from_session(
    State(state): State<Arc<AppState>>,
    Path((clientid, filter)): Path<(String, String)>,
    ApiQuery(q): ApiQuery<TenantQuery>,
) -> ApiResult<StatusCode> {
    let s = session(&state, q.tenant.as_deref(), &clientid)?;
    remove(&state, &s, &filter)?;
    state.broker.persist_session(&s);
    Ok(StatusCode::NO_CONTENT)
}

fn remove(state: &AppState, s: &Session, raw: &str) -> ApiResult<()> {
    let spec = FilterSpec::parse(raw, state.broker.limits().max_topic_levels)
        .map_err(|e| ApiError::topic(format!("topic filter {raw:?}: {e}")))?;
    if state.broker.remove_subscription(s, raw, &spec) {
        Ok(())
    } else {
        Err(ApiError::not_found(format!("subscription {raw:?} of {:?}", &*s.client_id)))
    }
}

/// RMQTT/NanoMQ/gmqtt subscribe: `topic` or comma-separated `topics` for one client.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MqttSubscribe {
    pub clientid: String,
    pub topic: Option<String>,
    /// Several filters separated by commas.
    pub topics: Option<String>,
    #[serde(default)]
    pub qos: u8,
    pub tenant: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MqttUnsubscribe {
    pub clientid: String,
    pub topic: Option<String>,
    pub topics: Option<String>,
    pub tenant: Option<String>,
}

/// Per-filter result.
#[derive(Debug, Serialize, ToSchema)]
pub struct TopicResult {
    pub topic: String,
    /// 0 for success, else the error code.
    pub code: u16,
    pub message: String,
}

/// `topic`, or the comma-separated `topics`: one of them, not empty.
pub fn topics_of(topic: &Option<String>, topics: &Option<String>) -> ApiResult<Vec<String>> {
    let list: Vec<String> = match (topic, topics) {
        (Some(t), None) => vec![t.clone()],
        (None, Some(ts)) => ts.split(',').map(|t| t.trim().to_string()).filter(|t| !t.is_empty()).collect(),
        (Some(_), Some(_)) => return Err(ApiError::bad("give `topic` or `topics`, not both")),
        (None, None) => return Err(ApiError::missing("topic")),
    };
    if list.is_empty() {
        return Err(ApiError::missing("topics"));
    }
    Ok(list)
}

fn result(topic: String, r: ApiResult<()>) -> TopicResult {
    match r {
        Ok(()) => TopicResult { topic, code: 0, message: "ok".into() },
        Err(e) => TopicResult { topic, code: e.code, message: e.message },
    }
}

fn do_subscribe(state: &AppState, req: &MqttSubscribe) -> ApiResult<Vec<TopicResult>> {
    let topics = topics_of(&req.topic, &req.topics)?;
    let q = parse_qos(req.qos, "qos")?;
    let s = session(state, req.tenant.as_deref(), &req.clientid)?;
    let sub = SubOptions::new(q);
    let out = topics
        .into_iter()
        .map(|t| {
            let r = add(state, &s, &t, sub).map(|_| ());
            result(t, r)
        })
        .collect();
    state.broker.persist_session(&s);
    Ok(out)
}

fn do_unsubscribe(state: &AppState, req: &MqttUnsubscribe) -> ApiResult<Vec<TopicResult>> {
    let topics = topics_of(&req.topic, &req.topics)?;
    let s = session(state, req.tenant.as_deref(), &req.clientid)?;
    let out = topics
        .into_iter()
        .map(|t| {
            let r = remove(state, &s, &t);
            result(t, r)
        })
        .collect();
    state.broker.persist_session(&s);
    Ok(out)
}

/// Subscribes an existing session (online or offline) to `topic` or `topics`.
#[utoipa::path(post, path = "/api/v1/mqtt/subscribe", tag = "subscriptions", request_body = MqttSubscribe,
    responses((status = 200, body = Vec<TopicResult>), (status = 400, body = super::error::ErrorBody), (status = 404, body = super::error::ErrorBody)))]
pub async fn subscribe(
    State(state): State<Arc<AppState>>,
    ApiJson(req): ApiJson<MqttSubscribe>,
) -> ApiResult<axum::Json<Vec<TopicResult>>> {
    Ok(axum::Json(do_subscribe(&state, &req)?))
}

/// Unsubscribes a session from `topic` or `topics`.
#[utoipa::path(post, path = "/api/v1/mqtt/unsubscribe", tag = "subscriptions", request_body = MqttUnsubscribe,
    responses((status = 200, body = Vec<TopicResult>), (status = 400, body = super::error::ErrorBody), (status = 404, body = super::error::ErrorBody)))]
pub async fn unsubscribe(
    State(state): State<Arc<AppState>>,
    ApiJson(req): ApiJson<MqttUnsubscribe>,
) -> ApiResult<axum::Json<Vec<TopicResult>>> {
    Ok(axum::Json(do_unsubscribe(&state, &req)?))
}

/// Several subscribe requests; one result list per request (errors per item, not for the batch).
#[utoipa::path(post, path = "/api/v1/mqtt/subscribe_batch", tag = "subscriptions", request_body = Vec<MqttSubscribe>,
    responses((status = 200, body = Vec<Vec<TopicResult>>), (status = 400, body = super::error::ErrorBody)))]
pub async fn subscribe_batch(
    State(state): State<Arc<AppState>>,
    ApiJson(reqs): ApiJson<Vec<MqttSubscribe>>,
) -> ApiResult<axum::Json<Vec<Vec<TopicResult>>>> {
    Ok(axum::Json(reqs.iter().map(|r| batch_item(r.topic.clone(), do_subscribe(&state, r))).collect()))
}

/// Several unsubscribe requests; one result list per request.
#[utoipa::path(post, path = "/api/v1/mqtt/unsubscribe_batch", tag = "subscriptions", request_body = Vec<MqttUnsubscribe>,
    responses((status = 200, body = Vec<Vec<TopicResult>>), (status = 400, body = super::error::ErrorBody)))]
pub async fn unsubscribe_batch(
    State(state): State<Arc<AppState>>,
    ApiJson(reqs): ApiJson<Vec<MqttUnsubscribe>>,
) -> ApiResult<axum::Json<Vec<Vec<TopicResult>>>> {
    Ok(axum::Json(reqs.iter().map(|r| batch_item(r.topic.clone(), do_unsubscribe(&state, r))).collect()))
}

fn batch_item(topic: Option<String>, r: ApiResult<Vec<TopicResult>>) -> Vec<TopicResult> {
    r.unwrap_or_else(|e| vec![TopicResult { topic: topic.unwrap_or_default(), code: e.code, message: e.message }])
}
