//! A byte-level MQTT client for tests that must see exact packets and reason codes: it sends
//! what it is told (including garbage) and decodes what the broker answers.

use std::net::SocketAddr;
use std::num::NonZeroU16;
use std::time::Duration;

use bytes::BytesMut;
use rmqtt_codec::types::{Publish, QoS};
use rmqtt_codec::v5::{self, DisconnectReasonCode};
use rmqtt_codec::{MqttCodec, MqttPacket, v3};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::codec::{Decoder, Encoder};

pub struct Raw {
    stream: TcpStream,
    codec: MqttCodec,
    buf: BytesMut,
}

#[derive(Debug)]
pub enum Recv {
    Packet(v5::Packet),
    V3(v3::Packet),
    Closed,
    Timeout,
}

pub fn pid(n: u16) -> NonZeroU16 {
    NonZeroU16::new(n).expect("non-zero packet id")
}

pub fn connect(client_id: &str) -> v5::Connect {
    v5::Connect {
        clean_start: true,
        keep_alive: 60,
        session_expiry_interval_secs: 0,
        auth_method: None,
        auth_data: None,
        request_problem_info: true,
        request_response_info: false,
        receive_max: None,
        topic_alias_max: 0,
        user_properties: Vec::new(),
        max_packet_size: None,
        last_will: None,
        client_id: client_id.into(),
        username: None,
        password: None,
        cert: None,
    }
}

pub fn publish(topic: &str, payload: &str, qos: QoS, packet_id: Option<u16>) -> v5::Packet {
    v5::Packet::Publish(Box::new(Publish {
        dup: false,
        retain: false,
        qos,
        topic: topic.into(),
        packet_id: packet_id.map(pid),
        payload: bytes::Bytes::copy_from_slice(payload.as_bytes()),
        properties: Some(Default::default()),
    }))
}

pub fn subscribe(packet_id: u16, filters: &[(&str, QoS)]) -> v5::Packet {
    v5::Packet::Subscribe(v5::Subscribe {
        packet_id: pid(packet_id),
        id: None,
        user_properties: Vec::new(),
        topic_filters: filters
            .iter()
            .map(|(f, q)| ((*f).into(), v5::SubscriptionOptions { qos: *q, ..Default::default() }))
            .collect(),
    })
}

/// The bytes of MQTT 5 packets, for tests that write many packets with one write.
pub fn encode_v5(packets: impl IntoIterator<Item = v5::Packet>) -> BytesMut {
    let mut codec = MqttCodec::V5(v5::Codec::new(0, 0));
    let mut out = BytesMut::new();
    for p in packets {
        codec.encode(MqttPacket::V5(p), &mut out).expect("encode");
    }
    out
}

pub fn puback(packet_id: u16) -> v5::Packet {
    v5::Packet::PublishAck(v5::PublishAck {
        packet_id: pid(packet_id),
        reason_code: v5::PublishAckReason::Success,
        properties: Vec::new(),
        reason_string: None,
    })
}

impl Raw {
    pub async fn open(addr: SocketAddr, v5: bool) -> Raw {
        let stream = TcpStream::connect(addr).await.expect("connect to broker");
        let codec = if v5 { MqttCodec::V5(v5::Codec::new(0, 0)) } else { MqttCodec::V3(v3::Codec::new(0)) };
        Raw { stream, codec, buf: BytesMut::new() }
    }

    /// Opens a v5 connection and returns the CONNACK.
    pub async fn connect_v5(addr: SocketAddr, c: v5::Connect) -> (Raw, v5::ConnectAck) {
        let mut r = Raw::open(addr, true).await;
        r.send(v5::Packet::Connect(Box::new(c))).await;
        match r.recv().await {
            Recv::Packet(v5::Packet::ConnectAck(a)) => (r, *a),
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    /// This end of the connection: the address the broker sees as the client's.
    pub fn local_addr(&self) -> SocketAddr {
        self.stream.local_addr().expect("local address")
    }

    /// Opens an MQTT 3.1.1 connection and expects CONNACK 0 (Connection Accepted).
    pub async fn connect_v3(addr: SocketAddr, client_id: &str, clean_session: bool) -> Raw {
        let mut r = Raw::open(addr, false).await;
        r.send_v3(v3::Packet::Connect(Box::new(v3::Connect {
            protocol: rmqtt_codec::types::Protocol(4),
            clean_session,
            keep_alive: 60,
            last_will: None,
            client_id: client_id.into(),
            username: None,
            password: None,
            cert: None,
        })))
        .await;
        match r.recv().await {
            Recv::V3(v3::Packet::ConnectAck(a)) => {
                assert_eq!(a.return_code, v3::ConnectAckReason::ConnectionAccepted)
            }
            other => panic!("expected CONNACK, got {other:?}"),
        }
        r
    }

    pub async fn send(&mut self, p: v5::Packet) {
        let mut out = BytesMut::new();
        let item = match &self.codec {
            MqttCodec::V5(_) => MqttPacket::V5(p),
            _ => panic!("send() is for v5 connections; use send_v3"),
        };
        self.codec.encode(item, &mut out).expect("encode");
        self.send_bytes(&out).await;
    }

    pub async fn send_v3(&mut self, p: v3::Packet) {
        let mut out = BytesMut::new();
        self.codec.encode(MqttPacket::V3(p), &mut out).expect("encode");
        self.send_bytes(&out).await;
    }

    pub async fn send_bytes(&mut self, b: &[u8]) {
        let _ = self.stream.write_all(b).await;
    }

    pub async fn recv(&mut self) -> Recv {
        self.recv_within(Duration::from_secs(5)).await
    }

    pub async fn recv_within(&mut self, timeout: Duration) -> Recv {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            match self.codec.decode(&mut self.buf) {
                Ok(Some((MqttPacket::V5(p), _))) => return Recv::Packet(p),
                Ok(Some((MqttPacket::V3(p), _))) => return Recv::V3(p),
                Ok(Some(_)) => {}
                Ok(None) => {}
                Err(e) => panic!("broker sent an undecodable packet: {e:?}"),
            }
            let mut chunk = [0u8; 8192];
            match tokio::time::timeout_at(deadline, self.stream.read(&mut chunk)).await {
                Err(_) => return Recv::Timeout,
                Ok(Ok(0)) | Ok(Err(_)) => return Recv::Closed,
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
    }

    /// Next packet that is not a PUBLISH... or the PUBLISH itself: waits for one PUBLISH.
    pub async fn recv_publish(&mut self) -> Box<Publish> {
        loop {
            match self.recv().await {
                Recv::Packet(v5::Packet::Publish(p)) => return p,
                Recv::V3(v3::Packet::Publish(p)) => return p,
                Recv::Packet(_) | Recv::V3(_) => continue,
                other => panic!("expected PUBLISH, got {other:?}"),
            }
        }
    }

    /// Expects a DISCONNECT with `reason` and then the connection closed.
    pub async fn expect_disconnect(&mut self, reason: DisconnectReasonCode) {
        loop {
            match self.recv().await {
                Recv::Packet(v5::Packet::Disconnect(d)) => {
                    assert_eq!(d.reason_code, reason, "DISCONNECT reason ({:?})", d.reason_string);
                    assert!(matches!(self.recv().await, Recv::Closed), "connection should close after DISCONNECT");
                    return;
                }
                Recv::Packet(_) => continue,
                other => panic!("expected DISCONNECT {reason:?}, got {other:?}"),
            }
        }
    }

    /// Expects the connection to be closed without a DISCONNECT (MQTT 3.1.1 behaviour).
    pub async fn expect_closed(&mut self) {
        loop {
            match self.recv().await {
                Recv::Closed => return,
                Recv::V3(v3::Packet::Publish(_)) => continue,
                other => panic!("expected the connection to close, got {other:?}"),
            }
        }
    }

    /// Sends SUBSCRIBE and returns the SUBACK reason codes.
    pub async fn subscribe(&mut self, packet_id: u16, filters: &[(&str, QoS)]) -> Vec<v5::SubscribeAckReason> {
        self.send(subscribe(packet_id, filters)).await;
        loop {
            match self.recv().await {
                Recv::Packet(v5::Packet::SubscribeAck(a)) => return a.status,
                Recv::Packet(v5::Packet::Publish(_)) => continue,
                other => panic!("expected SUBACK, got {other:?}"),
            }
        }
    }
}
