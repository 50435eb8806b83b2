//! The route table (which topic filters this node routes, and to which node) and NanoMQ's
//! topic tree of subscriptions with child counts and client ids.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::routing::get;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::AppState;
use super::error::{ApiError, ApiQuery, ApiResult};
use super::paging::{Page, Paging};
use crate::topic::{matches, validate_name};

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/api/v1/routes", get(list))
        .route("/api/v1/routes/{*topic}", get(for_topic))
        .route("/api/v1/topic-tree", get(topic_tree))
}

/// A route: messages on topics matching `topic` go to `node` (this node's own subscriptions,
/// and the filters its cluster peers announced).
#[derive(Debug, Serialize, Deserialize, ToSchema, PartialEq, Eq, PartialOrd, Ord)]
pub struct RouteInfo {
    pub tenant: String,
    /// The topic filter (without a `$share/...` prefix).
    pub topic: String,
    pub node: String,
    /// Shared-subscription group, if the route is for one.
    pub share: Option<String>,
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RouteQuery {
    /// Only this tenant (default: all).
    pub tenant: Option<String>,
}

fn all_routes(state: &AppState, tenant: Option<&str>) -> Vec<RouteInfo> {
    let node = state.broker.node_name();
    let mut rows: Vec<RouteInfo> = state
        .broker
        .router
        .filters()
        .into_iter()
        .filter(|(t, _, _)| tenant.is_none_or(|want| &**t == want))
        .map(|(t, f, g)| RouteInfo { tenant: t.to_string(), topic: f, node: node.to_string(), share: g })
        .collect();
    rows.extend(
        state
            .broker
            .cluster_links
            .remote_routes()
            .into_iter()
            .filter(|(t, _, _)| tenant.is_none_or(|want| t == want))
            .map(|(tenant, filter, node)| match crate::topic::FilterSpec::parse(&filter, usize::MAX) {
                Ok(spec) => RouteInfo { tenant, topic: spec.filter, node, share: spec.share_group },
                Err(_) => RouteInfo { tenant, topic: filter, node, share: None },
            }),
    );
    rows.sort();
    rows
}

/// The route table.
#[utoipa::path(get, path = "/api/v1/routes", tag = "routes", params(RouteQuery, Paging),
    responses((status = 200, body = inline(Page<RouteInfo>))))]
pub async fn list(
    State(state): State<Arc<AppState>>,
    ApiQuery(q): ApiQuery<RouteQuery>,
    ApiQuery(paging): ApiQuery<Paging>,
) -> ApiResult<axum::Json<Page<RouteInfo>>> {
    let tenant = state.tenant_filter(q.tenant.as_deref())?;
    Ok(axum::Json(paging.page(all_routes(&state, tenant), state.max_page_limit())?))
}

/// The routes a message on this topic name would take (URL-encode `$` and spaces as needed).
#[utoipa::path(get, path = "/api/v1/routes/{topic}", tag = "routes", params(("topic" = String, Path), RouteQuery),
    responses((status = 200, body = Vec<RouteInfo>), (status = 400, body = super::error::ErrorBody)))]
pub async fn for_topic(
    State(state): State<Arc<AppState>>,
    Path(topic): Path<String>,
    ApiQuery(q): ApiQuery<RouteQuery>,
) -> ApiResult<axum::Json<Vec<RouteInfo>>> {
    validate_name(&topic, state.broker.limits().max_topic_levels)
        .map_err(|e| ApiError::topic(format!("topic {topic:?}: {e}")))?;
    let rows = all_routes(&state, state.tenant_filter(q.tenant.as_deref())?)
        .into_iter()
        .filter(|r| matches(&r.topic, &topic))
        .collect();
    Ok(axum::Json(rows))
}

/// A level of the subscription tree.
#[derive(Debug, Default, Serialize, ToSchema)]
pub struct TopicNode {
    /// This level's name.
    pub topic: String,
    /// Sessions subscribed with exactly the filter ending here.
    pub clientids: Vec<String>,
    /// Number of child levels.
    pub child_count: usize,
    #[schema(no_recursion)]
    pub children: Vec<TopicNode>,
}

#[derive(Default)]
struct Building {
    clients: Vec<String>,
    children: BTreeMap<String, Building>,
}

impl Building {
    fn finish(self, topic: String) -> TopicNode {
        let children: Vec<TopicNode> = self.children.into_iter().map(|(k, v)| v.finish(k)).collect();
        let mut clientids = self.clients;
        clientids.sort();
        TopicNode { topic, clientids, child_count: children.len(), children }
    }
}

/// The subscription tree of a tenant (default `global`): one node per topic level.
#[utoipa::path(get, path = "/api/v1/topic-tree", tag = "routes", params(super::clients::TenantQuery),
    responses((status = 200, body = Vec<TopicNode>)))]
pub async fn topic_tree(
    State(state): State<Arc<AppState>>,
    ApiQuery(q): ApiQuery<super::clients::TenantQuery>,
) -> ApiResult<axum::Json<Vec<TopicNode>>> {
    let tenant = state.tenant(q.tenant.as_deref())?;
    let mut root = Building::default();
    for s in state.broker.sessions.all().iter().filter(|s| s.tenant == tenant) {
        let filters: Vec<String> = s.lock().subscriptions.values().map(|(spec, _)| spec.filter.clone()).collect();
        for f in filters {
            let mut node = &mut root;
            for level in f.split('/') {
                node = node.children.entry(level.to_string()).or_default();
            }
            node.clients.push(s.client_id.to_string());
        }
    }
    Ok(axum::Json(root.children.into_iter().map(|(k, v)| v.finish(k)).collect()))
}
