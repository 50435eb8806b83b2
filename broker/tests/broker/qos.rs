//! QoS 0/1/2 in both directions: acknowledgements, downgrade to the subscription's QoS, the
//! inflight window (Receive Maximum both ways, capped by `limits.max_inflight`), packet-id
//! allocation and redelivery with DUP on resume.

use std::time::Duration;

use rmqtt_codec::types::QoS;
use rmqtt_codec::v5::{self, DisconnectReasonCode, PublishAckReason};

use crate::clients::{self, next, settle};
use crate::harness::BrokerProc;
use crate::raw::{self, Raw, Recv, connect, pid};

#[tokio::test]
async fn qos_0_1_2_round_trip_with_mqtt_311_and_5_clients() {
    let b = BrokerProc::start("");
    let mut s4 = clients::v4(b.tcp, "sub-v4", true).await;
    let mut s5 = clients::v5(b.tcp, "sub-v5", |_| {}).await;
    s4.client.subscribe("q/#", rumqttc::QoS::ExactlyOnce).await.unwrap();
    s5.client.subscribe("q/#", clients::v5c::QoS::ExactlyOnce).await.unwrap();
    settle().await;
    let p4 = clients::v4(b.tcp, "pub-v4", true).await;
    let p5 = clients::v5(b.tcp, "pub-v5", |_| {}).await;
    for (i, q) in
        [rumqttc::QoS::AtMostOnce, rumqttc::QoS::AtLeastOnce, rumqttc::QoS::ExactlyOnce].into_iter().enumerate()
    {
        p4.client.publish(format!("q/v4/{i}"), q, false, format!("v4-{i}")).await.unwrap();
        let m4 = next(&mut s4.rx).await.expect("3.1.1 subscriber");
        let m5 = next(&mut s5.rx).await.expect("5.0 subscriber");
        assert_eq!(m4.qos, q);
        assert_eq!(&m4.payload[..], format!("v4-{i}").as_bytes());
        assert_eq!(m5.qos as u8, q as u8);
    }
    for (i, q) in [clients::v5c::QoS::AtMostOnce, clients::v5c::QoS::AtLeastOnce, clients::v5c::QoS::ExactlyOnce]
        .into_iter()
        .enumerate()
    {
        p5.client.publish(format!("q/v5/{i}"), q, false, format!("v5-{i}")).await.unwrap();
        let m4 = next(&mut s4.rx).await.expect("3.1.1 subscriber");
        let m5 = next(&mut s5.rx).await.expect("5.0 subscriber");
        assert_eq!(m5.qos, q);
        assert_eq!(&m5.payload[..], format!("v5-{i}").as_bytes());
        assert_eq!(m4.qos as u8, q as u8);
    }
}

#[tokio::test]
async fn publisher_gets_puback_pubrec_pubcomp_with_reason_codes() {
    let b = BrokerProc::start("");
    let (mut r, _) = Raw::connect_v5(b.tcp, connect("acker")).await;
    r.send(raw::publish("nobody/listens", "x", QoS::AtLeastOnce, Some(7))).await;
    match r.recv().await {
        Recv::Packet(v5::Packet::PublishAck(a)) => {
            assert_eq!(a.packet_id.get(), 7);
            assert_eq!(a.reason_code, PublishAckReason::NoMatchingSubscribers);
        }
        other => panic!("expected PUBACK, got {other:?}"),
    }
    assert_eq!(r.subscribe(1, &[("self/t", QoS::AtMostOnce)]).await, vec![v5::SubscribeAckReason::GrantedQos0]);
    r.send(raw::publish("self/t", "y", QoS::ExactlyOnce, Some(8))).await;
    let mut got_rec = false;
    let mut got_pub = false;
    while !(got_rec && got_pub) {
        match r.recv().await {
            Recv::Packet(v5::Packet::PublishReceived(a)) => {
                assert_eq!(a.reason_code, PublishAckReason::Success);
                got_rec = true;
            }
            Recv::Packet(v5::Packet::Publish(p)) => {
                assert_eq!(p.qos, QoS::AtMostOnce, "downgraded to the subscription's QoS");
                got_pub = true;
            }
            other => panic!("{other:?}"),
        }
    }
    r.send(v5::Packet::PublishRelease(rmqtt_codec_ack2(8))).await;
    match r.recv().await {
        Recv::Packet(v5::Packet::PublishComplete(c)) => assert_eq!(c.packet_id.get(), 8),
        other => panic!("expected PUBCOMP, got {other:?}"),
    }
    // A PUBREL for an unknown id gets PUBCOMP 0x92.
    r.send(v5::Packet::PublishRelease(rmqtt_codec_ack2(99))).await;
    match r.recv().await {
        Recv::Packet(v5::Packet::PublishComplete(c)) => {
            assert_eq!(c.reason_code, v5::PublishAck2Reason::PacketIdNotFound)
        }
        other => panic!("expected PUBCOMP 0x92, got {other:?}"),
    }
}

fn rmqtt_codec_ack2(id: u16) -> v5::PublishAck2 {
    v5::PublishAck2 {
        packet_id: pid(id),
        reason_code: v5::PublishAck2Reason::Success,
        properties: vec![],
        reason_string: None,
    }
}

#[tokio::test]
async fn qos2_resent_publish_is_not_delivered_twice() {
    let b = BrokerProc::start("");
    let mut sub = clients::v4(b.tcp, "once", true).await;
    sub.client.subscribe("exactly/once", rumqttc::QoS::ExactlyOnce).await.unwrap();
    settle().await;
    let (mut r, _) = Raw::connect_v5(b.tcp, connect("dup-pub")).await;
    r.send(raw::publish("exactly/once", "1", QoS::ExactlyOnce, Some(5))).await;
    assert!(matches!(r.recv().await, Recv::Packet(v5::Packet::PublishReceived(_))));
    // The same packet id again, with DUP, before PUBREL.
    let mut again = raw::publish("exactly/once", "1", QoS::ExactlyOnce, Some(5));
    if let v5::Packet::Publish(p) = &mut again {
        p.dup = true;
    }
    r.send(again).await;
    assert!(matches!(r.recv().await, Recv::Packet(v5::Packet::PublishReceived(_))));
    r.send(v5::Packet::PublishRelease(rmqtt_codec_ack2(5))).await;
    assert!(matches!(r.recv().await, Recv::Packet(v5::Packet::PublishComplete(_))));
    assert_eq!(&next(&mut sub.rx).await.expect("one copy").payload[..], b"1");
    clients::nothing_for(&mut sub.rx, Duration::from_millis(500)).await;
}

#[tokio::test]
async fn outbound_inflight_window_follows_the_clients_receive_maximum() {
    let b = BrokerProc::start("");
    let mut c = connect("slow");
    c.receive_max = std::num::NonZeroU16::new(2);
    let (mut sub, _) = Raw::connect_v5(b.tcp, c).await;
    sub.subscribe(1, &[("win/#", QoS::AtLeastOnce)]).await;
    let (mut p, _) = Raw::connect_v5(b.tcp, connect("fast")).await;
    for i in 1..=5u16 {
        p.send(raw::publish("win/t", &i.to_string(), QoS::AtLeastOnce, Some(i))).await;
    }
    let first = sub.recv_publish().await;
    let second = sub.recv_publish().await;
    assert!(matches!(sub.recv_within(Duration::from_millis(500)).await, Recv::Timeout), "window of 2 is full");
    sub.send(raw::puback(first.packet_id.unwrap().get())).await;
    let third = sub.recv_publish().await;
    assert_eq!(&third.payload[..], b"3");
    assert!(matches!(sub.recv_within(Duration::from_millis(500)).await, Recv::Timeout));
    sub.send(raw::puback(second.packet_id.unwrap().get())).await;
    sub.send(raw::puback(third.packet_id.unwrap().get())).await;
    assert_eq!(&sub.recv_publish().await.payload[..], b"4");
    assert_eq!(&sub.recv_publish().await.payload[..], b"5");
}

#[tokio::test]
async fn inbound_receive_maximum_is_advertised_and_enforced_with_0x93() {
    let b = BrokerProc::start("[limits]\nreceive_maximum = 3\n");
    let (mut r, ack) = Raw::connect_v5(b.tcp, connect("flood")).await;
    assert_eq!(ack.receive_max.get(), 3);
    // QoS 2 PUBLISHes without PUBREL stay in flight: the fourth exceeds Receive Maximum.
    for i in 1..=4u16 {
        r.send(raw::publish("flood", "x", QoS::ExactlyOnce, Some(i))).await;
    }
    for _ in 0..3 {
        assert!(matches!(r.recv().await, Recv::Packet(v5::Packet::PublishReceived(_))));
    }
    r.expect_disconnect(DisconnectReasonCode::ReceiveMaximumExceeded).await;
}

#[tokio::test]
async fn unacknowledged_messages_are_redelivered_with_dup_on_resume() {
    let b = BrokerProc::start("");
    let mut c = connect("resume");
    c.clean_start = false;
    c.session_expiry_interval_secs = 300;
    let (mut sub, _) = Raw::connect_v5(b.tcp, c.clone()).await;
    sub.subscribe(1, &[("redo/#", QoS::ExactlyOnce)]).await;
    let (mut p, _) = Raw::connect_v5(b.tcp, connect("redo-pub")).await;
    p.send(raw::publish("redo/1", "one", QoS::AtLeastOnce, Some(1))).await;
    p.send(raw::publish("redo/2", "two", QoS::ExactlyOnce, Some(2))).await;
    let m1 = sub.recv_publish().await;
    let m2 = sub.recv_publish().await;
    assert!(!m1.dup && !m2.dup);
    // PUBREC the QoS 2 one, acknowledge nothing else, and drop the connection.
    sub.send(v5::Packet::PublishReceived(raw_ack(m2.packet_id.unwrap().get()))).await;
    assert!(matches!(sub.recv().await, Recv::Packet(v5::Packet::PublishRelease(_))));
    drop(sub);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (mut again, ack) = Raw::connect_v5(b.tcp, c).await;
    assert!(ack.session_present);
    let mut saw_dup_publish = false;
    let mut saw_pubrel = false;
    for _ in 0..2 {
        match again.recv().await {
            Recv::Packet(v5::Packet::Publish(p)) => {
                assert!(p.dup, "redelivery carries DUP");
                assert_eq!(p.packet_id, m1.packet_id);
                assert_eq!(&p.payload[..], b"one");
                saw_dup_publish = true;
            }
            Recv::Packet(v5::Packet::PublishRelease(r)) => {
                assert_eq!(Some(r.packet_id), m2.packet_id);
                saw_pubrel = true;
            }
            other => panic!("{other:?}"),
        }
    }
    assert!(saw_dup_publish && saw_pubrel);
}

fn raw_ack(id: u16) -> v5::PublishAck {
    v5::PublishAck {
        packet_id: pid(id),
        reason_code: PublishAckReason::Success,
        properties: vec![],
        reason_string: None,
    }
}

#[tokio::test]
async fn broker_max_inflight_caps_the_window_below_a_larger_client_receive_maximum() {
    let b = BrokerProc::start("[limits]\nmax_inflight = 2\n");
    let mut c = connect("roomy");
    c.receive_max = std::num::NonZeroU16::new(100);
    let (mut sub, _) = Raw::connect_v5(b.tcp, c).await;
    sub.subscribe(1, &[("cap/#", QoS::AtLeastOnce)]).await;
    let (mut p, _) = Raw::connect_v5(b.tcp, connect("cap-pub")).await;
    for i in 1..=4u16 {
        p.send(raw::publish("cap/t", &i.to_string(), QoS::AtLeastOnce, Some(i))).await;
    }
    let first = sub.recv_publish().await;
    let second = sub.recv_publish().await;
    assert_eq!((&first.payload[..], &second.payload[..]), (&b"1"[..], &b"2"[..]));
    assert!(
        matches!(sub.recv_within(Duration::from_millis(500)).await, Recv::Timeout),
        "limits.max_inflight = 2 holds although the client's Receive Maximum is 100"
    );
    sub.send(raw::puback(first.packet_id.expect("QoS 1 has a packet id").get())).await;
    assert_eq!(&sub.recv_publish().await.payload[..], b"3", "one acknowledged, one more in flight");
    assert!(matches!(sub.recv_within(Duration::from_millis(500)).await, Recv::Timeout), "the window is full again");
}

#[tokio::test]
async fn outbound_packet_ids_are_distinct_nonzero_and_reused_only_after_acknowledgement() {
    // More deliveries than there are packet ids, so ids must be reused; the first one is never
    // acknowledged, so its id must never come back.
    const WINDOW: usize = 64;
    let total: usize = usize::from(u16::MAX) + 2 * WINDOW;
    let b = BrokerProc::start(&format!(
        "[limits]\nmax_inflight = {WINDOW}\nmax_queued_messages = {}\nreceive_maximum = 65535\n",
        total + 10
    ));
    let (mut sub, _) = Raw::connect_v5(b.tcp, connect("ids-sub")).await;
    sub.subscribe(1, &[("ids/t", QoS::AtLeastOnce)]).await;
    // The publisher writes its QoS 1 PUBLISHes in large batches and discards its PUBACKs.
    let addr = b.tcp;
    let feeder = tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut rd, mut wr) = tokio::net::TcpStream::connect(addr).await.expect("connect").into_split();
        // Runs until the broker closes the connection.
        tokio::spawn(async move {
            let mut buf = vec![0u8; 64 * 1024];
            while rd.read(&mut buf).await.is_ok_and(|n| n > 0) {}
        });
        wr.write_all(&raw::encode_v5([v5::Packet::Connect(Box::new(connect("ids-pub")))])).await.expect("CONNECT");
        for batch in (0..total).collect::<Vec<_>>().chunks(1000) {
            let packets = batch.iter().map(|&i| {
                let id = (i % usize::from(u16::MAX)) as u16 + 1;
                raw::publish("ids/t", &i.to_string(), QoS::AtLeastOnce, Some(id))
            });
            wr.write_all(&raw::encode_v5(packets)).await.expect("PUBLISHes");
        }
    });

    let mut unacked = std::collections::BTreeSet::new();
    let mut acked_once = std::collections::HashSet::new();
    let mut reused = 0usize;
    let first = sub.recv_publish().await;
    assert_eq!(&first.payload[..], b"0");
    let held = first.packet_id.expect("QoS 1 has a packet id").get();
    unacked.insert(held);
    for n in 1..total {
        let m = sub.recv_publish().await;
        let id = m.packet_id.expect("QoS 1 has a packet id").get();
        assert_eq!(&m.payload[..], n.to_string().as_bytes(), "delivered in order");
        assert!(!m.dup);
        assert_ne!(id, held, "id {held} came back while its message was still unacknowledged (delivery {n})");
        assert!(unacked.insert(id), "id {id} given to two messages in flight at once (delivery {n})");
        if !acked_once.insert(id) {
            reused += 1;
        }
        // Acknowledge whole windows at once (one write), so a full window of ids is in flight together.
        if unacked.len() == WINDOW || n == total - 1 {
            let acks = std::mem::take(&mut unacked).into_iter().filter(|&id| id != held).map(raw::puback);
            sub.send_bytes(&raw::encode_v5(acks)).await;
            unacked.insert(held);
        }
    }
    assert!(reused >= WINDOW, "ids are reused once acknowledged (reused {reused})");
    assert_eq!(acked_once.len(), usize::from(u16::MAX) - 1, "every id but 0 and the held one was used");
    feeder.await.expect("publisher task");
}
