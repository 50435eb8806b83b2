//! CONNECT: protocol checks, client identifiers, authentication, keep-alive, Server Keep Alive
//! and session takeover.

use std::time::{Duration, Instant};

use rmqtt_codec::types::QoS;
use rmqtt_codec::v5::{ConnectAckReason, DisconnectReasonCode};
use rmqtt_codec::{types::Protocol, v3};

use crate::harness::BrokerProc;
use crate::raw::{self, Raw, Recv, connect};

#[tokio::test]
async fn unsupported_protocol_level_is_refused_with_connack_0x01() {
    let b = BrokerProc::start("");
    let mut r = Raw::open(b.tcp, false).await;
    // CONNECT with protocol name MQTT and level 6.
    r.send_bytes(&[0x10, 0x0d, 0, 4, b'M', b'Q', b'T', b'T', 6, 2, 0, 60, 0, 1, b'x']).await;
    match r.recv().await {
        Recv::V3(v3::Packet::ConnectAck(a)) => {
            assert_eq!(a.return_code, v3::ConnectAckReason::UnacceptableProtocolVersion)
        }
        other => panic!("expected CONNACK 0x01, got {other:?}"),
    }
    assert!(matches!(r.recv().await, Recv::Closed));
    // A wrong protocol name is refused too and the broker keeps serving.
    let mut bad = Raw::open(b.tcp, false).await;
    bad.send_bytes(&[0x10, 0x0d, 0, 4, b'M', b'Q', b'X', b'X', 4, 2, 0, 60, 0, 1, b'x']).await;
    assert!(matches!(bad.recv().await, Recv::V3(v3::Packet::ConnectAck(_)) | Recv::Closed));
    let (_ok, ack) = Raw::connect_v5(b.tcp, connect("after")).await;
    assert_eq!(ack.reason_code, ConnectAckReason::Success);
}

#[tokio::test]
async fn empty_client_id_with_clean_start_gets_an_assigned_identifier() {
    let b = BrokerProc::start("");
    let (_r, ack) = Raw::connect_v5(b.tcp, connect("")).await;
    assert_eq!(ack.reason_code, ConnectAckReason::Success);
    let id = ack.assigned_client_id.expect("Assigned Client Identifier");
    assert!(id.starts_with("starling-") && id.len() > 9, "{id}");
}

#[tokio::test]
async fn empty_client_id_without_clean_start_is_rejected() {
    let b = BrokerProc::start("");
    let mut c = connect("");
    c.clean_start = false;
    let (_r, ack) = Raw::connect_v5(b.tcp, c).await;
    assert_eq!(ack.reason_code, ConnectAckReason::ClientIdentifierNotValid);

    // 3.1.1: identifier rejected (0x02).
    let mut r = Raw::open(b.tcp, false).await;
    r.send_bytes(&[0x10, 0x0c, 0, 4, b'M', b'Q', b'T', b'T', 4, 0, 0, 60, 0, 0]).await;
    match r.recv().await {
        Recv::V3(v3::Packet::ConnectAck(a)) => assert_eq!(a.return_code, v3::ConnectAckReason::IdentifierRejected),
        other => panic!("expected CONNACK 0x02, got {other:?}"),
    }
}

#[tokio::test]
async fn client_id_longer_than_the_limit_is_rejected() {
    let b = BrokerProc::start("[limits]\nmax_client_id_len = 32\n");
    let (_r, ack) = Raw::connect_v5(b.tcp, connect(&"x".repeat(33))).await;
    assert_eq!(ack.reason_code, ConnectAckReason::ClientIdentifierNotValid);
}

fn users_file(dir: &std::path::Path) -> std::path::PathBuf {
    let hash = std::process::Command::new(env!("CARGO_BIN_EXE_starling-broker"))
        .args(["hash-password", "s3cret"])
        .output()
        .expect("hash-password");
    let hash = String::from_utf8(hash.stdout).unwrap().trim().to_string();
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    let path = dir.join("users.toml");
    std::fs::write(&path, format!("[[users]]\nusername = \"alice\"\npassword_hash = '{hash}'\n")).unwrap();
    path
}

#[tokio::test]
async fn credentials_file_accepts_the_right_password_and_refuses_others() {
    let dir = tempfile::tempdir().unwrap();
    let users = users_file(dir.path());
    let b =
        BrokerProc::start(&format!("[auth]\nallow_anonymous = false\ncredentials_file = \"{}\"\n", users.display()));
    let login = |user: &str, pass: &str| {
        let mut c = connect("auth");
        c.username = Some(user.into());
        c.password = Some(bytes::Bytes::copy_from_slice(pass.as_bytes()));
        c
    };
    assert_eq!(Raw::connect_v5(b.tcp, login("alice", "s3cret")).await.1.reason_code, ConnectAckReason::Success);
    assert_eq!(
        Raw::connect_v5(b.tcp, login("alice", "wrong")).await.1.reason_code,
        ConnectAckReason::BadUserNameOrPassword
    );
    assert_eq!(
        Raw::connect_v5(b.tcp, login("mallory", "s3cret")).await.1.reason_code,
        ConnectAckReason::BadUserNameOrPassword
    );
    assert_eq!(Raw::connect_v5(b.tcp, connect("anon")).await.1.reason_code, ConnectAckReason::NotAuthorized);

    // 3.1.1 return codes: 0x04 bad user name or password, 0x05 not authorized.
    let mut r = Raw::open(b.tcp, false).await;
    r.send_v3(v3::Packet::Connect(Box::new(v3::Connect {
        protocol: Protocol(4),
        clean_session: true,
        keep_alive: 30,
        last_will: None,
        client_id: "v3".into(),
        username: Some("alice".into()),
        password: Some(bytes::Bytes::from_static(b"nope")),
        cert: None,
    })))
    .await;
    match r.recv().await {
        Recv::V3(v3::Packet::ConnectAck(a)) => assert_eq!(a.return_code, v3::ConnectAckReason::BadUserNameOrPassword),
        other => panic!("{other:?}"),
    }
    // mosquitto_pub with the right credentials works.
    let out = std::process::Command::new("mosquitto_pub")
        .args(["-h", "127.0.0.1", "-p", &b.tcp.port().to_string(), "-t", "a", "-m", "x", "-u", "alice", "-P", "s3cret"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::test]
async fn keep_alive_is_enforced_at_one_and_a_half_times_the_interval() {
    let b = BrokerProc::start("");
    let mut c = connect("sleepy");
    c.keep_alive = 2;
    let (mut r, _) = Raw::connect_v5(b.tcp, c).await;
    let start = Instant::now();
    match r.recv_within(Duration::from_secs(10)).await {
        Recv::Packet(rmqtt_codec::v5::Packet::Disconnect(d)) => {
            assert_eq!(d.reason_code, DisconnectReasonCode::KeepAliveTimeout)
        }
        other => panic!("expected DISCONNECT 0x8D, got {other:?}"),
    }
    let waited = start.elapsed();
    assert!(waited >= Duration::from_millis(2900), "closed after {waited:?}, before 1.5 x 2 s");

    // A client that pings in time stays connected.
    let mut c = connect("awake");
    c.keep_alive = 1;
    let (mut r, _) = Raw::connect_v5(b.tcp, c).await;
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        r.send(rmqtt_codec::v5::Packet::PingRequest).await;
        assert!(matches!(r.recv().await, Recv::Packet(rmqtt_codec::v5::Packet::PingResponse)));
    }
}

#[tokio::test]
async fn server_keep_alive_is_returned_when_the_broker_caps_keep_alive() {
    let b = BrokerProc::start("[limits]\nmax_keepalive = 20\n");
    let mut c = connect("ka");
    c.keep_alive = 600;
    let (_r, ack) = Raw::connect_v5(b.tcp, c).await;
    assert_eq!(ack.server_keepalive_sec, Some(20));
    let mut c = connect("ka2");
    c.keep_alive = 15;
    let (_r, ack) = Raw::connect_v5(b.tcp, c).await;
    assert_eq!(ack.server_keepalive_sec, None, "15 s is within the cap");
}

#[tokio::test]
async fn session_takeover_closes_the_old_connection_with_0x8e() {
    let b = BrokerProc::start("");
    let mut c = connect("twin");
    c.clean_start = false;
    c.session_expiry_interval_secs = 60;
    let (mut old, _) = Raw::connect_v5(b.tcp, c.clone()).await;
    assert_eq!(old.subscribe(1, &[("take/#", QoS::AtLeastOnce)]).await.len(), 1);
    let (mut new, ack) = Raw::connect_v5(b.tcp, c).await;
    assert!(ack.session_present, "the session moves to the new connection");
    old.expect_disconnect(DisconnectReasonCode::SessionTakenOver).await;
    // The subscription came along.
    let (mut p, _) = Raw::connect_v5(b.tcp, connect("pub")).await;
    p.send(raw::publish("take/1", "hi", QoS::AtLeastOnce, Some(1))).await;
    assert_eq!(&new.recv_publish().await.payload[..], b"hi");
}

#[tokio::test]
async fn keep_alive_zero_or_above_the_cap_gets_server_keep_alive_of_the_cap() {
    let b = BrokerProc::start("[limits]\nmax_keepalive = 20\n");
    // Keep alive 0 asks for no keep-alive at all: the broker caps it at 20 s as well.
    let mut c = connect("ka-zero");
    c.keep_alive = 0;
    let (_r, ack) = Raw::connect_v5(b.tcp, c).await;
    assert_eq!(ack.reason_code, ConnectAckReason::Success);
    assert_eq!(ack.server_keepalive_sec, Some(20), "Server Keep Alive for a keep-alive of 0");
    let mut c = connect("ka-max");
    c.keep_alive = u16::MAX;
    let (_r, ack) = Raw::connect_v5(b.tcp, c).await;
    assert_eq!(ack.server_keepalive_sec, Some(20), "Server Keep Alive for a keep-alive of 65535");
    let mut c = connect("ka-equal");
    c.keep_alive = 20;
    let (_r, ack) = Raw::connect_v5(b.tcp, c).await;
    assert_eq!(ack.server_keepalive_sec, None, "exactly the cap is granted as asked");
}
