//! The client of one broker's management API (`/api/v1`): cluster membership, settings, the
//! node's own figures, and bridges, rules and traffic rules, over reqwest (rustls) with
//! timeouts, Basic auth and bounded retries.
//!
//! Retries happen on connection errors only (nothing reached the broker, so repeating is
//! safe); an HTTP error or a timeout is returned at once and the controller's back-off decides.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crds::{BridgeConfig, ClusterMembership, ConfigUpdate, NodeInfo, RuleConfig, Settings, TrafficRule};
use reqwest::Method;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::metrics::{AdminCallLabels, Metrics};
use crate::resources::admin_secret::AdminCredentials;

pub const CLUSTER_PATH: &str = "/api/v1/cluster";
pub const CONFIG_PATH: &str = "/api/v1/config";
pub const BROKERS_PATH: &str = "/api/v1/brokers";
/// `/api/v1/bridges/{name}` (the template is the metrics label; calls fill in the name).
pub const BRIDGE_PATH: &str = "/api/v1/bridges/{name}";
pub const RULE_PATH: &str = "/api/v1/rules/{id}";
pub const TRAFFIC_RULE_PATH: &str = "/api/v1/traffic-rules/{name}";

/// The password a broker shows in place of a bridge's real one.
pub const MASKED_PASSWORD: &str = "******";

/// `GET /api/v1/bridges/{name}`: the config (password masked) and the link's status.
#[derive(Debug, serde::Deserialize)]
struct BridgeInfo {
    config: BridgeConfig,
}

/// `GET /api/v1/rules/{id}`: the rule's fields, plus `id` and `metrics` (ignored here).
#[derive(Debug, serde::Deserialize)]
struct RuleInfo {
    #[serde(flatten)]
    config: RuleConfig,
}

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("{url}: cannot connect: {message}")]
    Connect { url: String, message: String },
    #[error("{url}: no answer within the timeout")]
    Timeout { url: String },
    /// The broker answered with an error (`{"code": N, "message": "..."}`).
    #[error("{url}: HTTP {status}: {message}")]
    Status { url: String, status: u16, message: String },
    #[error("{url}: unexpected answer: {message}")]
    Decode { url: String, message: String },
    #[error("{url}: {message}")]
    Other { url: String, message: String },
}

impl AdminError {
    fn outcome(&self) -> &'static str {
        match self {
            AdminError::Connect { .. } => "connect_error",
            AdminError::Timeout { .. } => "timeout",
            AdminError::Status { .. } => "http_error",
            AdminError::Decode { .. } => "decode_error",
            AdminError::Other { .. } => "error",
        }
    }
}

/// How often and how patiently a call is retried after a connection error.
#[derive(Clone, Copy, Debug)]
pub struct Retry {
    /// Tries in all (1 = no retry).
    pub attempts: u32,
    /// Wait before the second try; doubled each time.
    pub first_delay: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Retry { attempts: 3, first_delay: Duration::from_millis(200) }
    }
}

/// The HTTP client shared by every call (one connection pool): 2 s to connect, 10 s per
/// request, rustls for `https` endpoints.
pub fn http_client() -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(10))
        .pool_idle_timeout(Duration::from_secs(60))
        .user_agent(concat!("starling-operator/", env!("CARGO_PKG_VERSION")))
        .build()
}

/// One broker's management API.
#[derive(Clone)]
pub struct AdminClient {
    http: reqwest::Client,
    base: String,
    creds: AdminCredentials,
    retry: Retry,
    metrics: Option<Arc<Metrics>>,
}

impl AdminClient {
    /// `base` is `http://host:port` without a trailing slash.
    pub fn new(http: reqwest::Client, base: impl Into<String>, creds: AdminCredentials) -> AdminClient {
        AdminClient { http, base: base.into(), creds, retry: Retry::default(), metrics: None }
    }

    pub fn with_retry(mut self, retry: Retry) -> AdminClient {
        self.retry = retry;
        self
    }

    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> AdminClient {
        self.metrics = Some(metrics);
        self
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// `GET /api/v1/cluster`.
    pub async fn cluster(&self) -> Result<ClusterMembership, AdminError> {
        self.call(Method::GET, CLUSTER_PATH, None::<&()>).await
    }

    /// `PUT /api/v1/cluster`; returns the membership as the broker stored it.
    pub async fn set_cluster(&self, membership: &ClusterMembership) -> Result<ClusterMembership, AdminError> {
        self.call(Method::PUT, CLUSTER_PATH, Some(membership)).await
    }

    /// `GET /api/v1/config`.
    pub async fn settings(&self) -> Result<Settings, AdminError> {
        self.call(Method::GET, CONFIG_PATH, None::<&()>).await
    }

    /// `PUT /api/v1/config` with every setting; returns the settings in force.
    pub async fn set_settings(&self, settings: &Settings) -> Result<Settings, AdminError> {
        let update: ConfigUpdate = self.call(Method::PUT, CONFIG_PATH, Some(settings)).await?;
        Ok(update.settings)
    }

    /// `GET /api/v1/brokers`: this node.
    pub async fn brokers(&self) -> Result<Vec<NodeInfo>, AdminError> {
        self.call(Method::GET, BROKERS_PATH, None::<&()>).await
    }

    /// `GET /api/v1/bridges/{name}`: the bridge's config as the broker has it (the password,
    /// when set, is [`MASKED_PASSWORD`]); `None` when the broker has no such bridge.
    pub async fn bridge(&self, name: &str) -> Result<Option<BridgeConfig>, AdminError> {
        let info: Option<BridgeInfo> = not_found_is_none(self.get_named(BRIDGE_PATH, name).await)?;
        Ok(info.map(|i| i.config))
    }

    /// `PUT /api/v1/bridges/{name}` (creates or replaces; the broker reconnects the bridge).
    pub async fn put_bridge(&self, name: &str, config: &BridgeConfig) -> Result<(), AdminError> {
        self.put_named(BRIDGE_PATH, name, config).await
    }

    /// `DELETE /api/v1/bridges/{name}`; a bridge that is not there is no error.
    pub async fn delete_bridge(&self, name: &str) -> Result<(), AdminError> {
        self.delete_named(BRIDGE_PATH, name).await
    }

    /// `GET /api/v1/rules/{id}`: the rule's config; `None` when the broker has no such rule.
    pub async fn rule(&self, id: &str) -> Result<Option<RuleConfig>, AdminError> {
        let info: Option<RuleInfo> = not_found_is_none(self.get_named(RULE_PATH, id).await)?;
        Ok(info.map(|i| i.config))
    }

    /// `PUT /api/v1/rules/{id}`; invalid SQL is an [`AdminError::Status`] 400 with the parser's
    /// message.
    pub async fn put_rule(&self, id: &str, config: &RuleConfig) -> Result<(), AdminError> {
        self.put_named(RULE_PATH, id, config).await
    }

    /// `DELETE /api/v1/rules/{id}`; a rule that is not there is no error.
    pub async fn delete_rule(&self, id: &str) -> Result<(), AdminError> {
        self.delete_named(RULE_PATH, id).await
    }

    /// `GET /api/v1/traffic-rules/{name}`; `None` when the broker has no such traffic rule.
    pub async fn traffic_rule(&self, name: &str) -> Result<Option<TrafficRule>, AdminError> {
        not_found_is_none(self.get_named(TRAFFIC_RULE_PATH, name).await)
    }

    /// `PUT /api/v1/traffic-rules/{name}`.
    pub async fn put_traffic_rule(&self, name: &str, rule: &TrafficRule) -> Result<(), AdminError> {
        self.put_named(TRAFFIC_RULE_PATH, name, rule).await
    }

    /// `DELETE /api/v1/traffic-rules/{name}`; a traffic rule that is not there is no error.
    pub async fn delete_traffic_rule(&self, name: &str) -> Result<(), AdminError> {
        self.delete_named(TRAFFIC_RULE_PATH, name).await
    }

    async fn get_named<T: DeserializeOwned>(&self, template: &'static str, name: &str) -> Result<T, AdminError> {
        let bytes = self.send(Method::GET, template, &fill(template, name), None::<&()>).await?;
        parse(&self.url(&fill(template, name)), &bytes)
    }

    async fn put_named<B: Serialize>(&self, template: &'static str, name: &str, body: &B) -> Result<(), AdminError> {
        self.send(Method::PUT, template, &fill(template, name), Some(body)).await.map(drop)
    }

    async fn delete_named(&self, template: &'static str, name: &str) -> Result<(), AdminError> {
        match self.send(Method::DELETE, template, &fill(template, name), None::<&()>).await {
            Ok(_) | Err(AdminError::Status { status: 404, .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn call<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        verb: Method,
        path: &'static str,
        body: Option<&B>,
    ) -> Result<T, AdminError> {
        let bytes = self.send(verb, path, path, body).await?;
        parse(&self.url(path), &bytes)
    }

    /// One request (retried on connection errors); the body of a 2xx answer, else the error.
    /// `label` is the path in metrics (a template for calls naming an object).
    async fn send<B: Serialize + ?Sized>(
        &self,
        verb: Method,
        label: &'static str,
        path: &str,
        body: Option<&B>,
    ) -> Result<Vec<u8>, AdminError> {
        let url = self.url(path);
        let started = Instant::now();
        let mut delay = self.retry.first_delay;
        let mut attempt = 1;
        let result = loop {
            let mut req =
                self.http.request(verb.clone(), &url).basic_auth(&self.creds.username, Some(&self.creds.password));
            if let Some(body) = body {
                req = req.json(body);
            }
            match req.send().await {
                Err(e) if e.is_connect() && attempt < self.retry.attempts => {
                    tracing::debug!(%url, attempt, error = %e, "admin API unreachable, retrying");
                    tokio::time::sleep(delay).await;
                    delay = delay.saturating_mul(2);
                    attempt += 1;
                }
                Err(e) => break Err(transport_error(&url, &e)),
                Ok(resp) => break read_body(&url, resp).await,
            }
        };
        if let Some(m) = &self.metrics {
            let verb = match verb {
                Method::GET => "GET",
                Method::PUT => "PUT",
                Method::DELETE => "DELETE",
                _ => "OTHER",
            };
            let outcome = result.as_ref().map_or_else(AdminError::outcome, |_| "ok");
            m.admin_call(AdminCallLabels { verb, path: label, outcome }, started.elapsed());
        }
        result
    }
}

/// `template` with its `{...}` placeholder replaced by `name` (Kubernetes names need no
/// escaping in a path: lower-case letters, digits, `-` and `.`).
fn fill(template: &str, name: &str) -> String {
    match (template.find('{'), template.rfind('}')) {
        (Some(a), Some(b)) if a < b => format!("{}{name}{}", &template[..a], &template[b + 1..]),
        _ => template.to_string(),
    }
}

/// A 404 (the broker has no such object) as `None`.
fn not_found_is_none<T>(r: Result<T, AdminError>) -> Result<Option<T>, AdminError> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(AdminError::Status { status: 404, .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

fn transport_error(url: &str, e: &reqwest::Error) -> AdminError {
    let url = url.to_string();
    // reqwest's own Display is terse ("error sending request"); the source says why.
    let mut message = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        message = format!("{message}: {s}");
        source = s.source();
    }
    if e.is_timeout() {
        AdminError::Timeout { url }
    } else if e.is_connect() {
        AdminError::Connect { url, message }
    } else {
        AdminError::Other { url, message }
    }
}

async fn read_body(url: &str, resp: reqwest::Response) -> Result<Vec<u8>, AdminError> {
    let status = resp.status();
    let bytes = resp.bytes().await.map_err(|e| transport_error(url, &e))?;
    if !status.is_success() {
        let message = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(str::to_string))
            .unwrap_or_else(|| String::from_utf8_lossy(&bytes).chars().take(200).collect());
        return Err(AdminError::Status { url: url.to_string(), status: status.as_u16(), message });
    }
    Ok(bytes.to_vec())
}

fn parse<T: DeserializeOwned>(url: &str, bytes: &[u8]) -> Result<T, AdminError> {
    serde_json::from_slice(bytes).map_err(|e| AdminError::Decode { url: url.to_string(), message: e.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::Json;
    use axum::http::{HeaderMap, StatusCode};
    use axum::routing::get;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn creds() -> AdminCredentials {
        AdminCredentials { username: "admin".into(), password: "s3cret".into() }
    }

    fn authorized(headers: &HeaderMap) -> bool {
        // "admin:s3cret" in base64.
        headers.get("authorization").and_then(|v| v.to_str().ok()) == Some("Basic YWRtaW46czNjcmV0")
    }

    /// A stand-in for the broker's API with the same types on the wire.
    async fn fake_broker(puts: Arc<AtomicUsize>) -> String {
        let app = axum::Router::new()
            .route(
                CONFIG_PATH,
                get(|h: HeaderMap| async move {
                    if authorized(&h) { Ok(Json(Settings::default())) } else { Err(StatusCode::UNAUTHORIZED) }
                })
                .put(move |Json(s): Json<Settings>| {
                    let puts = puts.clone();
                    async move {
                        puts.fetch_add(1, Ordering::SeqCst);
                        if s.limits.max_inflight == 0 {
                            return Err((
                                StatusCode::BAD_REQUEST,
                                Json(serde_json::json!({"code": 108, "message": "limits.max_inflight must be at least 1"})),
                            ));
                        }
                        Ok(Json(serde_json::json!({"changed": {}, "settings": s})))
                    }
                }),
            )
            .route(
                BROKERS_PATH,
                get(|| async {
                    Json(serde_json::json!([{"node": "demo-0", "version": "0.1.0", "connections": 7, "uptime": "1s"}]))
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{addr}")
    }

    #[tokio::test]
    async fn reads_and_writes_with_basic_auth() {
        let puts = Arc::new(AtomicUsize::new(0));
        let base = fake_broker(puts.clone()).await;
        let metrics = Arc::new(Metrics::default());
        let client = AdminClient::new(http_client().unwrap(), &base, creds()).with_metrics(metrics.clone());
        assert_eq!(client.settings().await.unwrap(), Settings::default());
        let mut s = Settings::default();
        s.limits.max_inflight = 32;
        assert_eq!(client.set_settings(&s).await.unwrap().limits.max_inflight, 32);
        let nodes = client.brokers().await.unwrap();
        assert_eq!((nodes[0].node.as_str(), nodes[0].connections), ("demo-0", 7));
        assert!(metrics.render().contains(r#"verb="PUT",path="/api/v1/config",outcome="ok"} 1"#));

        let wrong = AdminClient::new(
            http_client().unwrap(),
            &base,
            AdminCredentials { username: "admin".into(), password: "x".into() },
        );
        assert!(matches!(wrong.settings().await, Err(AdminError::Status { status: 401, .. })));
    }

    #[tokio::test]
    async fn http_errors_carry_the_brokers_message_and_are_not_retried() {
        let puts = Arc::new(AtomicUsize::new(0));
        let base = fake_broker(puts.clone()).await;
        let client = AdminClient::new(http_client().unwrap(), &base, creds());
        let mut s = Settings::default();
        s.limits.max_inflight = 0;
        let err = client.set_settings(&s).await.unwrap_err();
        assert_eq!(err.to_string(), format!("{base}/api/v1/config: HTTP 400: limits.max_inflight must be at least 1"));
        assert_eq!(puts.load(Ordering::SeqCst), 1);
    }

    /// A broker holding one rule `r1` and one bridge `b1` (password masked), refusing bad SQL.
    async fn fake_objects_broker(writes: Arc<AtomicUsize>) -> String {
        use axum::extract::Path;
        let w = writes.clone();
        let app = axum::Router::new()
            .route(
                "/api/v1/rules/{id}",
                get(|Path(id): Path<String>| async move {
                    if id != "r1" {
                        return Err((StatusCode::NOT_FOUND, Json(serde_json::json!({"code": 404, "message": "no rule"}))));
                    }
                    Ok(Json(serde_json::json!({"id": "r1", "rawsql": "SELECT * FROM \"t\"", "actions": [], "enabled": true,
                        "metrics": {"matched": 1, "passed": 1, "failed": 0, "actions": []}})))
                })
                .put(move |Json(r): Json<RuleConfig>| {
                    let w = w.clone();
                    async move {
                        w.fetch_add(1, Ordering::SeqCst);
                        if !r.rawsql.contains("FROM") {
                            let msg = "rawsql: expected FROM at Line: 1, Column: 8";
                            return Err((StatusCode::BAD_REQUEST, Json(serde_json::json!({"code": 108, "message": msg}))));
                        }
                        Ok(StatusCode::CREATED)
                    }
                })
                .delete(|Path(id): Path<String>| async move {
                    if id == "r1" { StatusCode::NO_CONTENT } else { StatusCode::NOT_FOUND }
                }),
            )
            .route(
                "/api/v1/bridges/{name}",
                get(|| async {
                    Json(serde_json::json!({"name": "b1", "config": {"server": "mqtt-tcp://r:1883", "password": "******"},
                        "status": {"connected": false, "since": 0, "last_error": null, "forwarded": 0, "received": 0,
                                   "dropped": 0, "queue_len": 0}}))
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{addr}")
    }

    #[tokio::test]
    async fn objects_are_read_written_and_deleted_by_name() {
        let writes = Arc::new(AtomicUsize::new(0));
        let base = fake_objects_broker(writes.clone()).await;
        let metrics = Arc::new(Metrics::default());
        let client = AdminClient::new(http_client().unwrap(), &base, creds()).with_metrics(metrics.clone());
        let r1 = client.rule("r1").await.unwrap().unwrap();
        assert_eq!((r1.rawsql.as_str(), r1.enabled), ("SELECT * FROM \"t\"", true));
        assert_eq!(client.rule("nope").await.unwrap(), None);
        client.put_rule("r2", &r1).await.unwrap();
        let bad = RuleConfig { rawsql: "SELECT *".into(), ..r1 };
        match client.put_rule("r2", &bad).await {
            Err(AdminError::Status { status: 400, message, .. }) => assert!(message.contains("Line: 1, Column: 8")),
            other => panic!("{other:?}"),
        }
        assert_eq!(writes.load(Ordering::SeqCst), 2);
        client.delete_rule("r1").await.unwrap();
        client.delete_rule("gone").await.unwrap();
        let b1 = client.bridge("b1").await.unwrap().unwrap();
        assert_eq!(b1.password.as_deref(), Some(MASKED_PASSWORD));
        let text = metrics.render();
        assert!(text.contains(r#"verb="DELETE",path="/api/v1/rules/{id}",outcome="ok"} 1"#), "{text}");
        assert!(text.contains(r#"verb="PUT",path="/api/v1/rules/{id}",outcome="http_error"} 1"#), "{text}");
    }

    #[test]
    fn templates_are_filled_with_the_name() {
        assert_eq!(fill(RULE_PATH, "r1"), "/api/v1/rules/r1");
        assert_eq!(fill(TRAFFIC_RULE_PATH, "slow"), "/api/v1/traffic-rules/slow");
    }

    #[tokio::test]
    async fn connection_errors_are_retried_with_back_off() {
        // A port nothing listens on: bind, note it, close.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let client = AdminClient::new(http_client().unwrap(), format!("http://127.0.0.1:{port}"), creds())
            .with_retry(Retry { attempts: 3, first_delay: Duration::from_millis(40) });
        let started = Instant::now();
        let err = client.cluster().await.unwrap_err();
        assert!(matches!(err, AdminError::Connect { .. }), "{err}");
        // Two waits: 40 ms + 80 ms.
        assert!(started.elapsed() >= Duration::from_millis(120), "{:?}", started.elapsed());
    }
}
