//! The router: which sessions get a published message. Owns the per-tenant `TopicTrie`s
//! (plain and shared subscriptions) and the `RetainedStore`.

pub mod retained;
pub mod trie;

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Arc;

use parking_lot::RwLock;
use rmqtt_codec::types::QoS;
use serde::{Deserialize, Serialize};

use crate::message::TenantId;
use crate::topic::FilterSpec;
pub use retained::{RetainChange, RetainedStore};
pub use trie::TopicTrie;
use trie::TrieMatch;

/// A client identifier, unique within a tenant.
pub type ClientId = Arc<str>;

/// The options of one subscription (MQTT 5 names; 3.1.1 subscriptions use the defaults).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubOptions {
    pub qos: QoS,
    pub no_local: bool,
    pub retain_as_published: bool,
    /// 0: send retained at subscribe, 1: only for a new subscription, 2: never.
    pub retain_handling: u8,
    pub subscription_id: Option<NonZeroU32>,
}

impl SubOptions {
    pub fn new(qos: QoS) -> Self {
        Self { qos, no_local: false, retain_as_published: false, retain_handling: 0, subscription_id: None }
    }
}

/// One copy of a message for one session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub client: ClientId,
    /// The subscription's QoS; the message is sent at the lower of this and its own.
    pub qos: QoS,
    pub retain_as_published: bool,
    pub subscription_ids: Vec<NonZeroU32>,
}

/// A route of this node appeared (its first subscriber) or went (its last left): what the
/// cluster tells its peers. Shared subscriptions are not routes between nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RouteChange {
    Added { tenant: String, filter: String },
    Removed { tenant: String, filter: String },
}

pub struct Router {
    tenants: RwLock<HashMap<TenantId, TopicTrie>>,
    /// Subscribers per (tenant, filter) of plain subscriptions: this node's routes.
    routes: parking_lot::Mutex<HashMap<(TenantId, String), usize>>,
    changes: tokio::sync::broadcast::Sender<RouteChange>,
}

impl Default for Router {
    fn default() -> Self {
        Self {
            tenants: RwLock::default(),
            routes: parking_lot::Mutex::default(),
            changes: tokio::sync::broadcast::channel(4096).0,
        }
    }
}

impl Router {
    pub fn subscribe(&self, tenant: &TenantId, spec: &FilterSpec, client: &ClientId, opts: SubOptions) -> bool {
        let mut tenants = self.tenants.write();
        let new = tenants.entry(tenant.clone()).or_default().subscribe(spec, client, opts);
        if new {
            let mut routes = self.routes.lock();
            let n = routes.entry((tenant.clone(), route_filter(spec))).or_default();
            *n += 1;
            if *n == 1 {
                let _ =
                    self.changes.send(RouteChange::Added { tenant: tenant.to_string(), filter: route_filter(spec) });
            }
        }
        new
    }

    pub fn unsubscribe(&self, tenant: &str, spec: &FilterSpec, client: &str) -> bool {
        let mut tenants = self.tenants.write();
        let Some(trie) = tenants.get_mut(tenant) else { return false };
        let removed = trie.unsubscribe(spec, client);
        if trie.subscription_count() == 0 && trie.shared_subscription_count() == 0 {
            tenants.remove(tenant);
        }
        if removed {
            let mut routes = self.routes.lock();
            let key = (TenantId::from(tenant), route_filter(spec));
            if let Some(n) = routes.get_mut(&key) {
                *n -= 1;
                if *n == 0 {
                    routes.remove(&key);
                    let _ = self.changes.send(RouteChange::Removed { tenant: tenant.to_string(), filter: key.1 });
                }
            }
        }
        removed
    }

    /// Follows this node's route changes. Subscribe first, then take `local_routes`: a change
    /// seen twice is harmless (adds and removes are idempotent at the receiver).
    pub fn route_changes(&self) -> tokio::sync::broadcast::Receiver<RouteChange> {
        self.changes.subscribe()
    }

    /// Whether this node has members of shared group `group` on `filter`.
    pub fn has_group(&self, tenant: &str, filter: &str, group: &str) -> bool {
        self.routes.lock().contains_key(&(TenantId::from(tenant), format!("$share/{group}/{filter}")))
    }

    /// This node's routes: every (tenant, filter) with a subscriber, shared ones as
    /// `$share/{group}/{filter}`.
    pub fn local_routes(&self) -> Vec<(String, String)> {
        self.routes.lock().keys().map(|(t, f)| (t.to_string(), f.clone())).collect()
    }

    /// The deliveries for a message on `topic`: one per subscribed client (overlapping
    /// subscriptions merged: highest QoS, all subscription identifiers), plus one per share group.
    /// `serves` says what this node delivers: `None` asks about the plain subscriptions,
    /// `Some((filter, group))` about a share group (another node may serve it).
    pub fn route(
        &self,
        tenant: &str,
        topic: &str,
        publisher: Option<&str>,
        is_online: &dyn Fn(&str) -> bool,
        serves: &Serves,
    ) -> Vec<Delivery> {
        let tenants = self.tenants.read();
        let Some(trie) = tenants.get(tenant) else { return Vec::new() };
        let mut direct: Vec<Delivery> = Vec::new();
        let mut shared: Vec<Delivery> = Vec::new();
        let direct_served = serves(None);
        trie.matches(topic, &mut |m| match m {
            TrieMatch::Direct(client, opts) => {
                if !direct_served || (opts.no_local && publisher == Some(&**client)) {
                    return;
                }
                match direct.iter_mut().find(|d| d.client == *client) {
                    Some(d) => {
                        d.qos = d.qos.max(opts.qos);
                        d.retain_as_published |= opts.retain_as_published;
                        d.subscription_ids.extend(opts.subscription_id);
                    }
                    None => direct.push(Delivery {
                        client: client.clone(),
                        qos: opts.qos,
                        retain_as_published: opts.retain_as_published,
                        subscription_ids: opts.subscription_id.into_iter().collect(),
                    }),
                }
            }
            TrieMatch::Shared(name, group) => {
                if !serves(Some((group.filter(), name))) {
                    return;
                }
                if let Some((client, opts)) = group.pick(is_online) {
                    shared.push(Delivery {
                        client: client.clone(),
                        qos: opts.qos,
                        retain_as_published: opts.retain_as_published,
                        subscription_ids: opts.subscription_id.into_iter().collect(),
                    });
                }
            }
        });
        direct.extend(shared);
        direct
    }

    pub fn subscription_count(&self) -> usize {
        self.tenants.read().values().map(|t| t.subscription_count()).sum()
    }

    pub fn shared_subscription_count(&self) -> usize {
        self.tenants.read().values().map(|t| t.shared_subscription_count()).sum()
    }

    /// Every routed filter with its tenant and share group.
    pub fn filters(&self) -> Vec<(TenantId, String, Option<String>)> {
        let tenants = self.tenants.read();
        tenants.iter().flat_map(|(t, trie)| trie.filters().into_iter().map(move |(f, g)| (t.clone(), f, g))).collect()
    }
}

/// What a node delivers of a message: asked with `None` for the plain subscriptions and with
/// `Some((filter, group))` for each share group.
pub type Serves<'a> = dyn Fn(Option<(&str, &str)>) -> bool + 'a;

/// How a subscription's route is named between nodes: the filter, or `$share/{group}/{filter}`.
fn route_filter(spec: &FilterSpec) -> String {
    match &spec.share_group {
        None => spec.filter.clone(),
        Some(g) => format!("$share/{g}/{}", spec.filter),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlapping_subscriptions_merge_and_no_local_skips_publisher() {
        let r = Router::default();
        let t: TenantId = "global".into();
        let c: ClientId = "c".into();
        let mut o1 = SubOptions::new(QoS::AtMostOnce);
        o1.subscription_id = NonZeroU32::new(1);
        let mut o2 = SubOptions::new(QoS::ExactlyOnce);
        o2.subscription_id = NonZeroU32::new(2);
        r.subscribe(&t, &FilterSpec::parse("a/+", 8).unwrap(), &c, o1);
        r.subscribe(&t, &FilterSpec::parse("a/#", 8).unwrap(), &c, o2);
        let d = r.route("global", "a/b", None, &|_| true, &|_| true);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].qos, QoS::ExactlyOnce);
        let mut ids: Vec<u32> = d[0].subscription_ids.iter().map(|i| i.get()).collect();
        ids.sort();
        assert_eq!(ids, vec![1, 2]);
        assert!(r.route("other", "a/b", None, &|_| true, &|_| true).is_empty());

        let mut nl = SubOptions::new(QoS::AtMostOnce);
        nl.no_local = true;
        r.subscribe(&t, &FilterSpec::parse("n", 8).unwrap(), &c, nl);
        assert!(r.route("global", "n", Some("c"), &|_| true, &|_| true).is_empty());
        assert_eq!(r.route("global", "n", Some("other"), &|_| true, &|_| true).len(), 1);
    }

    #[test]
    fn shared_pick_prefers_online_members() {
        let r = Router::default();
        let t: TenantId = "global".into();
        let spec = FilterSpec::parse("$share/g/s", 8).unwrap();
        r.subscribe(&t, &spec, &ClientId::from("on"), SubOptions::new(QoS::AtMostOnce));
        r.subscribe(&t, &spec, &ClientId::from("off"), SubOptions::new(QoS::AtMostOnce));
        for _ in 0..4 {
            let d = r.route("global", "s", None, &|c| c == "on", &|_| true);
            assert_eq!(&*d[0].client, "on");
        }
    }
}
