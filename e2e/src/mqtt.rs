//! Real MQTT clients (rumqttc, MQTT 3.1.1) for the checks: publish/subscribe round trips through
//! a broker address, every step bounded by a timeout.

use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use rumqttc::{Client, Event, Incoming, MqttOptions, QoS};

/// The MQTT port of the broker image.
pub const MQTT_PORT: u16 = 1883;

/// A connected client and the events its connection thread forwards.
pub struct Session {
    client: Client,
    events: Receiver<Result<Incoming, String>>,
    addr: String,
}

impl Session {
    /// Connects with a fresh client id and waits for CONNACK.
    fn connect(host: &str, port: u16, role: &str, timeout: Duration) -> Result<Session> {
        Session::connect_as(host, port, &format!("e2e-{role}-{}", unique()), timeout)
    }

    /// Connects as `id` (clean session) and waits for a successful CONNACK; a refused
    /// connection fails with the broker's return code in the message.
    pub fn connect_as(host: &str, port: u16, id: &str, timeout: Duration) -> Result<Session> {
        crate::fence::check(&format!("{host}:{port}"))?;
        let mut opts = MqttOptions::new(id, host, port);
        opts.set_keep_alive(Duration::from_secs(30)).set_clean_session(true);
        let (client, mut connection) = Client::new(opts, 16);
        let (tx, events) = mpsc::channel();
        thread::spawn(move || {
            // Forwards incoming packets until the first error (no reconnect loop) or until the
            // client is dropped, which ends the iterator.
            for event in connection.iter() {
                let msg = match event {
                    Ok(Event::Incoming(p)) => Ok(p),
                    Ok(Event::Outgoing(_)) => continue,
                    Err(e) => Err(e.to_string()),
                };
                let stop = msg.is_err();
                if tx.send(msg).is_err() || stop {
                    break;
                }
            }
        });
        let mut s = Session { client, events, addr: format!("{host}:{port}") };
        s.expect(timeout, "CONNACK", |p| matches!(p, Incoming::ConnAck(_)))?;
        Ok(s)
    }

    /// Subscribes to `filter` at QoS 1 and waits for the SUBACK.
    pub fn subscribe(&mut self, filter: &str, timeout: Duration) -> Result<()> {
        subscribe(self, filter, timeout)
    }

    /// Publishes `payload` to `topic` at QoS 1 and waits for the PUBACK.
    pub fn publish(&mut self, topic: &str, payload: &str, timeout: Duration) -> Result<()> {
        self.client.publish(topic, QoS::AtLeastOnce, false, payload.as_bytes().to_vec())?;
        self.expect(timeout, "PUBACK", |p| matches!(p, Incoming::PubAck(_))).map(drop)
    }

    /// The next PUBLISH this client receives: (topic, payload).
    pub fn next_publish(&mut self, timeout: Duration) -> Result<(String, String)> {
        match self.expect(timeout, "a PUBLISH", |p| matches!(p, Incoming::Publish(_)))? {
            Incoming::Publish(m) => Ok((m.topic, String::from_utf8_lossy(&m.payload).into_owned())),
            other => bail!("MQTT {}: expected a PUBLISH, got {other:?}", self.addr),
        }
    }

    /// Waits for an incoming packet matching `want`, skipping others.
    fn expect(&mut self, timeout: Duration, what: &str, want: impl Fn(&Incoming) -> bool) -> Result<Incoming> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(Ok(p)) if want(&p) => return Ok(p),
                Ok(Ok(_)) => continue,
                Ok(Err(e)) => bail!("MQTT {}: connection failed before {what}: {e}", self.addr),
                Err(RecvTimeoutError::Timeout) => bail!("MQTT {}: no {what} within {timeout:?}", self.addr),
                Err(RecvTimeoutError::Disconnected) => bail!("MQTT {}: connection closed before {what}", self.addr),
            }
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // Best effort, also on error paths: the connection thread ends once the client is gone.
        let _ = self.client.try_disconnect();
    }
}

/// A process-unique suffix for client ids and topics.
fn unique() -> String {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
    format!("{}-{nanos:08x}", std::process::id())
}

/// Proves one broker routes a message between clients: a subscriber and a publisher, both
/// connected to `host:port`; the subscriber gets the QoS 1 message the publisher sends. For an
/// address of one broker (a pod IP); see [`self_round_trip`] for a load-balanced one. Returns
/// the topic.
pub fn round_trip(host: &str, port: u16, timeout: Duration) -> Result<String> {
    let topic = format!("e2e/round-trip/{}", unique());
    let mut sub = Session::connect(host, port, "sub", timeout).context("subscriber")?;
    subscribe(&mut sub, &topic, timeout)?;
    let mut publ = Session::connect(host, port, "pub", timeout).context("publisher")?;
    let payload = publish(&mut publ, &topic, timeout)?;
    receive(&mut sub, &topic, &payload, timeout)?;
    Ok(topic)
}

/// One client subscribes and then publishes to its own subscription: for a load-balanced
/// address (a ClusterIP Service), where two connections may reach two different brokers.
pub fn self_round_trip(host: &str, port: u16, timeout: Duration) -> Result<String> {
    let topic = format!("e2e/self-round-trip/{}", unique());
    let mut client = Session::connect(host, port, "self", timeout)?;
    subscribe(&mut client, &topic, timeout)?;
    let payload = publish(&mut client, &topic, timeout)?;
    receive(&mut client, &topic, &payload, timeout)?;
    Ok(topic)
}

fn subscribe(s: &mut Session, topic: &str, timeout: Duration) -> Result<()> {
    s.client.subscribe(topic, QoS::AtLeastOnce)?;
    s.expect(timeout, "SUBACK", |p| matches!(p, Incoming::SubAck(_))).map(drop)
}

/// Publishes a QoS 1 message on `topic`, waits for PUBACK; returns the payload.
fn publish(s: &mut Session, topic: &str, timeout: Duration) -> Result<String> {
    let payload = format!("hello via {}", s.addr);
    s.client.publish(topic, QoS::AtLeastOnce, false, payload.clone().into_bytes())?;
    s.expect(timeout, "PUBACK", |p| matches!(p, Incoming::PubAck(_)))?;
    Ok(payload)
}

fn receive(s: &mut Session, topic: &str, payload: &str, timeout: Duration) -> Result<()> {
    let got =
        s.expect(timeout, &format!("PUBLISH on {topic}"), |p| matches!(p, Incoming::Publish(m) if m.topic == topic))?;
    if let Incoming::Publish(m) = got
        && m.payload.as_ref() != payload.as_bytes()
    {
        bail!("MQTT {}: payload {:?}, sent {payload:?}", s.addr, String::from_utf8_lossy(&m.payload));
    }
    Ok(())
}

/// Whether anything accepts a TCP connection at `ip:port` within `timeout` (a refused or
/// unreachable address answers `false`).
pub fn tcp_answers(ip: &str, port: u16, timeout: Duration) -> bool {
    let Ok(ip) = ip.parse::<IpAddr>() else { return false };
    if crate::fence::check(&format!("{ip}:{port}")).is_err() {
        return false;
    }
    TcpStream::connect_timeout(&SocketAddr::new(ip, port), timeout).is_ok()
}
