//! The node itself: `/brokers`, `/nodes` (this node and its known peers), `/stats` (counts and
//! their peaks), `/metrics` (counters, RMQTT names) and the Prometheus text at `/metrics`.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Router;
use axum::extract::State;
use axum::response::IntoResponse;
use axum::routing::get;
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;
use super::error::ApiResult;
use crds::NodeInfo;

pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/api/v1/brokers", get(brokers))
        .route("/api/v1/nodes", get(nodes))
        .route("/api/v1/stats", get(stats))
        .route("/api/v1/metrics", get(metrics))
}

fn proc_field(path: &str, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    let line = text.lines().find(|l| l.starts_with(key))?;
    line[key.len()..].split_whitespace().next()?.parse().ok()
}

fn cpu_seconds() -> f64 {
    // Fields 14 and 15 of /proc/self/stat (after the command in parentheses): utime, stime in ticks.
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else { return 0.0 };
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else { return 0.0 };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    ticks / 100.0
}

fn this_node(state: &AppState) -> NodeInfo {
    let b = &state.broker;
    let uptime = b.started.elapsed().as_secs();
    let load: Vec<f64> = std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .filter_map(|v| v.parse().ok())
        .collect();
    NodeInfo {
        node: b.node_name().to_string(),
        node_status: "running".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        sysdescr: "Starling MQTT broker".into(),
        uptime_secs: uptime,
        uptime: humantime::format_duration(std::time::Duration::from_secs(uptime)).to_string(),
        datetime: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        connections: b.metrics.connections.load(Ordering::Relaxed),
        memory_used: proc_field("/proc/self/status", "VmRSS:").unwrap_or(0) * 1024,
        memory_total: proc_field("/proc/meminfo", "MemTotal:").unwrap_or(0) * 1024,
        cpu_seconds: cpu_seconds(),
        cpus: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        load1: load.first().copied().unwrap_or(0.0),
        load5: load.get(1).copied().unwrap_or(0.0),
        load15: load.get(2).copied().unwrap_or(0.0),
        address: None,
    }
}

/// This node.
#[utoipa::path(get, path = "/api/v1/brokers", tag = "nodes", responses((status = 200, body = Vec<NodeInfo>)))]
pub async fn brokers(State(state): State<Arc<AppState>>) -> axum::Json<Vec<NodeInfo>> {
    axum::Json(vec![this_node(&state)])
}

/// This node and the peers it knows from its cluster membership and config; a linked peer is
/// `running` while its heartbeats answer and `down` after, one not linked is `unknown`.
#[utoipa::path(get, path = "/api/v1/nodes", tag = "nodes", responses((status = 200, body = Vec<NodeInfo>)))]
pub async fn nodes(State(state): State<Arc<AppState>>) -> axum::Json<Vec<NodeInfo>> {
    let me = this_node(&state);
    let linked = state.broker.cluster_links.peers();
    let status = |name: &str| match linked.iter().find(|p| p.node == name) {
        Some(p) if p.status == "up" => "running",
        Some(_) => "down",
        None => "unknown",
    };
    let mut members: Vec<(String, String)> =
        state.broker.cluster.read().members.iter().map(|m| (m.name.clone(), m.address.clone())).collect();
    for p in &linked {
        if !members.iter().any(|(n, _)| n == &p.node) {
            members.push((p.node.clone(), p.address.clone()));
        }
    }
    let peers: Vec<NodeInfo> = members
        .into_iter()
        .filter(|(name, _)| name != &me.node)
        .map(|(name, address)| NodeInfo {
            node_status: status(&name).into(),
            node: name,
            version: String::new(),
            sysdescr: String::new(),
            uptime_secs: 0,
            uptime: String::new(),
            datetime: String::new(),
            connections: 0,
            memory_used: 0,
            memory_total: 0,
            cpu_seconds: 0.0,
            cpus: 0,
            load1: 0.0,
            load5: 0.0,
            load15: 0.0,
            address: Some(address),
        })
        .collect();
    let mut all = vec![me];
    all.extend(peers);
    axum::Json(all)
}

/// A count now and its highest value since start.
#[derive(Debug, Serialize, ToSchema)]
pub struct Gauge {
    pub count: u64,
    pub max: u64,
}

/// RMQTT's stats list.
#[derive(Debug, Serialize, ToSchema)]
pub struct Stats {
    pub node: String,
    pub connections: Gauge,
    pub sessions: Gauge,
    pub topics: Gauge,
    pub subscriptions: Gauge,
    pub subscriptions_shared: Gauge,
    pub routes: Gauge,
    pub retained: Gauge,
}

/// Counts of connections, sessions, topics, subscriptions, shared subscriptions, routes and
/// retained messages, each with its peak since start (peaks are sampled at every read and every
/// `$SYS` tick).
#[utoipa::path(get, path = "/api/v1/stats", tag = "nodes", responses((status = 200, body = Stats)))]
pub async fn stats(State(state): State<Arc<AppState>>) -> axum::Json<Stats> {
    let b = &state.broker;
    let filters = b.router.filters();
    let topics = filters.iter().map(|(t, f, _)| (t.clone(), f.clone())).collect::<std::collections::HashSet<_>>().len();
    let now = [
        b.metrics.connections.load(Ordering::Relaxed),
        b.sessions.count() as u64,
        topics as u64,
        b.router.subscription_count() as u64,
        b.router.shared_subscription_count() as u64,
        filters.len() as u64,
        b.retained.total() as u64,
    ];
    let peaks = b.peaks.sample(now);
    let g = |i: usize| Gauge { count: now[i], max: peaks[i] };
    axum::Json(Stats {
        node: b.node_name().to_string(),
        connections: g(0),
        sessions: g(1),
        topics: g(2),
        subscriptions: g(3),
        subscriptions_shared: g(4),
        routes: g(5),
        retained: g(6),
    })
}

/// Counters by RMQTT-style name (`client.connected`, `messages.received.qos1`, `bytes.sent`, ...).
#[utoipa::path(get, path = "/api/v1/metrics", tag = "nodes", responses((status = 200, body = std::collections::BTreeMap<String, u64>)))]
pub async fn metrics(
    State(state): State<Arc<AppState>>,
) -> ApiResult<axum::Json<std::collections::BTreeMap<String, u64>>> {
    Ok(axum::Json(state.broker.metrics.snapshot().into_iter().map(|(k, v)| (dotted(k), v)).collect()))
}

/// `client_connected` → `client.connected`, `messages_received_qos1` → `messages.received.qos1`.
fn dotted(name: &str) -> String {
    name.replace('_', ".")
}

/// The same figures in Prometheus text format (`starling_` prefix; counters end in `_total`).
#[utoipa::path(get, path = "/metrics", tag = "nodes", responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
pub async fn prometheus(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    use std::fmt::Write;
    let b = &state.broker;
    let mut out = String::new();
    for (name, value) in b.metrics.snapshot() {
        if name == "connections" {
            continue;
        }
        let _ = writeln!(out, "# TYPE starling_{name}_total counter\nstarling_{name}_total {value}");
    }
    let gauges = [
        ("connections", b.metrics.connections.load(Ordering::Relaxed)),
        ("sessions", b.sessions.count() as u64),
        ("subscriptions", b.router.subscription_count() as u64),
        ("subscriptions_shared", b.router.shared_subscription_count() as u64),
        ("retained", b.retained.total() as u64),
        ("uptime_seconds", b.started.elapsed().as_secs()),
    ];
    for (name, value) in gauges {
        let _ = writeln!(out, "# TYPE starling_{name} gauge\nstarling_{name} {value}");
    }
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], out)
}
