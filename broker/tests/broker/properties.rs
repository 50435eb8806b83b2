//! MQTT 5 properties end to end: pass-through of publish properties, expiry countdown, Topic
//! Alias both ways and Maximum Packet Size both ways.

use std::time::Duration;

use bytes::Bytes;
use rmqtt_codec::types::QoS;
use rmqtt_codec::v5::{self, DisconnectReasonCode};

use crate::clients::{self, next, settle, v5c};
use crate::harness::BrokerProc;
use crate::raw::{self, Raw, Recv, connect};

#[tokio::test]
async fn publish_properties_pass_through_untouched() {
    let b = BrokerProc::start("");
    let mut s = clients::v5(b.tcp, "props-sub", |_| {}).await;
    s.client.subscribe("props/#", v5c::QoS::AtLeastOnce).await.unwrap();
    settle().await;
    let p = clients::v5(b.tcp, "props-pub", |_| {}).await;
    let props = v5c::PublishProperties {
        payload_format_indicator: Some(1),
        message_expiry_interval: Some(100),
        response_topic: Some("props/reply".into()),
        correlation_data: Some(Bytes::from_static(b"\x01\x02corr")),
        user_properties: vec![("k1".into(), "v1".into()), ("k2".into(), "v2".into())],
        content_type: Some("application/json".into()),
        ..Default::default()
    };
    p.client.publish_with_properties("props/t", v5c::QoS::AtLeastOnce, false, "{\"a\":1}", props).await.unwrap();
    let m = next(&mut s.rx).await.expect("message");
    let got = m.properties.expect("properties");
    assert_eq!(got.payload_format_indicator, Some(1));
    assert!(matches!(got.message_expiry_interval, Some(99..=100)));
    assert_eq!(got.response_topic.as_deref(), Some("props/reply"));
    assert_eq!(got.correlation_data.as_deref(), Some(&b"\x01\x02corr"[..]));
    assert_eq!(got.user_properties, vec![("k1".to_string(), "v1".to_string()), ("k2".to_string(), "v2".to_string())]);
    assert_eq!(got.content_type.as_deref(), Some("application/json"));
}

#[tokio::test]
async fn message_expiry_is_decremented_while_queued() {
    let b = BrokerProc::start("");
    let mut c = connect("expiring");
    c.clean_start = false;
    c.session_expiry_interval_secs = 60;
    let (mut r, _) = Raw::connect_v5(b.tcp, c.clone()).await;
    r.subscribe(1, &[("mx/#", QoS::AtLeastOnce)]).await;
    drop(r);
    settle().await;
    let p = clients::v5(b.tcp, "mx-pub", |_| {}).await;
    let props = |s| v5c::PublishProperties { message_expiry_interval: Some(s), ..Default::default() };
    p.client.publish_with_properties("mx/long", v5c::QoS::AtLeastOnce, false, "l", props(10)).await.unwrap();
    p.client.publish_with_properties("mx/short", v5c::QoS::AtLeastOnce, false, "s", props(1)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(2200)).await;
    let (mut r, _) = Raw::connect_v5(b.tcp, c).await;
    let m = r.recv_publish().await;
    assert_eq!(&m.topic[..], "mx/long", "the 1 s message expired in the queue");
    let left = m.properties.unwrap().message_expiry_interval.unwrap().get();
    assert!((7..=8).contains(&left), "expiry counted down to {left}");
    assert!(matches!(r.recv_within(Duration::from_millis(300)).await, Recv::Timeout));
}

#[tokio::test]
async fn topic_alias_inbound_is_resolved_and_outbound_is_assigned() {
    let b = BrokerProc::start("[limits]\nmax_topic_alias = 4\n");
    let mut c = connect("alias-sub");
    c.topic_alias_max = 2;
    let (mut sub, ack) = Raw::connect_v5(b.tcp, c).await;
    assert_eq!(ack.topic_alias_max, 4);
    sub.subscribe(1, &[("alias/#", QoS::AtMostOnce)]).await;
    let (mut p, _) = Raw::connect_v5(b.tcp, connect("alias-pub")).await;
    let with_alias = |topic: &str, alias: u16, payload: &str| {
        let mut pkt = raw::publish(topic, payload, QoS::AtMostOnce, None);
        if let v5::Packet::Publish(pp) = &mut pkt {
            pp.properties.as_mut().unwrap().topic_alias = std::num::NonZeroU16::new(alias);
        }
        pkt
    };
    p.send(with_alias("alias/long/topic", 1, "a")).await;
    p.send(with_alias("", 1, "b")).await; // alias only
    let first = sub.recv_publish().await;
    let second = sub.recv_publish().await;
    // Outbound: first carries topic + alias, second only the alias.
    assert_eq!(&first.topic[..], "alias/long/topic");
    let a1 = first.properties.unwrap().topic_alias.expect("alias assigned").get();
    assert_eq!(&second.topic[..], "");
    assert_eq!(second.properties.unwrap().topic_alias.map(|a| a.get()), Some(a1));
    assert_eq!(&second.payload[..], b"b");
    // An alias above the maximum is a protocol violation (0x94).
    p.send(with_alias("alias/x", 5, "c")).await;
    p.expect_disconnect(DisconnectReasonCode::TopicAliasInvalid).await;
}

#[tokio::test]
async fn maximum_packet_size_is_enforced_both_ways() {
    let b = BrokerProc::start("[limits]\nmax_packet_size = 1024\n");
    let mut c = connect("small-client");
    c.max_packet_size = std::num::NonZeroU32::new(200);
    let (mut sub, ack) = Raw::connect_v5(b.tcp, c).await;
    assert_eq!(ack.max_packet_size, Some(1024));
    sub.subscribe(1, &[("size/#", QoS::AtLeastOnce)]).await;
    let (mut p, _) = Raw::connect_v5(b.tcp, connect("sizer")).await;
    p.send(raw::publish("size/big", &"x".repeat(500), QoS::AtLeastOnce, Some(1))).await;
    p.send(raw::publish("size/small", "ok", QoS::AtLeastOnce, Some(2))).await;
    // The 500-byte message exceeds the client's 200: dropped; the small one arrives.
    assert_eq!(&sub.recv_publish().await.topic[..], "size/small");
    // Inbound: a packet above the broker's 1024 gets DISCONNECT 0x95.
    p.send(raw::publish("size/huge", &"y".repeat(2000), QoS::AtMostOnce, None)).await;
    p.expect_disconnect(DisconnectReasonCode::PacketTooLarge).await;
}
