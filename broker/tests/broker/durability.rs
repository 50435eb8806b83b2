//! Keeping data: retained messages and persistent sessions survive a graceful restart, and a
//! QoS 1 message acknowledged to its publisher survives `kill -9`. Graceful shutdown tells
//! MQTT 5 clients 0x8B. In-flight QoS 1/2 state survives a restart; QoS 2 survives `kill -9` too.

use std::collections::BTreeSet;
use std::time::Duration;

use rmqtt_codec::types::QoS;
use rmqtt_codec::v5::{self, DisconnectReasonCode};

use crate::clients::{self, next, settle, v5c};
use crate::harness::BrokerProc;
use crate::raw::{self, Raw, Recv, connect};

fn persistent(id: &str) -> v5::Connect {
    let mut c = connect(id);
    c.clean_start = false;
    c.session_expiry_interval_secs = 3600;
    c
}

#[tokio::test]
async fn retained_messages_and_persistent_sessions_survive_a_restart() {
    let mut b = BrokerProc::start("");
    let (mut s, _) = Raw::connect_v5(b.tcp, persistent("durable")).await;
    s.subscribe(1, &[("dur/#", QoS::AtLeastOnce), ("$share/g/grp/#", QoS::AtLeastOnce)]).await;
    drop(s);
    settle().await;
    let (mut p, _) = Raw::connect_v5(b.tcp, connect("dur-pub")).await;
    let mut retained = raw::publish("dur/state", "on", QoS::AtLeastOnce, Some(1));
    if let v5::Packet::Publish(pp) = &mut retained {
        pp.retain = true;
    }
    p.send(retained).await;
    p.send(raw::publish("dur/queued", "while away", QoS::AtLeastOnce, Some(2))).await;
    for _ in 0..2 {
        assert!(matches!(p.recv().await, Recv::Packet(v5::Packet::PublishAck(_))));
    }
    assert!(b.terminate(), "graceful exit");
    b.restart();

    let (mut s, ack) = Raw::connect_v5(b.tcp, persistent("durable")).await;
    assert!(ack.session_present, "session restored from the store");
    let mut got = BTreeSet::new();
    for _ in 0..2 {
        let m = s.recv_publish().await;
        got.insert(String::from_utf8_lossy(&m.payload).to_string());
        s.send(raw::puback(m.packet_id.unwrap().get())).await;
    }
    assert_eq!(got, BTreeSet::from(["on".to_string(), "while away".to_string()]));
    // The subscriptions were restored too (plain and shared).
    let (mut p, _) = Raw::connect_v5(b.tcp, connect("dur-pub2")).await;
    p.send(raw::publish("grp/1", "shared", QoS::AtLeastOnce, Some(3))).await;
    assert_eq!(&s.recv_publish().await.payload[..], b"shared");
    // And a new subscriber gets the retained message.
    let mut fresh = clients::v5(b.tcp, "fresh", |_| {}).await;
    fresh.client.subscribe("dur/state", v5c::QoS::AtMostOnce).await.unwrap();
    assert_eq!(&next(&mut fresh.rx).await.expect("retained after restart").payload[..], b"on");
}

#[tokio::test]
async fn acknowledged_qos1_messages_survive_kill_9() {
    let mut b = BrokerProc::start("");
    let (mut s, _) = Raw::connect_v5(b.tcp, persistent("survivor")).await;
    s.subscribe(1, &[("k9/#", QoS::AtLeastOnce)]).await;
    drop(s);
    settle().await;
    // Publish a stream and collect the acknowledged ones; kill -9 while it runs.
    // The publisher keeps a window of 50 unacknowledged messages (within the broker's Receive Maximum).
    let (mut p, _) = Raw::connect_v5(b.tcp, connect("k9-pub")).await;
    let total = 400u16;
    let window = 50u16;
    for i in 1..=window {
        p.send(raw::publish("k9/t", &i.to_string(), QoS::AtLeastOnce, Some(i))).await;
    }
    let mut next_id = window + 1;
    let mut acked = BTreeSet::new();
    while acked.len() < 200 {
        match p.recv().await {
            Recv::Packet(v5::Packet::PublishAck(a)) => {
                acked.insert(a.packet_id.get());
                if next_id <= total {
                    p.send(raw::publish("k9/t", &next_id.to_string(), QoS::AtLeastOnce, Some(next_id))).await;
                    next_id += 1;
                }
            }
            other => panic!("expected PUBACKs, got {other:?}"),
        }
    }
    b.kill9();
    // Whatever else was acknowledged before the kill counts too.
    while let Recv::Packet(v5::Packet::PublishAck(a)) = p.recv_within(Duration::from_millis(200)).await {
        acked.insert(a.packet_id.get());
    }
    b.restart();
    let (mut s, ack) = Raw::connect_v5(b.tcp, persistent("survivor")).await;
    assert!(ack.session_present);
    let mut received = BTreeSet::new();
    loop {
        match s.recv_within(Duration::from_secs(2)).await {
            Recv::Packet(v5::Packet::Publish(m)) => {
                received.insert(String::from_utf8_lossy(&m.payload).parse::<u16>().unwrap());
                s.send(raw::puback(m.packet_id.unwrap().get())).await;
            }
            Recv::Timeout => break,
            other => panic!("{other:?}"),
        }
    }
    let lost: Vec<u16> = acked.difference(&received).copied().collect();
    assert!(lost.is_empty(), "{} acknowledged messages lost after kill -9: {lost:?}", lost.len());
}

#[tokio::test]
async fn sigterm_disconnects_clients_with_server_shutting_down() {
    let mut b = BrokerProc::start("");
    let (mut r, _) = Raw::connect_v5(b.tcp, connect("bystander")).await;
    let pid = b.pid();
    let _ = std::process::Command::new("kill").arg("-TERM").arg(pid.to_string()).status();
    r.expect_disconnect(DisconnectReasonCode::ServerShuttingDown).await;
    assert!(b.terminate(), "exit status 0 after SIGTERM");
    assert!(b.log().contains("stopped"));
}

fn pubrec(id: u16) -> v5::Packet {
    v5::Packet::PublishReceived(v5::PublishAck {
        packet_id: raw::pid(id),
        reason_code: v5::PublishAckReason::Success,
        properties: vec![],
        reason_string: None,
    })
}

/// A persistent subscriber to `topic` at QoS 2 that then receives `warmup` acknowledged messages,
/// so the packet ids of what follows do not start at 1.
async fn subscriber_with_used_packet_ids(b: &BrokerProc, id: &str, topic: &str, warmup: u16) -> (Raw, Raw) {
    let (mut s, _) = Raw::connect_v5(b.tcp, persistent(id)).await;
    s.subscribe(1, &[(topic, QoS::ExactlyOnce)]).await;
    let (mut p, _) = Raw::connect_v5(b.tcp, connect(&format!("{id}-pub"))).await;
    for i in 1..=warmup {
        p.send(raw::publish(topic, "warmup", QoS::AtLeastOnce, Some(i))).await;
        let m = s.recv_publish().await;
        s.send(raw::puback(m.packet_id.expect("packet id").get())).await;
    }
    (s, p)
}

#[tokio::test]
async fn unacknowledged_qos1_and_qos2_publishes_come_again_with_dup_and_their_ids_after_a_restart() {
    let mut b = BrokerProc::start("");
    let (mut s, mut p) = subscriber_with_used_packet_ids(&b, "inflight-keeper", "infl/t", 3).await;
    p.send(raw::publish("infl/t", "one", QoS::AtLeastOnce, Some(10))).await;
    p.send(raw::publish("infl/t", "two", QoS::ExactlyOnce, Some(11))).await;
    let m1 = s.recv_publish().await;
    let m2 = s.recv_publish().await;
    assert_eq!((&m1.payload[..], m1.qos, m1.dup), (&b"one"[..], QoS::AtLeastOnce, false));
    assert_eq!((&m2.payload[..], m2.qos, m2.dup), (&b"two"[..], QoS::ExactlyOnce, false));
    // Neither is acknowledged; the broker restarts gracefully.
    drop(s);
    drop(p);
    settle().await;
    assert!(b.terminate(), "graceful exit");
    b.restart();

    let (mut s, ack) = Raw::connect_v5(b.tcp, persistent("inflight-keeper")).await;
    assert!(ack.session_present, "session restored from the store");
    let again1 = s.recv_publish().await;
    let again2 = s.recv_publish().await;
    for (orig, again) in [(&m1, &again1), (&m2, &again2)] {
        assert_eq!(again.payload, orig.payload);
        assert_eq!(again.qos, orig.qos);
        assert!(again.dup, "a redelivered PUBLISH carries DUP: {again:?}");
        assert_eq!(again.packet_id, orig.packet_id, "redelivered with its original packet id");
    }
    assert!(matches!(s.recv_within(Duration::from_millis(500)).await, Recv::Timeout), "each once");
}

#[tokio::test]
async fn pubrel_is_sent_again_after_a_restart_when_pubcomp_was_missing() {
    let mut b = BrokerProc::start("");
    let (mut s, mut p) = subscriber_with_used_packet_ids(&b, "release-keeper", "rel/t", 2).await;
    p.send(raw::publish("rel/t", "exactly", QoS::ExactlyOnce, Some(10))).await;
    let m = s.recv_publish().await;
    let id = m.packet_id.expect("QoS 2 has a packet id").get();
    s.send(pubrec(id)).await;
    match s.recv().await {
        Recv::Packet(v5::Packet::PublishRelease(r)) => assert_eq!(r.packet_id.get(), id),
        other => panic!("expected PUBREL, got {other:?}"),
    }
    // No PUBCOMP; the broker restarts gracefully.
    drop(s);
    drop(p);
    settle().await;
    assert!(b.terminate(), "graceful exit");
    b.restart();

    let (mut s, ack) = Raw::connect_v5(b.tcp, persistent("release-keeper")).await;
    assert!(ack.session_present);
    match s.recv().await {
        Recv::Packet(v5::Packet::PublishRelease(r)) => assert_eq!(r.packet_id.get(), id, "PUBREL for the same id"),
        other => panic!("expected PUBREL again after the restart, got {other:?}"),
    }
    assert!(matches!(s.recv_within(Duration::from_millis(500)).await, Recv::Timeout), "not the PUBLISH again");
    // PUBCOMP ends the exchange for good: nothing comes after another restart.
    s.send(v5::Packet::PublishComplete(v5::PublishAck2 {
        packet_id: raw::pid(id),
        reason_code: v5::PublishAck2Reason::Success,
        properties: vec![],
        reason_string: None,
    }))
    .await;
    settle().await;
    drop(s);
    assert!(b.terminate(), "graceful exit");
    b.restart();
    let (mut s, ack) = Raw::connect_v5(b.tcp, persistent("release-keeper")).await;
    assert!(ack.session_present);
    assert!(matches!(s.recv_within(Duration::from_millis(500)).await, Recv::Timeout), "nothing left in flight");
}

#[tokio::test]
async fn qos2_message_pubreced_to_its_publisher_survives_kill_9() {
    let mut b = BrokerProc::start("");
    let (mut s, _) = Raw::connect_v5(b.tcp, persistent("k9-qos2")).await;
    s.subscribe(1, &[("k9q2/#", QoS::ExactlyOnce)]).await;
    drop(s);
    settle().await;
    let (mut p, _) = Raw::connect_v5(b.tcp, connect("k9-qos2-pub")).await;
    let total = 20u16;
    for i in 1..=total {
        p.send(raw::publish("k9q2/t", &i.to_string(), QoS::ExactlyOnce, Some(i))).await;
    }
    let mut recs = BTreeSet::new();
    while recs.len() < usize::from(total) {
        match p.recv().await {
            Recv::Packet(v5::Packet::PublishReceived(a)) => {
                assert_eq!(a.reason_code, v5::PublishAckReason::Success);
                recs.insert(a.packet_id.get());
            }
            other => panic!("expected PUBRECs, got {other:?}"),
        }
    }
    // Killed right after the last PUBREC, before any PUBREL.
    b.kill9();
    b.restart();
    let (mut s, ack) = Raw::connect_v5(b.tcp, persistent("k9-qos2")).await;
    assert!(ack.session_present);
    let mut received = BTreeSet::new();
    loop {
        match s.recv_within(Duration::from_secs(2)).await {
            Recv::Packet(v5::Packet::Publish(m)) => {
                assert_eq!(m.qos, QoS::ExactlyOnce);
                received.insert(String::from_utf8_lossy(&m.payload).parse::<u16>().expect("numeric payload"));
                s.send(pubrec(m.packet_id.expect("packet id").get())).await;
            }
            Recv::Packet(v5::Packet::PublishRelease(_)) => {}
            Recv::Timeout => break,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(received, recs, "every QoS 2 message the broker PUBREC'd reached the subscriber after kill -9");
}
