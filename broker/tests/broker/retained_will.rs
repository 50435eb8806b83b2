//! Retained messages (set, replace, clear, flags on delivery, Message Expiry) and will messages
//! (abnormal disconnect only, Will Delay Interval, cancelled by a reconnect).

use std::time::Duration;

use bytes::Bytes;
use rmqtt_codec::types::QoS;
use rmqtt_codec::v5;

use crate::clients::{self, next, nothing_for, settle, v5c};
use crate::harness::BrokerProc;
use crate::raw::{Raw, connect};

#[tokio::test]
async fn retained_message_is_set_replaced_cleared_and_delivered_with_retain_flag() {
    let b = BrokerProc::start("");
    let p = clients::v4(b.tcp, "ret-pub", true).await;
    p.client.publish("ret/a", rumqttc::QoS::AtLeastOnce, true, "first").await.unwrap();
    p.client.publish("ret/a", rumqttc::QoS::AtLeastOnce, true, "second").await.unwrap();
    p.client.publish("ret/b", rumqttc::QoS::AtLeastOnce, true, "other").await.unwrap();
    settle().await;
    let mut s = clients::v4(b.tcp, "ret-sub", true).await;
    s.client.subscribe("ret/a", rumqttc::QoS::AtLeastOnce).await.unwrap();
    let m = next(&mut s.rx).await.expect("retained");
    assert!(m.retain);
    assert_eq!(&m.payload[..], b"second", "replaced");
    nothing_for(&mut s.rx, Duration::from_millis(300)).await;
    // Live message on the same topic: retain flag cleared for existing subscriptions.
    p.client.publish("ret/a", rumqttc::QoS::AtLeastOnce, true, "third").await.unwrap();
    assert!(!next(&mut s.rx).await.unwrap().retain);
    // Clear with an empty payload.
    p.client.publish("ret/a", rumqttc::QoS::AtLeastOnce, true, "").await.unwrap();
    settle().await;
    let mut s2 = clients::v4(b.tcp, "ret-sub2", true).await;
    s2.client.subscribe("ret/#", rumqttc::QoS::AtLeastOnce).await.unwrap();
    let only = next(&mut s2.rx).await.expect("ret/b remains");
    assert_eq!(only.topic, "ret/b");
    nothing_for(&mut s2.rx, Duration::from_millis(300)).await;
}

#[tokio::test]
async fn retained_message_expires_with_its_message_expiry_interval() {
    let b = BrokerProc::start("");
    let p = clients::v5(b.tcp, "exp-pub", |_| {}).await;
    let props = v5c::PublishProperties { message_expiry_interval: Some(1), ..Default::default() };
    p.client.publish_with_properties("exp/t", v5c::QoS::AtLeastOnce, true, "short", props).await.unwrap();
    p.client.publish("exp/u", v5c::QoS::AtLeastOnce, true, "long").await.unwrap();
    settle().await;
    let mut early = clients::v5(b.tcp, "early", |_| {}).await;
    early.client.subscribe("exp/t", v5c::QoS::AtMostOnce).await.unwrap();
    let m = next(&mut early.rx).await.expect("not yet expired");
    assert!(m.properties.unwrap().message_expiry_interval.unwrap() <= 1);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let mut late = clients::v5(b.tcp, "late", |_| {}).await;
    late.client.subscribe("exp/#", v5c::QoS::AtMostOnce).await.unwrap();
    assert_eq!(&next(&mut late.rx).await.unwrap().payload[..], b"long");
    nothing_for(&mut late.rx, Duration::from_millis(300)).await;
}

fn with_will(topic: &str, delay: Option<u32>) -> v5::Connect {
    let mut c = connect("testament");
    c.last_will = Some(v5::LastWill {
        qos: QoS::AtLeastOnce,
        retain: false,
        topic: topic.into(),
        message: Bytes::from_static(b"gone"),
        will_delay_interval_sec: delay,
        correlation_data: None,
        message_expiry_interval: None,
        content_type: Some("text/plain".into()),
        user_properties: vec![("why".into(), "test".into())],
        is_utf8_payload: Some(true),
        response_topic: None,
    });
    c
}

#[tokio::test]
async fn will_is_published_on_abnormal_disconnect_only() {
    let b = BrokerProc::start("");
    let mut watcher = clients::v5(b.tcp, "watcher", |_| {}).await;
    watcher.client.subscribe("will/#", v5c::QoS::AtLeastOnce).await.unwrap();
    settle().await;

    let (mut polite, _) = Raw::connect_v5(b.tcp, with_will("will/polite", None)).await;
    polite
        .send(v5::Packet::Disconnect(v5::Disconnect {
            reason_code: v5::DisconnectReasonCode::NormalDisconnection,
            session_expiry_interval_secs: None,
            server_reference: None,
            reason_string: None,
            user_properties: vec![],
        }))
        .await;
    nothing_for(&mut watcher.rx, Duration::from_millis(500)).await;

    let (rude, _) = Raw::connect_v5(b.tcp, with_will("will/rude", None)).await;
    drop(rude); // network connection closed without DISCONNECT
    let m = next(&mut watcher.rx).await.expect("will after abnormal close");
    assert_eq!(&m.topic[..], b"will/rude");
    let props = m.properties.expect("will properties");
    assert_eq!(props.content_type.as_deref(), Some("text/plain"));
    assert_eq!(props.user_properties, vec![("why".to_string(), "test".to_string())]);
}

#[tokio::test]
async fn will_delay_waits_and_a_reconnect_within_the_delay_cancels_the_will() {
    let b = BrokerProc::start("");
    let mut watcher = clients::v5(b.tcp, "watcher", |_| {}).await;
    watcher.client.subscribe("delayed/#", v5c::QoS::AtLeastOnce).await.unwrap();
    settle().await;

    let mut c = with_will("delayed/cancelled", Some(2));
    c.clean_start = false;
    c.session_expiry_interval_secs = 60;
    let (r, _) = Raw::connect_v5(b.tcp, c.clone()).await;
    drop(r);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (_back, ack) = Raw::connect_v5(b.tcp, c).await; // reconnect within the delay
    assert!(ack.session_present);
    nothing_for(&mut watcher.rx, Duration::from_millis(2500)).await;

    let mut c = with_will("delayed/published", Some(1));
    c.client_id = "testament-2".into();
    c.clean_start = false;
    c.session_expiry_interval_secs = 60;
    let (r, _) = Raw::connect_v5(b.tcp, c).await;
    drop(r);
    nothing_for(&mut watcher.rx, Duration::from_millis(600)).await; // not before the delay
    let m = next(&mut watcher.rx).await.expect("will after its delay");
    assert_eq!(&m.topic[..], b"delayed/published");
}
