//! What the broker answers on the ack path: reason strings on failing acks and DISCONNECT,
//! the PUBLISH property-size limit, and the MQTT 3.1.1 retry of unacknowledged QoS 1/2.

use std::time::Duration;

use rmqtt_codec::types::QoS;
use rmqtt_codec::v3;
use rmqtt_codec::v5::{self, DisconnectReasonCode};

use crate::harness::BrokerProc;
use crate::raw::{self, Raw, Recv, connect, pid};

/// The next packet that is not a PUBLISH.
async fn next_ack(r: &mut Raw) -> v5::Packet {
    loop {
        match r.recv().await {
            Recv::Packet(v5::Packet::Publish(_)) => continue,
            Recv::Packet(p) => return p,
            other => panic!("expected an ack, got {other:?}"),
        }
    }
}

fn puback(p: v5::Packet) -> v5::PublishAck {
    match p {
        v5::Packet::PublishAck(a) => a,
        other => panic!("expected PUBACK, got {other:?}"),
    }
}

fn reason<S: std::ops::Deref<Target = str>>(s: &Option<S>) -> &str {
    s.as_deref().unwrap_or("")
}

#[tokio::test]
async fn failing_acks_carry_reason_strings_unless_problem_information_is_off() {
    let b = BrokerProc::start("");
    let (mut r, _) = Raw::connect_v5(b.tcp, connect("explained")).await;

    r.send(raw::publish("$SYS/forged", "x", QoS::AtLeastOnce, Some(1))).await;
    let a = puback(next_ack(&mut r).await);
    assert_eq!(a.reason_code, v5::PublishAckReason::NotAuthorized);
    assert!(reason(&a.reason_string).contains("$SYS"), "{:?}", a.reason_string);

    r.send(raw::publish("nobody/listens", "x", QoS::AtLeastOnce, Some(2))).await;
    let a = puback(next_ack(&mut r).await);
    assert_eq!(a.reason_code, v5::PublishAckReason::NoMatchingSubscribers);
    assert_eq!(reason(&a.reason_string), "no matching subscribers");

    r.send(raw::subscribe(3, &[("a/#/b", QoS::AtMostOnce), ("ok/+", QoS::AtLeastOnce)])).await;
    match next_ack(&mut r).await {
        v5::Packet::SubscribeAck(a) => {
            assert_eq!(a.status, vec![v5::SubscribeAckReason::TopicFilterInvalid, v5::SubscribeAckReason::GrantedQos1]);
            let why = reason(&a.reason_string);
            assert!(why.starts_with("a/#/b: ") && why.contains('#'), "{why}");
        }
        other => panic!("expected SUBACK, got {other:?}"),
    }

    r.send(v5::Packet::Unsubscribe(v5::Unsubscribe {
        packet_id: pid(4),
        user_properties: Vec::new(),
        topic_filters: vec!["never/subscribed".into(), "ok/+".into()],
    }))
    .await;
    match next_ack(&mut r).await {
        v5::Packet::UnsubscribeAck(a) => {
            assert_eq!(
                a.status,
                vec![v5::UnsubscribeAckReason::NoSubscriptionExisted, v5::UnsubscribeAckReason::Success]
            );
            assert_eq!(reason(&a.reason_string), "never/subscribed: no such subscription");
        }
        other => panic!("expected UNSUBACK, got {other:?}"),
    }

    r.send(v5::Packet::PublishRelease(v5::PublishAck2 {
        packet_id: pid(77),
        reason_code: v5::PublishAck2Reason::Success,
        properties: Vec::new(),
        reason_string: None,
    }))
    .await;
    match next_ack(&mut r).await {
        v5::Packet::PublishComplete(c) => {
            assert_eq!(c.reason_code, v5::PublishAck2Reason::PacketIdNotFound);
            assert!(reason(&c.reason_string).contains("77"), "{:?}", c.reason_string);
        }
        other => panic!("expected PUBCOMP, got {other:?}"),
    }

    // Request Problem Information 0: the same refusal, no reason string (MQTT 5 3.1.2.11.7).
    let mut quiet = connect("quiet");
    quiet.request_problem_info = false;
    let (mut q, _) = Raw::connect_v5(b.tcp, quiet).await;
    q.send(raw::publish("$SYS/forged", "x", QoS::AtLeastOnce, Some(1))).await;
    let a = puback(next_ack(&mut q).await);
    assert_eq!(a.reason_code, v5::PublishAckReason::NotAuthorized);
    assert_eq!(a.reason_string, None);
}

#[tokio::test]
async fn shutdown_disconnect_says_why_in_its_reason_string() {
    let mut b = BrokerProc::start("");
    let (mut r, _) = Raw::connect_v5(b.tcp, connect("told")).await;
    let _ = std::process::Command::new("kill").arg("-TERM").arg(b.pid().to_string()).status();
    match r.recv().await {
        Recv::Packet(v5::Packet::Disconnect(d)) => {
            assert_eq!(d.reason_code, DisconnectReasonCode::ServerShuttingDown);
            assert_eq!(reason(&d.reason_string), "server shutting down");
        }
        other => panic!("expected DISCONNECT, got {other:?}"),
    }
    assert!(b.terminate());
}

fn publish_with_user_property(topic: &str, value_len: usize, packet_id: u16) -> v5::Packet {
    let mut p = raw::publish(topic, "payload", QoS::AtLeastOnce, Some(packet_id));
    if let v5::Packet::Publish(p) = &mut p
        && let Some(props) = p.properties.as_mut()
    {
        props.user_properties.push(("note".into(), "x".repeat(value_len).into()));
    }
    p
}

#[tokio::test]
async fn publish_properties_over_max_property_size_are_refused_with_0x83_and_not_delivered() {
    let b = BrokerProc::start("[limits]\nmax_property_size = 100\n");
    let (mut sub, _) = Raw::connect_v5(b.tcp, connect("listener")).await;
    assert_eq!(sub.subscribe(1, &[("props/#", QoS::AtLeastOnce)]).await, vec![v5::SubscribeAckReason::GrantedQos1]);
    let (mut p, _) = Raw::connect_v5(b.tcp, connect("talker")).await;

    p.send(publish_with_user_property("props/big", 200, 1)).await;
    let a = puback(next_ack(&mut p).await);
    assert_eq!(a.reason_code, v5::PublishAckReason::ImplementationSpecificError);
    assert!(reason(&a.reason_string).contains("limits.max_property_size (100)"), "{:?}", a.reason_string);

    p.send(publish_with_user_property("props/small", 20, 2)).await;
    assert_eq!(puback(next_ack(&mut p).await).reason_code, v5::PublishAckReason::Success);
    // Only the small one arrives, and the connection stays open.
    let got = sub.recv_publish().await;
    assert_eq!(&*got.topic, "props/small");
    assert!(matches!(sub.recv_within(Duration::from_millis(500)).await, Recv::Timeout));
    assert!(b.log().contains("limits.max_property_size"), "the refusal is logged naming the limit");
}

async fn recv_v3(r: &mut Raw, within: Duration) -> Option<v3::Packet> {
    match r.recv_within(within).await {
        Recv::V3(p) => Some(p),
        Recv::Timeout => None,
        other => panic!("expected a 3.1.1 packet, got {other:?}"),
    }
}

#[tokio::test]
async fn mqtt311_unacknowledged_qos1_publish_and_pubrel_are_resent_after_the_retry_interval() {
    let b = BrokerProc::start("[limits]\nretry_interval_secs = 1\n");
    let mut sub = Raw::connect_v3(b.tcp, "slow-acker", false).await;
    sub.send_v3(v3::Packet::Subscribe {
        packet_id: pid(1),
        topic_filters: vec![("retry/1".into(), QoS::AtLeastOnce), ("retry/2".into(), QoS::ExactlyOnce)],
    })
    .await;
    assert!(matches!(recv_v3(&mut sub, Duration::from_secs(5)).await, Some(v3::Packet::SubscribeAck { .. })));
    let (mut publisher, _) = Raw::connect_v5(b.tcp, connect("publisher")).await;

    // QoS 1: not acknowledged, so sent again with DUP and the same packet id.
    publisher.send(raw::publish("retry/1", "once", QoS::AtLeastOnce, Some(1))).await;
    let first = sub.recv_publish().await;
    assert!(!first.dup);
    let again = sub.recv_publish().await;
    assert!(again.dup, "the resend carries DUP");
    assert_eq!((again.packet_id, &again.payload[..]), (first.packet_id, &b"once"[..]));
    let id = first.packet_id.expect("QoS 1 has a packet id");
    sub.send_v3(v3::Packet::PublishAck { packet_id: id }).await;
    assert_eq!(recv_v3(&mut sub, Duration::from_millis(2500)).await, None, "acknowledged: no more resends");

    // QoS 2: PUBREC sent, PUBCOMP withheld, so PUBREL comes again.
    publisher.send(raw::publish("retry/2", "exactly", QoS::ExactlyOnce, Some(2))).await;
    let p = sub.recv_publish().await;
    let id = p.packet_id.expect("QoS 2 has a packet id");
    sub.send_v3(v3::Packet::PublishReceived { packet_id: id }).await;
    assert_eq!(recv_v3(&mut sub, Duration::from_secs(5)).await, Some(v3::Packet::PublishRelease { packet_id: id }));
    assert_eq!(recv_v3(&mut sub, Duration::from_secs(5)).await, Some(v3::Packet::PublishRelease { packet_id: id }));
    sub.send_v3(v3::Packet::PublishComplete { packet_id: id }).await;
    assert_eq!(recv_v3(&mut sub, Duration::from_millis(2500)).await, None);
}

#[tokio::test]
async fn mqtt5_clients_are_not_resent_to_before_they_reconnect() {
    let b = BrokerProc::start("[limits]\nretry_interval_secs = 1\n");
    let (mut sub, _) = Raw::connect_v5(b.tcp, connect("v5-slow-acker")).await;
    sub.subscribe(1, &[("retry/v5", QoS::AtLeastOnce)]).await;
    let (mut publisher, _) = Raw::connect_v5(b.tcp, connect("publisher")).await;
    publisher.send(raw::publish("retry/v5", "once", QoS::AtLeastOnce, Some(1))).await;
    let first = sub.recv_publish().await;
    assert!(!first.dup);
    // MQTT 5 4.4: no resend on the same connection, however long the ack takes.
    assert!(matches!(sub.recv_within(Duration::from_millis(2500)).await, Recv::Timeout));
}
