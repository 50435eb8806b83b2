//! The management REST API (`/api/v1`, default port 8081): the router assembled from one module
//! per resource, the shared `AppState`, authentication, request ids and the OpenAPI document.

pub mod auth;
mod bridges;
mod clients;
pub mod cluster;
mod ctrl;
pub mod error;
mod nodes;
pub mod paging;
mod plugins;
pub mod publish;
mod retained;
mod routes;
mod rules;
mod sessions;
pub mod settings;
mod subscriptions;
mod traffic;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderName, Request, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use tower_http::request_id::{MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer};
use tower_http::trace::TraceLayer;
use utoipa::OpenApi;

use crate::broker::Broker;
pub use auth::{AdminAuth, AdminAuthError};

/// What every handler shares.
pub struct AppState {
    pub broker: Arc<Broker>,
    pub auth: AdminAuth,
    /// Where applied settings and cluster membership are kept across restarts.
    pub settings_file: PathBuf,
    pub cluster_file: PathBuf,
}

impl AppState {
    pub fn new(broker: Arc<Broker>) -> Result<AppState, AdminAuthError> {
        let cfg = &broker.config.admin;
        let auth = AdminAuth::load(cfg)?;
        let data = &broker.config.store.data_dir;
        let settings_file = cfg.settings_file.clone().unwrap_or_else(|| data.join("settings.json"));
        let cluster_file = data.join(cluster::FILE);
        Ok(AppState { broker, auth, settings_file, cluster_file })
    }

    pub fn max_page_limit(&self) -> usize {
        self.broker.config.admin.max_page_limit
    }

    /// A list's optional `tenant` filter: absent lists every tenant, present must be valid.
    pub fn tenant_filter<'a>(&self, t: Option<&'a str>) -> error::ApiResult<Option<&'a str>> {
        if t.is_some() {
            self.tenant(t)?;
        }
        Ok(t)
    }

    /// The tenant a request names (`tenant` in the query or body), default the configured one.
    pub fn tenant(&self, t: Option<&str>) -> error::ApiResult<crate::message::TenantId> {
        match t {
            None => Ok(self.broker.config.tenancy.default_tenant.as_str().into()),
            Some(t) if t.is_empty() || t.len() > 256 => {
                Err(error::ApiError::bad("`tenant` must be 1 to 256 characters"))
            }
            Some(t) => Ok(t.into()),
        }
    }
}

/// The generated OpenAPI document (checked in as `broker/openapi.json`).
#[derive(OpenApi)]
#[openapi(
    info(title = "Starling broker management API", description = "Manage one Starling MQTT broker node. \
        Every /api/v1 route needs HTTP Basic or a bearer JWT. Errors are {\"code\", \"message\"} with NanoMQ's result codes."),
    paths(
        endpoints, openapi_json,
        nodes::brokers, nodes::nodes, nodes::stats, nodes::metrics, nodes::prometheus,
        clients::list, clients::get_one, clients::kick, clients::by_username, clients::online, clients::disconnect,
        sessions::list, sessions::get_one, sessions::expire,
        subscriptions::list, subscriptions::of_client, subscriptions::add_to_session, subscriptions::remove_from_session,
        subscriptions::subscribe, subscriptions::unsubscribe, subscriptions::subscribe_batch, subscriptions::unsubscribe_batch,
        publish::publish, publish::publish_batch,
        routes::list, routes::for_topic, routes::topic_tree,
        retained::list, retained::get_one, retained::put, retained::delete, retained::expire,
        settings::get_config, settings::put_config,
        ctrl::ctrl,
        cluster::get_cluster, cluster::put_cluster, cluster::peers,
        plugins::list, plugins::toggle,
        bridges::list, bridges::get_one, bridges::put, bridges::delete, bridges::add_subscriptions,
        bridges::remove_subscriptions, bridges::status,
        rules::list, rules::create, rules::get_one, rules::put, rules::delete, rules::metrics,
        traffic::list, traffic::replace_all, traffic::get_one, traffic::put, traffic::delete,
    ),
    components(schemas(error::ErrorBody, Endpoint, crds::Settings, crds::Limits, crds::ClusterMembership, crds::ClusterMember, crate::cluster::PeerStatus,
        crds::BridgeConfig, crds::BridgeConnectProperties, crds::BridgeForward, crds::BridgeSubscription, crds::BridgeStatus,
        crds::RuleConfig, crds::RuleAction, crds::RuleMetrics, crds::ActionMetrics, crds::TrafficRule)),
    modifiers(&Security),
    security(("basic" = []), ("bearer" = [])),
)]
pub struct ApiDoc;

struct Security;

impl utoipa::Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme("basic", SecurityScheme::Http(Http::new(HttpAuthScheme::Basic)));
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::builder().scheme(HttpAuthScheme::Bearer).bearer_format("JWT").build()),
        );
    }
}

/// The OpenAPI document, as served and checked in.
pub fn openapi_document() -> String {
    let mut text = ApiDoc::openapi().to_pretty_json().unwrap_or_default();
    text.push('\n');
    text
}

/// This API's OpenAPI 3 document.
#[utoipa::path(get, path = "/api/v1/openapi.json", tag = "meta", responses((status = 200, description = "OpenAPI 3 document")))]
async fn openapi_json() -> impl IntoResponse {
    ([(axum::http::header::CONTENT_TYPE, "application/json")], openapi_document())
}

/// One operation of this API, as listed by `GET /api/v1`.
#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct Endpoint {
    /// `GET`, `PUT`, ...
    pub method: String,
    /// The path, with `{parameters}`.
    pub path: String,
    /// The operation's name (its OpenAPI operationId).
    pub name: String,
    /// What it does.
    pub description: String,
}

/// Every operation of this API (path, name, method, description), read off the OpenAPI
/// document so the list cannot drift from what is routed.
#[utoipa::path(get, path = "/api/v1", tag = "meta", responses((status = 200, body = [Endpoint])))]
async fn endpoints() -> axum::Json<Vec<Endpoint>> {
    let doc = ApiDoc::openapi();
    let mut list = Vec::new();
    for (path, item) in &doc.paths.paths {
        let ops = [
            ("GET", &item.get),
            ("PUT", &item.put),
            ("POST", &item.post),
            ("DELETE", &item.delete),
            ("PATCH", &item.patch),
        ];
        for (method, op) in ops {
            let Some(op) = op else { continue };
            let description = op.summary.clone().or_else(|| op.description.clone()).unwrap_or_default();
            list.push(Endpoint {
                method: method.into(),
                path: path.clone(),
                name: op.operation_id.clone().unwrap_or_default(),
                description,
            });
        }
    }
    axum::Json(list)
}

/// Liveness: the process answers.
async fn healthz() -> impl IntoResponse {
    axum::Json(serde_json::json!({"status": "ok"}))
}

/// Readiness: MQTT listeners are up and the node is not shutting down.
async fn readyz(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    if state.broker.shutdown.is_cancelled() {
        (StatusCode::SERVICE_UNAVAILABLE, axum::Json(serde_json::json!({"status": "shutting down"})))
    } else {
        (StatusCode::OK, axum::Json(serde_json::json!({"status": "ready"})))
    }
}

/// Request ids: `X-Request-Id` as sent, or `<node>-<n>`.
#[derive(Clone)]
struct NextRequestId(Arc<(String, AtomicU64)>);

impl MakeRequestId for NextRequestId {
    fn make_request_id<B>(&mut self, _req: &Request<B>) -> Option<RequestId> {
        let n = self.0.1.fetch_add(1, Ordering::Relaxed);
        format!("{}-{n}", self.0.0).parse().ok().map(RequestId::new)
    }
}

/// The whole HTTP router.
pub fn router(state: Arc<AppState>) -> Router {
    let api = Router::new()
        .route("/api/v1", get(endpoints))
        .route("/api/v1/openapi.json", get(openapi_json))
        .merge(nodes::routes())
        .merge(clients::routes())
        .merge(sessions::routes())
        .merge(subscriptions::routes())
        .merge(publish::routes())
        .merge(routes::routes())
        .merge(retained::routes())
        .merge(settings::routes())
        .merge(ctrl::routes())
        .merge(cluster::routes())
        .merge(plugins::routes())
        .merge(bridges::routes())
        .merge(rules::routes())
        .merge(traffic::routes())
        .fallback(|| async { error::ApiError::not_found("path") })
        // `layer`, not `route_layer`: unknown paths need credentials too (401 before 404).
        .layer(axum::middleware::from_fn_with_state(state.clone(), auth::require_auth));
    let metrics = if state.broker.config.admin.public_metrics {
        Router::new().route("/metrics", get(nodes::prometheus))
    } else {
        Router::new()
            .route("/metrics", get(nodes::prometheus))
            .route_layer(axum::middleware::from_fn_with_state(state.clone(), auth::require_auth))
    };
    let x_request_id = HeaderName::from_static("x-request-id");
    let ids = NextRequestId(Arc::new((state.broker.node_name().to_string(), AtomicU64::new(1))));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .merge(metrics)
        .merge(api)
        .layer(DefaultBodyLimit::max(state.broker.config.admin.max_body_bytes))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(|req: &Request<_>| {
                    let id = req.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("");
                    tracing::info_span!("http", request_id = %id, method = %req.method(), path = %req.uri().path(), user = tracing::field::Empty)
                })
                .on_response(
                    tower_http::trace::DefaultOnResponse::new()
                        .level(tracing::Level::INFO)
                        .latency_unit(tower_http::LatencyUnit::Micros),
                ),
        )
        .layer(PropagateRequestIdLayer::new(x_request_id.clone()))
        .layer(SetRequestIdLayer::new(x_request_id, ids))
        .with_state(state)
}

/// Binds the admin listener.
pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}

/// Serves until the broker shuts down.
pub async fn serve(listener: tokio::net::TcpListener, state: Arc<AppState>) {
    let shutdown = state.broker.shutdown.clone();
    let app = router(state);
    if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(async move { shutdown.cancelled().await }).await {
        tracing::error!(error = %e, "admin API stopped");
    }
}
