//! Traffic rules: per-tenant quotas and limits on clients (connections, publish rate, bandwidth,
//! subscriptions) and node placement by group tag, applied live to new and existing connections.
//!
//! Each connection holds a `ClientLimits` resolved from the first matching rule; it re-resolves
//! when the rule set changes (one atomic load per PUBLISH tells it). Rate limits use `governor`.

use std::collections::BTreeMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crds::TrafficRule;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use parking_lot::RwLock;
use wildmatch::WildMatch;

use crate::broker::Broker;

const KIND: &str = "traffic-rule";

/// A rule ready to match.
pub struct CompiledRule {
    pub name: String,
    pub rule: TrafficRule,
    tenant: String,
    client_id: Option<WildMatch>,
    username: Option<WildMatch>,
    /// Connections now counted against `max_connections`.
    connections: AtomicUsize,
}

impl CompiledRule {
    fn matches(&self, tenant: &str, client_id: &str, username: Option<&str>) -> bool {
        self.tenant == tenant
            && self.client_id.as_ref().is_none_or(|w| w.matches(client_id))
            && self.username.as_ref().is_none_or(|w| username.is_some_and(|u| w.matches(u)))
    }
}

/// The limits one connection is under; dropping it gives back its connection slot.
pub struct ClientLimits {
    pub rule: Arc<CompiledRule>,
    rate: Option<DefaultDirectRateLimiter>,
    bandwidth: Option<DefaultDirectRateLimiter>,
}

impl Drop for ClientLimits {
    fn drop(&mut self) {
        self.rule.connections.fetch_sub(1, Ordering::Relaxed);
    }
}

impl ClientLimits {
    /// Whether a PUBLISH of `bytes` may go now (both limits consume when it does). A message
    /// larger than one second of the bandwidth could never pass; it is refused as such.
    pub fn allow_publish(&self, bytes: usize) -> Result<(), Throttled> {
        if self.rate.as_ref().is_some_and(|r| r.check().is_err()) {
            return Err(Throttled::Rate);
        }
        let Some(b) = &self.bandwidth else { return Ok(()) };
        let n = NonZeroU32::new(u32::try_from(bytes.max(1)).unwrap_or(u32::MAX)).unwrap_or(NonZeroU32::MIN);
        match b.check_n(n) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(Throttled::Bandwidth),
            Err(_) => Err(Throttled::LargerThanBandwidth { bytes, bandwidth: self.rule.rule.bandwidth.unwrap_or(0) }),
        }
    }

    pub fn max_subscriptions(&self) -> Option<usize> {
        self.rule.rule.max_subscriptions.map(|n| n as usize)
    }
}

/// Why a PUBLISH is not let through by its traffic rule.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum Throttled {
    #[error("over the traffic rule's publish_rate")]
    Rate,
    #[error("over the traffic rule's bandwidth")]
    Bandwidth,
    #[error("{bytes} bytes is more than the traffic rule's bandwidth of {bandwidth} bytes/s, so it can never pass")]
    LargerThanBandwidth { bytes: usize, bandwidth: u64 },
}

/// Why a CONNECT is not admitted here.
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    Quota {
        rule: String,
    },
    /// The client belongs on another node (its MQTT address).
    Elsewhere {
        rule: String,
        server: String,
    },
}

/// Every traffic rule of the node.
#[derive(Default)]
pub struct TrafficRules {
    rules: RwLock<BTreeMap<String, Arc<CompiledRule>>>,
    generation: AtomicU64,
    /// The `traffic` plugin unloaded: no rule applies.
    paused: std::sync::atomic::AtomicBool,
}

impl TrafficRules {
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
    }

    pub fn is_paused(&self) -> bool {
        self.paused.load(Ordering::Relaxed)
    }

    /// Stops (or resumes) applying every rule; open connections follow at once.
    pub fn set_paused(&self, paused: bool) {
        self.paused.store(paused, Ordering::Relaxed);
        self.generation.fetch_add(1, Ordering::Relaxed);
    }

    pub fn list(&self) -> BTreeMap<String, TrafficRule> {
        self.rules.read().iter().map(|(k, v)| (k.clone(), v.rule.clone())).collect()
    }

    pub fn get(&self, name: &str) -> Option<TrafficRule> {
        self.rules.read().get(name).map(|r| r.rule.clone())
    }

    fn compile(broker: &Broker, name: &str, rule: TrafficRule) -> Result<CompiledRule, String> {
        if name.is_empty() || name.len() > 128 || !name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return Err(format!("traffic rule name {name:?} must be 1 to 128 of A-Z a-z 0-9 - _ ."));
        }
        rule.validate()?;
        Ok(CompiledRule {
            name: name.to_string(),
            tenant: rule.tenant.clone().unwrap_or_else(|| broker.config.tenancy.default_tenant.clone()),
            client_id: rule.client_id_pattern.as_deref().map(WildMatch::new),
            username: rule.username_pattern.as_deref().map(WildMatch::new),
            connections: AtomicUsize::new(0),
            rule,
        })
    }

    /// Creates or replaces one rule; whether it existed. Live connections pick it up.
    pub fn put(&self, broker: &Broker, name: &str, rule: TrafficRule) -> Result<bool, String> {
        let compiled = Self::compile(broker, name, rule)?;
        broker.store.put_object(KIND, name, &compiled.rule);
        let existed = self.rules.write().insert(name.to_string(), Arc::new(compiled)).is_some();
        self.generation.fetch_add(1, Ordering::Relaxed);
        Ok(existed)
    }

    /// Replaces the whole set (validated as a whole first).
    pub fn replace_all(&self, broker: &Broker, all: BTreeMap<String, TrafficRule>) -> Result<(), String> {
        let mut compiled = BTreeMap::new();
        for (name, rule) in all {
            let c = Self::compile(broker, &name, rule).map_err(|e| format!("{name}: {e}"))?;
            compiled.insert(name, Arc::new(c));
        }
        let old: Vec<String> = self.rules.read().keys().cloned().collect();
        for name in old.iter().filter(|n| !compiled.contains_key(*n)) {
            broker.store.delete_object(KIND, name);
        }
        for (name, c) in &compiled {
            broker.store.put_object(KIND, name, &c.rule);
        }
        *self.rules.write() = compiled;
        self.generation.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    pub fn delete(&self, broker: &Broker, name: &str) -> bool {
        let existed = self.rules.write().remove(name).is_some();
        if existed {
            broker.store.delete_object(KIND, name);
            self.generation.fetch_add(1, Ordering::Relaxed);
        }
        existed
    }

    pub fn restore(&self, broker: &Broker) {
        match broker.store.load_objects::<TrafficRule>(KIND) {
            Ok(all) => {
                let mut rules = self.rules.write();
                for (name, rule) in all {
                    match Self::compile(broker, &name, rule) {
                        Ok(c) => {
                            rules.insert(name, Arc::new(c));
                        }
                        Err(e) => tracing::warn!(rule = %name, error = %e, "stored traffic rule no longer valid"),
                    }
                }
                self.generation.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => tracing::error!(error = %e, "cannot read traffic rules from the store"),
        }
    }

    fn matching(&self, tenant: &str, client_id: &str, username: Option<&str>) -> Option<Arc<CompiledRule>> {
        if self.is_paused() {
            return None;
        }
        self.rules.read().values().find(|r| r.matches(tenant, client_id, username)).cloned()
    }

    /// The limits of an existing connection (no quota check: it is already connected).
    pub fn limits_for(&self, tenant: &str, client_id: &str, username: Option<&str>) -> Option<ClientLimits> {
        self.matching(tenant, client_id, username).map(|r| {
            r.connections.fetch_add(1, Ordering::Relaxed);
            limits(r)
        })
    }

    /// Admits a new connection here, or says why not.
    pub fn admit(
        &self,
        broker: &Broker,
        tenant: &str,
        client_id: &str,
        username: Option<&str>,
    ) -> Result<Option<ClientLimits>, Refusal> {
        let Some(rule) = self.matching(tenant, client_id, username) else { return Ok(None) };
        if !rule.rule.node_tags.is_empty() {
            let cluster = broker.cluster.read();
            let here = cluster.tags.iter().any(|t| rule.rule.node_tags.contains(t));
            if !here {
                let elsewhere = cluster
                    .members
                    .iter()
                    .filter(|m| m.name != cluster.node && m.tags.iter().any(|t| rule.rule.node_tags.contains(t)))
                    .find_map(|m| m.mqtt_address.clone());
                match elsewhere {
                    Some(server) => return Err(Refusal::Elsewhere { rule: rule.name.clone(), server }),
                    // No node with the tags is known: serving the client here beats refusing it.
                    None => {
                        tracing::warn!(rule = %rule.name, tags = ?rule.rule.node_tags, "no cluster member has the rule's node tags; client kept here")
                    }
                }
            }
        }
        if let Some(max) = rule.rule.max_connections {
            // Count first, then check: two racing CONNECTs cannot both take the last slot.
            let before = rule.connections.fetch_add(1, Ordering::AcqRel);
            if before >= max as usize {
                rule.connections.fetch_sub(1, Ordering::AcqRel);
                return Err(Refusal::Quota { rule: rule.name.clone() });
            }
            return Ok(Some(limits(rule)));
        }
        rule.connections.fetch_add(1, Ordering::Relaxed);
        Ok(Some(limits(rule)))
    }
}

fn limits(rule: Arc<CompiledRule>) -> ClientLimits {
    let rate = rule.rule.publish_rate.and_then(NonZeroU32::new).map(|n| RateLimiter::direct(Quota::per_second(n)));
    let bandwidth = rule
        .rule
        .bandwidth
        .and_then(|b| NonZeroU32::new(u32::try_from(b).unwrap_or(u32::MAX)))
        .map(|n| RateLimiter::direct(Quota::per_second(n)));
    ClientLimits { rule, rate, bandwidth }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compiled(rule: TrafficRule) -> Arc<CompiledRule> {
        Arc::new(CompiledRule {
            name: "r".into(),
            tenant: "global".into(),
            client_id: rule.client_id_pattern.as_deref().map(WildMatch::new),
            username: rule.username_pattern.as_deref().map(WildMatch::new),
            connections: AtomicUsize::new(0),
            rule,
        })
    }

    #[test]
    fn patterns_match_client_ids_and_usernames() {
        let r = compiled(TrafficRule {
            client_id_pattern: Some("sensor-*".into()),
            username_pattern: Some("dev?".into()),
            ..Default::default()
        });
        assert!(r.matches("global", "sensor-1", Some("dev1")));
        assert!(!r.matches("global", "gateway", Some("dev1")));
        assert!(!r.matches("global", "sensor-1", None));
        assert!(!r.matches("acme", "sensor-1", Some("dev1")));
    }

    #[test]
    fn publish_rate_and_bandwidth_limit_a_client() {
        let l = limits(compiled(TrafficRule { publish_rate: Some(5), ..Default::default() }));
        let allowed = (0..20).filter(|_| l.allow_publish(10).is_ok()).count();
        assert_eq!(allowed, 5, "a burst of one second's worth, then refusals");
        assert_eq!(l.allow_publish(10), Err(Throttled::Rate));
        let l = limits(compiled(TrafficRule { bandwidth: Some(100), ..Default::default() }));
        assert_eq!(l.allow_publish(60), Ok(()));
        assert_eq!(l.allow_publish(60), Err(Throttled::Bandwidth), "120 bytes within the same second is over 100 B/s");
        assert_eq!(
            l.allow_publish(500),
            Err(Throttled::LargerThanBandwidth { bytes: 500, bandwidth: 100 }),
            "a message over one second's bandwidth is told apart from a momentary excess"
        );
    }
}
