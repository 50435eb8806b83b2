//! Real MQTT client libraries for the tests: rumqttc (3.1.1 and 5.0), each connection's event
//! loop driven in a task that forwards received PUBLISHes to a channel.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

pub const WAIT: Duration = Duration::from_secs(5);

pub mod v5c {
    pub use rumqttc::v5::mqttbytes::QoS;
    pub use rumqttc::v5::mqttbytes::v5::Publish;
    pub use rumqttc::v5::mqttbytes::v5::{ConnAck, Filter, PublishProperties, RetainForwardRule};
    pub use rumqttc::v5::{AsyncClient, MqttOptions};
}

pub struct V5Client {
    pub client: v5c::AsyncClient,
    pub rx: mpsc::UnboundedReceiver<v5c::Publish>,
    pub connack: v5c::ConnAck,
}

/// Connects a rumqttc MQTT 5 client; `tune` adjusts the options (clean start, will, ...).
pub async fn v5(addr: SocketAddr, id: &str, tune: impl FnOnce(&mut v5c::MqttOptions)) -> V5Client {
    use rumqttc::v5::{Event, Incoming};
    let mut opts = v5c::MqttOptions::new(id, addr.ip().to_string(), addr.port());
    opts.set_keep_alive(Duration::from_secs(30));
    tune(&mut opts);
    let (client, mut eventloop) = v5c::AsyncClient::new(opts, 1000);
    let (tx, rx) = mpsc::unbounded_channel();
    let (ack_tx, ack_rx) = oneshot::channel();
    let mut ack_tx = Some(ack_tx);
    tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Incoming::ConnAck(a))) => {
                    if let Some(t) = ack_tx.take() {
                        let _ = t.send(a);
                    }
                }
                Ok(Event::Incoming(Incoming::Publish(p))) => {
                    if tx.send(p).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(_) => return,
            }
        }
    });
    let connack = tokio::time::timeout(WAIT, ack_rx).await.expect("CONNACK in time").expect("CONNACK");
    V5Client { client, rx, connack }
}

pub struct V4Client {
    pub client: rumqttc::AsyncClient,
    pub rx: mpsc::UnboundedReceiver<rumqttc::Publish>,
    pub session_present: bool,
}

/// Connects a rumqttc MQTT 3.1.1 client.
pub async fn v4(addr: SocketAddr, id: &str, clean_session: bool) -> V4Client {
    use rumqttc::{Event, Packet};
    let mut opts = rumqttc::MqttOptions::new(id, addr.ip().to_string(), addr.port());
    opts.set_keep_alive(Duration::from_secs(30));
    opts.set_clean_session(clean_session);
    let (client, mut eventloop) = rumqttc::AsyncClient::new(opts, 1000);
    let (tx, rx) = mpsc::unbounded_channel();
    let (ack_tx, ack_rx) = oneshot::channel();
    let mut ack_tx = Some(ack_tx);
    tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(a))) => {
                    if let Some(t) = ack_tx.take() {
                        let _ = t.send(a.session_present);
                    }
                }
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    if tx.send(p).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(_) => return,
            }
        }
    });
    let session_present = tokio::time::timeout(WAIT, ack_rx).await.expect("CONNACK in time").expect("CONNACK");
    V4Client { client, rx, session_present }
}

/// The next message within `WAIT`, or `None`.
pub async fn next<T>(rx: &mut mpsc::UnboundedReceiver<T>) -> Option<T> {
    tokio::time::timeout(WAIT, rx.recv()).await.ok().flatten()
}

/// Asserts that nothing arrives for `d`.
pub async fn nothing_for<T: std::fmt::Debug>(rx: &mut mpsc::UnboundedReceiver<T>, d: Duration) {
    if let Ok(Some(m)) = tokio::time::timeout(d, rx.recv()).await {
        panic!("expected nothing, got {m:?}");
    }
}

/// Waits until subscriptions are in effect: the broker answers SUBACK before routing, but the
/// client library queues requests, so give the request a moment to reach the broker.
pub async fn settle() {
    tokio::time::sleep(Duration::from_millis(200)).await;
}
