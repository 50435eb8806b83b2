//! MQTT over the network: listeners (TCP, TLS, WebSocket), the per-connection state machine,
//! and the wire adapter between MQTT 3.1.1 and the broker's MQTT 5 packet model.

pub mod connection;
pub mod listener;
pub mod wire;
