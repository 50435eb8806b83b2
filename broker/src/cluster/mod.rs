//! Clustering: the peers this node links to, the routes they announce (which topic filters
//! have subscribers on which node) and the forwarding of messages to the nodes that need them.
//!
//! Each pair of nodes has two TCP links, one dialled by each side; a node sends on the link it
//! dialled (routes, forwarded messages, heartbeats) and receives on the links it accepted.
//! Routes are eventually consistent: a snapshot when a link comes up, then every change.
//! QoS 1/2 messages for a peer are held (bounded, and in the store, so a restart of either
//! side loses none) until the peer acknowledges them; QoS 0 ones are sent only while the link
//! is up.

mod inbound;
mod link;
pub mod wire;

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use parking_lot::{Mutex, RwLock};
use rmqtt_codec::types::QoS;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::broker::Broker;
use crate::message::{Message, TenantId, now_ms};
use crate::router::trie::TrieMatch;
use crate::router::{ClientId, Router, SubOptions, TopicTrie};
use crate::store::{Store, Ticket};
use crate::topic::FilterSpec;

/// `[cluster]`: how this node finds and trusts its peers.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterConfig {
    /// Where peers dial this node.
    pub bind: SocketAddr,
    /// File holding the shared cluster secret (a mounted Kubernetes Secret). Without it the
    /// node runs alone: no cluster listener, no links.
    pub secret_file: Option<PathBuf>,
    /// Peers known without Kubernetes; `PUT /api/v1/cluster` adds the operator's list.
    pub peers: Vec<StaticPeer>,
    /// Milliseconds between heartbeats on a link.
    pub heartbeat_ms: u64,
    /// A link silent this long is dropped and its peer marked down.
    pub peer_timeout_ms: u64,
    /// Messages held for one peer (QoS 1/2 waiting for its ack, or the link); beyond, dropped and counted.
    pub max_queue: usize,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            bind: ([0, 0, 0, 0], 4370).into(),
            secret_file: None,
            peers: Vec::new(),
            heartbeat_ms: 1000,
            peer_timeout_ms: 5000,
            max_queue: 100_000,
        }
    }
}

/// A peer from the config file.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StaticPeer {
    pub name: String,
    /// Its cluster listener, `host:port`.
    pub address: String,
}

/// What this node knows of one peer, for the admin API.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
pub struct PeerStatus {
    pub node: String,
    /// Its cluster listener.
    pub address: String,
    /// `up` while the link this node dialled is established and heartbeats answer, else `down`.
    pub status: String,
    /// Milliseconds since the Unix epoch of the last change of `status`.
    pub since_ms: u64,
    /// QoS 1/2 messages waiting for the peer's acknowledgement (or for the link).
    pub queued: usize,
    /// Messages forwarded to it.
    pub forwarded: u64,
    /// Messages dropped for it (queue full, or QoS 0 while it was down).
    pub dropped: u64,
    pub last_error: Option<String>,
}

/// QoS 1/2 messages held for a peer, by sequence.
type HeldMessages = VecDeque<(u64, Arc<Held>)>;

/// A message on its way to one peer, and what it is for there.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Held {
    pub message: Message,
    /// For the peer's plain subscribers (and, when retained, its retained store).
    pub direct: bool,
    /// The share groups, as (filter, group), the peer serves with it.
    pub groups: Vec<(String, String)>,
}

/// The index of `peer`'s entry in a forwarding plan, added if missing.
fn slot(plan: &mut Vec<(Arc<Peer>, Held)>, peer: &Arc<Peer>, msg: &Message) -> usize {
    if let Some(i) = plan.iter().position(|(p, _)| p.name == peer.name) {
        return i;
    }
    plan.push((peer.clone(), Held { message: msg.clone(), direct: false, groups: Vec::new() }));
    plan.len() - 1
}

/// What `Cluster::forward` did with a message.
#[derive(Debug, Default)]
pub struct Forwarded {
    /// Peers it went to.
    pub peers: usize,
    /// When what is held for them is durable.
    pub ticket: Option<Ticket>,
    /// Share groups, as (filter, group), a peer serves instead of this node.
    pub elsewhere: Vec<(String, String)>,
}

/// One peer this node sends to.
pub(crate) struct Peer {
    pub name: String,
    pub address: String,
    state: Mutex<PeerState>,
    wake: Notify,
    stop: CancellationToken,
}

#[derive(Default)]
struct PeerState {
    up: bool,
    since_ms: u64,
    /// QoS 0 messages to send while the link is up.
    fresh: VecDeque<Arc<Held>>,
    /// QoS 1/2 messages not yet acknowledged, in sequence order; the first `sent` of them went
    /// out on the current link.
    unacked: HeldMessages,
    sent: usize,
    forwarded: u64,
    dropped: u64,
    last_error: Option<String>,
}

/// This node's side of the cluster.
pub struct Cluster {
    secret: Option<Arc<Vec<u8>>>,
    config: ClusterConfig,
    peers: Mutex<HashMap<String, Arc<Peer>>>,
    /// Routes peers announced: per tenant, a trie whose "clients" are node names.
    remote: RwLock<HashMap<TenantId, TopicTrie>>,
    /// The same routes by node, to replace or drop a node's routes at once.
    remote_by_node: Mutex<HashMap<String, HashSet<(String, String)>>>,
    /// Per sending node: the last sequence delivered here.
    received: Mutex<HashMap<String, u64>>,
    /// The last sequence given to a QoS 1/2 message this node forwards: it grows with the
    /// clock (microseconds) and past every stored one, so it keeps growing across restarts.
    last_seq: AtomicU64,
    /// Messages held for peers from before a restart, until the peer is linked again.
    restored: Mutex<HashMap<String, HeldMessages>>,
    /// Whose turn it is among the nodes with members of a share group.
    share_turn: AtomicUsize,
    tasks: TaskTracker,
}

impl Cluster {
    /// Reads the secret; without one clustering is off (and says so when peers are configured).
    pub fn new(config: ClusterConfig) -> Result<Cluster, String> {
        let secret = match &config.secret_file {
            Some(path) => {
                let text = std::fs::read(path).map_err(|e| format!("cluster.secret_file {}: {e}", path.display()))?;
                let trimmed = text.trim_ascii().to_vec();
                if trimmed.len() < 16 {
                    return Err(format!(
                        "cluster.secret_file {}: the secret must be at least 16 bytes",
                        path.display()
                    ));
                }
                Some(Arc::new(trimmed))
            }
            None => None,
        };
        Ok(Cluster {
            secret,
            config,
            peers: Mutex::default(),
            remote: RwLock::default(),
            remote_by_node: Mutex::default(),
            received: Mutex::default(),
            last_seq: AtomicU64::new(0),
            restored: Mutex::default(),
            share_turn: AtomicUsize::new(0),
            tasks: TaskTracker::new(),
        })
    }

    pub fn enabled(&self) -> bool {
        self.secret.is_some()
    }

    /// Takes back what the store held for peers at the last stop.
    pub fn restore_outbox(&self, entries: Vec<(String, u64, Held)>) {
        let mut restored = self.restored.lock();
        for (peer, seq, held) in entries {
            self.last_seq.fetch_max(seq, Ordering::Relaxed);
            restored.entry(peer).or_default().push_back((seq, Arc::new(held)));
        }
        let held: usize = restored.values().map(VecDeque::len).sum();
        if held > 0 {
            tracing::info!(held, peers = restored.len(), "messages held for cluster peers restored");
        }
    }

    /// The next sequence: above the clock in microseconds and above every earlier one.
    fn next_seq(&self) -> u64 {
        let now_us = now_ms().saturating_mul(1000);
        let mut prev = self.last_seq.load(Ordering::Relaxed);
        loop {
            let next = prev.saturating_add(1).max(now_us);
            match self.last_seq.compare_exchange_weak(prev, next, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return next,
                Err(actual) => prev = actual,
            }
        }
    }

    /// Starts the cluster listener (when a secret is configured) and links to the members.
    pub async fn start(broker: &Arc<Broker>, tracker: &TaskTracker) -> Result<(), String> {
        let cluster = &broker.cluster_links;
        let Some(secret) = cluster.secret.clone() else {
            if !cluster.config.peers.is_empty() {
                tracing::warn!("cluster.peers are set but cluster.secret_file is not: running alone");
            }
            return Ok(());
        };
        let addr = cluster.config.bind;
        let listener =
            tokio::net::TcpListener::bind(addr).await.map_err(|e| format!("cluster listener on {addr}: {e}"))?;
        tracing::info!(addr = ?listener.local_addr().ok(), version = wire::PROTOCOL_VERSION, "cluster listening");
        tracker.spawn(inbound::serve(broker.clone(), listener, secret));
        broker.apply_membership();
        Ok(())
    }

    /// Links to exactly these peers (name, cluster address): new ones are dialled, gone ones
    /// dropped with their routes and queue. A peer whose address changed is linked anew.
    pub(crate) fn set_peers(&self, broker: &Arc<Broker>, wanted: Vec<(String, String)>) {
        let Some(secret) = self.secret.clone() else { return };
        let mut peers = self.peers.lock();
        let wanted: HashMap<String, String> =
            wanted.into_iter().filter(|(name, _)| name != broker.node_name()).collect();
        peers.retain(|name, p| {
            let keep = wanted.get(name) == Some(&p.address);
            if !keep {
                tracing::info!(peer = %name, "cluster peer removed");
                p.stop.cancel();
                if !wanted.contains_key(name) {
                    broker.store.clear_outbox(name);
                }
            }
            keep
        });
        let gone: Vec<String> =
            self.remote_by_node.lock().keys().filter(|n| !wanted.contains_key(*n)).cloned().collect();
        for node in gone {
            self.replace_routes(&node, Vec::new());
        }
        for (name, address) in wanted {
            if peers.contains_key(&name) {
                continue;
            }
            tracing::info!(peer = %name, %address, "cluster peer added");
            let unacked = self.restored.lock().remove(&name).unwrap_or_default();
            let peer = Arc::new(Peer {
                name: name.clone(),
                address,
                state: Mutex::new(PeerState { since_ms: now_ms(), unacked, ..Default::default() }),
                wake: Notify::new(),
                stop: broker.shutdown.child_token(),
            });
            peers.insert(name, peer.clone());
            self.tasks.spawn(link::run(broker.clone(), peer, secret.clone()));
        }
    }

    /// Hands a message published on this node to the peers with a matching route (once per
    /// node); retained messages (but `$SYS`) go to every peer so each keeps them. A share group
    /// with members on several nodes gets the message on one of them, taking turns (peers that
    /// are up first); `Forwarded::elsewhere` names the groups this node must not serve.
    pub fn forward(&self, router: &Router, store: &Store, msg: &Arc<Message>) -> Forwarded {
        let mut out = Forwarded::default();
        if self.secret.is_none() {
            return out;
        }
        let peers = self.peers.lock();
        if peers.is_empty() {
            return out;
        }
        let mut plan: Vec<(Arc<Peer>, Held)> = Vec::new();
        // Each node publishes its own `$SYS`; those go by route only.
        if msg.retain && !msg.topic.starts_with("$SYS") {
            for p in peers.values() {
                let i = slot(&mut plan, p, msg);
                plan[i].1.direct = true;
            }
        }
        if let Some(trie) = self.remote.read().get(msg.tenant.as_str()) {
            trie.matches(&msg.topic, &mut |m| match m {
                TrieMatch::Direct(node, _) => {
                    if let Some(p) = peers.get(&**node) {
                        let i = slot(&mut plan, p, msg);
                        plan[i].1.direct = true;
                    }
                }
                TrieMatch::Shared(group, sg) => {
                    let known: Vec<&Arc<Peer>> = sg.members().filter_map(|n| peers.get(&**n)).collect();
                    let up: Vec<&Arc<Peer>> = known.iter().copied().filter(|p| p.state.lock().up).collect();
                    let candidates = if up.is_empty() { known } else { up };
                    let here = router.has_group(&msg.tenant, sg.filter(), group) as usize;
                    let n = candidates.len() + here;
                    if n == 0 {
                        return;
                    }
                    let turn = self.share_turn.fetch_add(1, Ordering::Relaxed) % n;
                    if turn < here {
                        return;
                    }
                    let key = (sg.filter().to_string(), group.to_string());
                    let i = slot(&mut plan, candidates[turn - here], msg);
                    plan[i].1.groups.push(key.clone());
                    out.elsewhere.push(key);
                }
            });
        }
        drop(peers);
        out.peers = plan.len();
        for (p, held) in plan {
            out.ticket = out.ticket.max(self.enqueue(store, &p, Arc::new(held)));
        }
        out
    }

    fn enqueue(&self, store: &Store, peer: &Peer, held: Arc<Held>) -> Option<Ticket> {
        let mut st = peer.state.lock();
        let queued = st.fresh.len() + st.unacked.len();
        if queued >= self.config.max_queue || (held.message.qos == QoS::AtMostOnce && !st.up) {
            st.dropped += 1;
            if st.dropped.is_power_of_two() {
                tracing::warn!(peer = %peer.name, dropped = st.dropped, up = st.up, "cluster.max_queue reached or peer down; dropping messages for it");
            }
            return None;
        }
        let mut ticket = None;
        if held.message.qos == QoS::AtMostOnce {
            st.fresh.push_back(held);
        } else {
            let seq = self.next_seq();
            ticket = Some(store.put_outbox(&peer.name, seq, &*held));
            st.unacked.push_back((seq, held));
        }
        drop(st);
        peer.wake.notify_one();
        ticket
    }

    /// A node's full route list, replacing what it announced before.
    fn replace_routes(&self, node: &str, routes: Vec<(String, String)>) {
        let new: HashSet<(String, String)> = routes.into_iter().collect();
        let old = self.remote_by_node.lock().remove(node).unwrap_or_default();
        for (tenant, filter) in old.difference(&new) {
            self.unroute(node, tenant, filter);
        }
        for (tenant, filter) in new.difference(&old) {
            self.route(node, tenant, filter);
        }
        if !new.is_empty() {
            self.remote_by_node.lock().insert(node.to_string(), new);
        }
    }

    fn add_route(&self, node: &str, tenant: String, filter: String) {
        if self.remote_by_node.lock().entry(node.to_string()).or_default().insert((tenant.clone(), filter.clone())) {
            self.route(node, &tenant, &filter);
        }
    }

    fn remove_route(&self, node: &str, tenant: String, filter: String) {
        let removed =
            self.remote_by_node.lock().get_mut(node).is_some_and(|s| s.remove(&(tenant.clone(), filter.clone())));
        if removed {
            self.unroute(node, &tenant, &filter);
        }
    }

    fn route(&self, node: &str, tenant: &str, filter: &str) {
        let Ok(spec) = FilterSpec::parse(filter, usize::MAX) else {
            tracing::warn!(peer = %node, filter, "peer announced an invalid filter; ignored");
            return;
        };
        let tenant: TenantId = tenant.into();
        let node: ClientId = node.into();
        self.remote.write().entry(tenant).or_default().subscribe(&spec, &node, SubOptions::new(QoS::ExactlyOnce));
    }

    fn unroute(&self, node: &str, tenant: &str, filter: &str) {
        let Ok(spec) = FilterSpec::parse(filter, usize::MAX) else { return };
        let mut remote = self.remote.write();
        if let Some(trie) = remote.get_mut(tenant) {
            trie.unsubscribe(&spec, node);
            if trie.subscription_count() == 0 {
                remote.remove(tenant);
            }
        }
    }

    /// Every route peers announced: (tenant, filter, node).
    pub fn remote_routes(&self) -> Vec<(String, String, String)> {
        let by_node = self.remote_by_node.lock();
        by_node.iter().flat_map(|(n, set)| set.iter().map(move |(t, f)| (t.clone(), f.clone(), n.clone()))).collect()
    }

    /// Whether a forwarded QoS 1/2 message is new (and records it): a peer resends what it had
    /// no ack for, so what arrives twice is acknowledged again but not delivered again.
    fn first_delivery(&self, node: &str, seq: u64) -> bool {
        let mut received = self.received.lock();
        let last = received.entry(node.to_string()).or_default();
        if seq <= *last {
            return false;
        }
        *last = seq;
        true
    }

    /// The peers, for the admin API.
    pub fn peers(&self) -> Vec<PeerStatus> {
        let mut out: Vec<PeerStatus> = self
            .peers
            .lock()
            .values()
            .map(|p| {
                let st = p.state.lock();
                PeerStatus {
                    node: p.name.clone(),
                    address: p.address.clone(),
                    status: if st.up { "up" } else { "down" }.into(),
                    since_ms: st.since_ms,
                    queued: st.unacked.len() + st.fresh.len(),
                    forwarded: st.forwarded,
                    dropped: st.dropped,
                    last_error: st.last_error.clone(),
                }
            })
            .collect();
        out.sort_by(|a, b| a.node.cmp(&b.node));
        out
    }
}
