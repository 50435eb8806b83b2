//! `Broker`: the shared state of one node (config and limits, router, retained messages,
//! sessions, store, metrics, authenticator) and the publish path that ties them together.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::RwLock;
use rmqtt_codec::types::QoS;
use tokio_util::sync::CancellationToken;

use crate::auth::{AuthError, Authenticator};
use crate::config::{Config, Limits};
use crate::message::{Message, TenantId, now_ms};
use crate::metrics::Metrics;
use crate::router::{RetainChange, RetainedStore, Router};
use crate::session::{Enqueued, Session, SessionStore, Will};
use crate::store::{Store, StoreError, Ticket};

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error("{0}")]
    Listener(String),
}

pub struct Broker {
    pub config: Config,
    limits: RwLock<Arc<Limits>>,
    pub router: Router,
    pub retained: RetainedStore,
    pub sessions: SessionStore,
    pub store: Store,
    pub metrics: Metrics,
    pub auth: Authenticator,
    pub started: Instant,
    /// Cancelled to stop the node: listeners stop, clients get Server Shutting Down.
    pub shutdown: CancellationToken,
    next_conn_id: AtomicU64,
}

/// What became of a published message.
#[derive(Debug, Default)]
pub struct Published {
    /// Sessions the message was handed to.
    pub matched: usize,
    /// Everything persisted for it (retained, persistent-session queues) is durable once this
    /// ticket is committed; the publisher's PUBACK/PUBREC waits for it.
    pub ticket: Option<Ticket>,
}

impl Broker {
    /// Opens the store, restores retained messages and persistent sessions, loads credentials.
    pub fn open(config: Config) -> Result<Arc<Broker>, BrokerError> {
        let store = Store::open(&config.store.data_dir)?;
        let auth = Authenticator::load(&config.auth)?;
        let broker = Broker {
            limits: RwLock::new(Arc::new(config.limits.clone())),
            config,
            router: Router::default(),
            retained: RetainedStore::default(),
            sessions: SessionStore::default(),
            store,
            metrics: Metrics::default(),
            auth,
            started: Instant::now(),
            shutdown: CancellationToken::new(),
            next_conn_id: AtomicU64::new(1),
        };
        let loaded = broker.store.load()?;
        let (retained, sessions) = (loaded.retained.len(), loaded.sessions.len());
        for m in loaded.retained {
            let tenant: TenantId = m.tenant.as_str().into();
            broker.retained.set(&tenant, Arc::new(m), 0);
        }
        let limits = broker.limits();
        for (rec, deliveries) in loaded.sessions {
            broker.sessions.restore(
                &broker.router,
                rec,
                deliveries,
                limits.max_queued_messages,
                limits.max_topic_levels,
            );
        }
        tracing::info!(retained, sessions, dir = %broker.config.store.data_dir.display(), "store loaded");
        Ok(Arc::new(broker))
    }

    /// The limits in force now (hot-reloadable).
    pub fn limits(&self) -> Arc<Limits> {
        self.limits.read().clone()
    }

    pub fn set_limits(&self, limits: Limits) {
        *self.limits.write() = Arc::new(limits);
    }

    pub fn next_connection_id(&self) -> u64 {
        self.next_conn_id.fetch_add(1, Ordering::Relaxed)
    }

    pub fn node_name(&self) -> &str {
        &self.config.node.name
    }

    /// Routes a message: stores or clears it as retained, and hands a copy to every matching
    /// session (QoS downgraded to the subscription's, retain flag per Retain As Published).
    pub fn publish(&self, msg: Message) -> Published {
        let msg = Arc::new(msg);
        let mut out = Published::default();
        let tenant: TenantId = msg.tenant.as_str().into();
        if msg.retain {
            out.ticket = self.retain(&tenant, &msg);
        }
        let limits_store = &self.store;
        self.sessions.with_tenant(&msg.tenant, |sessions| {
            let deliveries = self.router.route(&msg.tenant, &msg.topic, msg.publisher.as_deref(), &|c| {
                sessions.get(c).is_some_and(|s| s.is_online())
            });
            for d in deliveries {
                let Some(session) = sessions.get(&d.client) else { continue };
                let qos = msg.qos.min(d.qos);
                let retain = d.retain_as_published && msg.retain;
                match session.enqueue(limits_store, msg.clone(), qos, retain, d.subscription_ids) {
                    Enqueued::Queued(t) => {
                        out.matched += 1;
                        out.ticket = out.ticket.max(t);
                    }
                    _ => Metrics::inc(&self.metrics.messages_dropped),
                }
            }
        });
        if out.matched == 0 {
            Metrics::inc(&self.metrics.messages_no_subscribers);
        }
        out
    }

    fn retain(&self, tenant: &TenantId, msg: &Arc<Message>) -> Option<Ticket> {
        let persist = !msg.topic.starts_with("$SYS");
        match self.retained.set(tenant, msg.clone(), self.limits().max_retained_messages) {
            RetainChange::Stored | RetainChange::Replaced => {
                Metrics::inc(&self.metrics.messages_retained_set);
                persist.then(|| self.store.put_retained(msg))
            }
            RetainChange::Cleared => persist.then(|| self.store.delete_retained(&msg.tenant, &msg.topic)),
            RetainChange::Unchanged => None,
            RetainChange::LimitReached => {
                tracing::warn!(%tenant, topic = %msg.topic, "limits.max_retained_messages reached; not retained");
                None
            }
        }
    }

    /// Retained messages for a new subscription, queued to the session with the retain flag set.
    pub fn deliver_retained(&self, session: &Session, filter: &str, qos: QoS, sub_id: Option<std::num::NonZeroU32>) {
        for m in self.retained.matching(&session.tenant, filter) {
            let q = m.qos.min(qos);
            if !matches!(session.enqueue(&self.store, m, q, true, sub_id.into_iter().collect()), Enqueued::Queued(_)) {
                Metrics::inc(&self.metrics.messages_dropped);
            }
        }
    }

    /// Publishes a will now, or after its delay unless the client reconnects first.
    pub fn schedule_will(self: &Arc<Self>, session: &Arc<Session>, will: Will, session_ended: bool) {
        if will.delay_secs == 0 || session_ended {
            self.publish_will(will);
            return;
        }
        let delay = will.delay_secs.min(session.lock().expiry_secs);
        let broker = self.clone();
        let s = session.clone();
        let mut st = session.lock();
        let task = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(u64::from(delay))).await;
            let pending = s.lock().pending_will.take();
            if let Some((w, _)) = pending {
                broker.publish_will(w);
            }
        });
        st.pending_will = Some((will, task.abort_handle()));
    }

    pub fn publish_will(&self, will: Will) {
        Metrics::inc(&self.metrics.messages_will);
        let mut m = (*will.message).clone();
        m.received_ms = now_ms();
        self.publish(m);
    }

    /// Ends sessions whose expiry passed and drops expired retained messages.
    pub fn expire(&self) {
        for s in self.sessions.expired(now_ms()) {
            let will = s.lock().pending_will.take();
            if let Some((w, timer)) = will {
                timer.abort();
                self.publish_will(w);
            }
            tracing::debug!(tenant = %s.tenant, client_id = %s.client_id, "session expired");
            Metrics::inc(&self.metrics.session_expired);
            self.sessions.end(&self.router, &self.store, &s);
        }
        for (tenant, topic) in self.retained.purge_expired() {
            self.store.delete_retained(&tenant, &topic);
        }
    }
}
