//! Traffic rules on live connections: publish rate and subscription limits (v5 Quota
//! Exceeded), the connection quota, node placement redirects, and restarts.

use std::time::Duration;

use reqwest::StatusCode;
use rmqtt_codec::types::QoS;
use rmqtt_codec::v5::{self, ConnectAckReason, PublishAckReason, SubscribeAckReason};
use serde_json::json;

use crate::admin::Api;
use crate::harness::BrokerProc;
use crate::raw::{self, Raw, Recv, connect};

#[tokio::test]
async fn a_publisher_over_its_rate_gets_quota_exceeded_and_the_rule_applies_to_open_connections() {
    let b = BrokerProc::start("");
    let api = Api::new(&b);
    // Connected before the rule exists: the rule applies to it live.
    let (mut p, _) = Raw::connect_v5(b.tcp, connect("fast-1")).await;
    let (s, _) =
        api.put("/api/v1/traffic-rules/slow-down", json!({"client_id_pattern": "fast-*", "publish_rate": 5})).await;
    assert_eq!(s, StatusCode::CREATED);
    for i in 1..=20u16 {
        p.send(raw::publish("rate/t", "x", QoS::AtLeastOnce, Some(i))).await;
    }
    let (mut ok, mut quota) = (0, 0);
    for _ in 0..20 {
        match p.recv().await {
            Recv::Packet(v5::Packet::PublishAck(a)) if a.reason_code == PublishAckReason::QuotaExceeded => quota += 1,
            Recv::Packet(v5::Packet::PublishAck(_)) => ok += 1,
            other => panic!("{other:?}"),
        }
    }
    assert!(ok <= 6 && quota >= 14, "{ok} accepted, {quota} refused");
    let (_, metrics) = api.get("/api/v1/metrics").await;
    assert_eq!(metrics["traffic.throttled"].as_u64(), Some(quota));
    // Another client is not covered.
    let (mut other, _) = Raw::connect_v5(b.tcp, connect("calm-1")).await;
    for i in 1..=10u16 {
        other.send(raw::publish("rate/t", "x", QoS::AtLeastOnce, Some(i))).await;
    }
    for _ in 0..10 {
        match other.recv().await {
            Recv::Packet(v5::Packet::PublishAck(a)) => assert_ne!(a.reason_code, PublishAckReason::QuotaExceeded),
            x => panic!("{x:?}"),
        }
    }
}

#[tokio::test]
async fn the_connection_quota_refuses_the_next_client_until_one_leaves() {
    let b = BrokerProc::start("");
    let api = Api::new(&b);
    api.put("/api/v1/traffic-rules/two", json!({"client_id_pattern": "q-*", "max_connections": 2})).await;
    let (q1, a1) = Raw::connect_v5(b.tcp, connect("q-1")).await;
    let (_q2, a2) = Raw::connect_v5(b.tcp, connect("q-2")).await;
    assert_eq!((a1.reason_code, a2.reason_code), (ConnectAckReason::Success, ConnectAckReason::Success));
    let (_, a3) = Raw::connect_v5(b.tcp, connect("q-3")).await;
    assert_eq!(a3.reason_code, ConnectAckReason::QuotaExceeded);
    // 3.1.1: refused with Server Unavailable.
    let mut v3 = Raw::open(b.tcp, false).await;
    v3.send_bytes(&[0x10, 0x0f, 0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0, 60, 0, 3, b'q', b'-', b'4']).await;
    match v3.recv().await {
        Recv::V3(rmqtt_codec::v3::Packet::ConnectAck(a)) => {
            assert_ne!(a.return_code, rmqtt_codec::v3::ConnectAckReason::ConnectionAccepted)
        }
        other => panic!("{other:?}"),
    }
    drop(q1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, a5) = Raw::connect_v5(b.tcp, connect("q-5")).await;
    assert_eq!(a5.reason_code, ConnectAckReason::Success, "a slot is free again");
    assert!(api.get("/api/v1/metrics").await.1["traffic.rejected"].as_u64().unwrap() >= 2);
}

#[tokio::test]
async fn placement_sends_a_client_to_a_node_with_its_tenants_group_tag() {
    let b = BrokerProc::start("");
    let api = Api::new(&b);
    let (s, c) = api
        .put(
            "/api/v1/cluster",
            json!({"tags": ["zone-a"], "members": [
                {"name": "test-node", "address": "127.0.0.1:8081", "tags": ["zone-a"]},
                {"name": "edge-1", "address": "edge-1.svc:8081", "mqtt_address": "edge-1.svc:1883", "tags": ["edge"]}]}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{c}");
    api.put("/api/v1/traffic-rules/edge-devices", json!({"client_id_pattern": "dev-*", "node_tags": ["edge"]})).await;
    let (_, ack) = Raw::connect_v5(b.tcp, connect("dev-1")).await;
    assert_eq!(ack.reason_code, ConnectAckReason::UseAnotherServer);
    assert_eq!(ack.server_reference.as_deref(), Some("edge-1.svc:1883"));
    // Clients the rule does not cover stay.
    let (_, ack) = Raw::connect_v5(b.tcp, connect("web-1")).await;
    assert_eq!(ack.reason_code, ConnectAckReason::Success);
    // With this node tagged too, the client stays here.
    api.put(
        "/api/v1/traffic-rules/edge-devices",
        json!({"client_id_pattern": "dev-*", "node_tags": ["edge", "zone-a"]}),
    )
    .await;
    let (_, ack) = Raw::connect_v5(b.tcp, connect("dev-2")).await;
    assert_eq!(ack.reason_code, ConnectAckReason::Success);
}

#[tokio::test]
async fn max_subscriptions_and_rules_survive_a_restart_and_bad_rules_are_400() {
    let mut b = BrokerProc::start("");
    let api = Api::new(&b);
    let (s, all) = api.put("/api/v1/traffic-rules", json!({"few-subs": {"max_subscriptions": 2}})).await;
    assert_eq!(s, StatusCode::OK, "{all}");
    assert!(b.terminate());
    b.restart();
    let api = Api::new(&b);
    assert_eq!(api.get("/api/v1/traffic-rules/few-subs").await.1["max_subscriptions"], 2);
    let (mut r, _) = Raw::connect_v5(b.tcp, connect("subscriber")).await;
    let codes = r.subscribe(1, &[("a", QoS::AtMostOnce), ("b", QoS::AtMostOnce), ("c", QoS::AtMostOnce)]).await;
    assert_eq!(codes[2], SubscribeAckReason::QuotaExceeded, "{codes:?}");
    assert_eq!(&codes[..2], &[SubscribeAckReason::GrantedQos0, SubscribeAckReason::GrantedQos0]);
    let (s, e) = api.put("/api/v1/traffic-rules/bad", json!({"publish_rate": 0})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(e["message"].as_str().unwrap().contains("publish_rate"), "{e}");
    let (s, e) = api.put("/api/v1/traffic-rules", json!({"ok": {}, "bad": {"max_conections": 1}})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(e["message"].as_str().unwrap().contains("max_conections"), "{e}");
    assert_eq!(api.get("/api/v1/traffic-rules").await.1.as_object().unwrap().len(), 1, "all or nothing");
    assert_eq!(api.delete("/api/v1/traffic-rules/few-subs").await.0, StatusCode::NO_CONTENT);
    assert_eq!(api.get("/api/v1/traffic-rules/few-subs").await.0, StatusCode::NOT_FOUND);
}
