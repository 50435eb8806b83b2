//! `SessionStore`: every session of every tenant by client id; opening (with takeover and
//! resume), closing, ending and expiring sessions, and keeping the router and store in step.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::RwLock;
use rmqtt_codec::v5::DisconnectReasonCode;

use super::{Attachment, Kick, Session, Will};
use crate::message::{TenantId, now_ms};
use crate::router::{ClientId, Router};
use crate::store::{SessionRecord, Store, StoredDelivery};
use crate::topic::FilterSpec;

#[derive(Default)]
pub struct SessionStore {
    tenants: RwLock<HashMap<TenantId, HashMap<ClientId, Arc<Session>>>>,
}

/// The sessions of one tenant, borrowed for a lookup-heavy moment.
#[derive(Clone, Copy)]
pub struct TenantSessions<'a>(Option<&'a HashMap<ClientId, Arc<Session>>>);

impl<'a> TenantSessions<'a> {
    pub fn get(&self, client_id: &str) -> Option<&'a Arc<Session>> {
        self.0.and_then(|m| m.get(client_id))
    }
}

/// What `open` found and did.
pub struct OpenOutcome {
    pub session: Arc<Session>,
    pub session_present: bool,
    /// The will of a connection that was taken over, to be published now.
    pub will_to_publish: Option<Will>,
}

impl SessionStore {
    pub fn get(&self, tenant: &str, client_id: &str) -> Option<Arc<Session>> {
        self.tenants.read().get(tenant).and_then(|m| m.get(client_id)).cloned()
    }

    /// Runs `f` with the tenant's sessions under one read lock (the publish fan-out uses this).
    pub fn with_tenant<R>(&self, tenant: &str, f: impl FnOnce(TenantSessions<'_>) -> R) -> R {
        let tenants = self.tenants.read();
        f(TenantSessions(tenants.get(tenant)))
    }

    pub fn count(&self) -> usize {
        self.tenants.read().values().map(|m| m.len()).sum()
    }

    pub fn all(&self) -> Vec<Arc<Session>> {
        self.tenants.read().values().flat_map(|m| m.values().cloned()).collect()
    }

    /// Attaches a new connection to the session of `(tenant, client_id)`: an existing connection
    /// is kicked with Session Taken Over; `clean_start` discards old state, otherwise it resumes.
    #[allow(clippy::too_many_arguments)]
    pub fn open(
        &self,
        router: &Router,
        store: &Store,
        tenant: &TenantId,
        client_id: &ClientId,
        clean_start: bool,
        expiry_secs: u32,
        max_queue: usize,
        attachment: Attachment,
        will: Option<Will>,
        username: Option<String>,
        protocol_level: u8,
    ) -> OpenOutcome {
        let mut tenants = self.tenants.write();
        let map = tenants.entry(tenant.clone()).or_default();
        let mut will_to_publish = None;
        let mut session_present = false;
        let mut ended_subscriptions = Vec::new();
        let existing = map.get(client_id).cloned();
        let session = match existing {
            Some(s) => {
                let mut st = s.lock();
                if let Some(mut old) = st.conn.take() {
                    old.kick(Kick::new(DisconnectReasonCode::SessionTakenOver));
                    // The old connection's will: published at once unless the delay lets this
                    // reconnect cancel it (the session goes on) .
                    if let Some(w) = st.will.take()
                        && (clean_start || w.delay_secs == 0)
                    {
                        will_to_publish = Some(w);
                    }
                }
                if let Some((w, timer)) = st.pending_will.take() {
                    timer.abort();
                    if clean_start {
                        will_to_publish = Some(w);
                    }
                }
                if clean_start {
                    st.ended = true;
                    ended_subscriptions = st.subscriptions.values().map(|(spec, _)| spec.clone()).collect();
                    let was_persistent = st.expiry_secs > 0;
                    drop(st);
                    s.set_online(false);
                    if was_persistent {
                        store.delete_session(tenant, client_id);
                    }
                    let fresh = Arc::new(Session::new(tenant.clone(), client_id.clone(), expiry_secs, max_queue));
                    map.insert(client_id.clone(), fresh.clone());
                    fresh
                } else {
                    session_present = true;
                    if st.expiry_secs > 0 && expiry_secs == 0 {
                        // No longer persistent: what is stored goes; the queue stays in memory.
                        store.delete_session(tenant, client_id);
                        st.queue.iter_mut().for_each(|p| p.seq = None);
                        st.inflight.values_mut().for_each(|p| p.seq = None);
                    }
                    st.expiry_secs = expiry_secs;
                    st.max_queue = max_queue;
                    drop(st);
                    s
                }
            }
            None => {
                let fresh = Arc::new(Session::new(tenant.clone(), client_id.clone(), expiry_secs, max_queue));
                map.insert(client_id.clone(), fresh.clone());
                fresh
            }
        };
        drop(tenants);
        for spec in ended_subscriptions {
            router.unsubscribe(tenant, &spec, client_id);
        }
        {
            let mut st = session.lock();
            st.conn = Some(attachment);
            st.will = will;
            st.username = username;
            st.protocol_level = protocol_level;
            st.connected_ms = Some(now_ms());
            st.disconnected_ms = None;
            if st.expiry_secs > 0 {
                store.put_session(&st.record(tenant, client_id));
            }
        }
        session.set_online(true);
        OpenOutcome { session, session_present, will_to_publish }
    }

    /// Detaches connection `conn_id` (if still attached). Returns the will to publish or delay
    /// (when `abnormal`) and whether the session ended with it.
    pub fn close(
        &self,
        router: &Router,
        store: &Store,
        session: &Arc<Session>,
        conn_id: u64,
        abnormal: bool,
        end_session: bool,
    ) -> (Option<Will>, bool) {
        let mut st = session.lock();
        if st.conn.as_ref().map(|c| c.id) != Some(conn_id) {
            return (None, false);
        }
        st.conn = None;
        session.set_online(false);
        st.disconnected_ms = Some(now_ms());
        let will = st.will.take().filter(|_| abnormal);
        if st.expiry_secs == 0 || end_session {
            drop(st);
            self.end(router, store, session);
            return (will, true);
        }
        store.put_session(&st.record(&session.tenant, &session.client_id));
        (will, false)
    }

    /// Ends a session: its subscriptions leave the router, it leaves the store and this registry.
    pub fn end(&self, router: &Router, store: &Store, session: &Arc<Session>) {
        let (specs, persistent) = {
            let mut st = session.lock();
            if st.ended {
                return;
            }
            st.ended = true;
            if let Some((_, timer)) = st.pending_will.take() {
                timer.abort();
            }
            (st.subscriptions.values().map(|(s, _)| s.clone()).collect::<Vec<FilterSpec>>(), st.expiry_secs > 0)
        };
        {
            let mut tenants = self.tenants.write();
            if let Some(map) = tenants.get_mut(&session.tenant) {
                if map.get(&session.client_id).is_some_and(|s| Arc::ptr_eq(s, session)) {
                    map.remove(&session.client_id);
                }
                if map.is_empty() {
                    tenants.remove(&session.tenant);
                }
            }
        }
        for spec in specs {
            router.unsubscribe(&session.tenant, &spec, &session.client_id);
        }
        if persistent {
            store.delete_session(&session.tenant, &session.client_id);
        }
    }

    /// Offline sessions whose expiry interval has passed.
    pub fn expired(&self, now_ms: u64) -> Vec<Arc<Session>> {
        self.all()
            .into_iter()
            .filter(|s| {
                let st = s.lock();
                st.conn.is_none()
                    && st.expiry_secs != u32::MAX
                    && st.disconnected_ms.is_some_and(|d| d + u64::from(st.expiry_secs) * 1000 <= now_ms)
            })
            .collect()
    }

    /// Rebuilds a persistent session read back from the store (offline, subscriptions routed).
    pub fn restore(
        &self,
        router: &Router,
        rec: SessionRecord,
        deliveries: Vec<(u64, StoredDelivery)>,
        max_queue: usize,
        max_levels: usize,
    ) {
        let tenant: TenantId = rec.tenant.as_str().into();
        let client_id: ClientId = rec.client_id.as_str().into();
        let session = Arc::new(Session::new(tenant.clone(), client_id.clone(), rec.expiry_secs, max_queue));
        {
            let mut st = session.lock();
            st.created_ms = rec.created_ms;
            // A session that was connected when the broker stopped counts as disconnected now.
            st.disconnected_ms = Some(rec.disconnected_ms.unwrap_or_else(now_ms));
            st.username = rec.username;
            st.protocol_level = rec.protocol_level;
            for (raw, opts) in rec.subscriptions {
                match FilterSpec::parse(&raw, max_levels) {
                    Ok(spec) => {
                        router.subscribe(&tenant, &spec, &client_id, opts);
                        st.subscriptions.insert(raw, (spec, opts));
                    }
                    Err(e) => {
                        tracing::warn!(%tenant, %client_id, filter = %raw, error = %e, "stored subscription dropped")
                    }
                }
            }
            st.restore(deliveries);
        }
        self.tenants.write().entry(tenant).or_default().insert(client_id, session);
    }
}
