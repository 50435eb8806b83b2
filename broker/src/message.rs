//! The application message as the broker carries it between publisher, router, sessions and
//! store: topic, payload, QoS, retain and the MQTT 5 properties that pass through untouched.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use bytestring::ByteString;
use rmqtt_codec::types::{Publish, QoS};
use rmqtt_codec::v5::PublishProperties;
use serde::{Deserialize, Serialize};

/// Tenant identifier; everything the broker keeps is partitioned by it.
pub type TenantId = Arc<str>;

/// MQTT 5 publish properties that travel with a message (not Topic Alias or Subscription Identifier,
/// which belong to one hop).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageProperties {
    pub payload_format_utf8: bool,
    /// Message Expiry Interval as set by the publisher, in seconds.
    pub message_expiry: Option<u32>,
    pub content_type: Option<ByteString>,
    pub response_topic: Option<ByteString>,
    pub correlation_data: Option<Bytes>,
    pub user_properties: Vec<(ByteString, ByteString)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub tenant: String,
    pub topic: ByteString,
    pub payload: Bytes,
    pub qos: QoS,
    pub retain: bool,
    pub properties: MessageProperties,
    /// Client id of the publisher, for No Local; `None` for messages the broker itself made.
    pub publisher: Option<ByteString>,
    /// Milliseconds since the Unix epoch when the broker accepted the message.
    pub received_ms: u64,
}

pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

impl Message {
    /// Builds a message from a decoded PUBLISH (topic already resolved from any alias).
    pub fn from_publish(tenant: &str, topic: ByteString, p: &Publish, publisher: Option<ByteString>) -> Message {
        let properties = p
            .properties
            .as_ref()
            .map(|pp| MessageProperties {
                payload_format_utf8: pp.is_utf8_payload,
                message_expiry: pp.message_expiry_interval.map(NonZeroU32::get),
                content_type: pp.content_type.clone(),
                response_topic: pp.response_topic.clone(),
                correlation_data: pp.correlation_data.clone(),
                user_properties: pp.user_properties.clone(),
            })
            .unwrap_or_default();
        Message {
            tenant: tenant.to_string(),
            topic,
            payload: p.payload.clone(),
            qos: p.qos,
            retain: p.retain,
            properties,
            publisher,
            received_ms: now_ms(),
        }
    }

    /// Seconds of life left, `None` when the message never expires, `Some(0)` when it has expired.
    pub fn remaining_expiry(&self, now_ms: u64) -> Option<u32> {
        let expiry = self.properties.message_expiry?;
        let elapsed = now_ms.saturating_sub(self.received_ms) / 1000;
        Some((expiry as u64).saturating_sub(elapsed) as u32)
    }

    pub fn is_expired(&self, now_ms: u64) -> bool {
        self.remaining_expiry(now_ms) == Some(0)
    }

    /// The PUBLISH sent to one subscriber: its QoS, retain flag, packet id and subscription ids,
    /// with the expiry interval counted down to what is left.
    pub fn to_publish(
        &self,
        qos: QoS,
        retain: bool,
        dup: bool,
        packet_id: Option<std::num::NonZeroU16>,
        subscription_ids: &[NonZeroU32],
        now_ms: u64,
    ) -> Publish {
        let p = &self.properties;
        Publish {
            dup,
            retain,
            qos,
            topic: self.topic.clone(),
            packet_id,
            payload: self.payload.clone(),
            properties: Some(PublishProperties {
                topic_alias: None,
                correlation_data: p.correlation_data.clone(),
                message_expiry_interval: self.remaining_expiry(now_ms).and_then(NonZeroU32::new),
                content_type: p.content_type.clone(),
                user_properties: p.user_properties.clone(),
                is_utf8_payload: p.payload_format_utf8,
                response_topic: p.response_topic.clone(),
                subscription_ids: subscription_ids.to_vec(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_counts_down() {
        let m = Message {
            tenant: "global".into(),
            topic: "t".into(),
            payload: Bytes::new(),
            qos: QoS::AtMostOnce,
            retain: false,
            properties: MessageProperties { message_expiry: Some(10), ..Default::default() },
            publisher: None,
            received_ms: 1_000_000,
        };
        assert_eq!(m.remaining_expiry(1_000_000), Some(10));
        assert_eq!(m.remaining_expiry(1_004_500), Some(6));
        assert!(m.is_expired(1_010_000));
        let p = m.to_publish(QoS::AtMostOnce, false, false, None, &[], 1_004_500);
        assert_eq!(p.properties.unwrap().message_expiry_interval.map(|v| v.get()), Some(6));
    }
}
