//! The rule engine on real traffic: payload filters, republish templates, webhooks to a local
//! HTTP server, enable/disable, bad SQL, metrics and restarts.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::admin::Api;
use crate::clients::{self, next, nothing_for, settle, v5c};
use crate::harness::BrokerProc;

#[tokio::test]
async fn a_rule_filters_on_payload_fields_and_republishes_with_templates() {
    let b = BrokerProc::start("");
    let api = Api::new(&b);
    let (s, r) = api
        .put(
            "/api/v1/rules/hot",
            json!({
                "rawsql": "SELECT payload.temp AS t, clientid, topic FROM \"sensors/#\" WHERE payload.temp > 30 AND payload.unit = 'C'",
                "actions": [{"name": "republish", "params": {"topic": "alerts/${clientid}", "qos": 1, "payload": "hot ${t} on ${topic}"}}],
                "description": "temperature alerts"
            }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{r}");
    let mut alerts = clients::v5(b.tcp, "watcher", |_| {}).await;
    alerts.client.subscribe("alerts/#", v5c::QoS::AtLeastOnce).await.unwrap();
    settle().await;
    let sensor = clients::v5(b.tcp, "sensor-7", |_| {}).await;
    for (temp, unit) in [(25, "C"), (35, "C"), (99, "F")] {
        let body = json!({"temp": temp, "unit": unit}).to_string();
        sensor.client.publish("sensors/lab", v5c::QoS::AtLeastOnce, false, body).await.unwrap();
    }
    let m = next(&mut alerts.rx).await.expect("an alert");
    assert_eq!(&m.topic[..], b"alerts/sensor-7");
    assert_eq!(&m.payload[..], b"hot 35 on sensors/lab");
    nothing_for(&mut alerts.rx, Duration::from_millis(400)).await;
    let (_, metrics) = api.get("/api/v1/rules/hot/metrics").await;
    assert_eq!((metrics["matched"].as_u64(), metrics["passed"].as_u64()), (Some(3), Some(1)), "{metrics}");
    assert_eq!(metrics["actions"][0]["success"], 1);
    // Disabled: nothing; enabled again: works.
    let mut cfg = api.get("/api/v1/rules/hot").await.1;
    for k in ["id", "metrics"] {
        cfg.as_object_mut().unwrap().remove(k);
    }
    cfg["enabled"] = json!(false);
    assert_eq!(api.put("/api/v1/rules/hot", cfg.clone()).await.0, StatusCode::OK);
    sensor.client.publish("sensors/lab", v5c::QoS::AtLeastOnce, false, r#"{"temp":50,"unit":"C"}"#).await.unwrap();
    nothing_for(&mut alerts.rx, Duration::from_millis(400)).await;
    cfg["enabled"] = json!(true);
    api.put("/api/v1/rules/hot", cfg).await;
    sensor.client.publish("sensors/lab", v5c::QoS::AtLeastOnce, false, r#"{"temp":51,"unit":"C"}"#).await.unwrap();
    assert_eq!(&next(&mut alerts.rx).await.expect("enabled again").payload[..], b"hot 51 on sensors/lab");
}

/// A local HTTP server that hands every POSTed JSON body to a channel.
async fn webhook_server() -> (String, mpsc::UnboundedReceiver<Value>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |axum::Json(v): axum::Json<Value>| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(v);
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, rx)
}

#[tokio::test]
async fn a_webhook_action_posts_the_selected_fields_and_failures_are_counted() {
    let b = BrokerProc::start("");
    let api = Api::new(&b);
    let (url, mut hooks) = webhook_server().await;
    let (s, created) = api
        .post(
            "/api/v1/rules",
            json!({
                "rawsql": "SELECT payload.v AS v, upper(clientid) AS who, user_properties.k AS k FROM \"m/+\" WHERE payload.v IN (1, 2)",
                "actions": [
                    {"name": "webhook", "params": {"url": url, "timeout_ms": 2000}},
                    {"name": "webhook", "params": {"url": "http://127.0.0.1:9/closed", "timeout_ms": 500, "retries": 0}}
                ]
            }),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{created}");
    let id = created["id"].as_str().unwrap().to_string();
    let publisher = clients::v5(b.tcp, "dev-1", |_| {}).await;
    let props = v5c::PublishProperties { user_properties: vec![("k".into(), "kv".into())], ..Default::default() };
    publisher.client.publish_with_properties("m/a", v5c::QoS::AtLeastOnce, false, r#"{"v":2}"#, props).await.unwrap();
    publisher.client.publish("m/a", v5c::QoS::AtLeastOnce, false, r#"{"v":3}"#).await.unwrap();
    let body = tokio::time::timeout(Duration::from_secs(5), hooks.recv()).await.expect("webhook called").unwrap();
    assert_eq!(body, json!({"v": 2, "who": "DEV-1", "k": "kv"}));
    assert!(tokio::time::timeout(Duration::from_millis(500), hooks.recv()).await.is_err(), "v=3 filtered out");
    // The failing webhook is counted, and the message path was not blocked.
    let mut failed = 0;
    for _ in 0..50 {
        failed = api.get(&format!("/api/v1/rules/{id}/metrics")).await.1["actions"][1]["failure"].as_u64().unwrap();
        if failed == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(failed, 1);
}

#[tokio::test]
async fn bad_sql_is_a_400_naming_the_position_and_rules_survive_a_restart() {
    let mut b = BrokerProc::start("");
    let api = Api::new(&b);
    let (s, e) = api.put("/api/v1/rules/broken", json!({"rawsql": "SELECT FROM WHERE", "actions": []})).await;
    assert_eq!((s, e["code"].as_u64()), (StatusCode::BAD_REQUEST, Some(108)));
    let msg = e["message"].as_str().unwrap();
    assert!(msg.contains("rawsql") && msg.contains("Column"), "{msg}");
    let (s, e) = api.put("/api/v1/rules/broken", json!({"rawsql": "SELECT * FROM \"a/#/b\""})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(e["message"].as_str().unwrap().contains("a/#/b"), "{e}");
    let (s, e) = api
        .put(
            "/api/v1/rules/broken",
            json!({"rawsql": "SELECT * FROM \"a\"", "actions": [{"name": "explode", "params": {}}]}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{e}");
    assert!(e["message"].as_str().unwrap().contains("actions"), "{e}");
    let (s, _) = api
        .put(
            "/api/v1/rules/keep",
            json!({"rawsql": "SELECT * FROM \"k/#\"", "actions": [{"name": "republish", "params": {"topic": "copied/${topic}"}}]}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    assert!(b.terminate());
    b.restart();
    let api = Api::new(&b);
    assert_eq!(api.get("/api/v1/rules").await.1.as_array().unwrap().len(), 1);
    let mut sub = clients::v5(b.tcp, "copy-sub", |_| {}).await;
    sub.client.subscribe("copied/#", v5c::QoS::AtMostOnce).await.unwrap();
    settle().await;
    let p = clients::v5(b.tcp, "k-pub", |_| {}).await;
    p.client.publish("k/1", v5c::QoS::AtMostOnce, false, "x").await.unwrap();
    let m = next(&mut sub.rx).await.expect("rule works after restart");
    assert_eq!(&m.topic[..], b"copied/k/1");
    assert_eq!(api.delete("/api/v1/rules/keep").await.0, StatusCode::NO_CONTENT);
    assert_eq!(api.get("/api/v1/rules/keep").await.0, StatusCode::NOT_FOUND);
}
