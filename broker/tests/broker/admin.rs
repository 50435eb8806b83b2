//! The management API against a live broker with real MQTT clients connected: authentication,
//! every documented path, filters, kick/redirect, HTTP publish/subscribe, config, metrics.

use std::time::Duration;

use reqwest::StatusCode;
use rmqtt_codec::types::QoS;
use rmqtt_codec::v5::{self, DisconnectReasonCode};
use serde_json::{Value, json};

use crate::clients::{self, next, nothing_for, settle, v5c};
use crate::harness::BrokerProc;
use crate::raw::{self, Raw, Recv, connect};

/// An HTTP client for one broker's admin API, logged in as admin/public unless told otherwise.
pub struct Api {
    base: String,
    http: reqwest::Client,
    auth: Option<(String, String)>,
}

impl Api {
    pub fn new(b: &BrokerProc) -> Api {
        Api {
            base: format!("http://{}", b.admin),
            http: reqwest::Client::new(),
            auth: Some(("admin".into(), "public".into())),
        }
    }

    pub fn with_user(mut self, user: &str, password: &str) -> Api {
        self.auth = Some((user.into(), password.into()));
        self
    }

    pub fn anonymous(mut self) -> Api {
        self.auth = None;
        self
    }

    pub async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some((u, p)) = &self.auth {
            req = req.basic_auth(u, Some(p));
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let res = req.send().await.expect("admin API answers");
        let status = res.status();
        let text = res.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(reqwest::Method::GET, path, None).await
    }
    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }
    pub async fn put(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.call(reqwest::Method::PUT, path, Some(body)).await
    }
    pub async fn delete(&self, path: &str) -> (StatusCode, Value) {
        self.call(reqwest::Method::DELETE, path, None).await
    }
    /// Sends raw bytes as the body.
    pub async fn raw(&self, method: reqwest::Method, path: &str, body: Vec<u8>) -> (StatusCode, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.base)).body(body);
        if let Some((u, p)) = &self.auth {
            req = req.basic_auth(u, Some(p));
        }
        let res = req.header("content-type", "application/json").send().await.expect("admin API answers");
        let status = res.status();
        let text = res.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }
}

#[tokio::test]
async fn every_api_route_needs_credentials_and_wrong_ones_are_401() {
    let b = BrokerProc::start("");
    let api = Api::new(&b);
    for path in ["/api/v1/brokers", "/api/v1/clients", "/api/v1/config", "/metrics", "/api/v1/no-such-path"] {
        let (s, body) = api.get_anonymous(path).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{path} without credentials");
        assert_eq!(body["code"], 103, "{path}: {body}");
        let (s, _) = Api::new(&b).with_user("admin", "wrong").get(path).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{path} with a wrong password");
    }
    // Health and readiness are open.
    assert_eq!(Api::new(&b).anonymous().get("/healthz").await.0, StatusCode::OK);
    let (s, body) = Api::new(&b).anonymous().get("/readyz").await;
    assert_eq!((s, body["status"].as_str()), (StatusCode::OK, Some("ready")));
    assert_eq!(api.get("/api/v1/brokers").await.0, StatusCode::OK);
}

impl Api {
    async fn get_anonymous(&self, path: &str) -> (StatusCode, Value) {
        let res = self.http.get(format!("{}{path}", self.base)).send().await.expect("answers");
        let status = res.status();
        (status, res.json().await.unwrap_or(Value::Null))
    }
}

#[tokio::test]
async fn credentials_file_users_and_jwt_bearer_tokens_are_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let hash = {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_starling-broker"))
            .args(["hash-password", "s3cret"])
            .output()
            .unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let users = dir.path().join("admins.toml");
    std::fs::write(&users, format!("[[users]]\nusername = \"ops\"\npassword_hash = \"{hash}\"\n")).unwrap();
    let key = dir.path().join("jwt.key");
    std::fs::write(&key, "0123456789abcdef0123456789abcdef\n").unwrap();
    let b = BrokerProc::start(&format!(
        "[admin]\ncredentials_file = \"{}\"\njwt = {{ algorithm = \"HS256\", key_file = \"{}\" }}\n",
        users.display(),
        key.display()
    ));
    assert_eq!(Api::new(&b).with_user("ops", "s3cret").get("/api/v1/brokers").await.0, StatusCode::OK);
    // The default admin/public is off once credentials are configured.
    assert_eq!(Api::new(&b).get("/api/v1/brokers").await.0, StatusCode::UNAUTHORIZED);
    let token = |exp: u64| {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &json!({"sub": "operator", "exp": exp}),
            &jsonwebtoken::EncodingKey::from_secret(b"0123456789abcdef0123456789abcdef"),
        )
        .unwrap()
    };
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let http = reqwest::Client::new();
    let url = format!("http://{}/api/v1/brokers", b.admin);
    let ok = http.get(&url).bearer_auth(token(now + 600)).send().await.unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    let expired = http.get(&url).bearer_auth(token(now - 600)).send().await.unwrap();
    assert_eq!(expired.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(expired.json::<Value>().await.unwrap()["code"], 116);
    let forged = http.get(&url).bearer_auth("a.b.c").send().await.unwrap();
    assert_eq!(forged.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn openapi_document_is_served_and_matches_the_checked_in_file() {
    let b = BrokerProc::start("");
    let (s, served) = Api::new(&b).get("/api/v1/openapi.json").await;
    assert_eq!(s, StatusCode::OK);
    let checked_in: Value =
        serde_json::from_str(include_str!("../../openapi.json")).expect("broker/openapi.json is JSON");
    assert_eq!(
        served, checked_in,
        "broker/openapi.json is stale: run `cargo run -p starling-broker -- openapi > broker/openapi.json`"
    );
}

/// Fills a documented path's parameters with values that exist in the test's broker.
fn concrete(path: &str) -> String {
    path.replace("{clientid}", "api-sub")
        .replace("{username}", "alice")
        .replace("{filter}", "x%2Fy")
        .replace("{topic}", "api%2Fretained")
        .replace("{action}", "bogus")
        .replace("{name}", "sys")
}

#[tokio::test]
async fn every_documented_path_is_routed_and_answers_without_a_server_error() {
    let b = BrokerProc::start("");
    let api = Api::new(&b);
    let sub = clients::v5(b.tcp, "api-sub", |o| {
        o.set_credentials("alice", "x");
    })
    .await;
    sub.client.subscribe("x/y", v5c::QoS::AtLeastOnce).await.unwrap();
    settle().await;
    let (_, doc) = api.get("/api/v1/openapi.json").await;
    let paths = doc["paths"].as_object().expect("paths");
    assert!(paths.len() >= 30, "only {} paths documented", paths.len());
    let mut exercised = 0;
    for (path, ops) in paths {
        for method in ops.as_object().unwrap().keys() {
            let m: reqwest::Method = method.to_uppercase().parse().unwrap();
            let body = if m == reqwest::Method::GET || m == reqwest::Method::DELETE { None } else { Some(json!({})) };
            let (s, res) = api.call(m.clone(), &concrete(path), body).await;
            let not_routed = s == StatusCode::NOT_FOUND && res["message"] == "path not found";
            assert!(!not_routed, "{method} {path} is documented but not routed");
            assert!(!s.is_server_error(), "{method} {path}: {s} {res}");
            assert_ne!(s, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
            exercised += 1;
        }
    }
    assert!(exercised >= 35, "{exercised} operations");
    drop(sub);
}

#[tokio::test]
async fn client_filters_return_the_right_clients() {
    let b = BrokerProc::start("");
    let api = Api::new(&b);
    let _a = clients::v5(b.tcp, "sensor-1", |o| {
        o.set_credentials("alice", "x");
    })
    .await;
    let _b = clients::v4(b.tcp, "sensor-2", true).await;
    let mut gateway = connect("gateway");
    gateway.clean_start = false;
    gateway.session_expiry_interval_secs = 3600;
    let (c, _) = Raw::connect_v5(b.tcp, gateway).await;
    drop(c);
    settle().await;
    let ids = |v: &Value| -> Vec<String> {
        v["data"].as_array().unwrap().iter().map(|c| c["clientid"].as_str().unwrap().to_string()).collect()
    };
    let (_, all) = api.get("/api/v1/clients").await;
    assert_eq!(ids(&all), ["gateway", "sensor-1", "sensor-2"]);
    assert_eq!(all["meta"]["count"], 3);
    assert_eq!(ids(&api.get("/api/v1/clients?_like_clientid=sensor").await.1), ["sensor-1", "sensor-2"]);
    assert_eq!(ids(&api.get("/api/v1/clients?username=alice").await.1), ["sensor-1"]);
    assert_eq!(ids(&api.get("/api/v1/clients?proto_ver=4").await.1), ["sensor-2"]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(ids(&api.get("/api/v1/clients?connected=false").await.1), ["gateway"]);
    assert_eq!(ids(&api.get("/api/v1/clients?ip_address=127.0.0.1&connected=true").await.1), ["sensor-1", "sensor-2"]);
    assert_eq!(ids(&api.get("/api/v1/clients?_limit=1&_page=2").await.1), ["sensor-1"]);
    let (_, one) = api.get("/api/v1/clients/sensor-1").await;
    assert_eq!((one["proto_ver"].as_u64(), one["connected"].as_bool()), (Some(5), Some(true)));
    assert_eq!(one["keepalive"], 30);
    let (_, by_user) = api.get("/api/v1/clients/username/alice").await;
    assert_eq!(by_user.as_array().unwrap().len(), 1);
    assert_eq!(api.get("/api/v1/clients/sensor-2/online").await.1["online"], true);
    assert_eq!(api.get("/api/v1/clients/gateway/online").await.1["online"], false);
    assert_eq!(api.get("/api/v1/clients/nobody").await.0, StatusCode::NOT_FOUND);
    let (s, e) = api.get("/api/v1/clients?_page=0").await;
    assert_eq!((s, e["code"].as_u64()), (StatusCode::BAD_REQUEST, Some(108)));
    let (s, e) = api.get("/api/v1/clients?connected=maybe").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(e["message"].as_str().unwrap().contains("connected"), "{e}");
}

#[tokio::test]
async fn kick_closes_the_client_with_0x98_and_ends_its_session() {
    let b = BrokerProc::start("");
    let api = Api::new(&b);
    let mut c = connect("victim");
    c.clean_start = false;
    c.session_expiry_interval_secs = 3600;
    let (mut r, _) = Raw::connect_v5(b.tcp, c.clone()).await;
    r.subscribe(1, &[("k/#", QoS::AtLeastOnce)]).await;
    assert_eq!(api.delete("/api/v1/clients/victim").await.0, StatusCode::NO_CONTENT);
    r.expect_disconnect(DisconnectReasonCode::AdministrativeAction).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(api.get("/api/v1/sessions/victim").await.0, StatusCode::NOT_FOUND, "session ended");
    let (_, ack) = Raw::connect_v5(b.tcp, c).await;
    assert!(!ack.session_present);
}

#[tokio::test]
async fn disconnect_with_redirect_sends_server_moved_and_the_reference_and_keeps_the_session() {
    let b = BrokerProc::start("");
    let api = Api::new(&b);
    let mut c = connect("mover");
    c.clean_start = false;
    c.session_expiry_interval_secs = 3600;
    let (mut r, _) = Raw::connect_v5(b.tcp, c).await;
    let (s, e) = api.post("/api/v1/clients/mover/disconnect", json!({"server_redirect": "move"})).await;
    assert_eq!((s, e["code"].as_u64()), (StatusCode::BAD_REQUEST, Some(107)), "reference required: {e}");
    let (s, _) = api
        .post("/api/v1/clients/mover/disconnect", json!({"server_redirect": "move", "server_reference": "other:1883"}))
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    match r.recv().await {
        Recv::Packet(v5::Packet::Disconnect(d)) => {
            assert_eq!(d.reason_code, DisconnectReasonCode::ServerMoved);
            assert_eq!(d.server_reference.as_deref(), Some("other:1883"));
        }
        other => panic!("expected DISCONNECT 0x9D, got {other:?}"),
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (s, session) = api.get("/api/v1/sessions/mover").await;
    assert_eq!((s, session["connected"].as_bool()), (StatusCode::OK, Some(false)), "session kept");
    let (s, e) = api.post("/api/v1/clients/mover/disconnect", json!({})).await;
    assert_eq!((s, e["code"].as_u64()), (StatusCode::NOT_FOUND, Some(112)), "not online: {e}");
    let (mut r, _) = Raw::connect_v5(b.tcp, connect("temp")).await;
    api.post("/api/v1/clients/temp/disconnect", json!({"server_redirect": "temp_use", "server_reference": "b:1883"}))
        .await;
    r.expect_disconnect(DisconnectReasonCode::UseAnotherServer).await;
}

#[tokio::test]
async fn http_publish_reaches_an_mqtt_subscriber_with_its_properties_intact() {
    let b = BrokerProc::start("");
    let api = Api::new(&b);
    let mut sub = clients::v5(b.tcp, "listener", |_| {}).await;
    sub.client.subscribe("http/#", v5c::QoS::ExactlyOnce).await.unwrap();
    settle().await;
    let (s, res) = api
        .post(
            "/api/v1/mqtt/publish",
            json!({
                "topic": "http/a", "payload": "aGVsbG8=", "encoding": "base64", "qos": 1,
                "properties": {
                    "payload_format_indicator": 1, "message_expiry_interval": 100,
                    "response_topic": "reply/here", "correlation_data": "corr-1",
                    "content_type": "text/plain", "user_properties": {"k": "v"}
                }
            }),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{res}");
    assert_eq!(res[0]["matched"], 1);
    let m = next(&mut sub.rx).await.expect("delivered");
    assert_eq!(&m.payload[..], b"hello");
    assert_eq!(m.qos, v5c::QoS::AtLeastOnce);
    let p = m.properties.expect("properties");
    assert_eq!(p.payload_format_indicator, Some(1));
    assert!(p.message_expiry_interval.is_some_and(|e| (98..=100).contains(&e)));
    assert_eq!(p.response_topic.as_deref(), Some("reply/here"));
    assert_eq!(p.correlation_data.as_deref(), Some(&b"corr-1"[..]));
    assert_eq!(p.content_type.as_deref(), Some("text/plain"));
    assert_eq!(p.user_properties, vec![("k".to_string(), "v".to_string())]);
    // A batch: each item its own result.
    let (s, res) = api
        .post(
            "/api/v1/mqtt/publish_batch",
            json!([{"topic": "http/b", "payload": "one"}, {"topic": "bad/#", "payload": "x"}, {"topics": "http/c,http/d", "payload": "two", "retain": true}]),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    let codes: Vec<u64> = res.as_array().unwrap().iter().map(|r| r["code"].as_u64().unwrap()).collect();
    assert_eq!(codes, [0, 115, 0, 0]);
    let mut got = Vec::new();
    for _ in 0..3 {
        got.push(String::from_utf8_lossy(&next(&mut sub.rx).await.expect("batch item").payload).to_string());
    }
    got.sort();
    assert_eq!(got, ["one", "two", "two"]);
    assert_eq!(api.get("/api/v1/retained/http%2Fc").await.1["payload"], "two");
}

#[tokio::test]
async fn http_subscribe_on_an_offline_persistent_session_delivers_on_reconnect() {
    let b = BrokerProc::start("");
    let api = Api::new(&b);
    let mut c = connect("sleeper");
    c.clean_start = false;
    c.session_expiry_interval_secs = 3600;
    let (r, _) = Raw::connect_v5(b.tcp, c.clone()).await;
    drop(r);
    settle().await;
    let (s, row) =
        api.post("/api/v1/sessions/sleeper/subscriptions", json!({"topic_filter": "wake/+", "qos": 1})).await;
    assert_eq!(s, StatusCode::CREATED, "{row}");
    let (s, res) =
        api.post("/api/v1/mqtt/subscribe", json!({"clientid": "sleeper", "topics": "alarm/#,bad/#/x", "qos": 2})).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!((res[0]["code"].as_u64(), res[1]["code"].as_u64()), (Some(0), Some(115)), "{res}");
    let (mut p, _) = Raw::connect_v5(b.tcp, connect("waker")).await;
    p.send(raw::publish("wake/up", "rise", QoS::AtLeastOnce, Some(1))).await;
    p.send(raw::publish("alarm/now", "ring", QoS::AtLeastOnce, Some(2))).await;
    settle().await;
    let (_, subs) = api.get("/api/v1/subscriptions?clientid=sleeper").await;
    assert_eq!(subs["meta"]["count"], 2);
    let (_, matching) = api.get("/api/v1/subscriptions?_match_topic=alarm/x/y").await;
    assert_eq!(matching["data"][0]["topic"], "alarm/#");
    let (mut r, ack) = Raw::connect_v5(b.tcp, c).await;
    assert!(ack.session_present);
    let mut got = vec![
        String::from_utf8_lossy(&r.recv_publish().await.payload).to_string(),
        String::from_utf8_lossy(&r.recv_publish().await.payload).to_string(),
    ];
    got.sort();
    assert_eq!(got, ["ring", "rise"]);
    // Unsubscribe over HTTP: no more messages.
    assert_eq!(api.delete("/api/v1/sessions/sleeper/subscriptions/wake%2F%2B").await.0, StatusCode::NO_CONTENT);
    let (s, _) = api.post("/api/v1/mqtt/unsubscribe", json!({"clientid": "sleeper", "topic": "alarm/#"})).await;
    assert_eq!(s, StatusCode::OK);
    p.send(raw::publish("wake/up", "again", QoS::AtMostOnce, None)).await;
    assert!(matches!(r.recv_within(Duration::from_millis(500)).await, Recv::Timeout));
    assert_eq!(api.get("/api/v1/subscriptions/sleeper").await.1.as_array().unwrap().len(), 0);
}

#[tokio::test]
async fn config_put_changes_behaviour_at_once_persists_and_refuses_restart_only_settings() {
    let mut b = BrokerProc::start("");
    let api = Api::new(&b);
    let (_, before) = api.get("/api/v1/config").await;
    assert_eq!(before["allow_anonymous"], true);
    let (s, res) =
        api.put("/api/v1/config", json!({"allow_anonymous": false, "limits": {"max_packet_size": 2048}})).await;
    assert_eq!(s, StatusCode::OK, "{res}");
    assert_eq!(res["changed"]["allow_anonymous"]["to"], false);
    assert_eq!(res["changed"]["limits.max_packet_size"]["from"], 1048576);
    assert_eq!(res["settings"]["limits"]["max_inflight"], before["limits"]["max_inflight"], "other limits kept");
    // At once: anonymous clients are refused now.
    let mut raw = Raw::open(b.tcp, true).await;
    raw.send(v5::Packet::Connect(Box::new(connect("anon")))).await;
    match raw.recv().await {
        Recv::Packet(v5::Packet::ConnectAck(a)) => assert_eq!(a.reason_code, v5::ConnectAckReason::NotAuthorized),
        other => panic!("{other:?}"),
    }
    // Restart-only sections and bad values are refused, naming them.
    let (s, e) = api.put("/api/v1/config", json!({"listeners": {}})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(e["message"].as_str().unwrap().contains("restart"), "{e}");
    let (s, e) = api.put("/api/v1/config", json!({"limits": {"max_inflight": 0}})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(e["message"].as_str().unwrap().contains("max_inflight"), "{e}");
    let (s, e) = api.put("/api/v1/config", json!({"limits": {"max_inflght": 5}})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(e["message"].as_str().unwrap().contains("max_inflght"), "{e}");
    // Kept across a restart.
    assert!(b.terminate());
    b.restart();
    let (_, after) = Api::new(&b).get("/api/v1/config").await;
    assert_eq!(
        (after["allow_anonymous"].as_bool(), after["limits"]["max_packet_size"].as_u64()),
        (Some(false), Some(2048))
    );
}

#[tokio::test]
async fn metrics_counters_move_and_the_prometheus_text_parses() {
    let b = BrokerProc::start("");
    let api = Api::new(&b);
    let (_, before) = api.get("/api/v1/metrics").await;
    let mut sub = clients::v5(b.tcp, "m-sub", |_| {}).await;
    sub.client.subscribe("m/#", v5c::QoS::AtLeastOnce).await.unwrap();
    settle().await;
    let publisher = clients::v5(b.tcp, "m-pub", |_| {}).await;
    for _ in 0..3 {
        publisher.client.publish("m/x", v5c::QoS::AtLeastOnce, false, "x").await.unwrap();
    }
    for _ in 0..3 {
        next(&mut sub.rx).await.expect("delivered");
    }
    let (_, after) = api.get("/api/v1/metrics").await;
    let delta = |k: &str| after[k].as_u64().unwrap() - before[k].as_u64().unwrap();
    assert_eq!(delta("client.connected"), 2);
    assert_eq!(delta("messages.received.qos1"), 3);
    assert!(delta("messages.sent.qos1") >= 3);
    assert!(delta("bytes.received") > 0);
    let (_, stats) = api.get("/api/v1/stats").await;
    assert_eq!(stats["connections"]["count"], 2);
    assert!(stats["connections"]["max"].as_u64().unwrap() >= 2);
    assert_eq!(stats["subscriptions"]["count"], 1);
    let text = reqwest::Client::new()
        .get(format!("http://{}/metrics", b.admin))
        .basic_auth("admin", Some("public"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string()))).expect("Prometheus text");
    let value = |name: &str| {
        scrape.samples.iter().find(|s| s.metric == name).map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => f64::NAN,
        })
    };
    assert_eq!(value("starling_messages_received_qos1_total"), Some(3.0));
    assert_eq!(value("starling_connections"), Some(2.0));
    let (_, nodes) = api.get("/api/v1/nodes").await;
    assert_eq!(nodes[0]["node"], "test-node");
    assert_eq!(nodes[0]["connections"], 2);
    assert!(nodes[0]["memory_used"].as_u64().unwrap() > 0);
}

#[tokio::test]
async fn bad_input_gets_4xx_json_naming_the_field() {
    let b = BrokerProc::start("[admin]\nmax_body_bytes = 1024\n");
    let api = Api::new(&b);
    let cases: Vec<(Value, u16, u64, &str)> = vec![
        (json!({"topic": "a", "payload": "x", "qos": 3}), 400, 108, "qos"),
        (json!({"topic": "a", "payload": "x", "qos": "one"}), 400, 108, "qos"),
        (json!({"topic": "a", "payload": "x", "colour": "red"}), 400, 108, "colour"),
        (json!({"topic": "a/#", "payload": "x"}), 400, 115, "a/#"),
        (json!({"payload": "x"}), 400, 107, "topic"),
        (json!({"topic": "a"}), 400, 107, "payload"),
        (json!({"topic": "a", "payload": "%%%", "encoding": "base64"}), 400, 108, "base64"),
        (
            json!({"topic": "a", "payload": "x", "properties": {"user_properties": {"k": 1}}}),
            400,
            108,
            "properties.user_properties.k",
        ),
    ];
    for (body, status, code, names) in cases {
        let (s, e) = api.post("/api/v1/mqtt/publish", body.clone()).await;
        assert_eq!((s.as_u16(), e["code"].as_u64()), (status, Some(code)), "{body}: {e}");
        assert!(e["message"].as_str().unwrap().contains(names), "{body}: message should name {names}: {e}");
    }
    let (s, e) = api.raw(reqwest::Method::POST, "/api/v1/mqtt/publish", b"{not json".to_vec()).await;
    assert_eq!((s, e["code"].as_u64()), (StatusCode::BAD_REQUEST, Some(109)));
    let (s, e) = api.raw(reqwest::Method::POST, "/api/v1/mqtt/publish", vec![b' '; 4096]).await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE, "{e}");
    let (s, e) = api.put("/api/v1/retained/a%2F%23", json!({"payload": "x"})).await;
    assert_eq!((s, e["code"].as_u64()), (StatusCode::BAD_REQUEST, Some(115)));
    let (s, e) = api.post("/api/v1/sessions/nobody/subscriptions", json!({"topic_filter": "a", "qos": 1})).await;
    assert_eq!((s, e["code"].as_u64()), (StatusCode::NOT_FOUND, Some(108)));
    let (s, e) = api.put("/api/v1/cluster", json!({"members": [{"name": "a", "address": "nope"}]})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(e["message"].as_str().unwrap().contains("members[0].address"), "{e}");
    let (s, _) = api.post("/api/v1/ctrl/explode", json!({})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    // Still serving.
    assert_eq!(api.get("/api/v1/brokers").await.0, StatusCode::OK);
}

#[tokio::test]
async fn request_ids_are_echoed_and_logged() {
    let b = BrokerProc::start("");
    let http = reqwest::Client::new();
    let res = http
        .get(format!("http://{}/api/v1/brokers", b.admin))
        .basic_auth("admin", Some("public"))
        .header("x-request-id", "req-4242")
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["x-request-id"], "req-4242");
    let generated = http.get(format!("http://{}/healthz", b.admin)).send().await.unwrap();
    assert!(generated.headers()["x-request-id"].to_str().unwrap().starts_with("test-node-"));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(b.log().contains("req-4242"), "request id not in the log");
}

#[tokio::test]
async fn retained_messages_are_set_read_listed_deleted_and_expired_per_tenant() {
    // No $SYS: its retained messages would be listed in the default tenant too.
    let b = BrokerProc::start("[sys]\ninterval_secs = 0\n");
    let api = Api::new(&b);
    let (s, m) = api.put("/api/v1/retained/r%2Fone", json!({"payload": "1", "qos": 1, "expiry": 600})).await;
    assert_eq!(s, StatusCode::OK, "{m}");
    assert_eq!(m["qos"], 1);
    api.put("/api/v1/retained/r/two?tenant=acme", json!({"payload": "2"})).await;
    let (_, list) = api.get("/api/v1/retained").await;
    assert_eq!(list["meta"]["count"], 1);
    assert_eq!(list["data"][0]["topic"], "r/one");
    assert_eq!(api.get("/api/v1/retained?tenant=acme").await.1["data"][0]["payload"], "2");
    // A new MQTT subscriber gets it.
    let mut sub = clients::v5(b.tcp, "r-sub", |_| {}).await;
    sub.client.subscribe("r/#", v5c::QoS::AtLeastOnce).await.unwrap();
    let got = next(&mut sub.rx).await.expect("retained");
    assert!(got.retain);
    assert_eq!(&got.payload[..], b"1");
    nothing_for(&mut sub.rx, Duration::from_millis(300)).await;
    assert_eq!(api.delete("/api/v1/retained/r/one").await.0, StatusCode::NO_CONTENT);
    assert_eq!(api.get("/api/v1/retained/r/one").await.0, StatusCode::NOT_FOUND);
    let (_, e) = api.post("/api/v1/retained/expire", json!({"expiry_seconds": 0, "tenant": "acme"})).await;
    assert_eq!(e["expired"], 1);
    assert_eq!(api.get("/api/v1/retained?tenant=acme").await.1["meta"]["count"], 0);
}

#[tokio::test]
async fn sessions_routes_and_topic_tree_show_live_state_and_old_sessions_expire() {
    let b = BrokerProc::start("");
    let api = Api::new(&b);
    let mut c = connect("keeper");
    c.clean_start = false;
    c.session_expiry_interval_secs = 3600;
    let (mut r, _) = Raw::connect_v5(b.tcp, c).await;
    r.subscribe(1, &[("tree/a/+", QoS::AtLeastOnce), ("$share/g/tree/b", QoS::AtMostOnce)]).await;
    drop(r);
    settle().await;
    let (mut p, _) = Raw::connect_v5(b.tcp, connect("feeder")).await;
    p.send(raw::publish("tree/a/1", "queued", QoS::AtLeastOnce, Some(1))).await;
    settle().await;
    let (_, s) = api.get("/api/v1/sessions/keeper").await;
    assert_eq!((s["connected"].as_bool(), s["mqueue_len"].as_u64()), (Some(false), Some(1)), "{s}");
    assert_eq!(s["subscriptions"].as_array().unwrap().len(), 2);
    assert_eq!(api.get("/api/v1/sessions?connected=false").await.1["meta"]["count"], 1);
    let (_, routes) = api.get("/api/v1/routes").await;
    assert_eq!(routes["meta"]["count"], 2);
    let (_, for_topic) = api.get("/api/v1/routes/tree/a/9").await;
    assert_eq!(for_topic[0]["topic"], "tree/a/+");
    assert_eq!(for_topic[0]["node"], "test-node");
    let (_, tree) = api.get("/api/v1/topic-tree").await;
    assert_eq!(tree[0]["topic"], "tree");
    assert_eq!(tree[0]["child_count"], 2);
    assert_eq!(tree[0]["children"][0]["children"][0]["clientids"][0], "keeper");
    let (_, e) = api.post("/api/v1/sessions/expire", json!({"expiry_seconds": 0})).await;
    assert_eq!(e["expired"], 1);
    assert_eq!(api.get("/api/v1/sessions/keeper").await.0, StatusCode::NOT_FOUND);
    assert_eq!(api.get("/api/v1/routes").await.1["meta"]["count"], 0);
}

#[tokio::test]
async fn cluster_membership_and_plugins_are_set_and_kept() {
    let mut b = BrokerProc::start("[sys]\ninterval_secs = 1\n");
    let api = Api::new(&b);
    let (_, c) = api.get("/api/v1/cluster").await;
    assert_eq!(c["node"], "test-node");
    let body = json!({"tags": ["zone-b", "zone-a", "zone-a"], "members": [
        {"name": "test-node", "address": "127.0.0.1:8081"}, {"name": "peer-1", "address": "peer-1.svc:8081"}]});
    let (s, c) = api.put("/api/v1/cluster", body).await;
    assert_eq!(s, StatusCode::OK, "{c}");
    assert_eq!(c["tags"], json!(["zone-a", "zone-b"]));
    let (_, nodes) = api.get("/api/v1/nodes").await;
    assert_eq!(nodes[1]["node"], "peer-1");
    let (s, _) = api.put("/api/v1/cluster", json!({"node": "someone-else"})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    // $SYS off and on.
    let (s, p) = api.put("/api/v1/plugins/sys/unload", json!({})).await;
    assert_eq!((s, p["active"].as_bool()), (StatusCode::OK, Some(false)));
    let (s, e) = api.put("/api/v1/plugins/sys/unload", json!({})).await;
    assert_eq!((s, e["code"].as_u64()), (StatusCode::CONFLICT, Some(111)));
    let mut sys = clients::v5(b.tcp, "sys-watch", |_| {}).await;
    sys.client.subscribe("$SYS/brokers/test-node/uptime", v5c::QoS::AtMostOnce).await.unwrap();
    // Only the retained one from before the unload may arrive.
    let _ = tokio::time::timeout(Duration::from_millis(300), sys.rx.recv()).await;
    nothing_for(&mut sys.rx, Duration::from_millis(1500)).await;
    api.put("/api/v1/plugins/sys/load", json!({})).await;
    assert!(next(&mut sys.rx).await.is_some(), "$SYS back");
    assert!(b.terminate());
    b.restart();
    assert_eq!(Api::new(&b).get("/api/v1/cluster").await.1["members"][0]["name"], "peer-1", "kept across restarts");
}

#[tokio::test]
async fn ctrl_restart_brings_the_node_back_and_ctrl_stop_ends_it() {
    let mut b = BrokerProc::start("");
    let api = Api::new(&b);
    api.put("/api/v1/retained/keep", json!({"payload": "me"})).await;
    let (mut r, _) = Raw::connect_v5(b.tcp, connect("bystander")).await;
    let (s, _) = api.post("/api/v1/ctrl/restart", json!({})).await;
    assert_eq!(s, StatusCode::ACCEPTED);
    r.expect_disconnect(DisconnectReasonCode::ServerShuttingDown).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    b.wait_listening();
    assert_eq!(Api::new(&b).get("/api/v1/retained/keep").await.1["payload"], "me");
    let (s, _) = Api::new(&b).post("/api/v1/ctrl/stop", json!({})).await;
    assert_eq!(s, StatusCode::ACCEPTED);
    assert!(b.exited_within(Duration::from_secs(15)), "the process ends after ctrl/stop");
}

#[tokio::test]
async fn prometheus_metrics_may_be_public_and_counters_tell_origins_apart() {
    let b = BrokerProc::start("[admin]\npublic_metrics = true\n");
    let anonymous = Api::new(&b).anonymous();
    let (s, text) = anonymous.get("/metrics").await;
    assert_eq!(s, StatusCode::OK);
    assert!(text.as_str().unwrap().contains("starling_connections"));
    assert_eq!(anonymous.get("/api/v1/metrics").await.0, StatusCode::UNAUTHORIZED, "only /metrics is public");
    let api = Api::new(&b);
    api.post("/api/v1/mqtt/publish", json!({"topic": "o/1", "payload": "x"})).await;
    let (_, m) = api.get("/api/v1/metrics").await;
    assert_eq!((m["messages.origin.http"].as_u64(), m["messages.received"].as_u64()), (Some(1), Some(0)));
}

#[tokio::test]
async fn unloading_the_traffic_plugin_lifts_every_traffic_rule() {
    let b = BrokerProc::start("");
    let api = Api::new(&b);
    api.put("/api/v1/traffic-rules/closed", json!({"client_id_pattern": "blocked-*", "max_connections": 0})).await;
    let (_, ack) = Raw::connect_v5(b.tcp, connect("blocked-1")).await;
    assert_eq!(ack.reason_code, v5::ConnectAckReason::QuotaExceeded);
    let (s, p) = api.put("/api/v1/plugins/traffic/unload", json!({})).await;
    assert_eq!((s, p["active"].as_bool()), (StatusCode::OK, Some(false)));
    let (_, ack) = Raw::connect_v5(b.tcp, connect("blocked-2")).await;
    assert_eq!(ack.reason_code, v5::ConnectAckReason::Success);
    assert_eq!(api.put("/api/v1/plugins/bridges/unload", json!({})).await.0, StatusCode::BAD_REQUEST);
}
