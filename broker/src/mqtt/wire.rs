//! The wire: one MQTT 5 packet model inside the broker, converted to and from MQTT 3.1.1 at
//! the edge, and the writer that encodes packets for the connection's protocol version.

use bytes::BytesMut;
use rmqtt_codec::types::QoS;
use rmqtt_codec::v3;
use rmqtt_codec::v5::{self, ConnectAckReason, SubscribeAckReason, SubscriptionOptions};
use rmqtt_codec::{MqttCodec, MqttPacket};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio_util::codec::Encoder;

/// MQTT 3.1 / 3.1.1 packets as MQTT 5 ones (no properties, defaults for the v5-only fields).
pub fn v3_to_v5(p: v3::Packet) -> v5::Packet {
    use v5::Packet as P;
    match p {
        v3::Packet::Connect(c) => P::Connect(Box::new(v5::Connect {
            clean_start: c.clean_session,
            keep_alive: c.keep_alive,
            session_expiry_interval_secs: if c.clean_session { 0 } else { u32::MAX },
            auth_method: None,
            auth_data: None,
            request_problem_info: true,
            request_response_info: false,
            receive_max: None,
            topic_alias_max: 0,
            user_properties: Vec::new(),
            max_packet_size: None,
            last_will: c.last_will.map(|w| v5::LastWill {
                qos: w.qos,
                retain: w.retain,
                topic: w.topic,
                message: w.message,
                will_delay_interval_sec: None,
                correlation_data: None,
                message_expiry_interval: None,
                content_type: None,
                user_properties: Vec::new(),
                is_utf8_payload: None,
                response_topic: None,
            }),
            client_id: c.client_id,
            username: c.username,
            password: c.password,
            cert: c.cert,
        })),
        v3::Packet::ConnectAck(a) => {
            P::ConnectAck(Box::new(v5::ConnectAck { session_present: a.session_present, ..Default::default() }))
        }
        v3::Packet::Publish(p) => P::Publish(p),
        v3::Packet::PublishAck { packet_id } => P::PublishAck(ack(packet_id)),
        v3::Packet::PublishReceived { packet_id } => P::PublishReceived(ack(packet_id)),
        v3::Packet::PublishRelease { packet_id } => P::PublishRelease(ack2(packet_id)),
        v3::Packet::PublishComplete { packet_id } => P::PublishComplete(ack2(packet_id)),
        v3::Packet::Subscribe { packet_id, topic_filters } => P::Subscribe(v5::Subscribe {
            packet_id,
            id: None,
            user_properties: Vec::new(),
            topic_filters: topic_filters
                .into_iter()
                .map(|(f, qos)| (f, SubscriptionOptions { qos, ..Default::default() }))
                .collect(),
        }),
        v3::Packet::SubscribeAck { packet_id, .. } => P::SubscribeAck(v5::SubscribeAck {
            packet_id,
            properties: Vec::new(),
            reason_string: None,
            status: Vec::new(),
        }),
        v3::Packet::Unsubscribe { packet_id, topic_filters } => {
            P::Unsubscribe(v5::Unsubscribe { packet_id, user_properties: Vec::new(), topic_filters })
        }
        v3::Packet::UnsubscribeAck { packet_id } => P::UnsubscribeAck(v5::UnsubscribeAck {
            packet_id,
            properties: Vec::new(),
            reason_string: None,
            status: Vec::new(),
        }),
        v3::Packet::PingRequest => P::PingRequest,
        v3::Packet::PingResponse => P::PingResponse,
        v3::Packet::Disconnect => P::Disconnect(disconnect(v5::DisconnectReasonCode::NormalDisconnection)),
    }
}

pub fn ack(packet_id: std::num::NonZeroU16) -> v5::PublishAck {
    v5::PublishAck {
        packet_id,
        reason_code: v5::PublishAckReason::Success,
        properties: Vec::new(),
        reason_string: None,
    }
}

pub fn ack2(packet_id: std::num::NonZeroU16) -> v5::PublishAck2 {
    v5::PublishAck2 {
        packet_id,
        reason_code: v5::PublishAck2Reason::Success,
        properties: Vec::new(),
        reason_string: None,
    }
}

pub fn disconnect(reason_code: v5::DisconnectReasonCode) -> v5::Disconnect {
    v5::Disconnect {
        reason_code,
        session_expiry_interval_secs: None,
        server_reference: None,
        reason_string: None,
        user_properties: Vec::new(),
    }
}

/// The MQTT 3.1.1 form of a packet the broker sends; `None` where 3.1.1 has no such packet
/// (a server-side DISCONNECT: the connection is simply closed).
pub fn v5_to_v3(p: v5::Packet) -> Option<v3::Packet> {
    use v5::Packet as P;
    Some(match p {
        P::ConnectAck(a) => v3::Packet::ConnectAck(v3::ConnectAck {
            session_present: a.session_present,
            return_code: connack_v3(a.reason_code),
        }),
        P::Publish(mut p) => {
            p.properties = None;
            v3::Packet::Publish(p)
        }
        P::PublishAck(a) => v3::Packet::PublishAck { packet_id: a.packet_id },
        P::PublishReceived(a) => v3::Packet::PublishReceived { packet_id: a.packet_id },
        P::PublishRelease(a) => v3::Packet::PublishRelease { packet_id: a.packet_id },
        P::PublishComplete(a) => v3::Packet::PublishComplete { packet_id: a.packet_id },
        P::SubscribeAck(a) => v3::Packet::SubscribeAck {
            packet_id: a.packet_id,
            status: a
                .status
                .into_iter()
                .map(|s| match s {
                    SubscribeAckReason::GrantedQos0 => v3::SubscribeReturnCode::Success(QoS::AtMostOnce),
                    SubscribeAckReason::GrantedQos1 => v3::SubscribeReturnCode::Success(QoS::AtLeastOnce),
                    SubscribeAckReason::GrantedQos2 => v3::SubscribeReturnCode::Success(QoS::ExactlyOnce),
                    _ => v3::SubscribeReturnCode::Failure,
                })
                .collect(),
        },
        P::UnsubscribeAck(a) => v3::Packet::UnsubscribeAck { packet_id: a.packet_id },
        P::PingResponse => v3::Packet::PingResponse,
        P::PingRequest => v3::Packet::PingRequest,
        P::Connect(_) | P::Subscribe(_) | P::Unsubscribe(_) | P::Disconnect(_) | P::Auth(_) => return None,
    })
}

/// MQTT 5 CONNACK reasons in the four 3.1.1 return codes.
fn connack_v3(r: ConnectAckReason) -> v3::ConnectAckReason {
    use v3::ConnectAckReason as V3;
    match r {
        ConnectAckReason::Success => V3::ConnectionAccepted,
        ConnectAckReason::UnsupportedProtocolVersion => V3::UnacceptableProtocolVersion,
        ConnectAckReason::ClientIdentifierNotValid => V3::IdentifierRejected,
        ConnectAckReason::BadUserNameOrPassword => V3::BadUserNameOrPassword,
        ConnectAckReason::NotAuthorized | ConnectAckReason::Banned => V3::NotAuthorized,
        _ => V3::ServiceUnavailable,
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("packet larger than the client's Maximum Packet Size")]
    TooLarge,
    #[error("encode: {0}")]
    Encode(String),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
}

/// Encodes packets for one connection into a buffer and writes them out in batches.
pub struct PacketWriter<W> {
    io: W,
    buf: BytesMut,
    codec: MqttCodec,
    pub v5: bool,
    pub bytes_written: u64,
}

impl<W: AsyncWrite + Unpin> PacketWriter<W> {
    pub fn new(io: W, v5: bool, max_out: u32) -> Self {
        let codec = if v5 {
            let mut c = rmqtt_codec::v5::Codec::new(0, 0);
            if max_out > 0 {
                c.set_max_outbound_size(max_out);
            }
            MqttCodec::V5(c)
        } else {
            MqttCodec::V3(rmqtt_codec::v3::Codec::new(0))
        };
        Self { io, buf: BytesMut::new(), codec, v5, bytes_written: 0 }
    }

    /// Queues a packet. A PUBLISH over the client's limit is refused with `TooLarge` and nothing
    /// is written; a v5-only packet on a 3.1.1 connection is skipped.
    pub fn push(&mut self, p: v5::Packet) -> Result<(), WriteError> {
        let item = if self.v5 {
            MqttPacket::V5(p)
        } else {
            match v5_to_v3(p) {
                Some(p) => MqttPacket::V3(p),
                None => return Ok(()),
            }
        };
        let before = self.buf.len();
        match self.codec.encode(item, &mut self.buf) {
            Ok(()) => Ok(()),
            Err(rmqtt_codec::error::EncodeError::OverMaxPacketSize { .. }) => {
                self.buf.truncate(before);
                Err(WriteError::TooLarge)
            }
            Err(e) => {
                self.buf.truncate(before);
                Err(WriteError::Encode(format!("{e:?}")))
            }
        }
    }

    /// Gives back the stream (to start over with other limits before anything was written).
    pub fn into_inner(self) -> W {
        self.io
    }

    pub fn has_pending(&self) -> bool {
        !self.buf.is_empty()
    }

    pub async fn flush(&mut self) -> Result<(), WriteError> {
        if !self.buf.is_empty() {
            self.io.write_all(&self.buf).await?;
            self.bytes_written += self.buf.len() as u64;
            self.buf.clear();
            super::connection::shrink_if_idle(&mut self.buf);
        }
        self.io.flush().await?;
        Ok(())
    }

    pub async fn shutdown(&mut self) {
        let _ = self.io.shutdown().await;
    }
}
