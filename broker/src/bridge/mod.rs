//! Bridges: outbound MQTT links (rumqttc, 3.1.1 or 5.0, over TCP, TLS or WebSocket) that send
//! local topics to a remote broker and publish the remote's topics locally.
//!
//! Each `BridgeLink` keeps a bounded send queue that fills while the remote is away (oldest
//! dropped and counted when full), reconnects with exponential back-off and jitter, and is
//! kept in the store so it comes back after a restart. Loop prevention: a message that came in
//! through a bridge, or carries the `starling-bridge` user property (MQTT 5), is never sent out
//! through a bridge again.

mod remote;

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use crds::{BridgeConfig, BridgeStatus, BridgeSubscription};
use parking_lot::{Mutex, RwLock};
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

use crate::broker::Broker;
use crate::message::{Message, TenantId, now_ms};
use crate::topic::{FilterSpec, matches};

/// Store kind of bridge objects.
const KIND: &str = "bridge";
/// The publisher id of messages a bridge brings in.
pub const BRIDGE_PUBLISHER_PREFIX: &str = "$bridge/";
/// User property marking a message a bridge has sent (MQTT 5).
pub const HOP_PROPERTY: &str = "starling-bridge";

/// One queued outbound message.
#[derive(Debug, Clone)]
struct Outbound {
    remote_topic: String,
    qos: rmqtt_codec::types::QoS,
    message: Arc<Message>,
}

/// Commands to a running link.
enum Command {
    Subscribe(Vec<BridgeSubscription>),
    Unsubscribe(Vec<String>),
}

/// A running bridge.
pub struct BridgeLink {
    pub name: String,
    config: RwLock<BridgeConfig>,
    tenant: TenantId,
    queue: Mutex<VecDeque<Outbound>>,
    wake: Notify,
    status: Mutex<BridgeStatus>,
    commands: mpsc::UnboundedSender<Command>,
    cancel: CancellationToken,
}

impl BridgeLink {
    pub fn config(&self) -> BridgeConfig {
        self.config.read().clone()
    }

    pub fn status(&self) -> BridgeStatus {
        let mut s = self.status.lock().clone();
        s.queue_len = self.queue.lock().len();
        s
    }

    /// Queues a message for the remote on `remote_topic` (a rule's bridge action).
    pub fn send(&self, remote_topic: String, message: Message) {
        let qos = message.qos;
        self.push(Outbound { remote_topic, qos, message: Arc::new(message) }, self.config.read().max_send_queue_len);
    }

    fn push(&self, item: Outbound, max: usize) {
        let mut q = self.queue.lock();
        if q.len() >= max {
            q.pop_front();
            self.status.lock().dropped += 1;
            tracing::warn!(bridge = %self.name, limit = max, "bridge send queue full; oldest message dropped");
        }
        q.push_back(item);
        drop(q);
        // Every connection of a `parallel` bridge may send: wake the waiting ones, and leave a
        // permit for one that is busy right now.
        self.wake.notify_waiters();
        self.wake.notify_one();
    }

    /// Queues a local message for the remote if a forward matches it.
    fn offer(&self, msg: &Arc<Message>) {
        if *msg.tenant != *self.tenant {
            return;
        }
        let cfg = self.config.read();
        for f in &cfg.forwards {
            if !matches(&f.local_topic, &msg.topic) {
                continue;
            }
            let qos = msg.qos.min(crate::admin::publish::parse_qos(f.qos, "qos").unwrap_or(msg.qos));
            let item = Outbound {
                remote_topic: crds::bridge::expand_topic(&f.remote_topic, &msg.topic),
                qos,
                message: msg.clone(),
            };
            self.push(item, cfg.max_send_queue_len);
            break;
        }
    }
}

/// Every bridge of the node, by name.
#[derive(Default)]
pub struct Bridges {
    links: RwLock<BTreeMap<String, Arc<BridgeLink>>>,
}

/// What `put` did.
#[derive(Debug, PartialEq, Eq)]
pub enum Put {
    Created,
    Replaced,
    Unchanged,
}

impl Bridges {
    /// Hands a published message to every bridge that forwards it. Messages that came in through
    /// a bridge or were sent by one are not forwarded again (loop prevention).
    pub fn offer(&self, msg: &Arc<Message>) {
        let links = self.links.read();
        if links.is_empty() {
            return;
        }
        if msg.publisher.as_deref().is_some_and(|p| p.starts_with(BRIDGE_PUBLISHER_PREFIX))
            || msg.properties.user_properties.iter().any(|(k, _)| &**k == HOP_PROPERTY)
        {
            return;
        }
        for link in links.values() {
            link.offer(msg);
        }
    }

    pub fn get(&self, name: &str) -> Option<Arc<BridgeLink>> {
        self.links.read().get(name).cloned()
    }

    pub fn list(&self) -> Vec<Arc<BridgeLink>> {
        self.links.read().values().cloned().collect()
    }

    /// Checks a bridge's configuration against the broker's limits; the message names the field.
    pub fn validate(broker: &Broker, name: &str, cfg: &BridgeConfig) -> Result<(), String> {
        if name.is_empty() || name.len() > 128 || !name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err(format!("bridge name {name:?} must be 1 to 128 of A-Z a-z 0-9 - _ ."));
        }
        cfg.validate()?;
        let levels = broker.limits().max_topic_levels;
        for (i, f) in cfg.forwards.iter().enumerate() {
            FilterSpec::parse(&f.local_topic, levels).map_err(|e| format!("forwards[{i}].local_topic: {e}"))?;
        }
        for (i, s) in cfg.subscriptions.iter().enumerate() {
            FilterSpec::parse(&s.remote_topic, levels).map_err(|e| format!("subscriptions[{i}].remote_topic: {e}"))?;
        }
        Ok(())
    }

    /// Creates or replaces a bridge (a replaced one reconnects), and stores it.
    pub fn put(&self, broker: &Arc<Broker>, name: &str, cfg: BridgeConfig) -> Result<Put, String> {
        Self::validate(broker, name, &cfg)?;
        let old = self.get(name);
        if old.as_ref().is_some_and(|l| *l.config.read() == cfg) {
            return Ok(Put::Unchanged);
        }
        broker.store.put_object(KIND, name, &cfg);
        self.start(broker, name, cfg);
        Ok(if old.is_some() { Put::Replaced } else { Put::Created })
    }

    fn start(&self, broker: &Arc<Broker>, name: &str, cfg: BridgeConfig) {
        let tenant: TenantId =
            cfg.tenant.clone().unwrap_or_else(|| broker.config.tenancy.default_tenant.clone()).as_str().into();
        let (tx, rx) = mpsc::unbounded_channel();
        let link = Arc::new(BridgeLink {
            name: name.to_string(),
            config: RwLock::new(cfg),
            tenant,
            queue: Mutex::new(VecDeque::new()),
            wake: Notify::new(),
            status: Mutex::new(BridgeStatus { since: now_ms(), ..BridgeStatus::default() }),
            commands: tx,
            cancel: broker.shutdown.child_token(),
        });
        if let Some(old) = self.links.write().insert(name.to_string(), link.clone()) {
            old.cancel.cancel();
            // What the old link accepted and had not sent goes out on the new one (beyond the
            // new `max_send_queue_len`, the oldest are dropped and counted as usual).
            let carried = std::mem::take(&mut *old.queue.lock());
            if !carried.is_empty() {
                tracing::info!(bridge = %name, carried = carried.len(), "queued messages carried over to the replaced bridge");
                let max = link.config.read().max_send_queue_len;
                for item in carried {
                    link.push(item, max);
                }
            }
        }
        let parallel = link.config.read().parallel.max(1);
        let mut commands = Some(rx);
        for index in 0..parallel {
            let span = tracing::info_span!("bridge", bridge = %name, connection = index);
            let task = remote::run(broker.clone(), link.clone(), index, commands.take());
            tokio::spawn(tracing::Instrument::instrument(task, span));
        }
    }

    /// Stops and forgets a bridge; whether it existed.
    pub fn delete(&self, broker: &Broker, name: &str) -> bool {
        let Some(link) = self.links.write().remove(name) else { return false };
        link.cancel.cancel();
        broker.store.delete_object(KIND, name);
        true
    }

    /// Adds remote subscriptions without reconnecting (one with the same remote filter is replaced).
    pub fn subscribe(
        &self,
        broker: &Broker,
        name: &str,
        subs: Vec<BridgeSubscription>,
    ) -> Result<BridgeConfig, String> {
        let link = self.get(name).ok_or_else(|| format!("bridge {name:?} not found"))?;
        let mut cfg = link.config();
        for s in &subs {
            cfg.subscriptions.retain(|x| x.remote_topic != s.remote_topic);
            cfg.subscriptions.push(s.clone());
        }
        Self::validate(broker, name, &cfg)?;
        *link.config.write() = cfg.clone();
        broker.store.put_object(KIND, name, &cfg);
        let _ = link.commands.send(Command::Subscribe(subs));
        Ok(cfg)
    }

    /// Removes remote subscriptions by remote filter without reconnecting.
    pub fn unsubscribe(&self, broker: &Broker, name: &str, topics: Vec<String>) -> Result<BridgeConfig, String> {
        let link = self.get(name).ok_or_else(|| format!("bridge {name:?} not found"))?;
        let mut cfg = link.config();
        cfg.subscriptions.retain(|x| !topics.contains(&x.remote_topic));
        *link.config.write() = cfg.clone();
        broker.store.put_object(KIND, name, &cfg);
        let _ = link.commands.send(Command::Unsubscribe(topics));
        Ok(cfg)
    }

    /// Starts the bridges kept in the store (at node start).
    pub fn restore(&self, broker: &Arc<Broker>) {
        match broker.store.load_objects::<BridgeConfig>(KIND) {
            Ok(all) => {
                for (name, cfg) in all {
                    match Self::validate(broker, &name, &cfg) {
                        Ok(()) => self.start(broker, &name, cfg),
                        Err(e) => {
                            tracing::warn!(bridge = %name, error = %e, "stored bridge no longer valid; not started")
                        }
                    }
                }
            }
            Err(e) => tracing::error!(error = %e, "cannot read bridges from the store"),
        }
    }
}
