//! Bad input: malformed packets, wrong packet order, invalid UTF-8, invalid topics, oversize
//! packets and the connection limit. The offender gets the right reason code (or, on 3.1.1, a
//! closed connection) and everyone else keeps being served; each limit hit is logged by its name.

use std::time::Duration;

use rmqtt_codec::types::QoS;
use rmqtt_codec::v3;
use rmqtt_codec::v5::{self, ConnectAckReason, DisconnectReasonCode};

use crate::clients::{self, next, settle};
use crate::harness::BrokerProc;
use crate::raw::{self, Raw, Recv, connect};

/// A bystander that must keep working while others misbehave.
async fn bystander_still_served(b: &BrokerProc) {
    let mut s = clients::v4(b.tcp, &format!("bystander-{}", rand_suffix()), true).await;
    s.client.subscribe("alive", rumqttc::QoS::AtLeastOnce).await.unwrap();
    settle().await;
    let p = clients::v4(b.tcp, &format!("bystander-pub-{}", rand_suffix()), true).await;
    p.client.publish("alive", rumqttc::QoS::AtLeastOnce, false, "yes").await.unwrap();
    assert_eq!(&next(&mut s.rx).await.expect("broker still serves others").payload[..], b"yes");
}

fn rand_suffix() -> u32 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0)
}

#[tokio::test]
async fn malformed_packet_gets_0x81_and_the_broker_keeps_serving() {
    let b = BrokerProc::start("");
    let (mut r, _) = Raw::connect_v5(b.tcp, connect("garbage")).await;
    // SUBSCRIBE whose topic length runs past the end of the packet.
    r.send_bytes(&[0x82, 0x06, 0x00, 0x01, 0x00, 0x00, 0xff, b'a']).await;
    r.expect_disconnect(DisconnectReasonCode::MalformedPacket).await;
    // 3.1.1: the connection is closed.
    let mut v3 = Raw::open(b.tcp, false).await;
    v3.send_bytes(&[0x10, 0x0e, 0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0, 60, 0, 2, b'v', b'3']).await;
    assert!(matches!(v3.recv().await, Recv::V3(_)));
    v3.send_bytes(&[0x82, 0x06, 0x00, 0x01, 0x00, 0xff, b'a', 0]).await;
    v3.expect_closed().await;
    bystander_still_served(&b).await;
}

#[tokio::test]
async fn wrong_packet_order_is_a_protocol_error() {
    let b = BrokerProc::start("");
    // PUBLISH before CONNECT: closed without a session.
    let mut r = Raw::open(b.tcp, true).await;
    r.send(raw::publish("x", "y", QoS::AtMostOnce, None)).await;
    assert!(matches!(r.recv().await, Recv::Closed));
    // A second CONNECT: DISCONNECT 0x82.
    let (mut r, _) = Raw::connect_v5(b.tcp, connect("twice")).await;
    r.send(v5::Packet::Connect(Box::new(connect("twice")))).await;
    r.expect_disconnect(DisconnectReasonCode::ProtocolError).await;
    // A server-only packet from a client: 0x82.
    let (mut r, _) = Raw::connect_v5(b.tcp, connect("pingresp")).await;
    r.send(v5::Packet::PingResponse).await;
    r.expect_disconnect(DisconnectReasonCode::ProtocolError).await;
    bystander_still_served(&b).await;
}

#[tokio::test]
async fn invalid_utf8_in_a_topic_is_malformed() {
    let b = BrokerProc::start("");
    let (mut r, _) = Raw::connect_v5(b.tcp, connect("utf8")).await;
    // PUBLISH QoS 0, topic "a\xff", no properties, payload "x".
    r.send_bytes(&[0x30, 0x06, 0x00, 0x02, b'a', 0xff, 0x00, b'x']).await;
    r.expect_disconnect(DisconnectReasonCode::MalformedPacket).await;
    bystander_still_served(&b).await;
}

#[tokio::test]
async fn payload_format_indicator_with_invalid_utf8_gets_0x99() {
    let b = BrokerProc::start("");
    let (mut r, _) = Raw::connect_v5(b.tcp, connect("pfi")).await;
    let mut p = raw::publish("pfi/t", "", QoS::AtLeastOnce, Some(1));
    if let v5::Packet::Publish(pp) = &mut p {
        pp.payload = bytes::Bytes::from_static(&[0xc3, 0x28]);
        pp.properties.as_mut().unwrap().is_utf8_payload = true;
    }
    r.send(p).await;
    match r.recv().await {
        Recv::Packet(v5::Packet::PublishAck(a)) => {
            assert_eq!(a.reason_code, v5::PublishAckReason::PayloadFormatInvalid)
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn invalid_topic_name_gets_0x90() {
    let b = BrokerProc::start("[limits]\nmax_topic_levels = 4\n");
    let (mut r, _) = Raw::connect_v5(b.tcp, connect("wild")).await;
    r.send(raw::publish("a/+/c", "x", QoS::AtMostOnce, None)).await;
    r.expect_disconnect(DisconnectReasonCode::TopicNameInvalid).await;
    let (mut r, _) = Raw::connect_v5(b.tcp, connect("deep")).await;
    r.send(raw::publish("a/b/c/d/e", "x", QoS::AtMostOnce, None)).await;
    r.expect_disconnect(DisconnectReasonCode::TopicNameInvalid).await;
    let codes = {
        let (mut r, _) = Raw::connect_v5(b.tcp, connect("deep-sub")).await;
        r.subscribe(1, &[("a/b/c/d/#", QoS::AtMostOnce)]).await
    };
    assert_eq!(codes, vec![v5::SubscribeAckReason::TopicFilterInvalid]);
    // 3.1.1 publisher with a wildcard topic: closed.
    let mut v3 = Raw::open(b.tcp, false).await;
    v3.send_bytes(&[0x10, 0x0e, 0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0, 60, 0, 2, b'v', b'3']).await;
    assert!(matches!(v3.recv().await, Recv::V3(_)));
    v3.send_bytes(&[0x30, 0x04, 0x00, 0x01, b'#', b'x']).await;
    v3.expect_closed().await;
    bystander_still_served(&b).await;
}

#[tokio::test]
async fn oversize_packet_gets_0x95_even_before_it_is_fully_sent() {
    let b = BrokerProc::start("[limits]\nmax_packet_size = 4096\n");
    let (mut r, _) = Raw::connect_v5(b.tcp, connect("huge")).await;
    // Only the fixed header announcing 1 MiB: the broker refuses without buffering it.
    r.send_bytes(&[0x30, 0x80, 0x80, 0x40]).await;
    r.expect_disconnect(DisconnectReasonCode::PacketTooLarge).await;
    bystander_still_served(&b).await;
}

#[tokio::test]
async fn connection_limit_refuses_the_next_client() {
    let b = BrokerProc::start("[limits]\nmax_connections = 2\n");
    let (_a, ok1) = Raw::connect_v5(b.tcp, connect("one")).await;
    let (_b, ok2) = Raw::connect_v5(b.tcp, connect("two")).await;
    assert_eq!((ok1.reason_code, ok2.reason_code), (ConnectAckReason::Success, ConnectAckReason::Success));
    let (_c, refused) = Raw::connect_v5(b.tcp, connect("three")).await;
    assert_eq!(refused.reason_code, ConnectAckReason::QuotaExceeded);
    assert!(b.log().contains("max_connections reached"));
}

#[tokio::test]
async fn clients_may_not_publish_to_sys_topics() {
    let b = BrokerProc::start("");
    let (mut r, _) = Raw::connect_v5(b.tcp, connect("spoofer")).await;
    r.send(raw::publish("$SYS/brokers/x/uptime", "0", QoS::AtLeastOnce, Some(1))).await;
    match r.recv().await {
        Recv::Packet(v5::Packet::PublishAck(a)) => assert_eq!(a.reason_code, v5::PublishAckReason::NotAuthorized),
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn mqtt311_wrong_packet_order_closes_the_connection_and_the_broker_keeps_serving() {
    let b = BrokerProc::start("");
    // PUBLISH before CONNECT.
    let mut r = Raw::open(b.tcp, false).await;
    r.send_bytes(&[0x30, 0x04, 0x00, 0x01, b'x', b'y']).await;
    r.expect_closed().await;
    // SUBSCRIBE before CONNECT.
    let mut r = Raw::open(b.tcp, false).await;
    r.send_bytes(&[0x82, 0x06, 0x00, 0x01, 0x00, 0x01, b'a', 0x00]).await;
    r.expect_closed().await;
    // A second CONNECT on a connected 3.1.1 session.
    let mut r = Raw::connect_v3(b.tcp, "v3-twice", true).await;
    r.send_bytes(&[
        0x10, 0x14, 0, 4, b'M', b'Q', b'T', b'T', 4, 2, 0, 60, 0, 8, b'v', b'3', b'-', b't', b'w', b'i', b'c', b'e',
    ])
    .await;
    r.expect_closed().await;
    // A server-only packet (CONNACK) from a 3.1.1 client.
    let mut r = Raw::connect_v3(b.tcp, "v3-connack", true).await;
    r.send_bytes(&[0x20, 0x02, 0x00, 0x00]).await;
    r.expect_closed().await;
    bystander_still_served(&b).await;
}

#[tokio::test]
async fn mqtt311_oversize_packet_closes_the_connection_before_it_is_fully_sent() {
    let b = BrokerProc::start("[limits]\nmax_packet_size = 4096\n");
    let mut r = Raw::connect_v3(b.tcp, "v3-huge", true).await;
    // Only the fixed header announcing a 1 MiB PUBLISH: refused without buffering it.
    r.send_bytes(&[0x30, 0x80, 0x80, 0x40]).await;
    r.expect_closed().await;
    // Under the limit is fine; just over it, sent in full, closes the connection as well.
    let mut r = Raw::connect_v3(b.tcp, "v3-over", true).await;
    let mut fits = vec![0x32, 0x80, 0x10, 0x00, 0x01, b't', 0x00, 0x01];
    fits.resize(3 + 2048, b'x');
    r.send_bytes(&fits).await;
    assert!(matches!(r.recv().await, Recv::V3(v3::Packet::PublishAck { .. })), "2 KiB PUBLISH acknowledged");
    let mut packet = vec![0x30, 0x81, 0x20, 0x00, 0x01, b't'];
    packet.resize(3 + 4097, b'x');
    r.send_bytes(&packet).await;
    r.expect_closed().await;
    bystander_still_served(&b).await;
}

#[tokio::test]
async fn mqtt311_invalid_utf8_in_a_topic_closes_the_connection() {
    let b = BrokerProc::start("");
    // PUBLISH QoS 1, topic "ab", payload "x", is fine; the same with topic "a\xff" is not.
    let mut r = Raw::connect_v3(b.tcp, "v3-utf8-pub", true).await;
    r.send_bytes(&[0x32, 0x07, 0x00, 0x02, b'a', b'b', 0x00, 0x01, b'x']).await;
    assert!(matches!(r.recv().await, Recv::V3(v3::Packet::PublishAck { .. })), "valid topic acknowledged");
    r.send_bytes(&[0x32, 0x07, 0x00, 0x02, b'a', 0xff, 0x00, 0x02, b'x']).await;
    r.expect_closed().await;
    // SUBSCRIBE to the filter "ab" is granted; to "a\xff" closes the connection.
    let mut r = Raw::connect_v3(b.tcp, "v3-utf8-sub", true).await;
    r.send_bytes(&[0x82, 0x07, 0x00, 0x01, 0x00, 0x02, b'a', b'b', 0x00]).await;
    assert!(matches!(r.recv().await, Recv::V3(v3::Packet::SubscribeAck { .. })), "valid filter granted");
    r.send_bytes(&[0x82, 0x07, 0x00, 0x02, 0x00, 0x02, b'a', 0xff, 0x00]).await;
    r.expect_closed().await;
    bystander_still_served(&b).await;
}

/// Waits (3 s at most) until the broker's log has more than `before` lines containing `needle`.
async fn logged_again(b: &BrokerProc, needle: &str, before: usize) -> bool {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
    while tokio::time::Instant::now() < deadline {
        if b.log().matches(needle).count() > before {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test]
async fn hitting_each_limit_logs_a_line_naming_it_by_its_config_name() {
    let b = BrokerProc::start(
        "[limits]\nmax_packet_size = 1024\nreceive_maximum = 2\nmax_topic_levels = 3\nmax_queued_messages = 2\n\
         max_connections = 3\n",
    );
    let count = |needle: &str| b.log().matches(needle).count();

    let needle = "limits.max_packet_size";
    let before = count(needle);
    let (mut r, _) = Raw::connect_v5(b.tcp, connect("too-big")).await;
    r.send(raw::publish("big", &"x".repeat(2000), QoS::AtMostOnce, None)).await;
    r.expect_disconnect(DisconnectReasonCode::PacketTooLarge).await;
    assert!(logged_again(&b, needle, before).await, "no log line naming {needle}: {}", b.log());

    let needle = "limits.receive_maximum";
    let before = count(needle);
    let (mut r, _) = Raw::connect_v5(b.tcp, connect("too-many")).await;
    for i in 1..=3u16 {
        r.send(raw::publish("inflight", "x", QoS::ExactlyOnce, Some(i))).await;
    }
    r.expect_disconnect(DisconnectReasonCode::ReceiveMaximumExceeded).await;
    assert!(logged_again(&b, needle, before).await, "no log line naming {needle}: {}", b.log());

    let needle = "limits.max_topic_levels";
    let before = count(needle);
    let (mut r, _) = Raw::connect_v5(b.tcp, connect("too-deep")).await;
    r.send(raw::publish("a/b/c/d", "x", QoS::AtMostOnce, None)).await;
    r.expect_disconnect(DisconnectReasonCode::TopicNameInvalid).await;
    assert!(logged_again(&b, needle, before).await, "no log line naming {needle}: {}", b.log());

    let needle = "limits.max_queued_messages";
    let before = count(needle);
    let mut c = connect("queue-owner");
    c.clean_start = false;
    c.session_expiry_interval_secs = 300;
    let (mut s, _) = Raw::connect_v5(b.tcp, c).await;
    s.subscribe(1, &[("queued", QoS::AtLeastOnce)]).await;
    drop(s);
    settle().await;
    let (mut p, _) = Raw::connect_v5(b.tcp, connect("queue-filler")).await;
    for i in 1..=2u16 {
        p.send(raw::publish("queued", "x", QoS::AtLeastOnce, Some(i))).await;
        assert!(matches!(p.recv().await, Recv::Packet(v5::Packet::PublishAck(_))));
    }
    assert_eq!(count(needle), before, "the queue is not over its limit yet");
    p.send(raw::publish("queued", "x", QoS::AtLeastOnce, Some(3))).await;
    assert!(matches!(p.recv().await, Recv::Packet(v5::Packet::PublishAck(_))));
    assert!(logged_again(&b, needle, before).await, "no log line naming {needle}: {}", b.log());

    let needle = "limits.max_connections";
    let before = count(needle);
    // `queue-filler` is one connection; two more fill the limit of 3.
    let (_c2, ok2) = Raw::connect_v5(b.tcp, connect("conn-2")).await;
    let (_c3, ok3) = Raw::connect_v5(b.tcp, connect("conn-3")).await;
    assert_eq!((ok2.reason_code, ok3.reason_code), (ConnectAckReason::Success, ConnectAckReason::Success));
    assert_eq!(count(needle), before, "the connection limit is not hit yet");
    let (_c4, refused) = Raw::connect_v5(b.tcp, connect("conn-4")).await;
    assert_eq!(refused.reason_code, ConnectAckReason::QuotaExceeded);
    assert!(logged_again(&b, needle, before).await, "no log line naming {needle}: {}", b.log());
    drop(p);
}
