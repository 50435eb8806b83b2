//! One client connection: the MQTT state machine from CONNECT to close, for 3.1.1 and 5.0 alike
//! (3.1.1 packets are converted at the edge), over any byte stream (TCP, TLS, WebSocket).

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::num::NonZeroU16;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytestring::ByteString;
use futures::StreamExt;
use futures::stream::FuturesOrdered;
use rand::distr::{Alphanumeric, SampleString};
use rmqtt_codec::error::DecodeError;
use rmqtt_codec::types::QoS;
use rmqtt_codec::v5::{
    self, ConnectAckReason, DisconnectReasonCode, PublishAck2Reason, PublishAckReason, RetainHandling,
    SubscribeAckReason, UnsubscribeAckReason,
};
use rmqtt_codec::version::{ProtocolVersion, VersionCodec};
use rmqtt_codec::{MqttCodec, MqttPacket};
use tokio::io::{AsyncRead, AsyncWrite, ReadHalf, WriteHalf};
use tokio::sync::oneshot;
use tokio_util::codec::FramedRead;
use tracing::Instrument;

use super::wire::{PacketWriter, WriteError, ack, ack2, disconnect, v3_to_v5};
use crate::auth::{AuthOutcome, CertIdentity, derive_tenant};
use crate::broker::{Broker, Subscribed};
use crate::message::{Message, MessageProperties, TenantId, now_ms};
use crate::metrics::Metrics;
use crate::router::{ClientId, SubOptions};
use crate::session::{Attachment, ConnectionInfo, Kick, Outgoing, Session, Will};
use crate::topic::{FilterSpec, validate_name};
use crate::traffic::{ClientLimits, Refusal, Throttled};

/// Where a connection came from.
#[derive(Debug, Clone)]
pub struct Peer {
    pub addr: SocketAddr,
    pub listener: &'static str,
    pub cert: Option<CertIdentity>,
}

/// Why a connection ends.
enum Close {
    /// The client sent DISCONNECT; `will` when it asked for its will (0x04).
    ByClient { will: bool },
    /// The broker closes it, with a v5 DISCONNECT carrying this reason.
    ByServer { reason: DisconnectReasonCode, message: String },
    /// Kicked (takeover, admin, redirect).
    Kicked(Kick),
    /// The broker is shutting down.
    Shutdown,
    /// The network connection went away.
    Gone,
}

type AckFuture = Pin<Box<dyn Future<Output = v5::Packet> + Send>>;

struct Connection<S> {
    broker: Arc<Broker>,
    reader: FramedRead<ReadHalf<S>, MqttCodec>,
    writer: PacketWriter<WriteHalf<S>>,
    session: Arc<Session>,
    conn_id: u64,
    tenant: TenantId,
    client_id: ClientId,
    v5: bool,
    keep_alive: Duration,
    connect_expiry: u32,
    kick_rx: oneshot::Receiver<Kick>,
    /// False once the kick channel resolved (a oneshot must not be polled again).
    kick_open: bool,
    /// PUBACK/PUBREC waiting for the store, sent in the order the PUBLISHes came.
    pending_acks: FuturesOrdered<AckFuture>,
    pending_qos1: usize,
    inbound_aliases: HashMap<u16, ByteString>,
    outbound_aliases: HashMap<ByteString, u16>,
    client_alias_max: u16,
    /// The traffic rule limits this client is under, and the rule set's generation they are from.
    traffic: Option<ClientLimits>,
    traffic_generation: u64,
    username: Option<String>,
    /// v5 Request Problem Information: reason strings go on acks only when the client wants them.
    problem_info: bool,
    /// MQTT 3.1.1 retry of unacknowledged QoS 1/2 (`limits.retry_interval_secs` at CONNECT).
    retry: Option<Duration>,
    /// A persistent session's changed subscriptions: SUBACK/UNSUBACK go out once this is durable,
    /// so an acknowledged subscription survives `kill -9`.
    durable_before_flush: Option<crate::store::Ticket>,
}

/// Serves one connection until it closes. Never panics on client input.
pub async fn serve<S>(broker: Arc<Broker>, stream: S, peer: Peer)
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let span = tracing::info_span!("conn", peer = %peer.addr, listener = peer.listener, client_id = tracing::field::Empty, tenant = tracing::field::Empty);
    async move {
        // Boxed so the handshake's state is freed once the connection runs.
        if let Some(conn) = Box::pin(handshake(broker.clone(), stream, &peer)).await {
            conn.run().await;
        }
    }
    .instrument(span)
    .await
}

/// Bytes a connection's read buffer starts with; it grows for larger packets and shrinks back
/// (see `shrink_if_idle`), so 10,000 idle connections cost little memory.
const READ_BUFFER_START: usize = 256;
/// A drained buffer larger than this is given back to the allocator.
pub(crate) const BUFFER_KEEP_MAX: usize = 16 * 1024;

/// Replaces a drained buffer that grew past `BUFFER_KEEP_MAX` with a small one.
pub(crate) fn shrink_if_idle(buf: &mut bytes::BytesMut) {
    if buf.is_empty() && buf.capacity() > BUFFER_KEEP_MAX {
        *buf = bytes::BytesMut::with_capacity(READ_BUFFER_START);
    }
}

fn decode_reason(e: &DecodeError) -> DisconnectReasonCode {
    match e {
        DecodeError::MaxSizeExceeded { .. } => DisconnectReasonCode::PacketTooLarge,
        DecodeError::InvalidProtocol | DecodeError::UnsupportedPacketType | DecodeError::UnsupportedProtocolLevel => {
            DisconnectReasonCode::ProtocolError
        }
        _ => DisconnectReasonCode::MalformedPacket,
    }
}

/// The size of a PUBLISH's variable-length properties when it is over `limit` (0: no limit).
fn properties_over(p: &rmqtt_codec::types::Publish, limit: u32) -> Option<usize> {
    let props = p.properties.as_ref()?;
    let len = |b: Option<usize>| b.unwrap_or(0);
    let size = props.user_properties.iter().map(|(k, v)| k.len() + v.len()).sum::<usize>()
        + len(props.correlation_data.as_ref().map(|b| b.len()))
        + len(props.content_type.as_ref().map(|b| b.len()))
        + len(props.response_topic.as_ref().map(|b| b.len()));
    (limit > 0 && size > limit as usize).then_some(size)
}

/// Logs a refused topic; hitting `limits.max_topic_levels` is a warning that names the limit.
fn log_topic_error(e: &crate::topic::TopicError) {
    if let crate::topic::TopicError::TooManyLevels(levels, limit) = e {
        tracing::warn!(levels, limit, "topic over limits.max_topic_levels; refused");
    } else {
        tracing::debug!(error = %e, "invalid topic");
    }
}

fn connack_reason(r: DisconnectReasonCode) -> ConnectAckReason {
    match r {
        DisconnectReasonCode::PacketTooLarge => ConnectAckReason::PacketTooLarge,
        DisconnectReasonCode::ProtocolError => ConnectAckReason::ProtocolError,
        _ => ConnectAckReason::MalformedPacket,
    }
}

/// Reads CONNECT, checks it, authenticates, attaches the session and sends CONNACK.
async fn handshake<S>(broker: Arc<Broker>, stream: S, peer: &Peer) -> Option<Connection<S>>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let limits = broker.limits();
    let timeout = Duration::from_secs(limits.connect_timeout_secs);
    let (rd, wr) = tokio::io::split(stream);
    let mut reader = FramedRead::with_capacity(rd, MqttCodec::Version(VersionCodec), READ_BUFFER_START);
    let version = match tokio::time::timeout(timeout, reader.next()).await {
        Ok(Some(Ok((MqttPacket::Version(v), _)))) => v,
        Ok(Some(Err(DecodeError::InvalidProtocol))) => {
            // Unknown protocol name or level: a 3.1.1-shaped CONNACK 0x01, then close.
            Metrics::inc(&broker.metrics.client_connack_refused);
            tracing::debug!("unsupported protocol name or level");
            let mut w = PacketWriter::new(wr, false, 0);
            let _ = w.push(v5::Packet::ConnectAck(Box::new(v5::ConnectAck {
                reason_code: ConnectAckReason::UnsupportedProtocolVersion,
                ..Default::default()
            })));
            let _ = w.flush().await;
            w.shutdown().await;
            return None;
        }
        Ok(Some(Err(e))) => {
            Metrics::inc(&broker.metrics.packets_invalid);
            tracing::debug!(error = %e, "first packet is not a valid CONNECT");
            return None;
        }
        Ok(Some(Ok(_))) | Ok(None) => return None,
        Err(_) => {
            tracing::debug!("no CONNECT within connect_timeout_secs");
            return None;
        }
    };
    let v5 = version == ProtocolVersion::MQTT5;
    *reader.decoder_mut() = if v5 {
        MqttCodec::V5(v5::Codec::new(limits.max_packet_size, 0))
    } else {
        MqttCodec::V3(rmqtt_codec::v3::Codec::new(limits.max_packet_size))
    };
    let mut writer = PacketWriter::new(wr, v5, 0);
    let (connect, protocol_level) = match tokio::time::timeout(timeout, reader.next()).await {
        Ok(Some(Ok((MqttPacket::V5(v5::Packet::Connect(c)), _)))) => (c, 5u8),
        Ok(Some(Ok((MqttPacket::V3(p @ rmqtt_codec::v3::Packet::Connect(_)), _)))) => {
            let level = match &p {
                rmqtt_codec::v3::Packet::Connect(c) => c.protocol.level(),
                _ => 4,
            };
            match v3_to_v5(p) {
                v5::Packet::Connect(c) => (c, level),
                _ => return None,
            }
        }
        Ok(Some(Err(e))) => {
            Metrics::inc(&broker.metrics.packets_invalid);
            if let DecodeError::MaxSizeExceeded { size, max } = e {
                tracing::warn!(size, limit = max, "CONNECT over limits.max_packet_size; refused");
            } else {
                tracing::debug!(error = %e, "malformed CONNECT");
            }
            let reason = match e {
                DecodeError::InvalidClientId => ConnectAckReason::ClientIdentifierNotValid,
                _ => connack_reason(decode_reason(&e)),
            };
            refuse(&broker, &mut writer, reason, &e.to_string()).await;
            return None;
        }
        _ => return None,
    };
    accept(broker, reader, writer, *connect, protocol_level, peer).await
}

async fn refuse<W: AsyncWrite + Unpin>(
    broker: &Broker,
    writer: &mut PacketWriter<W>,
    reason: ConnectAckReason,
    message: &str,
) {
    Metrics::inc(&broker.metrics.client_connack_refused);
    tracing::info!(reason = ?reason, message, "connection refused");
    let _ = writer.push(v5::Packet::ConnectAck(Box::new(v5::ConnectAck {
        reason_code: reason,
        reason_string: Some(message.into()),
        ..Default::default()
    })));
    let _ = writer.flush().await;
    writer.shutdown().await;
}

async fn accept<S>(
    broker: Arc<Broker>,
    reader: FramedRead<ReadHalf<S>, MqttCodec>,
    mut writer: PacketWriter<WriteHalf<S>>,
    c: v5::Connect,
    protocol_level: u8,
    peer: &Peer,
) -> Option<Connection<S>>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let limits = broker.limits();
    let v5 = protocol_level == 5;

    let mut client_id = c.client_id.to_string();
    let mut assigned = None;
    if client_id.is_empty() {
        if !c.clean_start {
            refuse(
                &broker,
                &mut writer,
                ConnectAckReason::ClientIdentifierNotValid,
                "empty client id needs clean start",
            )
            .await;
            return None;
        }
        client_id = format!("starling-{}", Alphanumeric.sample_string(&mut rand::rng(), 16));
        assigned = Some(ByteString::from(client_id.clone()));
    }
    if client_id.len() > limits.max_client_id_len || client_id.contains('\0') {
        let msg =
            format!("client id longer than limits.max_client_id_len ({}) or contains NUL", limits.max_client_id_len);
        refuse(&broker, &mut writer, ConnectAckReason::ClientIdentifierNotValid, &msg).await;
        return None;
    }
    tracing::Span::current().record("client_id", client_id.as_str());
    if c.auth_method.is_some() {
        refuse(
            &broker,
            &mut writer,
            ConnectAckReason::BadAuthenticationMethod,
            "enhanced authentication is not supported",
        )
        .await;
        return None;
    }
    if Metrics::get(&broker.metrics.connections) as usize >= limits.max_connections {
        tracing::warn!(limit = limits.max_connections, "limits.max_connections reached; refusing CONNECT");
        let reason = if v5 { ConnectAckReason::QuotaExceeded } else { ConnectAckReason::ServerUnavailable };
        refuse(&broker, &mut writer, reason, "connection limit reached").await;
        return None;
    }

    // Authentication (argon2 is slow on purpose: keep it off the runtime threads).
    let cert_user =
        peer.cert.as_ref().and_then(|c| c.common_name.clone()).filter(|_| broker.config.auth.use_identity_as_username);
    let username = cert_user.clone().or_else(|| c.username.as_ref().map(|u| u.to_string()));
    let outcome = if cert_user.is_some() {
        AuthOutcome::Accepted { tenant: None }
    } else {
        let b = broker.clone();
        let (u, p) = (username.clone(), c.password.clone());
        let allow_anonymous = broker.allow_anonymous();
        tokio::task::spawn_blocking(move || b.auth.check(allow_anonymous, u.as_deref(), p.as_deref()))
            .await
            .unwrap_or(AuthOutcome::NotAuthorized)
    };
    let entry_tenant = match outcome {
        AuthOutcome::Accepted { tenant } => tenant,
        AuthOutcome::BadCredentials => {
            Metrics::inc(&broker.metrics.client_auth_failure);
            refuse(&broker, &mut writer, ConnectAckReason::BadUserNameOrPassword, "bad user name or password").await;
            return None;
        }
        AuthOutcome::NotAuthorized => {
            Metrics::inc(&broker.metrics.client_auth_failure);
            refuse(&broker, &mut writer, ConnectAckReason::NotAuthorized, "anonymous access is disabled").await;
            return None;
        }
    };
    let tenant: TenantId =
        derive_tenant(&broker.config.tenancy, entry_tenant, username.as_deref(), peer.cert.as_ref()).into();
    tracing::Span::current().record("tenant", &*tenant);

    let will = match c.last_will {
        Some(w) => {
            if let Err(e) = validate_name(&w.topic, limits.max_topic_levels) {
                log_topic_error(&e);
                refuse(&broker, &mut writer, ConnectAckReason::TopicNameInvalid, &format!("will topic: {e}")).await;
                return None;
            }
            Some(Will {
                delay_secs: w.will_delay_interval_sec.unwrap_or(0),
                message: Arc::new(Message {
                    tenant: tenant.to_string(),
                    topic: w.topic,
                    payload: w.message,
                    qos: w.qos,
                    retain: w.retain,
                    properties: MessageProperties {
                        payload_format_utf8: w.is_utf8_payload.unwrap_or(false),
                        message_expiry: w.message_expiry_interval.map(|v| v.get()),
                        content_type: w.content_type,
                        response_topic: w.response_topic,
                        correlation_data: w.correlation_data,
                        user_properties: w.user_properties,
                    },
                    publisher: Some(client_id.as_str().into()),
                    received_ms: now_ms(),
                }),
            })
        }
        None => None,
    };

    let mut keep_alive = c.keep_alive;
    let mut server_keep_alive = None;
    if limits.max_keepalive < u16::MAX && (keep_alive == 0 || keep_alive > limits.max_keepalive) {
        keep_alive = limits.max_keepalive;
        server_keep_alive = v5.then_some(keep_alive);
    }
    let requested_expiry = c.session_expiry_interval_secs;
    let expiry = requested_expiry.min(limits.max_session_expiry);
    // Traffic rules: connection quota and node placement.
    let traffic_generation = broker.traffic.generation();
    let traffic = match broker.traffic.admit(&broker, &tenant, &client_id, username.as_deref()) {
        Ok(t) => t,
        Err(refusal) => {
            Metrics::inc(&broker.metrics.traffic_rejected);
            let (reason, message, server) = match refusal {
                Refusal::Quota { rule } => {
                    (ConnectAckReason::QuotaExceeded, format!("traffic rule {rule}: connection quota reached"), None)
                }
                Refusal::Elsewhere { rule, server } => (
                    ConnectAckReason::UseAnotherServer,
                    format!("traffic rule {rule}: this client belongs on another node"),
                    Some(server),
                ),
            };
            tracing::info!(reason = ?reason, message, server = ?server, "connection refused");
            Metrics::inc(&broker.metrics.client_connack_refused);
            let _ = writer.push(v5::Packet::ConnectAck(Box::new(v5::ConnectAck {
                reason_code: reason,
                reason_string: Some(message.into()),
                server_reference: server.map(Into::into),
                ..Default::default()
            })));
            let _ = writer.flush().await;
            writer.shutdown().await;
            return None;
        }
    };
    let receive_max = c.receive_max.map(|v| v.get()).unwrap_or(u16::MAX).min(limits.max_inflight);
    if let Some(max) = c.max_packet_size {
        writer = PacketWriter::new(writer.into_inner(), v5, max.get());
    }

    let (kick_tx, kick_rx) = oneshot::channel();
    let conn_id = broker.next_connection_id();
    let client_id: ClientId = client_id.into();
    let opened = broker.sessions.open(
        &broker.router,
        &broker.store,
        &tenant,
        &client_id,
        c.clean_start,
        expiry,
        limits.max_queued_messages,
        Attachment {
            id: conn_id,
            kick: Some(kick_tx),
            receive_max,
            info: ConnectionInfo { peer: peer.addr, listener: peer.listener, keep_alive, clean_start: c.clean_start },
        },
        will,
        username.clone(),
        protocol_level,
    );
    if let Some(w) = opened.will_to_publish {
        broker.publish_will(w);
    }
    Metrics::inc(&broker.metrics.client_connected);
    Metrics::inc(&broker.metrics.connections);
    tracing::info!(
        v = protocol_level,
        clean_start = c.clean_start,
        expiry,
        keep_alive,
        present = opened.session_present,
        "connected"
    );

    let ack = v5::ConnectAck {
        session_present: opened.session_present,
        reason_code: ConnectAckReason::Success,
        session_expiry_interval_secs: (expiry != requested_expiry && v5).then_some(expiry),
        receive_max: NonZeroU16::new(limits.receive_maximum).unwrap_or(NonZeroU16::MIN),
        max_qos: QoS::ExactlyOnce,
        max_packet_size: Some(limits.max_packet_size),
        assigned_client_id: assigned,
        topic_alias_max: limits.max_topic_alias,
        server_keepalive_sec: server_keep_alive,
        ..Default::default()
    };
    let _ = writer.push(v5::Packet::ConnectAck(Box::new(ack)));

    let mut conn = Connection {
        broker,
        reader,
        writer,
        session: opened.session,
        conn_id,
        tenant,
        client_id,
        v5,
        keep_alive: Duration::from_secs_f32(f32::from(keep_alive) * limits.keepalive_multiplier),
        connect_expiry: expiry,
        kick_rx,
        kick_open: true,
        pending_acks: FuturesOrdered::new(),
        pending_qos1: 0,
        inbound_aliases: HashMap::new(),
        outbound_aliases: HashMap::new(),
        client_alias_max: c.topic_alias_max,
        traffic_generation,
        traffic,
        username,
        problem_info: c.request_problem_info,
        retry: (!v5 && limits.retry_interval_secs > 0).then(|| Duration::from_secs(limits.retry_interval_secs)),
        durable_before_flush: None,
    };
    let mut out = Vec::new();
    conn.session.resend_inflight(&conn.broker.store, &mut out);
    conn.send_outgoing(out);
    conn.drain_session();
    Some(conn)
}

impl<S> Connection<S>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    async fn run(mut self) {
        let never = Duration::from_secs(365 * 24 * 3600);
        let ka = if self.keep_alive.is_zero() { never } else { self.keep_alive };
        let keepalive = tokio::time::sleep(ka);
        tokio::pin!(keepalive);
        let retry_every = self.retry.unwrap_or(never);
        let mut retry = tokio::time::interval_at(tokio::time::Instant::now() + retry_every, retry_every);
        retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let session = self.session.clone();
        let shutdown = self.broker.shutdown.clone();
        let close = loop {
            if let Some(t) = self.durable_before_flush.take() {
                self.broker.store.wait(t).await;
            }
            if self.writer.has_pending() {
                let flushed = self.writer.flush().await;
                Metrics::add(&self.broker.metrics.bytes_sent, std::mem::take(&mut self.writer.bytes_written));
                if let Err(e) = flushed {
                    tracing::debug!(error = %e, "write failed");
                    break Close::Gone;
                }
            }
            let step = tokio::select! {
                kick = &mut self.kick_rx, if self.kick_open => {
                    self.kick_open = false;
                    match kick {
                        Ok(k) => Err(Close::Kicked(k)),
                        Err(_) => Ok(()),
                    }
                },
                _ = shutdown.cancelled() => Err(Close::Shutdown),
                packet = self.reader.next() => {
                    keepalive.as_mut().reset(tokio::time::Instant::now() + ka);
                    match packet {
                        Some(Ok((p, size))) => {
                            shrink_if_idle(self.reader.read_buffer_mut());
                            Metrics::add(&self.broker.metrics.bytes_received, u64::from(size));
                            Metrics::inc(&self.broker.metrics.packets_received);
                            let p = match p {
                                MqttPacket::V5(p) => p,
                                MqttPacket::V3(p) => v3_to_v5(p),
                                MqttPacket::Version(_) => v5::Packet::PingRequest,
                            };
                            self.on_packet(p)
                        }
                        Some(Err(DecodeError::Io(e))) => {
                            tracing::debug!(error = %e, "read failed");
                            Err(Close::Gone)
                        }
                        Some(Err(DecodeError::MaxSizeExceeded { size, max })) => {
                            Metrics::inc(&self.broker.metrics.packets_invalid);
                            let message = format!("packet of {size} bytes is over limits.max_packet_size ({max})");
                            tracing::warn!(size, limit = max, "{message}; closing");
                            Err(Close::ByServer { reason: DisconnectReasonCode::PacketTooLarge, message })
                        }
                        Some(Err(e)) => {
                            Metrics::inc(&self.broker.metrics.packets_invalid);
                            tracing::info!(error = %e, "bad packet; closing");
                            Err(Close::ByServer { reason: decode_reason(&e), message: e.to_string() })
                        }
                        None => Err(Close::Gone),
                    }
                }
                Some(ack) = self.pending_acks.next(), if !self.pending_acks.is_empty() => {
                    if matches!(ack, v5::Packet::PublishAck(_)) {
                        self.pending_qos1 -= 1;
                    }
                    self.push(ack);
                    Ok(())
                }
                _ = session.notified() => {
                    self.drain_session();
                    Ok(())
                }
                _ = retry.tick(), if self.retry.is_some() => {
                    let mut out = Vec::new();
                    let interval_ms = u64::try_from(retry_every.as_millis()).unwrap_or(u64::MAX);
                    self.session.resend_overdue(&self.broker.store, self.conn_id, interval_ms, &mut out);
                    if !out.is_empty() {
                        tracing::debug!(count = out.len(), "resending unacknowledged QoS 1/2 (limits.retry_interval_secs)");
                        Metrics::add(&self.broker.metrics.messages_retried, out.len() as u64);
                    }
                    self.send_outgoing(out);
                    Ok(())
                }
                _ = &mut keepalive => {
                    Metrics::inc(&self.broker.metrics.client_keepalive_timeout);
                    tracing::info!("keep-alive timeout");
                    Err(Close::ByServer { reason: DisconnectReasonCode::KeepAliveTimeout, message: "keep-alive timeout".into() })
                }
            };
            if let Err(close) = step {
                break close;
            }
        };
        // Boxed: the closing state is only needed once, not for the connection's whole life.
        Box::pin(self.finish(close)).await;
    }

    async fn finish(mut self, close: Close) {
        let (abnormal, end_session, reason) = match &close {
            Close::ByClient { will } => (*will, false, None),
            Close::ByServer { reason, message } => (true, false, Some((*reason, Some(message.clone()), None))),
            Close::Kicked(k) => {
                if k.reason == DisconnectReasonCode::SessionTakenOver {
                    Metrics::inc(&self.broker.metrics.session_takenover);
                }
                (true, k.end_session, Some((k.reason, k.reason_string.clone(), k.server_reference.clone())))
            }
            Close::Shutdown => (
                false,
                false,
                Some((DisconnectReasonCode::ServerShuttingDown, Some("server shutting down".into()), None)),
            ),
            Close::Gone => (true, false, None),
        };
        if let Some((code, message, reference)) = reason
            && self.v5
        {
            let mut d = disconnect(code);
            d.reason_string = message.map(Into::into);
            d.server_reference = reference.map(Into::into);
            self.push(v5::Packet::Disconnect(d));
        }
        if !matches!(close, Close::Gone) {
            let _ = tokio::time::timeout(Duration::from_secs(2), self.writer.flush()).await;
        }
        self.writer.shutdown().await;
        let b = self.broker.clone();
        let (will, ended) = b.sessions.close(&b.router, &b.store, &self.session, self.conn_id, abnormal, end_session);
        if let Some(w) = will {
            b.schedule_will(&self.session, w, ended);
        }
        Metrics::add(&b.metrics.bytes_sent, std::mem::take(&mut self.writer.bytes_written));
        b.metrics.connections.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        Metrics::inc(&b.metrics.client_disconnected);
        tracing::info!(abnormal, session_ended = ended, "disconnected");
    }

    fn push(&mut self, p: v5::Packet) {
        Metrics::inc(&self.broker.metrics.packets_sent);
        if let Err(e) = self.writer.push(p) {
            tracing::warn!(error = %e, "cannot encode packet");
        }
    }

    /// Takes what the session may send now and queues it for writing.
    fn drain_session(&mut self) {
        let mut out = Vec::new();
        self.session.take_outgoing(&self.broker.store, self.conn_id, &mut out);
        self.send_outgoing(out);
    }

    fn send_outgoing(&mut self, out: Vec<Outgoing>) {
        for o in out {
            match o {
                Outgoing::Publish(p) => self.send_publish(p),
                Outgoing::Release(pid) => self.push(v5::Packet::PublishRelease(ack2(pid))),
            }
        }
    }

    fn send_publish(&mut self, mut p: Box<rmqtt_codec::types::Publish>) {
        let m = &self.broker.metrics;
        let qos = p.qos;
        let packet_id = p.packet_id;
        // Outbound Topic Alias: the first PUBLISH on a topic carries topic and alias, later ones only the alias.
        let mut new_alias = None;
        if self.v5
            && self.client_alias_max > 0
            && let Some(props) = p.properties.as_mut()
        {
            if let Some(&alias) = self.outbound_aliases.get(&p.topic) {
                props.topic_alias = NonZeroU16::new(alias);
                p.topic = ByteString::new();
            } else if self.outbound_aliases.len() < usize::from(self.client_alias_max) {
                let alias = self.outbound_aliases.len() as u16 + 1;
                self.outbound_aliases.insert(p.topic.clone(), alias);
                props.topic_alias = NonZeroU16::new(alias);
                new_alias = Some(p.topic.clone());
            }
        }
        match self.writer.push(v5::Packet::Publish(p)) {
            Ok(()) => {
                Metrics::inc(&m.packets_sent);
                Metrics::inc(&m.messages_sent);
                Metrics::inc(match qos {
                    QoS::AtMostOnce => &m.messages_sent_qos0,
                    QoS::AtLeastOnce => &m.messages_sent_qos1,
                    QoS::ExactlyOnce => &m.messages_sent_qos2,
                });
            }
            Err(WriteError::TooLarge) => {
                // Larger than the client's Maximum Packet Size: discarded as if delivered (MQTT 5 3.1.2.25).
                if let Some(topic) = new_alias {
                    self.outbound_aliases.remove(&topic);
                }
                Metrics::inc(&m.messages_dropped);
                tracing::debug!("message larger than the client's Maximum Packet Size dropped");
                if let Some(pid) = packet_id {
                    self.session.complete(&self.broker.store, pid.get());
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot encode PUBLISH"),
        }
    }

    /// A reason string for an ack, when the client is v5 and did not turn Request Problem
    /// Information off (MQTT 5 3.1.2.11.7).
    fn problem(&self, text: impl FnOnce() -> String) -> Option<ByteString> {
        (self.v5 && self.problem_info).then(|| text().into())
    }

    fn protocol_error(&self, message: impl Into<String>) -> Close {
        Close::ByServer { reason: DisconnectReasonCode::ProtocolError, message: message.into() }
    }

    fn on_packet(&mut self, p: v5::Packet) -> Result<(), Close> {
        use v5::Packet as P;
        match p {
            P::Publish(p) => self.on_publish(*p),
            P::PublishAck(a) => {
                self.session.complete(&self.broker.store, a.packet_id.get());
                self.drain_session();
                Ok(())
            }
            P::PublishReceived(a) => {
                let pid = a.packet_id;
                if u8::from(a.reason_code) >= 0x80 {
                    self.session.complete(&self.broker.store, pid.get());
                    self.drain_session();
                } else {
                    let mut rel = ack2(pid);
                    if !self.session.released(&self.broker.store, pid.get()) {
                        rel.reason_code = PublishAck2Reason::PacketIdNotFound;
                        rel.reason_string = self.problem(|| format!("no QoS 2 message in flight with packet id {pid}"));
                    }
                    self.push(v5::Packet::PublishRelease(rel));
                }
                Ok(())
            }
            P::PublishRelease(a) => {
                let pid = a.packet_id;
                let known = self.session.lock().awaiting_rel.remove(&pid.get());
                let mut comp = ack2(pid);
                if !known {
                    comp.reason_code = PublishAck2Reason::PacketIdNotFound;
                    comp.reason_string = self.problem(|| format!("no PUBREC sent for packet id {pid}"));
                }
                self.push(v5::Packet::PublishComplete(comp));
                Ok(())
            }
            P::PublishComplete(a) => {
                self.session.complete(&self.broker.store, a.packet_id.get());
                self.drain_session();
                Ok(())
            }
            P::Subscribe(s) => self.on_subscribe(s),
            P::Unsubscribe(u) => self.on_unsubscribe(u),
            P::PingRequest => {
                self.push(v5::Packet::PingResponse);
                Ok(())
            }
            P::Disconnect(d) => {
                if let Some(expiry) = d.session_expiry_interval_secs {
                    if self.connect_expiry == 0 && expiry != 0 {
                        return Err(self.protocol_error("Session Expiry Interval was 0 at CONNECT"));
                    }
                    self.session.lock().expiry_secs = expiry.min(self.broker.limits().max_session_expiry);
                }
                Err(Close::ByClient { will: d.reason_code == DisconnectReasonCode::DisconnectWithWillMessage })
            }
            P::Connect(_) => Err(self.protocol_error("second CONNECT")),
            P::Auth(_) => Err(self.protocol_error("AUTH without an authentication method")),
            P::ConnectAck(_) | P::SubscribeAck(_) | P::UnsubscribeAck(_) | P::PingResponse => {
                Err(self.protocol_error("packet type not allowed from a client"))
            }
        }
    }

    fn on_publish(&mut self, mut p: rmqtt_codec::types::Publish) -> Result<(), Close> {
        let limits = self.broker.limits();
        let m = &self.broker.metrics;
        Metrics::inc(&m.messages_received);
        Metrics::inc(match p.qos {
            QoS::AtMostOnce => &m.messages_received_qos0,
            QoS::AtLeastOnce => &m.messages_received_qos1,
            QoS::ExactlyOnce => &m.messages_received_qos2,
        });

        if let Some(alias) = p.properties.as_mut().and_then(|pp| pp.topic_alias.take()) {
            if alias.get() > limits.max_topic_alias {
                return Err(Close::ByServer {
                    reason: DisconnectReasonCode::TopicAliasInvalid,
                    message: format!("topic alias {alias} above Topic Alias Maximum {}", limits.max_topic_alias),
                });
            }
            if p.topic.is_empty() {
                match self.inbound_aliases.get(&alias.get()) {
                    Some(t) => p.topic = t.clone(),
                    None => return Err(self.protocol_error(format!("unknown topic alias {alias}"))),
                }
            } else {
                self.inbound_aliases.insert(alias.get(), p.topic.clone());
            }
        }
        if let Err(e) = validate_name(&p.topic, limits.max_topic_levels) {
            log_topic_error(&e);
            return Err(Close::ByServer {
                reason: DisconnectReasonCode::TopicNameInvalid,
                message: format!("topic: {e}"),
            });
        }
        if p.qos != QoS::AtMostOnce {
            let awaiting = self.session.lock().awaiting_rel.len();
            if self.pending_qos1 + awaiting >= usize::from(limits.receive_maximum) {
                tracing::warn!(limit = limits.receive_maximum, "client exceeded limits.receive_maximum");
                return Err(Close::ByServer {
                    reason: DisconnectReasonCode::ReceiveMaximumExceeded,
                    message: "Receive Maximum exceeded".into(),
                });
            }
        }
        let packet_id = p.packet_id;
        if p.qos == QoS::ExactlyOnce
            && let Some(pid) = packet_id
            && self.session.lock().awaiting_rel.contains(&pid.get())
        {
            // A resent QoS 2 PUBLISH: acknowledge again, do not route it twice.
            self.queue_ack(v5::Packet::PublishReceived(ack(pid)), None);
            return Ok(());
        }
        let mut reason = PublishAckReason::Success;
        let mut why: Option<String> = None;
        let utf8_invalid =
            p.properties.as_ref().is_some_and(|pp| pp.is_utf8_payload) && std::str::from_utf8(&p.payload).is_err();
        let mut ticket = None;
        if utf8_invalid {
            reason = PublishAckReason::PayloadFormatInvalid;
            why = Some("payload is not UTF-8 though its Payload Format Indicator says so".into());
        } else if p.topic.starts_with("$SYS") {
            reason = PublishAckReason::NotAuthorized;
            why = Some("$SYS topics are published by the broker only".into());
        } else if let Err(throttled) = self.traffic_allows(p.topic.len() + p.payload.len()) {
            Metrics::inc(&self.broker.metrics.traffic_throttled);
            tracing::debug!(topic = %p.topic, %throttled, "PUBLISH refused by its traffic rule; dropped");
            reason = PublishAckReason::QuotaExceeded;
            why = Some(format!("{throttled}; dropped"));
        } else if let Some(size) = properties_over(&p, limits.max_property_size) {
            Metrics::inc(&self.broker.metrics.messages_dropped);
            tracing::warn!(size, limit = limits.max_property_size, topic = %p.topic, "PUBLISH properties over limits.max_property_size; refused");
            reason = PublishAckReason::ImplementationSpecificError;
            why = Some(format!(
                "properties of {size} bytes are over limits.max_property_size ({})",
                limits.max_property_size
            ));
        } else {
            let msg =
                Message::from_publish(&self.tenant, p.topic.clone(), &p, Some(ByteString::from(&*self.client_id)));
            let published = self.broker.publish(msg);
            ticket = published.ticket;
            if published.matched == 0 {
                reason = PublishAckReason::NoMatchingSubscribers;
                why = Some("no matching subscribers".into());
            }
        }
        match (p.qos, packet_id) {
            (QoS::AtMostOnce, _) => {
                if utf8_invalid {
                    return Err(Close::ByServer {
                        reason: DisconnectReasonCode::PayloadFormatInvalid,
                        message: "payload is not UTF-8 though its Payload Format Indicator says so".into(),
                    });
                }
            }
            (QoS::AtLeastOnce, Some(pid)) => {
                let mut a = ack(pid);
                a.reason_code = reason;
                a.reason_string = why.and_then(|w| self.problem(|| w));
                self.pending_qos1 += 1;
                self.queue_ack(v5::Packet::PublishAck(a), ticket);
            }
            (QoS::ExactlyOnce, Some(pid)) => {
                let mut a = ack(pid);
                a.reason_code = reason;
                a.reason_string = why.and_then(|w| self.problem(|| w));
                if u8::from(reason) < 0x80 {
                    self.session.lock().awaiting_rel.insert(pid.get());
                }
                self.queue_ack(v5::Packet::PublishReceived(a), ticket);
            }
            _ => {
                return Err(Close::ByServer {
                    reason: DisconnectReasonCode::MalformedPacket,
                    message: "QoS > 0 without packet id".into(),
                });
            }
        }
        Ok(())
    }

    /// Sends an acknowledgement once `ticket` is durable, keeping the order of PUBLISHes.
    fn queue_ack(&mut self, packet: v5::Packet, ticket: Option<crate::store::Ticket>) {
        if ticket.is_none() && self.pending_acks.is_empty() {
            if matches!(packet, v5::Packet::PublishAck(_)) {
                self.pending_qos1 -= 1;
            }
            self.push(packet);
            return;
        }
        let broker = self.broker.clone();
        self.pending_acks.push_back(Box::pin(async move {
            if let Some(t) = ticket {
                broker.store.wait(t).await;
            }
            packet
        }));
    }

    /// Re-resolves the traffic rule limits when the rule set changed (live for open connections).
    fn refresh_traffic(&mut self) {
        let generation = self.broker.traffic.generation();
        if generation != self.traffic_generation {
            self.traffic_generation = generation;
            self.traffic = None; // gives back the old rule's connection slot first
            self.traffic = self.broker.traffic.limits_for(&self.tenant, &self.client_id, self.username.as_deref());
        }
    }

    fn traffic_allows(&mut self, bytes: usize) -> Result<(), Throttled> {
        self.refresh_traffic();
        self.traffic.as_ref().map_or(Ok(()), |t| t.allow_publish(bytes))
    }

    fn on_subscribe(&mut self, s: v5::Subscribe) -> Result<(), Close> {
        self.refresh_traffic();
        let traffic_max = self.traffic.as_ref().and_then(ClientLimits::max_subscriptions);
        let limits = self.broker.limits();
        let mut status = Vec::with_capacity(s.topic_filters.len());
        let mut problems = Vec::new();
        let mut retained = Vec::new();
        for (raw, opts) in &s.topic_filters {
            let spec = match FilterSpec::parse(raw, limits.max_topic_levels) {
                Ok(spec) => spec,
                Err(e) => {
                    log_topic_error(&e);
                    problems.push(format!("{raw}: {e}"));
                    status.push(SubscribeAckReason::TopicFilterInvalid);
                    continue;
                }
            };
            if spec.share_group.is_some() && opts.no_local {
                return Err(self.protocol_error("No Local on a shared subscription"));
            }
            let sub = SubOptions {
                qos: opts.qos,
                no_local: opts.no_local,
                retain_as_published: opts.retain_as_published,
                retain_handling: u8::from(opts.retain_handling),
                subscription_id: s.id,
            };
            if let Some(max) = traffic_max {
                let st = self.session.lock();
                if !st.subscriptions.contains_key(raw.as_ref() as &str) && st.subscriptions.len() >= max {
                    drop(st);
                    Metrics::inc(&self.broker.metrics.traffic_throttled);
                    tracing::info!(limit = max, "traffic rule max_subscriptions reached");
                    problems.push(format!("{raw}: the traffic rule's max_subscriptions ({max}) reached"));
                    status.push(SubscribeAckReason::QuotaExceeded);
                    continue;
                }
            }
            let is_new = match self.broker.add_subscription(&self.session, raw, &spec, sub) {
                Subscribed::QuotaExceeded => {
                    problems.push(format!(
                        "{raw}: limits.max_subscriptions_per_client ({}) reached",
                        limits.max_subscriptions_per_client
                    ));
                    status.push(SubscribeAckReason::QuotaExceeded);
                    continue;
                }
                Subscribed::New => true,
                Subscribed::Replaced => false,
            };
            status.push(match opts.qos {
                QoS::AtMostOnce => SubscribeAckReason::GrantedQos0,
                QoS::AtLeastOnce => SubscribeAckReason::GrantedQos1,
                QoS::ExactlyOnce => SubscribeAckReason::GrantedQos2,
            });
            let send_retained = match opts.retain_handling {
                RetainHandling::AtSubscribe => true,
                RetainHandling::AtSubscribeNew => is_new,
                RetainHandling::NoAtSubscribe => false,
            };
            if spec.share_group.is_none() && send_retained {
                retained.push((spec.filter, opts.qos));
            }
        }
        self.persist_session();
        let reason_string = self.problem(|| problems.join("; ")).filter(|r| !r.is_empty());
        self.push(v5::Packet::SubscribeAck(v5::SubscribeAck {
            packet_id: s.packet_id,
            properties: Vec::new(),
            reason_string,
            status,
        }));
        for (filter, qos) in retained {
            self.broker.deliver_retained(&self.session, &filter, qos, s.id);
        }
        self.drain_session();
        Ok(())
    }

    fn on_unsubscribe(&mut self, u: v5::Unsubscribe) -> Result<(), Close> {
        let limits = self.broker.limits();
        let mut status = Vec::with_capacity(u.topic_filters.len());
        let mut problems = Vec::new();
        for raw in &u.topic_filters {
            let spec = match FilterSpec::parse(raw, limits.max_topic_levels) {
                Ok(spec) => spec,
                Err(e) => {
                    problems.push(format!("{raw}: {e}"));
                    status.push(UnsubscribeAckReason::TopicFilterInvalid);
                    continue;
                }
            };
            if self.broker.remove_subscription(&self.session, raw, &spec) {
                status.push(UnsubscribeAckReason::Success);
            } else {
                problems.push(format!("{raw}: no such subscription"));
                status.push(UnsubscribeAckReason::NoSubscriptionExisted);
            }
        }
        let reason_string = self.problem(|| problems.join("; ")).filter(|r| !r.is_empty());
        self.persist_session();
        self.push(v5::Packet::UnsubscribeAck(v5::UnsubscribeAck {
            packet_id: u.packet_id,
            properties: Vec::new(),
            reason_string,
            status,
        }));
        Ok(())
    }

    fn persist_session(&mut self) {
        let ticket = self.broker.persist_session(&self.session);
        self.durable_before_flush = self.durable_before_flush.take().max(ticket);
    }
}
