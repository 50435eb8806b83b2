//! Bad input: malformed packets, wrong packet order, invalid UTF-8, invalid topics, oversize
//! packets and the connection limit. The offender gets the right reason code (or, on 3.1.1, a
//! closed connection) and everyone else keeps being served.

use rmqtt_codec::types::QoS;
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
