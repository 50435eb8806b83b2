//! `RetainedStore`: the last retained message per topic of each tenant, in a level tree so a
//! subscription's filter finds its retained messages without scanning every topic.

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::RwLock;

use crate::message::{Message, TenantId, now_ms};

#[derive(Default)]
struct Node {
    children: HashMap<Box<str>, Node>,
    message: Option<Arc<Message>>,
}

#[derive(Default)]
struct TenantRetained {
    root: Node,
    count: usize,
}

#[derive(Default)]
pub struct RetainedStore {
    tenants: RwLock<HashMap<TenantId, TenantRetained>>,
}

/// What `set` did, so the caller can persist it and count it.
#[derive(Debug, PartialEq, Eq)]
pub enum RetainChange {
    Stored,
    Replaced,
    Cleared,
    Unchanged,
    /// The tenant is at `limits.max_retained_messages`.
    LimitReached,
}

impl RetainedStore {
    /// Stores `msg` as the retained message of its topic, or clears the topic when the payload is empty.
    pub fn set(&self, tenant: &TenantId, msg: Arc<Message>, max_per_tenant: usize) -> RetainChange {
        let mut tenants = self.tenants.write();
        let t = tenants.entry(tenant.clone()).or_default();
        let clear = msg.payload.is_empty();
        if clear {
            let levels: Vec<&str> = msg.topic.split('/').collect();
            let removed = Self::remove_node(&mut t.root, &levels);
            if removed {
                t.count -= 1;
                return RetainChange::Cleared;
            }
            return RetainChange::Unchanged;
        }
        let exists_path = {
            let mut n = &t.root;
            msg.topic.split('/').all(|l| match n.children.get(l) {
                Some(c) => {
                    n = c;
                    true
                }
                None => false,
            }) && n.message.is_some()
        };
        if !exists_path && max_per_tenant > 0 && t.count >= max_per_tenant {
            return RetainChange::LimitReached;
        }
        let mut node = &mut t.root;
        for level in msg.topic.split('/') {
            node = node.children.entry(level.into()).or_default();
        }
        match node.message.replace(msg) {
            Some(_) => RetainChange::Replaced,
            None => {
                t.count += 1;
                RetainChange::Stored
            }
        }
    }

    fn remove_node(node: &mut Node, levels: &[&str]) -> bool {
        let Some((first, rest)) = levels.split_first() else {
            return node.message.take().is_some();
        };
        let Some(child) = node.children.get_mut(*first) else { return false };
        let removed = Self::remove_node(child, rest);
        if child.message.is_none() && child.children.is_empty() {
            node.children.remove(*first);
        }
        removed
    }

    /// Retained messages matching `filter`, without expired ones.
    pub fn matching(&self, tenant: &str, filter: &str) -> Vec<Arc<Message>> {
        let tenants = self.tenants.read();
        let Some(t) = tenants.get(tenant) else { return Vec::new() };
        let levels: Vec<&str> = filter.split('/').collect();
        let mut out = Vec::new();
        Self::collect(&t.root, &levels, true, &mut out);
        let now = now_ms();
        out.retain(|m| !m.is_expired(now));
        out
    }

    fn collect(node: &Node, filter: &[&str], top: bool, out: &mut Vec<Arc<Message>>) {
        let Some((level, rest)) = filter.split_first() else {
            if let Some(m) = &node.message {
                out.push(m.clone());
            }
            return;
        };
        match *level {
            "#" => {
                if let Some(m) = &node.message
                    && !top
                {
                    out.push(m.clone());
                }
                for (name, child) in &node.children {
                    if !(top && name.starts_with('$')) {
                        Self::all(child, out);
                    }
                }
            }
            "+" => {
                for (name, child) in &node.children {
                    if !(top && name.starts_with('$')) {
                        Self::collect(child, rest, false, out);
                    }
                }
            }
            exact => {
                if let Some(child) = node.children.get(exact) {
                    Self::collect(child, rest, false, out);
                }
            }
        }
    }

    fn all(node: &Node, out: &mut Vec<Arc<Message>>) {
        if let Some(m) = &node.message {
            out.push(m.clone());
        }
        for child in node.children.values() {
            Self::all(child, out);
        }
    }

    /// Removes the retained message of `topic`; whether there was one.
    pub fn remove(&self, tenant: &str, topic: &str) -> bool {
        let mut tenants = self.tenants.write();
        let Some(t) = tenants.get_mut(tenant) else { return false };
        let levels: Vec<&str> = topic.split('/').collect();
        let removed = Self::remove_node(&mut t.root, &levels);
        if removed {
            t.count -= 1;
        }
        removed
    }

    /// The retained message of exactly `topic`, unless expired.
    pub fn get(&self, tenant: &str, topic: &str) -> Option<Arc<Message>> {
        let tenants = self.tenants.read();
        let mut node = &tenants.get(tenant)?.root;
        for level in topic.split('/') {
            node = node.children.get(level)?;
        }
        node.message.clone().filter(|m| !m.is_expired(now_ms()))
    }

    /// Every retained message of a tenant (`$` topics included), sorted by topic.
    pub fn list(&self, tenant: &str) -> Vec<Arc<Message>> {
        let tenants = self.tenants.read();
        let mut out = Vec::new();
        if let Some(t) = tenants.get(tenant) {
            Self::all(&t.root, &mut out);
        }
        let now = now_ms();
        out.retain(|m| !m.is_expired(now));
        out.sort_by(|a, b| a.topic.cmp(&b.topic));
        out
    }

    /// Every retained message of every tenant, unexpired, `$SYS` left out (each node keeps its own).
    pub fn everything(&self) -> Vec<Arc<Message>> {
        let tenants = self.tenants.read();
        let mut out = Vec::new();
        for t in tenants.values() {
            Self::all(&t.root, &mut out);
        }
        let now = now_ms();
        out.retain(|m| !m.is_expired(now) && !m.topic.starts_with("$SYS"));
        out
    }

    pub fn count(&self, tenant: &str) -> usize {
        self.tenants.read().get(tenant).map(|t| t.count).unwrap_or(0)
    }

    pub fn total(&self) -> usize {
        self.tenants.read().values().map(|t| t.count).sum()
    }

    /// Drops expired retained messages; returns `(tenant, topic)` of each, for the store.
    pub fn purge_expired(&self) -> Vec<(TenantId, String)> {
        let now = now_ms();
        let mut expired = Vec::new();
        {
            let tenants = self.tenants.read();
            for (tenant, t) in tenants.iter() {
                let mut all = Vec::new();
                Self::all(&t.root, &mut all);
                expired.extend(
                    all.into_iter().filter(|m| m.is_expired(now)).map(|m| (tenant.clone(), m.topic.to_string())),
                );
            }
        }
        if !expired.is_empty() {
            let mut tenants = self.tenants.write();
            for (tenant, topic) in &expired {
                if let Some(t) = tenants.get_mut(tenant) {
                    let levels: Vec<&str> = topic.split('/').collect();
                    if Self::remove_node(&mut t.root, &levels) {
                        t.count -= 1;
                    }
                }
            }
        }
        expired
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::MessageProperties;
    use bytes::Bytes;
    use rmqtt_codec::types::QoS;

    fn msg(topic: &str, payload: &'static str) -> Arc<Message> {
        Arc::new(Message {
            tenant: "global".into(),
            topic: topic.into(),
            payload: Bytes::from_static(payload.as_bytes()),
            qos: QoS::AtMostOnce,
            retain: true,
            properties: MessageProperties::default(),
            publisher: None,
            received_ms: now_ms(),
        })
    }

    fn topics(v: Vec<Arc<Message>>) -> Vec<String> {
        let mut t: Vec<String> = v.iter().map(|m| m.topic.to_string()).collect();
        t.sort();
        t
    }

    #[test]
    fn set_replace_clear_and_match() {
        let s = RetainedStore::default();
        let g: TenantId = "global".into();
        assert_eq!(s.set(&g, msg("a/b", "1"), 0), RetainChange::Stored);
        assert_eq!(s.set(&g, msg("a/b", "2"), 0), RetainChange::Replaced);
        assert_eq!(s.set(&g, msg("a/c/d", "3"), 0), RetainChange::Stored);
        assert_eq!(s.set(&g, msg("$SYS/x", "4"), 0), RetainChange::Stored);
        assert_eq!(topics(s.matching("global", "a/+")), vec!["a/b"]);
        assert_eq!(topics(s.matching("global", "#")), vec!["a/b", "a/c/d"]);
        assert_eq!(topics(s.matching("global", "$SYS/#")), vec!["$SYS/x"]);
        assert_eq!(s.matching("global", "a/b")[0].payload, Bytes::from_static(b"2"));
        assert_eq!(s.set(&g, msg("a/b", ""), 0), RetainChange::Cleared);
        assert_eq!(topics(s.matching("global", "a/#")), vec!["a/c/d"]);
        assert_eq!(s.count("global"), 2);
        assert!(s.matching("other", "#").is_empty());
        assert_eq!(s.set(&g, msg("z", "1"), 2), RetainChange::LimitReached);
    }
}
