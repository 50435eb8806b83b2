//! Sessions: the per-client state that outlives a connection (subscriptions, the queue of
//! messages still to deliver, the outbound inflight window with its packet ids, inbound QoS 2
//! ids awaiting PUBREL, the will) and the `SessionStore` that owns them all.

mod registry;

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::num::{NonZeroU16, NonZeroU32};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;
use rmqtt_codec::types::{Publish, QoS};
use rmqtt_codec::v5::DisconnectReasonCode;
use tokio::sync::{Notify, oneshot};

use crate::message::{Message, TenantId, now_ms};
use crate::router::{ClientId, SubOptions};
use crate::store::{SessionRecord, Store, StoredDelivery, Ticket};
use crate::topic::FilterSpec;
pub use registry::{OpenOutcome, SessionStore, TenantSessions};

/// Why the broker closes a connection from its side.
#[derive(Debug, Clone)]
pub struct Kick {
    pub reason: DisconnectReasonCode,
    pub reason_string: Option<String>,
    pub server_reference: Option<String>,
    /// Whether the session ends with the connection (admin kick) or stays (redirect, takeover).
    pub end_session: bool,
}

impl Kick {
    pub fn new(reason: DisconnectReasonCode) -> Self {
        Self { reason, reason_string: None, server_reference: None, end_session: false }
    }
}

/// The connection currently attached to a session.
#[derive(Debug)]
pub struct Attachment {
    pub id: u64,
    /// Closes the connection (takeover, admin kick); used once.
    pub kick: Option<oneshot::Sender<Kick>>,
    /// Outbound window: the client's Receive Maximum, capped by `limits.max_inflight`.
    pub receive_max: u16,
    /// What the admin API shows of the connection.
    pub info: ConnectionInfo,
}

/// Facts about a connection, for the admin API's client listing.
#[derive(Debug, Clone)]
pub struct ConnectionInfo {
    pub peer: std::net::SocketAddr,
    pub listener: &'static str,
    pub keep_alive: u16,
    pub clean_start: bool,
}

impl Attachment {
    /// Tells the connection to close; whether it was still listening.
    pub fn kick(&mut self, kick: Kick) -> bool {
        self.kick.take().is_some_and(|k| k.send(kick).is_ok())
    }
}

/// A will message and its v5 delay.
#[derive(Debug, Clone)]
pub struct Will {
    pub message: Arc<Message>,
    pub delay_secs: u32,
}

/// One message waiting for, or in flight to, the client.
#[derive(Debug, Clone)]
pub struct Pending {
    pub message: Arc<Message>,
    pub qos: QoS,
    pub retain: bool,
    pub subscription_ids: Vec<NonZeroU32>,
    /// Key in the store for persistent sessions.
    pub seq: Option<u64>,
    /// QoS 2 only: the client sent PUBREC; PUBREL is what is in flight now.
    pub released: bool,
    /// When the PUBLISH (or PUBREL) in flight was last sent, 0 while queued.
    pub sent_ms: u64,
}

/// What happens to the outbound side after the client's acknowledgement.
pub enum Outgoing {
    Publish(Box<Publish>),
    Release(NonZeroU16),
}

#[derive(Debug, Default, Clone, Copy)]
pub struct SessionCounters {
    pub delivered: [u64; 3],
    pub dropped_queue_full: u64,
    pub dropped_expired: u64,
    pub dropped_offline_qos0: u64,
}

pub struct SessionState {
    pub subscriptions: HashMap<String, (FilterSpec, SubOptions)>,
    pub queue: VecDeque<Pending>,
    pub inflight: BTreeMap<u16, Pending>,
    pub awaiting_rel: HashSet<u16>,
    next_packet_id: u16,
    pub expiry_secs: u32,
    pub created_ms: u64,
    pub connected_ms: Option<u64>,
    pub disconnected_ms: Option<u64>,
    pub conn: Option<Attachment>,
    /// The attached connection's will, published if it ends abnormally.
    pub will: Option<Will>,
    /// A will waiting out its delay after an abnormal disconnect.
    pub pending_will: Option<(Will, tokio::task::AbortHandle)>,
    pub username: Option<String>,
    pub protocol_level: u8,
    pub max_queue: usize,
    pub counters: SessionCounters,
    /// Set once the session has ended; late deliveries are dropped.
    pub ended: bool,
}

pub struct Session {
    pub tenant: TenantId,
    pub client_id: ClientId,
    pub(crate) state: Mutex<SessionState>,
    /// Mirrors `state.conn.is_some()` for lock-free checks while routing.
    online: AtomicBool,
    notify: Notify,
}

/// Result of handing a message to a session.
#[derive(Debug, PartialEq, Eq)]
pub enum Enqueued {
    Queued(Option<Ticket>),
    DroppedQueueFull,
    DroppedOffline,
    DroppedEnded,
}

impl Session {
    pub(crate) fn new(tenant: TenantId, client_id: ClientId, expiry_secs: u32, max_queue: usize) -> Session {
        Session {
            tenant,
            client_id,
            state: Mutex::new(SessionState {
                subscriptions: HashMap::new(),
                queue: VecDeque::new(),
                inflight: BTreeMap::new(),
                awaiting_rel: HashSet::new(),
                next_packet_id: 1,
                expiry_secs,
                created_ms: now_ms(),
                connected_ms: None,
                disconnected_ms: None,
                conn: None,
                will: None,
                pending_will: None,
                username: None,
                protocol_level: 4,
                max_queue,
                counters: SessionCounters::default(),
                ended: false,
            }),
            online: AtomicBool::new(false),
            notify: Notify::new(),
        }
    }

    pub fn is_online(&self) -> bool {
        self.online.load(Ordering::Acquire)
    }

    pub(crate) fn set_online(&self, online: bool) {
        self.online.store(online, Ordering::Release);
    }

    pub fn lock(&self) -> parking_lot::MutexGuard<'_, SessionState> {
        self.state.lock()
    }

    /// Waits until there may be something new to send.
    pub async fn notified(&self) {
        self.notify.notified().await
    }

    pub fn wake(&self) {
        self.notify.notify_one();
    }

    /// Hands a message to this session at `qos` (already the lower of message and subscription).
    /// QoS 0 is dropped while offline; the queue is bounded; persistent sessions store QoS 1/2.
    pub fn enqueue(
        &self,
        store: &Store,
        message: Arc<Message>,
        qos: QoS,
        retain: bool,
        subscription_ids: Vec<NonZeroU32>,
    ) -> Enqueued {
        let mut st = self.state.lock();
        if st.ended {
            return Enqueued::DroppedEnded;
        }
        if st.conn.is_none() && qos == QoS::AtMostOnce {
            st.counters.dropped_offline_qos0 += 1;
            return Enqueued::DroppedOffline;
        }
        if st.queue.len() >= st.max_queue {
            st.counters.dropped_queue_full += 1;
            if st.counters.dropped_queue_full.is_power_of_two() {
                tracing::warn!(tenant = %self.tenant, client_id = %self.client_id, limit = st.max_queue,
                    dropped = st.counters.dropped_queue_full, "limits.max_queued_messages reached; dropping messages");
            }
            return Enqueued::DroppedQueueFull;
        }
        let mut ticket = None;
        let mut seq = None;
        if st.expiry_secs > 0 && qos != QoS::AtMostOnce {
            let s = store.next_message_seq();
            let stored = StoredDelivery {
                message: (*message).clone(),
                qos,
                retain,
                subscription_ids: subscription_ids.iter().map(|i| i.get()).collect(),
                released_packet_id: None,
                sent_packet_id: None,
            };
            ticket = Some(store.put_delivery(&self.tenant, &self.client_id, s, &stored));
            seq = Some(s);
        }
        st.queue.push_back(Pending { message, qos, retain, subscription_ids, seq, released: false, sent_ms: 0 });
        drop(st);
        self.notify.notify_one();
        Enqueued::Queued(ticket)
    }

    /// Moves what the window allows from the queue into flight and returns the PUBLISHes to send.
    /// Returns nothing unless connection `conn_id` is the one attached.
    pub fn take_outgoing(&self, store: &Store, conn_id: u64, out: &mut Vec<Outgoing>) {
        let mut st = self.state.lock();
        let Some(window) = st.conn.as_ref().filter(|c| c.id == conn_id).map(|c| c.receive_max as usize) else {
            return;
        };
        let now = now_ms();
        while let Some(front) = st.queue.front() {
            if front.message.is_expired(now) {
                if let Some(p) = st.queue.pop_front() {
                    st.counters.dropped_expired += 1;
                    if let Some(seq) = p.seq {
                        store.delete_delivery(&self.tenant, &self.client_id, seq);
                    }
                }
                continue;
            }
            if front.qos != QoS::AtMostOnce && st.inflight.len() >= window {
                break;
            }
            let Some(p) = st.queue.pop_front() else { break };
            st.counters.delivered[p.qos as usize] += 1;
            if p.qos == QoS::AtMostOnce {
                out.push(Outgoing::Publish(Box::new(p.message.to_publish(
                    p.qos,
                    p.retain,
                    false,
                    None,
                    &p.subscription_ids,
                    now,
                ))));
                continue;
            }
            let mut p = p;
            p.sent_ms = now;
            let pid = st.alloc_packet_id();
            if let Some(seq) = p.seq {
                // So that a restart sends it again with this id and DUP.
                store.put_inflight(&self.tenant, &self.client_id, seq, pid);
            }
            out.push(Outgoing::Publish(Box::new(p.message.to_publish(
                p.qos,
                p.retain,
                false,
                NonZeroU16::new(pid),
                &p.subscription_ids,
                now,
            ))));
            st.inflight.insert(pid, p);
        }
    }

    /// On resume: every message still in flight, again, in packet-id order (PUBLISH with DUP, or PUBREL).
    pub fn resend_inflight(&self, store: &Store, out: &mut Vec<Outgoing>) {
        self.resend_sent_before(store, u64::MAX, out);
    }

    /// MQTT 3.1.1 retry: what has been in flight for `interval_ms` or longer, again; nothing
    /// unless connection `conn_id` is the one attached.
    pub fn resend_overdue(&self, store: &Store, conn_id: u64, interval_ms: u64, out: &mut Vec<Outgoing>) {
        if self.state.lock().conn.as_ref().is_none_or(|c| c.id != conn_id) {
            return;
        }
        self.resend_sent_before(store, now_ms().saturating_sub(interval_ms), out);
    }

    /// Resends (PUBLISH with DUP, or PUBREL) what in flight was last sent at or before `cutoff_ms`,
    /// in packet-id order; expired PUBLISHes are dropped instead.
    fn resend_sent_before(&self, store: &Store, cutoff_ms: u64, out: &mut Vec<Outgoing>) {
        let mut st = self.state.lock();
        let now = now_ms();
        let expired: Vec<u16> =
            st.inflight.iter().filter(|(_, p)| !p.released && p.message.is_expired(now)).map(|(id, _)| *id).collect();
        for id in expired {
            if let Some(p) = st.inflight.remove(&id) {
                st.counters.dropped_expired += 1;
                if let Some(seq) = p.seq {
                    store.delete_delivery(&self.tenant, &self.client_id, seq);
                }
            }
        }
        for (id, p) in st.inflight.iter_mut() {
            let Some(pid) = NonZeroU16::new(*id) else { continue };
            if p.sent_ms > cutoff_ms {
                continue;
            }
            p.sent_ms = now;
            if p.released {
                out.push(Outgoing::Release(pid));
            } else {
                out.push(Outgoing::Publish(Box::new(p.message.to_publish(
                    p.qos,
                    p.retain,
                    true,
                    Some(pid),
                    &p.subscription_ids,
                    now,
                ))));
            }
        }
    }

    /// PUBACK (or a failed PUBREC, or a message too large to send): the delivery is over.
    pub fn complete(&self, store: &Store, packet_id: u16) -> bool {
        let mut st = self.state.lock();
        match st.inflight.remove(&packet_id) {
            Some(p) => {
                if let Some(seq) = p.seq {
                    store.delete_delivery(&self.tenant, &self.client_id, seq);
                }
                true
            }
            None => false,
        }
    }

    /// PUBREC: the QoS 2 message arrived; PUBREL is next. Returns false for an unknown id.
    pub fn released(&self, store: &Store, packet_id: u16) -> bool {
        let mut st = self.state.lock();
        let Some(p) = st.inflight.get_mut(&packet_id) else { return false };
        if p.qos != QoS::ExactlyOnce {
            return false;
        }
        p.released = true;
        p.sent_ms = now_ms();
        if let Some(seq) = p.seq {
            let stored = StoredDelivery {
                message: (*p.message).clone(),
                qos: p.qos,
                retain: p.retain,
                subscription_ids: p.subscription_ids.iter().map(|i| i.get()).collect(),
                released_packet_id: Some(packet_id),
                sent_packet_id: None,
            };
            store.put_delivery(&self.tenant, &self.client_id, seq, &stored);
        }
        true
    }

    /// The record to persist for this session.
    pub fn record(&self) -> SessionRecord {
        let st = self.state.lock();
        st.record(&self.tenant, &self.client_id)
    }
}

impl SessionState {
    fn alloc_packet_id(&mut self) -> u16 {
        loop {
            let id = self.next_packet_id;
            self.next_packet_id = if id == u16::MAX { 1 } else { id + 1 };
            if !self.inflight.contains_key(&id) {
                return id;
            }
        }
    }

    pub fn record(&self, tenant: &str, client_id: &str) -> SessionRecord {
        SessionRecord {
            tenant: tenant.to_string(),
            client_id: client_id.to_string(),
            expiry_secs: self.expiry_secs,
            created_ms: self.created_ms,
            disconnected_ms: self.disconnected_ms,
            protocol_level: self.protocol_level,
            username: self.username.clone(),
            subscriptions: self.subscriptions.iter().map(|(raw, (_, o))| (raw.clone(), *o)).collect(),
        }
    }

    /// Restores stored deliveries: released QoS 2 ones (PUBREL) and ones sent but not acknowledged
    /// (PUBLISH with DUP) go back in flight with their packet id, the rest are queued.
    pub(crate) fn restore(&mut self, deliveries: Vec<(u64, StoredDelivery)>) {
        for (seq, d) in deliveries {
            let pending = Pending {
                message: Arc::new(d.message),
                qos: d.qos,
                retain: d.retain,
                subscription_ids: d.subscription_ids.into_iter().filter_map(NonZeroU32::new).collect(),
                seq: Some(seq),
                released: d.released_packet_id.is_some(),
                sent_ms: 0,
            };
            match d.released_packet_id.or(d.sent_packet_id) {
                Some(pid) if pid != 0 && !self.inflight.contains_key(&pid) => {
                    self.inflight.insert(pid, pending);
                }
                _ => self.queue.push_back(pending),
            }
        }
    }
}
