//! `$SYS/brokers/{node}/...`: the node's version, uptime, client, subscription and message
//! figures, published retained to the default tenant at the configured interval.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use rmqtt_codec::types::QoS;

use crate::broker::Broker;
use crate::message::{Message, MessageProperties, now_ms};
use crate::metrics::Metrics;

/// The figures published now, as `(topic suffix, value)`.
pub fn figures(broker: &Broker) -> Vec<(&'static str, String)> {
    let m = &broker.metrics;
    vec![
        ("version", env!("CARGO_PKG_VERSION").to_string()),
        ("uptime", broker.started.elapsed().as_secs().to_string()),
        ("datetime", (now_ms() / 1000).to_string()),
        ("clients/connected", Metrics::get(&m.connections).to_string()),
        ("clients/total", broker.sessions.count().to_string()),
        ("clients/disconnected", Metrics::get(&m.client_disconnected).to_string()),
        ("subscriptions/count", broker.router.subscription_count().to_string()),
        ("subscriptions/shared/count", broker.router.shared_subscription_count().to_string()),
        ("retained/count", broker.retained.total().to_string()),
        ("messages/received", Metrics::get(&m.messages_received).to_string()),
        ("messages/sent", Metrics::get(&m.messages_sent).to_string()),
        ("messages/dropped", Metrics::get(&m.messages_dropped).to_string()),
        ("bytes/received", Metrics::get(&m.bytes_received).to_string()),
        ("bytes/sent", Metrics::get(&m.bytes_sent).to_string()),
    ]
}

pub fn publish_once(broker: &Broker) {
    let tenant = broker.config.tenancy.default_tenant.clone();
    for (suffix, value) in figures(broker) {
        broker.publish(Message {
            tenant: tenant.clone(),
            topic: format!("$SYS/brokers/{}/{suffix}", broker.node_name()).into(),
            payload: Bytes::from(value),
            qos: QoS::AtMostOnce,
            retain: true,
            properties: MessageProperties::default(),
            publisher: None,
            received_ms: now_ms(),
        });
    }
}

pub async fn run(broker: Arc<Broker>) {
    let secs = broker.config.sys.interval_secs;
    if secs == 0 {
        return;
    }
    let mut tick = tokio::time::interval(Duration::from_secs(secs));
    loop {
        tokio::select! {
            _ = broker.shutdown.cancelled() => return,
            _ = tick.tick() => if broker.sys_enabled.load(std::sync::atomic::Ordering::Relaxed) {
                publish_once(&broker)
            },
        }
    }
}
