//! Sessions: clean session / clean start, Session Expiry Interval, persistent sessions that
//! keep subscriptions and queue QoS 1/2 while offline (bounded, overflow counted), expiry.

use std::time::Duration;

use rmqtt_codec::types::QoS;
use rmqtt_codec::v5;

use crate::clients::{self, next, nothing_for, settle, v5c};
use crate::harness::BrokerProc;
use crate::raw::{self, Raw, connect};

fn persistent(expiry: u32) -> impl FnOnce(&mut v5c::MqttOptions) {
    move |o| {
        o.set_clean_start(false);
        o.set_session_expiry_interval(Some(expiry));
    }
}

#[tokio::test]
async fn persistent_session_keeps_subscriptions_and_queues_qos1_while_offline() {
    let b = BrokerProc::start("");
    let s = clients::v5(b.tcp, "keeper", persistent(300)).await;
    s.client.subscribe("keep/#", v5c::QoS::AtLeastOnce).await.unwrap();
    settle().await;
    s.client.disconnect().await.unwrap();
    settle().await;
    let (mut p, _) = Raw::connect_v5(b.tcp, connect("keep-pub")).await;
    p.send(raw::publish("keep/1", "q1", QoS::AtLeastOnce, Some(1))).await;
    p.send(raw::publish("keep/0", "q0", QoS::AtMostOnce, None)).await;
    p.send(raw::publish("keep/2", "q2", QoS::ExactlyOnce, Some(2))).await;
    settle().await;
    let mut s = clients::v5(b.tcp, "keeper", persistent(300)).await;
    assert!(s.connack.session_present);
    let a = next(&mut s.rx).await.expect("queued QoS 1");
    let c = next(&mut s.rx).await.expect("queued QoS 2 (at QoS 1)");
    assert_eq!((&a.payload[..], &c.payload[..]), (&b"q1"[..], &b"q2"[..]));
    nothing_for(&mut s.rx, Duration::from_millis(500)).await; // QoS 0 is not queued offline
}

#[tokio::test]
async fn clean_session_311_discards_the_previous_session() {
    let b = BrokerProc::start("");
    let s = clients::v4(b.tcp, "v3-sess", false).await;
    s.client.subscribe("v3s/#", rumqttc::QoS::AtLeastOnce).await.unwrap();
    settle().await;
    s.client.disconnect().await.unwrap();
    settle().await;
    let again = clients::v4(b.tcp, "v3-sess", false).await;
    assert!(again.session_present, "clean session 0 resumes");
    again.client.disconnect().await.unwrap();
    settle().await;
    let mut clean = clients::v4(b.tcp, "v3-sess", true).await;
    assert!(!clean.session_present, "clean session 1 starts over");
    let p = clients::v4(b.tcp, "v3-pub", true).await;
    p.client.publish("v3s/x", rumqttc::QoS::AtLeastOnce, false, "x").await.unwrap();
    nothing_for(&mut clean.rx, Duration::from_millis(500)).await; // the old subscription is gone
}

#[tokio::test]
async fn session_expires_after_its_expiry_interval() {
    let b = BrokerProc::start("");
    let s = clients::v5(b.tcp, "brief", persistent(1)).await;
    s.client.subscribe("brief/#", v5c::QoS::AtLeastOnce).await.unwrap();
    settle().await;
    s.client.disconnect().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let again = clients::v5(b.tcp, "brief", persistent(1)).await;
    assert!(again.connack.session_present, "still there within the interval");
    again.client.disconnect().await.unwrap();
    tokio::time::sleep(Duration::from_millis(3000)).await;
    let late = clients::v5(b.tcp, "brief", persistent(1)).await;
    assert!(!late.connack.session_present, "expired after 1 s offline");
}

#[tokio::test]
async fn offline_queue_is_bounded_and_overflow_is_dropped_and_counted() {
    let b = BrokerProc::start("[limits]\nmax_queued_messages = 5\n[sys]\ninterval_secs = 1\n");
    let s = clients::v5(b.tcp, "small-queue", persistent(300)).await;
    s.client.subscribe("bounded/#", v5c::QoS::AtLeastOnce).await.unwrap();
    settle().await;
    s.client.disconnect().await.unwrap();
    settle().await;
    let (mut p, _) = Raw::connect_v5(b.tcp, connect("bounded-pub")).await;
    for i in 1..=8u16 {
        p.send(raw::publish("bounded/t", &i.to_string(), QoS::AtLeastOnce, Some(i))).await;
    }
    settle().await;
    let mut s = clients::v5(b.tcp, "small-queue", persistent(300)).await;
    let mut got = Vec::new();
    while let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(700), s.rx.recv()).await {
        got.push(String::from_utf8_lossy(&m.payload).to_string());
    }
    assert_eq!(got, vec!["1", "2", "3", "4", "5"], "the first five were kept, the rest dropped");
    // The drop is counted in $SYS.
    let mut sys = clients::v5(b.tcp, "sys-reader", |_| {}).await;
    sys.client.subscribe("$SYS/brokers/+/messages/dropped", v5c::QoS::AtMostOnce).await.unwrap();
    let mut n = 0u64;
    for _ in 0..3 {
        let dropped = next(&mut sys.rx).await.expect("$SYS dropped figure");
        n = String::from_utf8_lossy(&dropped.payload).parse().unwrap();
        if n >= 3 {
            break;
        }
    }
    assert!(n >= 3, "dropped count {n}");
    assert!(b.log().contains("max_queued_messages reached"), "the limit is logged");
}

#[tokio::test]
async fn clean_start_discards_an_existing_session_with_its_subscriptions_and_queued_messages() {
    let b = BrokerProc::start("");
    let s = clients::v5(b.tcp, "fresh-start", persistent(300)).await;
    s.client.subscribe("fresh/#", v5c::QoS::AtLeastOnce).await.unwrap();
    settle().await;
    s.client.disconnect().await.unwrap();
    settle().await;
    let (mut p, _) = Raw::connect_v5(b.tcp, connect("fresh-pub")).await;
    for i in 1..=3u16 {
        p.send(raw::publish("fresh/t", &format!("queued-{i}"), QoS::AtLeastOnce, Some(i))).await;
    }
    settle().await;
    // Clean Start = 1 (and a session that would again persist): the old session is gone.
    let mut again = clients::v5(b.tcp, "fresh-start", |o| {
        o.set_clean_start(true);
        o.set_session_expiry_interval(Some(300));
    })
    .await;
    assert!(!again.connack.session_present, "Session Present 0 after Clean Start 1");
    nothing_for(&mut again.rx, Duration::from_millis(500)).await; // the queued messages are gone
    p.send(raw::publish("fresh/t", "live", QoS::AtLeastOnce, Some(4))).await;
    let live_ack = loop {
        match p.recv().await {
            raw::Recv::Packet(v5::Packet::PublishAck(a)) if a.packet_id.get() == 4 => break a,
            raw::Recv::Packet(v5::Packet::PublishAck(_)) => continue, // those of the queued ones
            other => panic!("expected PUBACK, got {other:?}"),
        }
    };
    assert_eq!(live_ack.reason_code, v5::PublishAckReason::NoMatchingSubscribers, "the old subscription is gone");
    nothing_for(&mut again.rx, Duration::from_millis(500)).await;
}
