//! The running side of a bridge: one rumqttc client (3.1.1 or 5.0) to the remote broker, its
//! event loop, draining the send queue while connected, and reconnecting with back-off.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use bytestring::ByteString;
use crds::bridge::{BridgeTransport, expand_topic};
use crds::{BridgeConfig, BridgeSubscription};
use rmqtt_codec::types::QoS;
use rumqttc::v5::mqttbytes::v5::PublishProperties;
use tokio::sync::mpsc;

use super::{BRIDGE_PUBLISHER_PREFIX, BridgeLink, Command, HOP_PROPERTY, Outbound};
use crate::broker::Broker;
use crate::message::{Message, MessageProperties, now_ms};
use crate::topic::matches;

const BACKOFF_START: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// Requests the rumqttc client may hold before `try_*` says full.
const CLIENT_CAPACITY: usize = 256;

/// The client side, 3.1.1 or 5.0.
enum Client {
    V4(rumqttc::AsyncClient),
    V5(rumqttc::v5::AsyncClient),
}

enum Loop {
    V4(Box<rumqttc::EventLoop>),
    V5(Box<rumqttc::v5::EventLoop>),
}

/// What the event loop reported, in one shape for both versions.
enum RemoteEvent {
    Connected,
    Message {
        topic: String,
        payload: Bytes,
        qos: QoS,
        retain: bool,
        properties: MessageProperties,
    },
    /// A QoS 1/2 message was acknowledged, or a QoS 0 one written.
    Delivered,
    Other,
}

fn q4(q: QoS) -> rumqttc::QoS {
    match q {
        QoS::AtMostOnce => rumqttc::QoS::AtMostOnce,
        QoS::AtLeastOnce => rumqttc::QoS::AtLeastOnce,
        QoS::ExactlyOnce => rumqttc::QoS::ExactlyOnce,
    }
}

fn q5(q: QoS) -> rumqttc::v5::mqttbytes::QoS {
    match q {
        QoS::AtMostOnce => rumqttc::v5::mqttbytes::QoS::AtMostOnce,
        QoS::AtLeastOnce => rumqttc::v5::mqttbytes::QoS::AtLeastOnce,
        QoS::ExactlyOnce => rumqttc::v5::mqttbytes::QoS::ExactlyOnce,
    }
}

fn qos_of(q: u8) -> QoS {
    match q {
        0 => QoS::AtMostOnce,
        1 => QoS::AtLeastOnce,
        _ => QoS::ExactlyOnce,
    }
}

fn transport(cfg: &BridgeConfig, t: &BridgeTransport) -> Result<rumqttc::Transport, String> {
    Ok(match t {
        BridgeTransport::Tcp { .. } => rumqttc::Transport::Tcp,
        BridgeTransport::Ws { .. } => rumqttc::Transport::Ws,
        BridgeTransport::Tls { .. } => {
            let mut roots = rustls::RootCertStore::empty();
            let pem = cfg.ca_pem.as_deref().ok_or("ca_pem is required for a TLS remote")?;
            for cert in rustls_pemfile::certs(&mut pem.as_bytes()) {
                roots.add(cert.map_err(|e| format!("ca_pem: {e}"))?).map_err(|e| format!("ca_pem: {e}"))?;
            }
            let config =
                rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                    .with_safe_default_protocol_versions()
                    .map_err(|e| e.to_string())?
                    .with_root_certificates(roots)
                    .with_no_client_auth();
            rumqttc::Transport::Tls(rumqttc::TlsConfiguration::Rustls(Arc::new(config)))
        }
    })
}

/// The client id on the remote: `clientid` with `${node}` replaced by this node's name, or
/// `starling-bridge-<node>-<name>`. Every broker of a cluster runs the same bridge, so the node
/// keeps their ids apart (the same id twice would make the remote kick one for the other).
fn client_id(name: &str, node: &str, index: u16, cfg: &BridgeConfig) -> String {
    let id = match &cfg.clientid {
        Some(id) => id.replace("${node}", node),
        None => format!("starling-bridge-{node}-{name}"),
    };
    if index > 0 { format!("{id}-{index}") } else { id }
}

fn connect(name: &str, node: &str, index: u16, cfg: &BridgeConfig) -> Result<(Client, Loop), String> {
    let t = cfg.validate()?;
    let (host, port) = match &t {
        BridgeTransport::Tcp { host, port } | BridgeTransport::Tls { host, port } => (host.clone(), *port),
        // rumqttc takes the whole URL as the host for WebSocket.
        BridgeTransport::Ws { url, port, .. } => (url.clone(), *port),
    };
    let id = client_id(name, node, index, cfg);
    let transport = transport(cfg, &t)?;
    let keep_alive = Duration::from_secs(u64::from(cfg.keepalive.max(5)));
    if cfg.proto_ver == 5 {
        let mut o = rumqttc::v5::MqttOptions::new(id, host, port);
        o.set_transport(transport).set_keep_alive(keep_alive).set_clean_start(cfg.clean_start);
        o.set_session_expiry_interval(cfg.session_expiry_interval);
        if let Some(p) = &cfg.connect_properties {
            o.set_receive_maximum(p.receive_maximum)
                .set_max_packet_size(p.maximum_packet_size)
                .set_topic_alias_max(p.topic_alias_maximum)
                .set_user_properties(p.user_properties.clone().into_iter().collect());
        }
        if let Some(u) = &cfg.username {
            o.set_credentials(u.clone(), cfg.password.clone().unwrap_or_default());
        }
        let (c, l) = rumqttc::v5::AsyncClient::new(o, CLIENT_CAPACITY);
        Ok((Client::V5(c), Loop::V5(Box::new(l))))
    } else {
        let mut o = rumqttc::MqttOptions::new(id, host, port);
        o.set_transport(transport).set_keep_alive(keep_alive).set_clean_session(cfg.clean_start);
        if let Some(u) = &cfg.username {
            o.set_credentials(u.clone(), cfg.password.clone().unwrap_or_default());
        }
        let (c, l) = rumqttc::AsyncClient::new(o, CLIENT_CAPACITY);
        Ok((Client::V4(c), Loop::V4(Box::new(l))))
    }
}

impl Loop {
    async fn poll(&mut self) -> Result<RemoteEvent, String> {
        match self {
            Loop::V4(l) => match l.poll().await.map_err(|e| e.to_string())? {
                rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_)) => Ok(RemoteEvent::Connected),
                rumqttc::Event::Incoming(rumqttc::Packet::Publish(p)) => Ok(RemoteEvent::Message {
                    topic: p.topic,
                    payload: p.payload,
                    qos: qos_of(p.qos as u8),
                    retain: p.retain,
                    properties: MessageProperties::default(),
                }),
                rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_) | rumqttc::Packet::PubComp(_))
                | rumqttc::Event::Outgoing(rumqttc::Outgoing::Publish(0)) => Ok(RemoteEvent::Delivered),
                _ => Ok(RemoteEvent::Other),
            },
            Loop::V5(l) => {
                use rumqttc::v5::{Event, Incoming};
                match l.poll().await.map_err(|e| e.to_string())? {
                    Event::Incoming(Incoming::ConnAck(_)) => Ok(RemoteEvent::Connected),
                    Event::Incoming(Incoming::Publish(p)) => {
                        let props = p.properties.unwrap_or_default();
                        Ok(RemoteEvent::Message {
                            topic: String::from_utf8_lossy(&p.topic).to_string(),
                            payload: p.payload,
                            qos: qos_of(p.qos as u8),
                            retain: p.retain,
                            properties: MessageProperties {
                                payload_format_utf8: props.payload_format_indicator == Some(1),
                                message_expiry: props.message_expiry_interval,
                                content_type: props.content_type.map(ByteString::from),
                                response_topic: props.response_topic.map(ByteString::from),
                                correlation_data: props.correlation_data,
                                user_properties: props
                                    .user_properties
                                    .into_iter()
                                    .map(|(k, v)| (ByteString::from(k), ByteString::from(v)))
                                    .collect(),
                            },
                        })
                    }
                    Event::Incoming(Incoming::PubAck(_) | Incoming::PubComp(_))
                    | Event::Outgoing(rumqttc::Outgoing::Publish(0)) => Ok(RemoteEvent::Delivered),
                    _ => Ok(RemoteEvent::Other),
                }
            }
        }
    }
}

impl Client {
    /// Hands a message to the client; `false` when its queue is full (try again later).
    fn try_publish(&self, bridge: &str, o: &Outbound) -> bool {
        let m = &o.message;
        match self {
            Client::V4(c) => c.try_publish(o.remote_topic.clone(), q4(o.qos), m.retain, m.payload.clone()).is_ok(),
            Client::V5(c) => {
                let mut user_properties: Vec<(String, String)> =
                    m.properties.user_properties.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
                user_properties.push((HOP_PROPERTY.to_string(), bridge.to_string()));
                let props = PublishProperties {
                    payload_format_indicator: m.properties.payload_format_utf8.then_some(1),
                    message_expiry_interval: m.remaining_expiry(now_ms()),
                    topic_alias: None,
                    response_topic: m.properties.response_topic.as_ref().map(|t| t.to_string()),
                    correlation_data: m.properties.correlation_data.clone(),
                    user_properties,
                    subscription_identifiers: Vec::new(),
                    content_type: m.properties.content_type.as_ref().map(|t| t.to_string()),
                };
                c.try_publish_with_properties(o.remote_topic.clone(), q5(o.qos), m.retain, m.payload.clone(), props)
                    .is_ok()
            }
        }
    }

    fn subscribe(&self, s: &BridgeSubscription) {
        let r = match self {
            Client::V4(c) => c.try_subscribe(s.remote_topic.clone(), q4(qos_of(s.qos))).map_err(|e| e.to_string()),
            Client::V5(c) => c.try_subscribe(s.remote_topic.clone(), q5(qos_of(s.qos))).map_err(|e| e.to_string()),
        };
        if let Err(e) = r {
            tracing::warn!(topic = %s.remote_topic, error = %e, "bridge subscribe not sent");
        }
    }

    fn unsubscribe(&self, topic: &str) {
        let _ = match self {
            Client::V4(c) => c.try_unsubscribe(topic).map_err(|e| e.to_string()),
            Client::V5(c) => c.try_unsubscribe(topic).map_err(|e| e.to_string()),
        };
    }

    fn disconnect(&self) {
        let _ = match self {
            Client::V4(c) => c.try_disconnect().map_err(|e| e.to_string()),
            Client::V5(c) => c.try_disconnect().map_err(|e| e.to_string()),
        };
    }
}

/// Publishes a message from the remote locally.
fn bring_in(
    broker: &Broker,
    link: &BridgeLink,
    topic: String,
    payload: Bytes,
    qos: QoS,
    retain: bool,
    properties: MessageProperties,
) {
    let cfg = link.config();
    let Some(sub) = cfg.subscriptions.iter().find(|s| matches(&s.remote_topic, &topic)) else {
        return;
    };
    let local = expand_topic(&sub.local_topic, &topic);
    if crate::topic::validate_name(&local, broker.limits().max_topic_levels).is_err() {
        tracing::warn!(bridge = %link.name, topic = %local, "bridged message has an invalid local topic; dropped");
        return;
    }
    broker.publish(Message {
        tenant: link.tenant.to_string(),
        topic: ByteString::from(local),
        payload,
        qos: qos.min(qos_of(sub.qos)),
        retain,
        properties,
        publisher: Some(ByteString::from(format!("{BRIDGE_PUBLISHER_PREFIX}{}", link.name))),
        received_ms: now_ms(),
    });
    link.status.lock().received += 1;
    crate::metrics::Metrics::inc(&broker.metrics.messages_origin_bridge);
}

/// Runs connection `index` of a bridge until it is deleted, replaced or the node stops. The
/// first connection (index 0) owns the remote subscriptions and the connection status.
pub(super) async fn run(
    broker: Arc<Broker>,
    link: Arc<BridgeLink>,
    index: u16,
    mut commands: Option<mpsc::UnboundedReceiver<Command>>,
) {
    let primary = index == 0;
    let cfg = link.config();
    let (client, mut events) = match connect(&link.name, broker.node_name(), index, &cfg) {
        Ok(c) => c,
        Err(e) => {
            link.status.lock().last_error = Some(e.clone());
            tracing::warn!(bridge = %link.name, error = %e, "bridge cannot start");
            return;
        }
    };
    let mut connected = false;
    let mut backoff = BACKOFF_START;
    loop {
        if connected {
            // Hand queued messages to the client while it has room.
            loop {
                let Some(item) = link.queue.lock().front().cloned() else { break };
                if !client.try_publish(&link.name, &item) {
                    break;
                }
                link.queue.lock().pop_front();
            }
        }
        tokio::select! {
            _ = link.cancel.cancelled() => {
                client.disconnect();
                // Give the DISCONNECT a moment to leave.
                let _ = tokio::time::timeout(Duration::from_millis(200), events.poll()).await;
                tracing::info!(bridge = %link.name, "bridge stopped");
                return;
            }
            _ = link.wake.notified() => {}
            Some(cmd) = next_command(&mut commands) => match cmd {
                Command::Subscribe(subs) => subs.iter().for_each(|s| client.subscribe(s)),
                Command::Unsubscribe(topics) => topics.iter().for_each(|t| client.unsubscribe(t)),
            },
            ev = events.poll() => match ev {
                Ok(RemoteEvent::Connected) => {
                    connected = true;
                    backoff = BACKOFF_START;
                    tracing::info!(bridge = %link.name, index, server = %cfg.server, "bridge connected");
                    if primary {
                        {
                            let mut s = link.status.lock();
                            s.connected = true;
                            s.since = now_ms();
                        }
                        // Subscriptions are (re)made on every connect: a clean start forgets them.
                        for s in &link.config().subscriptions {
                            client.subscribe(s);
                        }
                    }
                }
                Ok(RemoteEvent::Message { topic, payload, qos, retain, properties }) => {
                    bring_in(&broker, &link, topic, payload, qos, retain, properties);
                }
                Ok(RemoteEvent::Delivered) => link.status.lock().forwarded += 1,
                Ok(RemoteEvent::Other) => {}
                Err(e) => {
                    if connected {
                        tracing::warn!(bridge = %link.name, error = %e, "bridge disconnected");
                    } else {
                        tracing::debug!(bridge = %link.name, error = %e, "bridge connect failed");
                    }
                    connected = false;
                    if primary {
                        let mut s = link.status.lock();
                        if s.connected {
                            s.since = now_ms();
                        }
                        s.connected = false;
                        s.last_error = Some(e);
                    }
                    let jitter = Duration::from_millis(rand::random_range(0..=backoff.as_millis() as u64 / 2));
                    tokio::select! {
                        _ = link.cancel.cancelled() => return,
                        _ = tokio::time::sleep(backoff + jitter) => {}
                    }
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            },
        }
    }
}

async fn next_command(commands: &mut Option<mpsc::UnboundedReceiver<Command>>) -> Option<Command> {
    match commands {
        Some(c) => c.recv().await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(clientid: Option<&str>) -> BridgeConfig {
        let mut c: BridgeConfig = serde_json::from_value(serde_json::json!({"server": "mqtt-tcp://127.0.0.1:1883"}))
            .expect("a minimal bridge parses");
        c.clientid = clientid.map(str::to_string);
        c
    }

    #[test]
    fn client_ids_differ_per_node_and_per_parallel_connection() {
        assert_eq!(client_id("up", "demo-0", 0, &cfg(None)), "starling-bridge-demo-0-up");
        assert_eq!(client_id("up", "demo-1", 2, &cfg(None)), "starling-bridge-demo-1-up-2");
        assert_eq!(client_id("up", "demo-1", 0, &cfg(Some("edge-${node}"))), "edge-demo-1");
        assert_eq!(client_id("up", "demo-1", 0, &cfg(Some("fixed"))), "fixed");
    }
}
