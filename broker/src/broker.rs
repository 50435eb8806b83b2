//! `Broker`: the shared state of one node (config and limits, router, retained messages,
//! sessions, store, metrics, authenticator) and the publish path that ties them together.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::RwLock;
use rmqtt_codec::types::QoS;
use tokio_util::sync::CancellationToken;

use crate::auth::{AuthError, Authenticator};
use crate::config::{Config, Limits};
use crate::message::{Message, TenantId, now_ms};
use crate::metrics::Metrics;
use crate::router::{ClientId, SubOptions};
use crate::router::{RetainChange, RetainedStore, Router};
use crate::session::{Enqueued, Session, SessionStore, Will};
use crate::store::{Store, StoreError, Ticket};
use crate::topic::FilterSpec;
use crds::Settings;

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error("{0}")]
    Listener(String),
    #[error("{0}")]
    Cluster(String),
}

pub struct Broker {
    pub config: Config,
    limits: RwLock<Arc<Limits>>,
    /// Whether `$SYS` topics are published (the `sys` module; the admin API toggles it).
    pub sys_enabled: AtomicBool,
    /// Set before `shutdown` when the admin API asked for a restart rather than a stop.
    pub restart_requested: AtomicBool,
    /// `auth.allow_anonymous`, hot-reloadable through the admin API.
    allow_anonymous: AtomicBool,
    pub router: Router,
    pub retained: RetainedStore,
    pub sessions: SessionStore,
    pub store: Store,
    pub metrics: Metrics,
    pub peaks: crate::metrics::Peaks,
    pub bridges: crate::bridge::Bridges,
    pub rules: crate::rules::RuleEngine,
    pub traffic: crate::traffic::TrafficRules,
    /// This node's view of cluster membership (set by the operator through the admin API).
    pub cluster: RwLock<crds::ClusterMembership>,
    /// The links to the peers and the routes they announced.
    pub cluster_links: crate::cluster::Cluster,
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
        let cluster_links = crate::cluster::Cluster::new(config.cluster.clone()).map_err(BrokerError::Cluster)?;
        let cluster =
            crate::admin::cluster::load(&config.store.data_dir.join(crate::admin::cluster::FILE), &config.node.name);
        let broker = Broker {
            limits: RwLock::new(Arc::new(config.limits.clone())),
            allow_anonymous: AtomicBool::new(config.auth.allow_anonymous),
            sys_enabled: AtomicBool::new(config.sys.interval_secs > 0),
            restart_requested: AtomicBool::new(false),
            config,
            router: Router::default(),
            retained: RetainedStore::default(),
            sessions: SessionStore::default(),
            store,
            metrics: Metrics::default(),
            peaks: Default::default(),
            bridges: Default::default(),
            rules: Default::default(),
            traffic: Default::default(),
            cluster: RwLock::new(cluster),
            cluster_links,
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
        broker.cluster_links.restore_outbox(broker.store.load_outbox()?);
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

    /// The hot-reloadable settings in force now.
    pub fn settings(&self) -> Settings {
        Settings { allow_anonymous: self.allow_anonymous(), limits: (*self.limits()).clone() }
    }

    /// Applies settings at once (validated by the caller); new limits apply to what happens next.
    pub fn set_settings(&self, settings: Settings) {
        self.allow_anonymous.store(settings.allow_anonymous, Ordering::Relaxed);
        self.set_limits(settings.limits);
    }

    pub fn allow_anonymous(&self) -> bool {
        self.allow_anonymous.load(Ordering::Relaxed)
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
        let forwarded = self.cluster_links.forward(&self.router, &self.store, &msg);
        let elsewhere = &forwarded.elsewhere;
        self.deliver_local(&msg, &mut out, &|served| match served {
            None => true,
            Some((f, g)) => !elsewhere.iter().any(|(ef, eg)| ef == f && eg == g),
        });
        out.matched += forwarded.peers;
        out.ticket = out.ticket.max(forwarded.ticket);
        if out.matched == 0 {
            Metrics::inc(&self.metrics.messages_no_subscribers);
        }
        self.bridges.offer(&msg);
        self.rules.offer(&self.metrics, &msg);
        out
    }

    /// Hands a copy to every matching session of this node that `serves` allows (see
    /// `Router::route`).
    fn deliver_local(&self, msg: &Arc<Message>, out: &mut Published, serves: &crate::router::Serves) {
        let limits_store = &self.store;
        self.sessions.with_tenant(&msg.tenant, |sessions| {
            let deliveries = self.router.route(
                &msg.tenant,
                &msg.topic,
                msg.publisher.as_deref(),
                &|c| sessions.get(c).is_some_and(|s| s.is_online()),
                serves,
            );
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
    }

    /// A message a peer forwarded: delivered to this node's matching sessions (and kept if
    /// retained), but not forwarded again nor offered to bridges and rules, which ran on the
    /// node it was published on.
    pub fn deliver_forwarded(&self, held: crate::cluster::Held) -> Published {
        Metrics::inc(&self.metrics.messages_origin_cluster);
        let msg = Arc::new(held.message);
        let mut out = Published::default();
        if msg.retain && held.direct {
            out.ticket = self.retain(&msg.tenant.as_str().into(), &msg);
        }
        let groups = &held.groups;
        self.deliver_local(&msg, &mut out, &|served| match served {
            None => held.direct,
            Some((f, g)) => groups.iter().any(|(hf, hg)| hf == f && hg == g),
        });
        out
    }

    /// Links to the peers of the static config and of the membership the operator set.
    pub fn apply_membership(self: &Arc<Self>) {
        let mut wanted: Vec<(String, String)> =
            self.config.cluster.peers.iter().map(|p| (p.name.clone(), p.address.clone())).collect();
        for m in &self.cluster.read().members {
            if let Some(a) = &m.cluster_address
                && !wanted.iter().any(|(n, _)| n == &m.name)
            {
                wanted.push((m.name.clone(), a.clone()));
            }
        }
        self.cluster_links.set_peers(self, wanted);
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

    /// Adds or replaces a subscription of a session (online or offline) and routes to it.
    /// Persisting is left to the caller (`persist_session`), so a batch is stored once.
    pub fn add_subscription(&self, session: &Session, raw: &str, spec: &FilterSpec, sub: SubOptions) -> Subscribed {
        let max = self.limits().max_subscriptions_per_client;
        let is_new = {
            let mut st = session.lock();
            let exists = st.subscriptions.contains_key(raw);
            if !exists && max > 0 && st.subscriptions.len() >= max {
                tracing::warn!(limit = max, client_id = %session.client_id, "limits.max_subscriptions_per_client reached");
                return Subscribed::QuotaExceeded;
            }
            st.subscriptions.insert(raw.to_string(), (spec.clone(), sub));
            !exists
        };
        let client: ClientId = session.client_id.clone();
        self.router.subscribe(&session.tenant, spec, &client, sub);
        if is_new { Subscribed::New } else { Subscribed::Replaced }
    }

    /// Removes a subscription of a session; whether it existed.
    pub fn remove_subscription(&self, session: &Session, raw: &str, spec: &FilterSpec) -> bool {
        let existed = session.lock().subscriptions.remove(raw).is_some();
        if existed {
            self.router.unsubscribe(&session.tenant, spec, &session.client_id);
        }
        existed
    }

    /// Writes a persistent session's record (subscriptions, expiry) to the store; the ticket
    /// says when it is durable.
    pub fn persist_session(&self, session: &Session) -> Option<Ticket> {
        let st = session.lock();
        (st.expiry_secs > 0 && !st.ended)
            .then(|| self.store.put_session(&st.record(&session.tenant, &session.client_id)))
    }

    /// Sets a retained message without delivering it to current subscribers; the ticket says
    /// when it is durable. Refused when the tenant is at `limits.max_retained_messages`.
    pub fn set_retained(&self, msg: Message) -> Result<Option<Ticket>, String> {
        let tenant: TenantId = msg.tenant.as_str().into();
        let msg = Arc::new(msg);
        match self.retained.set(&tenant, msg.clone(), self.limits().max_retained_messages) {
            RetainChange::LimitReached => Err("limits.max_retained_messages reached".into()),
            RetainChange::Stored | RetainChange::Replaced => {
                Metrics::inc(&self.metrics.messages_retained_set);
                Ok(Some(self.store.put_retained(&msg)))
            }
            RetainChange::Cleared => Ok(Some(self.store.delete_retained(&msg.tenant, &msg.topic))),
            RetainChange::Unchanged => Ok(None),
        }
    }

    /// A peer's retained message from its snapshot: kept unless this node has one for the topic
    /// that is as new or newer (the last writer wins).
    pub fn adopt_retained(&self, msg: Message) {
        let newer_here = self.retained.get(&msg.tenant, &msg.topic).is_some_and(|m| m.received_ms >= msg.received_ms);
        if !newer_here && let Err(e) = self.set_retained(msg) {
            tracing::warn!(error = %e, "a peer's retained message not kept");
        }
    }

    /// Deletes a retained message; whether there was one.
    pub fn delete_retained(&self, tenant: &str, topic: &str) -> bool {
        let existed = self.retained.remove(tenant, topic);
        if existed {
            self.store.delete_retained(tenant, topic);
        }
        existed
    }
}

/// What `add_subscription` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subscribed {
    New,
    Replaced,
    QuotaExceeded,
}
