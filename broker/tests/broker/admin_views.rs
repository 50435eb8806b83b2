//! The management API's views of live state, checked value by value against what real MQTT
//! clients did: paging and the body limit, node/stats/metrics figures, client rows and filters,
//! subscription filters, HTTP (un)subscribe on online sessions and in batches, plugins, tenancy
//! on every endpoint that takes it, session expiry by age, lookups, and the README's curl examples.

use std::num::NonZeroU32;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use rmqtt_codec::types::QoS;
use rmqtt_codec::v5::{self, DisconnectReasonCode};
use serde_json::{Value, json};

use crate::admin::Api;
use crate::clients::{self, next, nothing_for, settle, v5c};
use crate::harness::BrokerProc;
use crate::raw::{self, Raw, Recv, connect};

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// One string field of every row of a list answer (`{"data": [...]}`) or of a plain array.
fn field(v: &Value, key: &str) -> Vec<String> {
    let rows = v.get("data").unwrap_or(v);
    rows.as_array()
        .unwrap_or_else(|| panic!("not a list: {v}"))
        .iter()
        .map(|r| r[key].as_str().unwrap_or_else(|| panic!("no {key} in {r}")).to_string())
        .collect()
}

fn ids(v: &Value) -> Vec<String> {
    field(v, "clientid")
}

/// A v5 CONNECT for a persistent session (clean start off, an hour of expiry).
fn persistent(client_id: &str) -> v5::Connect {
    let mut c = connect(client_id);
    c.clean_start = false;
    c.session_expiry_interval_secs = 3600;
    c
}

fn with_user(mut c: v5::Connect, user: &str) -> v5::Connect {
    c.username = Some(user.into());
    c
}

/// A v5 SUBSCRIBE with full options for each filter and a Subscription Identifier.
fn subscribe_with(packet_id: u16, id: u32, filters: &[(&str, v5::SubscriptionOptions)]) -> v5::Packet {
    v5::Packet::Subscribe(v5::Subscribe {
        packet_id: raw::pid(packet_id),
        id: NonZeroU32::new(id),
        user_properties: Vec::new(),
        topic_filters: filters.iter().map(|(f, o)| ((*f).into(), *o)).collect(),
    })
}

async fn expect_suback(r: &mut Raw) -> Vec<v5::SubscribeAckReason> {
    match r.recv().await {
        Recv::Packet(v5::Packet::SubscribeAck(a)) => a.status,
        other => panic!("expected SUBACK, got {other:?}"),
    }
}

async fn metrics(api: &Api) -> Value {
    let (s, m) = api.get("/api/v1/metrics").await;
    assert_eq!(s, StatusCode::OK, "{m}");
    m
}

fn delta(before: &Value, after: &Value, key: &str) -> u64 {
    let b = before[key].as_u64().unwrap_or_else(|| panic!("no metric {key}: {before}"));
    let a = after[key].as_u64().unwrap_or_else(|| panic!("no metric {key}: {after}"));
    a - b
}

// ---- 1. paging ----

#[tokio::test]
async fn lists_page_by_page_and_limit_default_to_100_rows_and_cap_limit_at_max_page_limit() {
    // No $SYS: its retained messages would be listed too.
    let b = BrokerProc::start("[sys]\ninterval_secs = 0\n[admin]\nmax_page_limit = 110\n");
    let api = Api::new(&b);
    let batch: Vec<Value> =
        (0..120).map(|i| json!({"topic": format!("page/{i:03}"), "payload": format!("{i}"), "retain": true})).collect();
    let (s, res) = api.post("/api/v1/mqtt/publish_batch", Value::Array(batch)).await;
    assert_eq!(s, StatusCode::OK, "{res}");
    assert_eq!(res.as_array().map(Vec::len), Some(120));
    let topics = |v: &Value| field(v, "topic");
    let (s, first) = api.get("/api/v1/retained").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(first["meta"], json!({"page": 1, "limit": 100, "count": 120}), "default _limit is 100");
    let t = topics(&first);
    assert_eq!((t.len(), t[0].as_str(), t[99].as_str()), (100, "page/000", "page/099"));
    let (_, second) = api.get("/api/v1/retained?_page=2").await;
    assert_eq!(second["meta"], json!({"page": 2, "limit": 100, "count": 120}));
    let t = topics(&second);
    assert_eq!((t.len(), t[0].as_str(), t[19].as_str()), (20, "page/100", "page/119"));
    let (_, third) = api.get("/api/v1/retained?_page=3&_limit=7").await;
    assert_eq!(third["meta"], json!({"page": 3, "limit": 7, "count": 120}));
    assert_eq!(topics(&third), (14..21).map(|i| format!("page/{i:03}")).collect::<Vec<_>>());
    let (_, beyond) = api.get("/api/v1/retained?_page=9").await;
    assert_eq!((beyond["data"].as_array().map(Vec::len), beyond["meta"]["count"].as_u64()), (Some(0), Some(120)));
    // Over `admin.max_page_limit`: capped, and the answer says to what.
    let (s, capped) = api.get("/api/v1/retained?_limit=5000").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(capped["meta"], json!({"page": 1, "limit": 110, "count": 120}));
    assert_eq!(topics(&capped).len(), 110);
    let (_, capped2) = api.get("/api/v1/retained?_limit=5000&_page=2").await;
    assert_eq!(topics(&capped2), (110..120).map(|i| format!("page/{i:03}")).collect::<Vec<_>>());
    let (s, e) = api.get("/api/v1/retained?_limit=0").await;
    assert_eq!((s, e["code"].as_u64()), (StatusCode::BAD_REQUEST, Some(108)));
    assert!(e["message"].as_str().unwrap_or("").contains("_limit"), "{e}");
    let (s, e) = api.get("/api/v1/retained?_limit=many").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(e["message"].as_str().unwrap_or("").contains("_limit"), "{e}");
}

// ---- 2. the body limit ----

/// Sends one HTTP/1.1 request as raw bytes and returns the status and the body as JSON.
async fn http_raw(addr: std::net::SocketAddr, head: &str, body: &[u8]) -> (u16, Value) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect to the admin API");
    s.write_all(head.as_bytes()).await.expect("write head");
    let _ = s.write_all(body).await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out).to_string();
    let status: u16 = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let payload = text.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    (status, serde_json::from_str(payload).unwrap_or(Value::String(payload.to_string())))
}

#[tokio::test]
async fn a_body_over_max_body_bytes_is_413_with_a_json_error_body_announced_or_chunked() {
    let b = BrokerProc::start("[admin]\nmax_body_bytes = 1024\n");
    let api = Api::new(&b);
    // Just under the limit: accepted, so the limit is the configured one.
    let (s, ok) = api.put("/api/v1/retained/big", json!({"payload": "a".repeat(900)})).await;
    assert_eq!(s, StatusCode::OK, "{ok}");
    assert_eq!(ok["payload"].as_str().map(str::len), Some(900));
    for path in ["/api/v1/retained/big", "/api/v1/mqtt/publish"] {
        let method = if path.contains("retained") { reqwest::Method::PUT } else { reqwest::Method::POST };
        let body = json!({"topic": "big", "payload": "a".repeat(2000)}).to_string().into_bytes();
        let (s, e) = api.raw(method, path, body).await;
        assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "{path}: {e}");
        assert_eq!(e["code"], 108, "{path}: a JSON error body, not {e}");
        assert!(e["message"].as_str().is_some_and(|m| m.contains("too large")), "{path}: {e}");
    }
    // Without a Content-Length (chunked): the limit still holds and the answer is JSON.
    let chunk = vec![b' '; 2000];
    let mut body = format!("{:x}\r\n", chunk.len()).into_bytes();
    body.extend_from_slice(&chunk);
    body.extend_from_slice(b"\r\n0\r\n\r\n");
    let head = format!(
        "POST /api/v1/mqtt/publish HTTP/1.1\r\nhost: {}\r\nauthorization: Basic YWRtaW46cHVibGlj\r\n\
         content-type: application/json\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n",
        b.admin
    );
    let (status, e) = http_raw(b.admin, &head, &body).await;
    assert_eq!(status, 413, "{e}");
    assert_eq!(e["code"], 108, "{e}");
    // The retained message set before is untouched by the refused PUT.
    assert_eq!(api.get("/api/v1/retained/big").await.1["payload"].as_str().map(str::len), Some(900));
}

// ---- 3. brokers, nodes, stats, metrics ----

fn proc_status_kib(pid: u32, key: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn meminfo_total_bytes() -> u64 {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0)
        * 1024
}

fn loadavg() -> Vec<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .filter_map(|v| v.parse().ok())
        .collect()
}

fn cpu_seconds_of(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<f64> = rest.split_whitespace().map(|v| v.parse().unwrap_or(0.0)).collect();
    (f.get(11).copied().unwrap_or(0.0) + f.get(12).copied().unwrap_or(0.0)) / 100.0
}

#[tokio::test]
async fn brokers_and_nodes_report_this_nodes_identity_uptime_connections_memory_cpu_and_load() {
    let started = Instant::now();
    let b = BrokerProc::start("");
    let api = Api::new(&b);
    let _one = clients::v5(b.tcp, "n-1", |_| {}).await;
    let _two = clients::v4(b.tcp, "n-2", true).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let load = loadavg();
    let (s, brokers) = api.get("/api/v1/brokers").await;
    assert_eq!(s, StatusCode::OK);
    let list = brokers.as_array().expect("a list");
    assert_eq!(list.len(), 1, "{brokers}");
    let n = &list[0];
    assert_eq!(n["node"], "test-node");
    assert_eq!(n["node_status"], "running");
    assert_eq!(n["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(n["sysdescr"], "Starling MQTT broker");
    let up = n["uptime_secs"].as_u64().expect("uptime_secs");
    assert!(up >= 1 && up <= started.elapsed().as_secs() + 1, "uptime {up}s, test ran {:?}", started.elapsed());
    assert_eq!(n["uptime"], humantime::format_duration(Duration::from_secs(up)).to_string());
    let dt = humantime::parse_rfc3339(n["datetime"].as_str().expect("datetime")).expect("RFC 3339 datetime");
    let skew = dt.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0).abs_diff(now_ms() / 1000);
    assert!(skew <= 5, "datetime {} is {skew}s off", n["datetime"]);
    assert_eq!(n["connections"], 2);
    // Memory and CPU are the broker process's own, as the kernel sees them.
    let rss = proc_status_kib(b.pid(), "VmRSS:") * 1024;
    let used = n["memory_used"].as_u64().expect("memory_used");
    assert!(used > 0 && used.abs_diff(rss) <= rss / 2, "memory_used {used}, VmRSS {rss}");
    assert_eq!(n["memory_total"].as_u64(), Some(meminfo_total_bytes()));
    let cpu = n["cpu_seconds"].as_f64().expect("cpu_seconds");
    assert!((cpu - cpu_seconds_of(b.pid())).abs() <= 1.0, "cpu_seconds {cpu}");
    assert_eq!(n["cpus"].as_u64(), std::thread::available_parallelism().ok().map(|p| p.get() as u64));
    for (i, key) in ["load1", "load5", "load15"].into_iter().enumerate() {
        let v = n[key].as_f64().unwrap_or(-1.0);
        assert!(v >= 0.0 && (v - load[i]).abs() <= 1.5, "{key} {v}, /proc/loadavg {load:?}");
    }
    // `/nodes`: the same node first, nothing else while the membership names no peer.
    let (_, nodes) = api.get("/api/v1/nodes").await;
    assert_eq!(nodes.as_array().map(Vec::len), Some(1), "{nodes}");
    for key in ["node", "node_status", "version", "sysdescr", "connections", "memory_total", "cpus"] {
        assert_eq!(nodes[0][key], n[key], "{key}");
    }
    // A peer from the membership is listed with its address and an unknown status.
    let members = json!({"members": [{"name": "test-node", "address": "127.0.0.1:8081"}, {"name": "peer-9", "address": "peer-9.svc:8081"}]});
    assert_eq!(api.put("/api/v1/cluster", members).await.0, StatusCode::OK);
    let (_, nodes) = api.get("/api/v1/nodes").await;
    assert_eq!(nodes.as_array().map(Vec::len), Some(2), "{nodes}");
    assert_eq!((nodes[0]["node"].as_str(), nodes[0]["connections"].as_u64()), (Some("test-node"), Some(2)));
    assert_eq!(nodes[1]["node"], "peer-9");
    assert_eq!(nodes[1]["address"], "peer-9.svc:8081");
    assert_eq!(nodes[1]["node_status"], "unknown");
    assert_eq!(api.get("/api/v1/brokers").await.1.as_array().map(Vec::len), Some(1), "/brokers is this node only");
}

#[tokio::test]
async fn stats_counts_match_live_connections_sessions_topics_subscriptions_routes_and_retained_and_max_keeps_the_peak()
{
    let b = BrokerProc::start("[sys]\ninterval_secs = 0\n");
    let api = Api::new(&b);
    let (mut a, _) = Raw::connect_v5(b.tcp, connect("st-a")).await;
    a.subscribe(1, &[("s/a", QoS::AtLeastOnce), ("s/b/+", QoS::AtMostOnce), ("$share/g/s/c", QoS::AtMostOnce)]).await;
    let (mut bb, _) = Raw::connect_v5(b.tcp, connect("st-b")).await;
    bb.subscribe(1, &[("s/a", QoS::AtMostOnce), ("$share/g/s/c", QoS::AtMostOnce), ("$share/h/s/c", QoS::AtMostOnce)])
        .await;
    let (c, _) = Raw::connect_v5(b.tcp, persistent("st-offline")).await;
    drop(c);
    for t in ["r/1", "r/2", "r/3"] {
        assert_eq!(api.put(&format!("/api/v1/retained/{t}"), json!({"payload": "x"})).await.0, StatusCode::OK);
    }
    settle().await;
    let (s, st) = api.get("/api/v1/stats").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(st["node"], "test-node");
    let gauge = |st: &Value, k: &str| (st[k]["count"].as_u64().unwrap_or(999), st[k]["max"].as_u64().unwrap_or(999));
    assert_eq!(gauge(&st, "connections"), (2, 2), "{st}");
    assert_eq!(gauge(&st, "sessions"), (3, 3), "{st}");
    // Distinct filters: s/a, s/b/+, s/c.
    assert_eq!(gauge(&st, "topics"), (3, 3), "{st}");
    // Non-shared: st-a s/a, st-a s/b/+, st-b s/a.
    assert_eq!(gauge(&st, "subscriptions"), (3, 3), "{st}");
    // Shared: st-a g, st-b g, st-b h.
    assert_eq!(gauge(&st, "subscriptions_shared"), (3, 3), "{st}");
    // Routes: s/a, s/b/+, s/c for group g, s/c for group h.
    assert_eq!(gauge(&st, "routes"), (4, 4), "{st}");
    assert_eq!(gauge(&st, "retained"), (3, 3), "{st}");
    assert_eq!(api.get("/api/v1/routes").await.1["meta"]["count"], 4, "the route table agrees");
    // Fewer of everything: counts drop, peaks stay.
    bb.send(v5::Packet::Disconnect(v5::Disconnect::default())).await;
    assert_eq!(api.delete("/api/v1/retained/r/1").await.0, StatusCode::NO_CONTENT);
    assert_eq!(api.delete("/api/v1/clients/st-offline").await.0, StatusCode::NO_CONTENT);
    settle().await;
    let (_, st) = api.get("/api/v1/stats").await;
    assert_eq!(gauge(&st, "connections"), (1, 2), "{st}");
    assert_eq!(gauge(&st, "sessions"), (1, 3), "{st}");
    assert_eq!(gauge(&st, "topics"), (3, 3), "{st}");
    assert_eq!(gauge(&st, "subscriptions"), (2, 3), "{st}");
    assert_eq!(gauge(&st, "subscriptions_shared"), (1, 3), "{st}");
    assert_eq!(gauge(&st, "routes"), (3, 4), "{st}");
    assert_eq!(gauge(&st, "retained"), (2, 3), "{st}");
    drop(a);
}

#[tokio::test]
async fn metrics_count_connects_refusals_takeovers_expiries_wills_drops_and_messages_by_qos_and_origin() {
    let remote = BrokerProc::start("[sys]\ninterval_secs = 0\n");
    let b = BrokerProc::start("[sys]\ninterval_secs = 0\n");
    let api = Api::new(&b);
    // The rule and the bridge are set up first; what they carry later is what is counted.
    let rule = json!({"rawsql": "SELECT * FROM \"src/r\"",
        "actions": [{"name": "republish", "params": {"topic": "m/rule", "payload": "ruled"}}]});
    let (s, r) = api.put("/api/v1/rules/echo", rule).await;
    assert_eq!(s, StatusCode::CREATED, "{r}");
    let bridge = json!({"server": format!("mqtt-tcp://{}", remote.tcp), "proto_ver": 5,
        "subscriptions": [{"remote_topic": "m/far", "local_topic": "${topic}", "qos": 1}]});
    let (s, r) = api.put("/api/v1/bridges/in", bridge).await;
    assert_eq!(s, StatusCode::CREATED, "{r}");
    let remote_api = Api::new(&remote);
    let deadline = Instant::now() + Duration::from_secs(10);
    while remote_api.get("/api/v1/subscriptions?topic=m/far").await.1["meta"]["count"] != 1 {
        assert!(Instant::now() < deadline, "the bridge did not subscribe at the remote");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut watch = clients::v5(b.tcp, "watch", |_| {}).await;
    watch.client.subscribe("m/#", v5c::QoS::ExactlyOnce).await.unwrap();
    let (mut away, _) = Raw::connect_v5(b.tcp, persistent("away")).await;
    away.subscribe(1, &[("drop/#", QoS::AtLeastOnce)]).await;
    drop(away);
    settle().await;
    let before = metrics(&api).await;

    let publisher = clients::v5(b.tcp, "pub", |_| {}).await;
    for (topic, qos) in [("m/0", v5c::QoS::AtMostOnce), ("m/1", v5c::QoS::AtLeastOnce), ("m/2", v5c::QoS::ExactlyOnce)]
    {
        publisher.client.publish(topic, qos, false, "x").await.unwrap();
    }
    api.post("/api/v1/mqtt/publish", json!({"topic": "m/http", "payload": "h"})).await;
    publisher.client.publish("src/r", v5c::QoS::AtLeastOnce, false, "{}").await.unwrap();
    let far = clients::v5(remote.tcp, "far-pub", |_| {}).await;
    far.client.publish("m/far", v5c::QoS::AtLeastOnce, false, "from afar").await.unwrap();
    publisher.client.publish("drop/x", v5c::QoS::AtMostOnce, false, "lost").await.unwrap();
    publisher.client.publish("nobody/x", v5c::QoS::AtMostOnce, false, "unheard").await.unwrap();
    publisher.client.publish("m/ret", v5c::QoS::AtLeastOnce, true, "kept").await.unwrap();
    // A will: the connection just goes away.
    let mut dier = connect("dier");
    dier.last_will = Some(v5::LastWill {
        qos: QoS::AtLeastOnce,
        retain: false,
        topic: "m/will".into(),
        message: bytes::Bytes::from_static(b"bye"),
        will_delay_interval_sec: None,
        correlation_data: None,
        message_expiry_interval: None,
        content_type: None,
        user_properties: Vec::new(),
        is_utf8_payload: None,
        response_topic: None,
    });
    let (r, _) = Raw::connect_v5(b.tcp, dier).await;
    drop(r);
    let mut got = Vec::new();
    for _ in 0..8 {
        let m = next(&mut watch.rx).await.unwrap_or_else(|| panic!("only {got:?} arrived"));
        got.push(String::from_utf8_lossy(&m.topic).to_string());
    }
    got.sort();
    assert_eq!(got, ["m/0", "m/1", "m/2", "m/far", "m/http", "m/ret", "m/rule", "m/will"]);
    // A takeover, a session that expires after 1 s, a keep-alive of 1 s that lapses.
    let (mut twin, _) = Raw::connect_v5(b.tcp, connect("twin")).await;
    let (_twin2, _) = Raw::connect_v5(b.tcp, connect("twin")).await;
    twin.expect_disconnect(DisconnectReasonCode::SessionTakenOver).await;
    let mut brief = connect("brief");
    brief.session_expiry_interval_secs = 1;
    let (mut r, _) = Raw::connect_v5(b.tcp, brief).await;
    r.send(v5::Packet::Disconnect(v5::Disconnect::default())).await;
    let mut sleepy = connect("sleepy");
    sleepy.keep_alive = 1;
    let (_sleepy, _) = Raw::connect_v5(b.tcp, sleepy).await;
    // Anonymous access off: a refusal that is an authentication failure.
    assert_eq!(api.put("/api/v1/config", json!({"allow_anonymous": false})).await.0, StatusCode::OK);
    let mut anon = Raw::open(b.tcp, true).await;
    anon.send(v5::Packet::Connect(Box::new(connect("anon")))).await;
    match anon.recv().await {
        Recv::Packet(v5::Packet::ConnectAck(a)) => assert_eq!(a.reason_code, v5::ConnectAckReason::NotAuthorized),
        other => panic!("{other:?}"),
    }
    api.put("/api/v1/config", json!({"allow_anonymous": true})).await;
    // Expiry runs every second, the keep-alive lapses after 1.5 s: wait for both, bounded.
    let deadline = Instant::now() + Duration::from_secs(8);
    let after = loop {
        let m = metrics(&api).await;
        if (delta(&before, &m, "session.expired") >= 1 && delta(&before, &m, "client.keepalive.timeout") >= 1)
            || Instant::now() > deadline
        {
            break m;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let d = |k: &str| delta(&before, &after, k);
    // pub, dier, twin twice, brief, sleepy (the refused one never connected).
    assert_eq!(d("client.connected"), 6, "{after}");
    // dier, the first twin, brief, sleepy.
    assert_eq!(d("client.disconnected"), 4, "{after}");
    assert_eq!((d("client.connack.refused"), d("client.auth.failure")), (1, 1));
    assert_eq!(d("client.keepalive.timeout"), 1);
    assert_eq!((d("session.takenover"), d("session.expired")), (1, 1));
    // From MQTT clients: m/0 m/1 m/2 src/r drop/x nobody/x m/ret.
    assert_eq!(d("messages.received"), 7);
    assert_eq!((d("messages.received.qos0"), d("messages.received.qos1"), d("messages.received.qos2")), (3, 3, 1));
    // By origin: one each over HTTP, from the rule and through the bridge; one will.
    assert_eq!(
        (d("messages.origin.http"), d("messages.origin.rule"), d("messages.origin.bridge"), d("messages.will")),
        (1, 1, 1, 1)
    );
    // QoS 0 for the offline session is dropped; src/r, drop/x and nobody/x reached no one.
    assert_eq!((d("messages.dropped"), d("messages.no.subscribers")), (1, 3));
    assert_eq!(d("messages.retained.set"), 1);
    assert_eq!((d("messages.sent"), d("messages.sent.qos2")), (8, 1));
    assert!(d("bytes.received") > 0 && d("packets.received") >= 7 && d("packets.sent") >= 8, "{after}");
}

#[tokio::test]
async fn bytes_and_packets_sent_and_received_move_while_the_connections_stay_open() {
    let b = BrokerProc::start("[sys]\ninterval_secs = 0\n");
    let api = Api::new(&b);
    let (mut sub, _) = Raw::connect_v5(b.tcp, connect("b-sub")).await;
    sub.subscribe(1, &[("b/#", QoS::AtMostOnce)]).await;
    let (mut publisher, _) = Raw::connect_v5(b.tcp, connect("b-pub")).await;
    settle().await;
    let before = metrics(&api).await;
    let payload = "p".repeat(500);
    publisher.send(raw::publish("b/x", &payload, QoS::AtMostOnce, None)).await;
    let got = sub.recv_publish().await;
    assert_eq!(got.payload.len(), 500);
    let after = metrics(&api).await;
    // A QoS 0 PUBLISH of 500 payload bytes on "b/x": at least 505 bytes each way.
    assert!(delta(&before, &after, "bytes.received") >= 505, "received {}", delta(&before, &after, "bytes.received"));
    assert!(
        delta(&before, &after, "bytes.sent") >= 505,
        "sent {} while connected",
        delta(&before, &after, "bytes.sent")
    );
    assert_eq!((delta(&before, &after, "packets.received"), delta(&before, &after, "packets.sent")), (1, 1));
}

// ---- 4. client rows ----

#[tokio::test]
async fn a_client_row_shows_what_the_client_sent_keepalive_windows_queue_subscriptions_expiry_will_addresses_and_times()
{
    let b = BrokerProc::start("[limits]\nmax_queued_messages = 50\nmax_inflight = 10\n");
    let api = Api::new(&b);
    let mut watcher = clients::v4(b.tcp, "row-v4", true).await;
    watcher.client.subscribe("row/will", rumqttc::QoS::AtLeastOnce).await.unwrap();
    let mut c = with_user(persistent("row"), "alice");
    c.session_expiry_interval_secs = 120;
    c.keep_alive = 42;
    c.receive_max = std::num::NonZeroU16::new(3);
    c.last_will = Some(v5::LastWill {
        qos: QoS::AtLeastOnce,
        retain: false,
        topic: "row/will".into(),
        message: bytes::Bytes::from_static(b"gone"),
        will_delay_interval_sec: None,
        correlation_data: None,
        message_expiry_interval: None,
        content_type: None,
        user_properties: Vec::new(),
        is_utf8_payload: None,
        response_topic: None,
    });
    let t0 = now_ms();
    let (mut r, _) = Raw::connect_v5(b.tcp, c).await;
    let t1 = now_ms();
    r.subscribe(1, &[("row/a", QoS::AtLeastOnce), ("row/b/#", QoS::AtLeastOnce)]).await;
    // Five QoS 1 messages and no PUBACK: three in flight (its Receive Maximum), two queued.
    let publisher = clients::v5(b.tcp, "row-pub", |_| {}).await;
    for i in 0..5 {
        publisher.client.publish("row/a", v5c::QoS::AtLeastOnce, false, format!("{i}")).await.unwrap();
    }
    for _ in 0..3 {
        r.recv_publish().await;
    }
    settle().await;
    let (s, row) = api.get("/api/v1/clients/row").await;
    assert_eq!(s, StatusCode::OK, "{row}");
    let local = r.local_addr();
    let expect = json!({
        "node": "test-node", "tenant": "global", "clientid": "row", "username": "alice", "connected": true,
        "ip_address": "127.0.0.1", "port": local.port(), "listener": "tcp", "proto_ver": 5, "clean_start": false,
        "keepalive": 42, "expiry_interval": 120, "inflight": 3, "max_inflight": 3, "mqueue_len": 2, "max_mqueue": 50,
        "subscriptions_cnt": 2, "has_will": true, "disconnected_at": null,
    });
    for (k, v) in expect.as_object().unwrap() {
        assert_eq!(&row[k], v, "{k} in {row}");
    }
    for k in ["created_at", "connected_at"] {
        let at = row[k].as_u64().unwrap_or(0);
        assert!((t0..=t1).contains(&at), "{k} {at} not within the CONNECT ({t0}..={t1})");
    }
    // The list shows the same row; a 3.1.1 client without Receive Maximum gets `limits.max_inflight`.
    let (_, listed) = api.get("/api/v1/clients?clientid=row").await;
    assert_eq!(listed["data"][0], row);
    let (_, v4) = api.get("/api/v1/clients/row-v4").await;
    let want = json!({"proto_ver": 4, "max_inflight": 10, "keepalive": 30, "clean_start": true, "expiry_interval": 0,
        "has_will": false, "username": null, "subscriptions_cnt": 1, "inflight": 0, "mqueue_len": 0});
    for (k, v) in want.as_object().unwrap() {
        assert_eq!(&v4[k], v, "{k} in {v4}");
    }
    // A WebSocket client's listener is `ws`.
    let ws = b.ws;
    let _w = clients::v5(b.tcp, "row-ws", |o| {
        *o = v5c::MqttOptions::new("row-ws", format!("ws://{ws}/mqtt"), ws.port());
        o.set_keep_alive(Duration::from_secs(17));
        o.set_transport(rumqttc::Transport::Ws);
    })
    .await;
    let (_, w) = api.get("/api/v1/clients/row-ws").await;
    assert_eq!((w["listener"].as_str(), w["keepalive"].as_u64()), (Some("ws"), Some(17)), "{w}");
    // Gone without DISCONNECT: offline, no address, the will published, the time it left.
    drop(r);
    let m = next(&mut watcher.rx).await.expect("the will");
    assert_eq!(&m.payload[..], b"gone");
    settle().await;
    let (_, off) = api.get("/api/v1/clients/row").await;
    assert_eq!(
        (off["connected"].as_bool(), off["ip_address"].as_str(), off["port"].as_u64()),
        (Some(false), None, None)
    );
    assert_eq!((off["listener"].as_str(), off["has_will"].as_bool()), (None, Some(false)), "{off}");
    assert_eq!(off["created_at"], row["created_at"]);
    let left = off["disconnected_at"].as_u64().unwrap_or(0);
    assert!(left >= row["connected_at"].as_u64().unwrap_or(u64::MAX) && left <= now_ms(), "{off}");
    // The five unacknowledged messages stay with the session, in flight or queued.
    let kept = off["inflight"].as_u64().unwrap_or(0) + off["mqueue_len"].as_u64().unwrap_or(0);
    assert_eq!(kept, 5, "{off}");
}

// ---- 5. client filters ----

#[tokio::test]
async fn client_filters_by_clientid_clean_start_tenant_like_username_and_time_and_queue_ranges() {
    let b = BrokerProc::start("[tenancy]\nrule = \"username_prefix\"\n");
    let api = Api::new(&b);
    let pause = || tokio::time::sleep(Duration::from_millis(25));
    let (early, _) = Raw::connect_v5(b.tcp, with_user(persistent("early"), "acme/ann")).await;
    drop(early);
    pause().await;
    let mid = clients::v5(b.tcp, "mid", |o| {
        o.set_credentials("bob", "x");
    })
    .await;
    pause().await;
    let _late = clients::v5(b.tcp, "late", |o| {
        o.set_credentials("bobby", "x");
    })
    .await;
    pause().await;
    let (mut queued, _) = Raw::connect_v5(b.tcp, with_user(persistent("queued"), "quinn")).await;
    queued.subscribe(1, &[("q/#", QoS::AtLeastOnce)]).await;
    drop(queued);
    settle().await;
    for i in 0..3 {
        mid.client.publish("q/x", v5c::QoS::AtLeastOnce, false, format!("{i}")).await.unwrap();
    }
    pause().await;
    // `early` comes back: created first, connected last.
    let (_early, ack) = Raw::connect_v5(b.tcp, with_user(persistent("early"), "acme/ann")).await;
    assert!(ack.session_present);
    settle().await;
    let get = |q: &'static str| {
        let api = &api;
        async move {
            let (s, v) = api.get(&format!("/api/v1/clients?{q}")).await;
            assert_eq!(s, StatusCode::OK, "{q}: {v}");
            ids(&v)
        }
    };
    // Sorted by tenant, then client id.
    assert_eq!(get("").await, ["early", "late", "mid", "queued"]);
    assert_eq!(get("clientid=mid").await, ["mid"]);
    assert!(get("clientid=nobody").await.is_empty());
    assert_eq!(get("clean_start=false").await, ["early", "queued"]);
    assert_eq!(get("clean_start=true").await, ["late", "mid"]);
    assert_eq!(get("tenant=acme").await, ["early"]);
    assert_eq!(get("tenant=global").await, ["late", "mid", "queued"]);
    assert_eq!(get("_like_username=bob").await, ["late", "mid"]);
    assert_eq!(get("_like_username=acme%2F").await, ["early"]);
    assert_eq!(get("ip_address=10.9.8.7").await, Vec::<String>::new());
    assert_eq!(get("proto_ver=5&tenant=global&clean_start=true&_like_username=bob").await, ["late", "mid"]);
    let (_, all) = api.get("/api/v1/clients").await;
    let row = |id: &str| all["data"].as_array().unwrap().iter().find(|r| r["clientid"] == id).cloned().unwrap();
    let (early_row, mid_row, queued_row) = (row("early"), row("mid"), row("queued"));
    let created_mid = mid_row["created_at"].as_u64().unwrap();
    assert!(early_row["created_at"].as_u64().unwrap() < created_mid, "{all}");
    let q = |s: String| {
        let api = &api;
        async move { ids(&api.get(&format!("/api/v1/clients?{s}")).await.1) }
    };
    assert_eq!(q(format!("_gte_created_at={created_mid}")).await, ["late", "mid", "queued"]);
    assert_eq!(q(format!("_lte_created_at={created_mid}")).await, ["early", "mid"]);
    assert_eq!(q(format!("_gte_created_at={created_mid}&_lte_created_at={created_mid}")).await, ["mid"]);
    let connected_early = early_row["connected_at"].as_u64().unwrap();
    assert!(connected_early > queued_row["connected_at"].as_u64().unwrap(), "{all}");
    assert_eq!(q(format!("_gte_connected_at={connected_early}")).await, ["early"]);
    assert_eq!(q(format!("_lte_connected_at={}", connected_early - 1)).await, ["late", "mid", "queued"]);
    assert_eq!(queued_row["mqueue_len"], 3, "{queued_row}");
    assert_eq!(get("_gte_mqueue_len=1").await, ["queued"]);
    assert_eq!(get("_gte_mqueue_len=3&_lte_mqueue_len=3").await, ["queued"]);
    assert_eq!(get("_lte_mqueue_len=0").await, ["early", "late", "mid"]);
    assert!(get("_gte_mqueue_len=4").await.is_empty());
    let (s, e) = api.get("/api/v1/clients?_gte_created_at=yesterday").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(e["message"].as_str().unwrap_or("").contains("_gte_created_at"), "{e}");
}

// ---- 6. subscription filters ----

#[tokio::test]
async fn subscription_filters_by_topic_qos_share_and_match_topic_and_one_clients_list_with_its_options() {
    let b = BrokerProc::start("");
    let api = Api::new(&b);
    let (mut s1, _) = Raw::connect_v5(b.tcp, connect("s1")).await;
    let opts = |qos, no_local, rap, rh| v5::SubscriptionOptions {
        qos,
        no_local,
        retain_as_published: rap,
        retain_handling: rh,
    };
    s1.send(subscribe_with(
        1,
        7,
        &[
            ("a/+", opts(QoS::AtLeastOnce, true, false, v5::RetainHandling::AtSubscribe)),
            ("a/b", opts(QoS::ExactlyOnce, false, true, v5::RetainHandling::NoAtSubscribe)),
            ("$share/grp/a/#", opts(QoS::AtMostOnce, false, false, v5::RetainHandling::AtSubscribeNew)),
        ],
    ))
    .await;
    assert_eq!(expect_suback(&mut s1).await.len(), 3);
    let (mut s2, _) = Raw::connect_v5(b.tcp, connect("s2")).await;
    s2.subscribe(1, &[("a/b", QoS::AtMostOnce), ("$share/other/x/#", QoS::AtLeastOnce)]).await;
    let (_, mine) = api.get("/api/v1/subscriptions/s1").await;
    let expect = json!([
        {"node": "test-node", "tenant": "global", "clientid": "s1", "topic": "$share/grp/a/#", "qos": 0, "share": "grp",
         "no_local": false, "retain_as_published": false, "retain_handling": 1, "subscription_id": 7},
        {"node": "test-node", "tenant": "global", "clientid": "s1", "topic": "a/+", "qos": 1, "share": null,
         "no_local": true, "retain_as_published": false, "retain_handling": 0, "subscription_id": 7},
        {"node": "test-node", "tenant": "global", "clientid": "s1", "topic": "a/b", "qos": 2, "share": null,
         "no_local": false, "retain_as_published": true, "retain_handling": 2, "subscription_id": 7},
    ]);
    assert_eq!(mine, expect);
    let pairs = |v: &Value| -> Vec<(String, String)> { ids(v).into_iter().zip(field(v, "topic")).collect() };
    let get = |q: &'static str| {
        let api = &api;
        async move {
            let (s, v) = api.get(&format!("/api/v1/subscriptions?{q}")).await;
            assert_eq!(s, StatusCode::OK, "{q}: {v}");
            pairs(&v)
        }
    };
    let p = |c: &str, t: &str| (c.to_string(), t.to_string());
    assert_eq!(get("topic=a/b").await, [p("s1", "a/b"), p("s2", "a/b")]);
    assert_eq!(get("topic=%24share%2Fgrp%2Fa%2F%23").await, [p("s1", "$share/grp/a/#")]);
    assert_eq!(get("qos=2").await, [p("s1", "a/b")]);
    assert_eq!(get("qos=1").await, [p("s1", "a/+"), p("s2", "$share/other/x/#")]);
    assert_eq!(get("share=grp").await, [p("s1", "$share/grp/a/#")]);
    assert_eq!(get("share=other").await, [p("s2", "$share/other/x/#")]);
    assert_eq!(
        get("_match_topic=a/b").await,
        [p("s1", "$share/grp/a/#"), p("s1", "a/+"), p("s1", "a/b"), p("s2", "a/b")]
    );
    assert_eq!(get("_match_topic=a/c").await, [p("s1", "$share/grp/a/#"), p("s1", "a/+")]);
    assert_eq!(get("_match_topic=x/y/z").await, [p("s2", "$share/other/x/#")]);
    assert!(get("_match_topic=b").await.is_empty());
    assert_eq!(get("clientid=s2&qos=0").await, [p("s2", "a/b")]);
    let (_, all) = api.get("/api/v1/subscriptions").await;
    assert_eq!(all["meta"]["count"], 5);
    let (s, e) = api.get("/api/v1/subscriptions?qos=3").await;
    assert_eq!((s, e["code"].as_u64()), (StatusCode::BAD_REQUEST, Some(108)));
    assert_eq!(api.get("/api/v1/subscriptions/nobody").await.0, StatusCode::NOT_FOUND);
    // Unsubscribed over MQTT: gone from the view.
    s2.send(v5::Packet::Unsubscribe(v5::Unsubscribe {
        packet_id: raw::pid(2),
        user_properties: Vec::new(),
        topic_filters: vec!["a/b".into()],
    }))
    .await;
    settle().await;
    assert_eq!(get("clientid=s2").await, [p("s2", "$share/other/x/#")]);
}

// ---- 7. HTTP subscription of an online session ----

#[tokio::test]
async fn http_subscription_on_an_online_session_delivers_at_once_and_its_delete_stops_delivery() {
    let b = BrokerProc::start("");
    let api = Api::new(&b);
    api.put("/api/v1/retained/live/r", json!({"payload": "kept", "qos": 1})).await;
    let mut c = clients::v5(b.tcp, "online-1", |_| {}).await;
    let publisher = clients::v5(b.tcp, "online-pub", |_| {}).await;
    let (s, row) =
        api.post("/api/v1/sessions/online-1/subscriptions", json!({"topic_filter": "live/#", "qos": 1})).await;
    assert_eq!(s, StatusCode::CREATED, "{row}");
    assert_eq!((row["topic"].as_str(), row["qos"].as_u64()), (Some("live/#"), Some(1)));
    // Retained messages come at once (Retain Handling 0) ...
    let m = next(&mut c.rx).await.expect("the retained message");
    assert_eq!((&m.payload[..], m.retain), (&b"kept"[..], true));
    // ... and so does a message published now, at the subscription's QoS.
    publisher.client.publish("live/x", v5c::QoS::ExactlyOnce, false, "now").await.unwrap();
    let m = next(&mut c.rx).await.expect("delivered to the connected client");
    assert_eq!((&m.payload[..], m.qos), (&b"now"[..], v5c::QoS::AtLeastOnce));
    // Replaced at QoS 2 with Retain Handling 1: 200, no retained message again, QoS 2 from now on.
    let (s, row) = api
        .post(
            "/api/v1/sessions/online-1/subscriptions",
            json!({"topic_filter": "live/#", "qos": 2, "retain_handling": 1}),
        )
        .await;
    assert_eq!((s, row["qos"].as_u64()), (StatusCode::OK, Some(2)), "{row}");
    nothing_for(&mut c.rx, Duration::from_millis(300)).await;
    publisher.client.publish("live/y", v5c::QoS::ExactlyOnce, false, "two").await.unwrap();
    assert_eq!(next(&mut c.rx).await.expect("QoS 2 now").qos, v5c::QoS::ExactlyOnce);
    assert_eq!(api.get("/api/v1/clients/online-1").await.1["subscriptions_cnt"], 1);
    // Removed: nothing more.
    let (s, _) = api.delete("/api/v1/sessions/online-1/subscriptions/live%2F%23").await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    publisher.client.publish("live/z", v5c::QoS::AtLeastOnce, false, "late").await.unwrap();
    nothing_for(&mut c.rx, Duration::from_millis(500)).await;
    assert_eq!(api.get("/api/v1/subscriptions/online-1").await.1, json!([]));
    let (s, e) = api.delete("/api/v1/sessions/online-1/subscriptions/live%2F%23").await;
    assert_eq!((s, e["code"].as_u64()), (StatusCode::NOT_FOUND, Some(108)));
}

// ---- 8. batches ----

#[tokio::test]
async fn subscribe_batch_and_unsubscribe_batch_with_comma_separated_topics_change_real_delivery() {
    let b = BrokerProc::start("");
    let api = Api::new(&b);
    let mut c1 = clients::v5(b.tcp, "batch-1", |_| {}).await;
    let mut c2 = clients::v5(b.tcp, "batch-2", |_| {}).await;
    let publisher = clients::v5(b.tcp, "batch-pub", |_| {}).await;
    let (s, res) = api
        .post(
            "/api/v1/mqtt/subscribe_batch",
            json!([
                {"clientid": "batch-1", "topics": "b/1, b/2", "qos": 1},
                {"clientid": "batch-2", "topic": "b/3"},
                {"clientid": "ghost", "topic": "b/4"},
                {"clientid": "batch-2", "topics": "b/5,b/#/x"},
            ]),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{res}");
    let codes = |v: &Value| -> Vec<Vec<u64>> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|item| item.as_array().unwrap().iter().map(|r| r["code"].as_u64().unwrap()).collect())
            .collect()
    };
    assert_eq!(codes(&res), vec![vec![0, 0], vec![0], vec![108], vec![0, 115]], "{res}");
    assert_eq!((res[0][1]["topic"].as_str(), res[2][0]["topic"].as_str()), (Some("b/2"), Some("b/4")));
    let publish_all = || async {
        for t in ["b/1", "b/2", "b/3", "b/5"] {
            publisher.client.publish(t, v5c::QoS::AtLeastOnce, false, t).await.unwrap();
        }
    };
    publish_all().await;
    let mut to1 = Vec::new();
    for _ in 0..2 {
        let m = next(&mut c1.rx).await.expect("batch-1 subscribed");
        assert_eq!(m.qos, v5c::QoS::AtLeastOnce);
        to1.push(String::from_utf8_lossy(&m.topic).to_string());
    }
    to1.sort();
    assert_eq!(to1, ["b/1", "b/2"]);
    let mut to2 = Vec::new();
    for _ in 0..2 {
        let m = next(&mut c2.rx).await.expect("batch-2 subscribed");
        assert_eq!(m.qos, v5c::QoS::AtMostOnce, "default QoS 0");
        to2.push(String::from_utf8_lossy(&m.topic).to_string());
    }
    to2.sort();
    assert_eq!(to2, ["b/3", "b/5"]);
    nothing_for(&mut c1.rx, Duration::from_millis(200)).await;
    let (s, res) = api
        .post(
            "/api/v1/mqtt/unsubscribe_batch",
            json!([
                {"clientid": "batch-1", "topics": "b/1,b/9"},
                {"clientid": "batch-2", "topics": "b/3,b/5"},
                {"clientid": "ghost", "topic": "b/4"},
            ]),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{res}");
    assert_eq!(codes(&res), vec![vec![0, 108], vec![0, 0], vec![108]], "{res}");
    publish_all().await;
    let m = next(&mut c1.rx).await.expect("b/2 still subscribed");
    assert_eq!(&m.topic[..], b"b/2");
    nothing_for(&mut c1.rx, Duration::from_millis(400)).await;
    nothing_for(&mut c2.rx, Duration::from_millis(100)).await;
    // The whole batch is refused only when it is not a list of requests.
    let (s, e) = api.post("/api/v1/mqtt/subscribe_batch", json!({"clientid": "batch-1", "topic": "b/7"})).await;
    assert_eq!((s, e["code"].as_u64()), (StatusCode::BAD_REQUEST, Some(108)), "{e}");
}

// ---- 9. plugins ----

#[tokio::test]
async fn plugins_list_every_built_in_module_with_its_active_flag_and_config() {
    let b = BrokerProc::start("[sys]\ninterval_secs = 2\n[tenancy]\nrule = \"username_prefix\"\n");
    let api = Api::new(&b);
    let (_, p) = api.get("/api/v1/plugins").await;
    assert_eq!(field(&p, "name"), ["auth", "bridges", "rules", "traffic", "sys"]);
    let by = |p: &Value, name: &str| p.as_array().unwrap().iter().find(|x| x["name"] == name).cloned().unwrap();
    let auth = by(&p, "auth");
    assert_eq!((auth["active"].as_bool(), auth["toggleable"].as_bool()), (Some(true), Some(false)));
    assert_eq!(
        auth["config"],
        json!({"allow_anonymous": true, "credentials_file": null, "tenancy_rule": "username_prefix"})
    );
    assert_eq!(by(&p, "bridges")["config"], json!({"bridges": 0}));
    assert_eq!(by(&p, "rules")["config"], json!({"rules": 0}));
    assert_eq!(by(&p, "traffic")["config"], json!({"rules": 0}));
    let sys = by(&p, "sys");
    assert_eq!((sys["active"].as_bool(), sys["toggleable"].as_bool()), (Some(true), Some(true)));
    assert_eq!(sys["config"], json!({"interval_secs": 2}));
    for x in p.as_array().unwrap() {
        assert!(!x["description"].as_str().unwrap_or("").is_empty(), "{x}");
    }
    // The config follows what is set up, and the active flags what was toggled.
    let rule = json!({"rawsql": "SELECT * FROM \"p/#\"", "actions": []});
    assert_eq!(api.put("/api/v1/rules/r1", rule).await.0, StatusCode::CREATED);
    api.put("/api/v1/traffic-rules/t1", json!({"client_id_pattern": "x-*", "max_connections": 5})).await;
    api.put("/api/v1/traffic-rules/t2", json!({"client_id_pattern": "y-*", "max_connections": 5})).await;
    let bridge = json!({"server": format!("mqtt-tcp://{}", b.tcp), "forwards": [{"local_topic": "nowhere/#"}]});
    assert_eq!(api.put("/api/v1/bridges/b1", bridge).await.0, StatusCode::CREATED);
    api.put("/api/v1/config", json!({"allow_anonymous": false})).await;
    assert_eq!(api.put("/api/v1/plugins/rules/unload", json!({})).await.0, StatusCode::OK);
    let (_, p) = api.get("/api/v1/plugins").await;
    assert_eq!(by(&p, "auth")["config"]["allow_anonymous"], false);
    assert_eq!(by(&p, "bridges")["config"], json!({"bridges": 1}));
    let rules = by(&p, "rules");
    assert_eq!((rules["active"].as_bool(), rules["config"].clone()), (Some(false), json!({"rules": 1})));
    let traffic = by(&p, "traffic");
    assert_eq!((traffic["active"].as_bool(), traffic["config"].clone()), (Some(true), json!({"rules": 2})));
    // With $SYS off in the config, the module exists but cannot be loaded at runtime.
    let quiet = BrokerProc::start("[sys]\ninterval_secs = 0\n");
    let (_, p) = Api::new(&quiet).get("/api/v1/plugins").await;
    assert_eq!(by(&p, "sys")["toggleable"], false);
    assert_eq!(by(&p, "auth")["config"]["tenancy_rule"], "fixed");
}

// ---- 10. tenancy ----

#[tokio::test]
async fn tenant_parameter_scopes_clients_sessions_subscriptions_publish_routes_and_topic_tree() {
    let b = BrokerProc::start("[tenancy]\nrule = \"username_prefix\"\n[sys]\ninterval_secs = 0\n");
    let api = Api::new(&b);
    let login = |user: &'static str| {
        move |o: &mut v5c::MqttOptions| {
            o.set_credentials(user, "x");
        }
    };
    let mut acme = clients::v5(b.tcp, "dev", login("acme/u")).await;
    acme.client.subscribe("t/#", v5c::QoS::AtLeastOnce).await.unwrap();
    let mut globex = clients::v5(b.tcp, "dev", login("globex/u")).await;
    globex.client.subscribe("t/+", v5c::QoS::AtLeastOnce).await.unwrap();
    let plain = clients::v5(b.tcp, "plain", |_| {}).await;
    plain.client.subscribe("g/#", v5c::QoS::AtLeastOnce).await.unwrap();
    settle().await;
    // Clients.
    let (_, all) = api.get("/api/v1/clients").await;
    assert_eq!(field(&all, "tenant"), ["acme", "global", "globex"]);
    let (_, a) = api.get("/api/v1/clients?tenant=acme").await;
    assert_eq!((ids(&a), field(&a, "username")), (vec!["dev".to_string()], vec!["acme/u".to_string()]));
    assert_eq!(api.get("/api/v1/clients/dev?tenant=globex").await.1["username"], "globex/u");
    assert_eq!(api.get("/api/v1/clients/dev").await.0, StatusCode::NOT_FOUND, "not in the default tenant");
    assert_eq!(api.get("/api/v1/clients/username/acme%2Fu?tenant=acme").await.1.as_array().map(Vec::len), Some(1));
    assert_eq!(api.get("/api/v1/clients/username/acme%2Fu?tenant=globex").await.1, json!([]));
    assert_eq!(api.get("/api/v1/clients/dev/online?tenant=acme").await.1["online"], true);
    assert_eq!(api.get("/api/v1/clients/dev/online").await.1["online"], false);
    // Sessions and subscriptions.
    assert_eq!(ids(&api.get("/api/v1/sessions?tenant=globex").await.1), ["dev"]);
    assert_eq!(api.get("/api/v1/sessions?tenant=nobody").await.1["meta"]["count"], 0);
    assert_eq!(api.get("/api/v1/sessions/dev?tenant=globex").await.1["subscriptions"][0]["topic"], "t/+");
    assert_eq!(field(&api.get("/api/v1/subscriptions?tenant=acme").await.1, "topic"), ["t/#"]);
    assert_eq!(field(&api.get("/api/v1/subscriptions/dev?tenant=globex").await.1, "topic"), ["t/+"]);
    // Routes and the topic tree.
    assert_eq!(field(&api.get("/api/v1/routes?tenant=acme").await.1, "topic"), ["t/#"]);
    let (_, r) = api.get("/api/v1/routes/t/x?tenant=globex").await;
    assert_eq!((field(&r, "topic"), field(&r, "tenant")), (vec!["t/+".to_string()], vec!["globex".to_string()]));
    assert_eq!(api.get("/api/v1/routes/t/x").await.1.as_array().map(Vec::len), Some(2), "all tenants");
    let (_, tree) = api.get("/api/v1/topic-tree?tenant=acme").await;
    assert_eq!(
        tree,
        json!([{"topic": "t", "clientids": [], "child_count": 1,
        "children": [{"topic": "#", "clientids": ["dev"], "child_count": 0, "children": []}]}])
    );
    assert_eq!(field(&api.get("/api/v1/topic-tree").await.1, "topic"), ["g"], "default tenant: global");
    // Publish into one tenant.
    let (_, res) =
        api.post("/api/v1/mqtt/publish", json!({"topic": "t/x", "payload": "for acme", "tenant": "acme"})).await;
    assert_eq!(res[0]["matched"], 1, "{res}");
    assert_eq!(&next(&mut acme.rx).await.expect("acme gets it").payload[..], b"for acme");
    nothing_for(&mut globex.rx, Duration::from_millis(300)).await;
    // Subscribe one tenant's session over HTTP.
    let (_, res) =
        api.post("/api/v1/mqtt/subscribe", json!({"clientid": "dev", "topic": "extra/1", "tenant": "globex"})).await;
    assert_eq!(res[0]["code"], 0, "{res}");
    let (s, _) = api
        .post("/api/v1/sessions/dev/subscriptions", json!({"topic_filter": "extra/2", "tenant": "acme", "qos": 1}))
        .await;
    assert_eq!(s, StatusCode::CREATED);
    api.post("/api/v1/mqtt/publish", json!({"topics": "extra/1,extra/2", "payload": "e", "tenant": "globex"})).await;
    assert_eq!(&next(&mut globex.rx).await.expect("globex subscribed").topic[..], b"extra/1");
    nothing_for(&mut acme.rx, Duration::from_millis(300)).await;
    nothing_for(&mut globex.rx, Duration::from_millis(100)).await;
    // Kick in one tenant only.
    assert_eq!(api.delete("/api/v1/clients/dev?tenant=globex").await.0, StatusCode::NO_CONTENT);
    settle().await;
    assert_eq!(api.get("/api/v1/clients/dev/online?tenant=globex").await.1["online"], false);
    assert_eq!(api.get("/api/v1/clients/dev/online?tenant=acme").await.1["online"], true);
}

// ---- 11. sessions/expire ----

#[tokio::test]
async fn sessions_expire_removes_only_offline_sessions_idle_longer_than_expiry_seconds_in_the_tenant() {
    let b = BrokerProc::start("[tenancy]\nrule = \"username_prefix\"\n");
    let api = Api::new(&b);
    let (_live, _) = Raw::connect_v5(b.tcp, persistent("live")).await;
    let (old, _) = Raw::connect_v5(b.tcp, persistent("old")).await;
    drop(old);
    let (other, _) = Raw::connect_v5(b.tcp, with_user(persistent("old"), "acme/x")).await;
    drop(other);
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let (fresh, _) = Raw::connect_v5(b.tcp, persistent("fresh")).await;
    drop(fresh);
    settle().await;
    let (s, res) = api.post("/api/v1/sessions/expire", json!({"expiry_seconds": 1})).await;
    assert_eq!(s, StatusCode::OK, "{res}");
    assert_eq!(res["expired"], 1, "only `old` of the default tenant: {res}");
    assert_eq!(api.get("/api/v1/sessions/old").await.0, StatusCode::NOT_FOUND);
    assert_eq!(api.get("/api/v1/sessions/fresh").await.0, StatusCode::OK, "idle for less than a second");
    assert_eq!(api.get("/api/v1/sessions/live").await.1["connected"], true, "connected sessions never expire");
    assert_eq!(api.get("/api/v1/sessions/old?tenant=acme").await.0, StatusCode::OK, "another tenant's");
    // A threshold longer than anyone's idle time removes nothing.
    assert_eq!(
        api.post("/api/v1/sessions/expire", json!({"expiry_seconds": 3600, "tenant": "acme"})).await.1["expired"],
        0
    );
    assert_eq!(
        api.post("/api/v1/sessions/expire", json!({"expiry_seconds": 1, "tenant": "acme"})).await.1["expired"],
        1
    );
    assert_eq!(api.get("/api/v1/sessions/old?tenant=acme").await.0, StatusCode::NOT_FOUND);
    // Removed for good: a reconnect finds no session.
    let (_, ack) = Raw::connect_v5(b.tcp, persistent("old")).await;
    assert!(!ack.session_present);
    let (s, e) = api.post("/api/v1/sessions/expire", json!({})).await;
    assert_eq!((s, e["code"].as_u64()), (StatusCode::BAD_REQUEST, Some(107)), "{e}");
}

// ---- 12. lookups ----

#[tokio::test]
async fn username_lookup_online_check_and_route_lookup_return_live_values() {
    let b = BrokerProc::start("");
    let api = Api::new(&b);
    let (mut u1, _) = Raw::connect_v5(b.tcp, with_user(connect("u1"), "carol")).await;
    u1.subscribe(1, &[("r/+/x", QoS::AtMostOnce)]).await;
    let (mut u2, _) = Raw::connect_v5(b.tcp, with_user(connect("u2"), "carol")).await;
    u2.subscribe(1, &[("r/#", QoS::AtMostOnce)]).await;
    let (mut u3, _) = Raw::connect_v5(b.tcp, with_user(connect("u3"), "dave")).await;
    u3.subscribe(1, &[("$share/g/r/a/x", QoS::AtMostOnce), ("other/x", QoS::AtMostOnce)]).await;
    let (u4, _) = Raw::connect_v5(b.tcp, with_user(persistent("u4"), "carol")).await;
    drop(u4);
    settle().await;
    let (_, carol) = api.get("/api/v1/clients/username/carol").await;
    assert_eq!(ids(&carol), ["u1", "u2", "u4"]);
    let online: Vec<bool> = carol.as_array().unwrap().iter().map(|c| c["connected"] == true).collect();
    assert_eq!(online, [true, true, false]);
    assert_eq!(ids(&api.get("/api/v1/clients/username/dave").await.1), ["u3"]);
    assert_eq!(api.get("/api/v1/clients/username/nobody").await.1, json!([]));
    // Online follows the connection.
    let online = |id: &'static str| {
        let api = &api;
        async move { api.get(&format!("/api/v1/clients/{id}/online")).await.1["online"].clone() }
    };
    assert_eq!(
        (online("u1").await, online("u4").await, online("nobody").await),
        (json!(true), json!(false), json!(false))
    );
    let (u4, ack) = Raw::connect_v5(b.tcp, with_user(persistent("u4"), "carol")).await;
    assert!(ack.session_present);
    assert_eq!(online("u4").await, true);
    drop(u4);
    settle().await;
    assert_eq!(online("u4").await, false);
    // Routes for a topic name: every matching filter, shared ones with their group.
    let routes = |path: &'static str| {
        let api = &api;
        async move {
            let (s, v) = api.get(path).await;
            assert_eq!(s, StatusCode::OK, "{path}: {v}");
            let mut r: Vec<(String, Value)> = v
                .as_array()
                .unwrap()
                .iter()
                .map(|r| {
                    assert_eq!(r["node"], "test-node");
                    (r["topic"].as_str().unwrap().to_string(), r["share"].clone())
                })
                .collect();
            r.sort_by(|a, b| a.0.cmp(&b.0));
            r
        }
    };
    let want =
        vec![("r/#".to_string(), Value::Null), ("r/+/x".to_string(), Value::Null), ("r/a/x".to_string(), json!("g"))];
    assert_eq!(routes("/api/v1/routes/r/a/x").await, want);
    assert_eq!(routes("/api/v1/routes/r%2Fa%2Fx").await, want, "URL-encoded");
    assert_eq!(routes("/api/v1/routes/r/b").await, vec![("r/#".to_string(), Value::Null)]);
    assert!(routes("/api/v1/routes/other/y").await.is_empty());
    let (s, e) = api.get("/api/v1/routes/r/%2B").await;
    assert_eq!((s, e["code"].as_u64()), (StatusCode::BAD_REQUEST, Some(115)), "a filter is not a topic name: {e}");
    // The route goes when its last subscriber does.
    u1.send(v5::Packet::Disconnect(v5::Disconnect::default())).await;
    settle().await;
    assert_eq!(
        routes("/api/v1/routes/r/a/x").await,
        vec![("r/#".to_string(), Value::Null), ("r/a/x".to_string(), json!("g"))]
    );
    drop((u2, u3));
}

// ---- 13. the README's curl examples ----

/// The `curl` commands of the README's management-API section (its indented code blocks), in
/// order, each as one shell command (continuation lines and multi-line quoted bodies kept).
fn readme_curl_commands() -> Vec<String> {
    let readme = include_str!("../../../README.md");
    let start = readme.find("## The management API").expect("README has a management API section");
    let section = &readme[start..];
    let section = &section[..section[3..].find("\n## ").map(|i| i + 3).unwrap_or(section.len())];
    let mut commands: Vec<String> = Vec::new();
    let mut in_block = false;
    for line in section.lines() {
        let Some(code) = line.strip_prefix("    ") else {
            in_block = false;
            continue;
        };
        if code.starts_with("curl ") {
            commands.push(code.to_string());
            in_block = true;
        } else if in_block && let Some(last) = commands.last_mut() {
            last.push('\n');
            last.push_str(code);
        }
    }
    commands
}

#[tokio::test]
async fn readme_management_api_curl_examples_run_as_written() {
    let b = BrokerProc::start("");
    let commands = readme_curl_commands();
    assert!(commands.len() >= 5, "{commands:?}");
    assert!(commands.iter().all(|c| c.contains("localhost:8081")), "the examples talk to the default port");
    for command in &commands {
        // Only host:port is rewritten (the examples use the default localhost:8081; the test
        // broker has a free loopback port), and `-w` appends the HTTP status after the body.
        let run = format!("{} -w '\\n%{{http_code}}'", command.replace("localhost:8081", &b.admin.to_string()));
        let out = std::process::Command::new("timeout")
            .args(["20", "bash", "-c", &run])
            .output()
            .expect("curl runs (scripts/setup.sh installs it)");
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(out.status.success(), "{command}: exit {:?}: {}", out.status, String::from_utf8_lossy(&out.stderr));
        let (body, status) = stdout.rsplit_once('\n').unwrap_or(("", &stdout));
        let status: u16 = status.trim().parse().unwrap_or(0);
        assert!((200..300).contains(&status), "{command}: HTTP {status}: {body}");
        let answer: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{command}: not JSON ({e}): {body}"));
        assert!(answer.is_object() || answer.is_array(), "{command}: {answer}");
    }
    // They did what they say.
    let api = Api::new(&b);
    assert_eq!(api.get("/api/v1/retained/demo/state").await.1["payload"], "on");
    assert_eq!(api.get("/api/v1/config").await.1["limits"]["max_inflight"], 32);
}

#[tokio::test]
async fn the_api_root_lists_every_documented_operation_with_method_path_name_and_description() {
    let b = BrokerProc::start("");
    let api = Api::new(&b);
    let (s, list) = api.get("/api/v1").await;
    assert_eq!(s, StatusCode::OK, "{list}");
    let rows = list.as_array().expect("a JSON array");
    let (_, doc) = api.get("/api/v1/openapi.json").await;
    let documented: usize =
        doc["paths"].as_object().expect("paths").values().map(|ops| ops.as_object().map_or(0, |o| o.len())).sum();
    assert_eq!(rows.len(), documented, "one row per documented operation");
    for r in rows {
        for field in ["method", "path", "name", "description"] {
            assert!(r[field].as_str().is_some_and(|v| !v.is_empty()), "{field} missing in {r}");
        }
    }
    let has = |method: &str, path: &str| rows.iter().any(|r| r["method"] == method && r["path"] == path);
    assert!(has("GET", "/api/v1"));
    assert!(has("PUT", "/api/v1/config"));
    assert!(has("POST", "/api/v1/clients/{clientid}/disconnect"));
    assert!(has("GET", "/api/v1/cluster/peers"));
    // Like every /api/v1 route, it needs credentials.
    assert_eq!(Api::new(&b).anonymous().get("/api/v1").await.0, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn an_empty_tenant_is_refused_with_400_naming_the_field_on_every_tenant_scoped_list() {
    let b = BrokerProc::start("");
    let api = Api::new(&b);
    for path in [
        "/api/v1/clients?tenant=",
        "/api/v1/clients/username/alice?tenant=",
        "/api/v1/sessions?tenant=",
        "/api/v1/subscriptions?tenant=",
        "/api/v1/routes?tenant=",
        "/api/v1/routes/a%2Fb?tenant=",
    ] {
        let (s, body) = api.get(path).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{path}: {body}");
        assert!(body["message"].as_str().is_some_and(|m| m.contains("tenant")), "{path}: {body}");
    }
}

#[tokio::test]
async fn the_default_admin_login_is_warned_about_only_when_no_credentials_are_configured() {
    let open = BrokerProc::start("");
    assert!(open.log().contains("accepting the default admin/public"), "{}", open.log());
    assert_eq!(Api::new(&open).get("/api/v1/brokers").await.0, StatusCode::OK);

    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("admins.toml");
    std::fs::write(&users, "[[users]]\nusername = \"ops\"\npassword = \"s3cret\"\n").unwrap();
    let closed = BrokerProc::start(&format!(
        "[admin]\ncredentials_file = \"{}\"\nallow_plaintext_passwords = true\n",
        users.display()
    ));
    assert!(!closed.log().contains("accepting the default"), "{}", closed.log());
    assert_eq!(Api::new(&closed).get("/api/v1/brokers").await.0, StatusCode::UNAUTHORIZED);
    assert_eq!(Api::new(&closed).with_user("ops", "s3cret").get("/api/v1/brokers").await.0, StatusCode::OK);
}

#[tokio::test]
async fn a_session_shows_its_inflight_awaiting_rel_queue_deliveries_and_drops_per_qos() {
    let b = BrokerProc::start("[limits]\nmax_queued_messages = 2\n");
    let api = Api::new(&b);
    let mut c = connect("stateful");
    c.session_expiry_interval_secs = 600;
    let (mut s, _) = Raw::connect_v5(b.tcp, c).await;
    s.subscribe(1, &[("st/#", QoS::ExactlyOnce)]).await;
    let (mut p, _) = Raw::connect_v5(b.tcp, connect("st-feeder")).await;
    // One QoS 1 delivery left unacknowledged: in flight.
    p.send(raw::publish("st/1", "a", QoS::AtLeastOnce, Some(1))).await;
    let got = s.recv_publish().await;
    assert_eq!(got.qos, QoS::AtLeastOnce);
    // One inbound QoS 2 PUBLISH whose PUBREL never comes: awaiting release.
    s.send(raw::publish("elsewhere", "b", QoS::ExactlyOnce, Some(9))).await;
    assert!(matches!(s.recv().await, Recv::Packet(v5::Packet::PublishReceived(_))));
    drop(s);
    settle().await;
    // Offline: three more, but the queue holds two.
    for i in 2..5u16 {
        p.send(raw::publish("st/q", &i.to_string(), QoS::AtLeastOnce, Some(i))).await;
    }
    settle().await;
    let (status, row) = api.get("/api/v1/sessions/stateful").await;
    assert_eq!(status, StatusCode::OK, "{row}");
    assert_eq!(row["connected"], false, "{row}");
    assert_eq!(row["expiry_interval"], 600, "{row}");
    assert_eq!(row["inflight"], 1, "{row}");
    assert_eq!(row["awaiting_rel"], 1, "{row}");
    assert_eq!((row["mqueue_len"].as_u64(), row["max_mqueue"].as_u64()), (Some(2), Some(2)), "{row}");
    assert_eq!(row["delivered"], json!([0, 1, 0]), "one QoS 1 delivery so far: {row}");
    assert_eq!(row["dropped_queue_full"], 1, "{row}");
    assert_eq!(row["subscriptions"][0]["topic"], "st/#", "{row}");
}

#[tokio::test]
async fn a_failing_server_side_write_is_500_with_a_json_error_and_changes_nothing() {
    // A settings file under /proc cannot be created, not even by root: a real write failure.
    let b = BrokerProc::start("[admin]\nsettings_file = \"/proc/starling-no-such-dir/settings.json\"\n");
    let api = Api::new(&b);
    let before = api.get("/api/v1/config").await.1["limits"]["max_inflight"].clone();
    let (s, e) = api.put("/api/v1/config", json!({"limits": {"max_inflight": 7}})).await;
    assert_eq!((s, e["code"].as_u64()), (StatusCode::INTERNAL_SERVER_ERROR, Some(118)), "{e}");
    assert!(e["message"].as_str().is_some_and(|m| m.contains("/proc/starling-no-such-dir")), "{e}");
    assert_eq!(api.get("/api/v1/config").await.1["limits"]["max_inflight"], before, "not applied when not kept");
    assert_eq!(api.get("/api/v1/brokers").await.0, StatusCode::OK, "still serving");
}
