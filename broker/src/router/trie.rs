//! `TopicTrie`: the subscriptions of one tenant, keyed by filter level, so that matching a topic
//! costs its number of levels (times the wildcard branches), never the number of subscriptions.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::{ClientId, SubOptions};
use crate::topic::FilterSpec;

#[derive(Default, Debug)]
struct Node {
    children: HashMap<Box<str>, Node>,
    subscribers: HashMap<ClientId, SubOptions>,
    groups: HashMap<Box<str>, SharedGroup>,
}

impl Node {
    fn is_empty(&self) -> bool {
        self.children.is_empty() && self.subscribers.is_empty() && self.groups.is_empty()
    }
}

/// The members of one `$share/{group}/{filter}`; messages go to one member, chosen round-robin.
#[derive(Default, Debug)]
pub struct SharedGroup {
    /// The filter the group shares (without `$share/{group}/`).
    filter: Box<str>,
    members: Vec<(ClientId, SubOptions)>,
    cursor: AtomicUsize,
}

impl SharedGroup {
    pub fn filter(&self) -> &str {
        &self.filter
    }

    pub fn members(&self) -> impl Iterator<Item = &ClientId> {
        self.members.iter().map(|(c, _)| c)
    }

    /// Picks the next member, preferring connected ones; an all-offline group still gets the
    /// message (queued in a persistent member's session).
    pub fn pick(&self, is_online: &dyn Fn(&str) -> bool) -> Option<&(ClientId, SubOptions)> {
        let n = self.members.len();
        if n == 0 {
            return None;
        }
        let start = self.cursor.fetch_add(1, Ordering::Relaxed);
        (0..n)
            .map(|i| &self.members[(start + i) % n])
            .find(|(c, _)| is_online(c))
            .or_else(|| self.members.get(start % n))
    }
}

/// One match of a topic against the trie.
pub enum TrieMatch<'a> {
    Direct(&'a ClientId, &'a SubOptions),
    Shared(&'a str, &'a SharedGroup),
}

#[derive(Default, Debug)]
pub struct TopicTrie {
    root: Node,
    subscriptions: usize,
    shared_subscriptions: usize,
}

impl TopicTrie {
    /// Adds or replaces a subscription; returns true when it is new.
    pub fn subscribe(&mut self, spec: &FilterSpec, client: &ClientId, opts: SubOptions) -> bool {
        let mut node = &mut self.root;
        for level in spec.filter.split('/') {
            node = node.children.entry(level.into()).or_default();
        }
        match &spec.share_group {
            None => {
                let new = node.subscribers.insert(client.clone(), opts).is_none();
                self.subscriptions += new as usize;
                new
            }
            Some(group) => {
                let g = node
                    .groups
                    .entry(group.as_str().into())
                    .or_insert_with(|| SharedGroup { filter: spec.filter.as_str().into(), ..SharedGroup::default() });
                if let Some(m) = g.members.iter_mut().find(|(c, _)| c == client) {
                    m.1 = opts;
                    false
                } else {
                    g.members.push((client.clone(), opts));
                    self.shared_subscriptions += 1;
                    true
                }
            }
        }
    }

    /// Removes a subscription; returns true when it existed. Empty branches are pruned.
    pub fn unsubscribe(&mut self, spec: &FilterSpec, client: &str) -> bool {
        let levels: Vec<&str> = spec.filter.split('/').collect();
        let removed = Self::remove_at(&mut self.root, &levels, spec.share_group.as_deref(), client);
        if removed {
            match spec.share_group {
                None => self.subscriptions -= 1,
                Some(_) => self.shared_subscriptions -= 1,
            }
        }
        removed
    }

    fn remove_at(node: &mut Node, levels: &[&str], group: Option<&str>, client: &str) -> bool {
        let Some((first, rest)) = levels.split_first() else {
            return match group {
                None => node.subscribers.remove(client).is_some(),
                Some(g) => {
                    let Some(sg) = node.groups.get_mut(g) else { return false };
                    let before = sg.members.len();
                    sg.members.retain(|(c, _)| &**c != client);
                    let removed = sg.members.len() != before;
                    if sg.members.is_empty() {
                        node.groups.remove(g);
                    }
                    removed
                }
            };
        };
        let Some(child) = node.children.get_mut(*first) else { return false };
        let removed = Self::remove_at(child, rest, group, client);
        if child.is_empty() {
            node.children.remove(*first);
        }
        removed
    }

    /// Calls `visit` for every subscription and share group whose filter matches `topic`.
    pub fn matches<'a>(&'a self, topic: &str, visit: &mut dyn FnMut(TrieMatch<'a>)) {
        let levels: Vec<&str> = topic.split('/').collect();
        let dollar = topic.starts_with('$');
        Self::walk(&self.root, &levels, 0, dollar, visit);
    }

    fn visit_node<'a>(node: &'a Node, visit: &mut dyn FnMut(TrieMatch<'a>)) {
        #[cfg(test)]
        tests::count_node_visit();
        for (c, o) in &node.subscribers {
            visit(TrieMatch::Direct(c, o));
        }
        for (g, sg) in &node.groups {
            visit(TrieMatch::Shared(g, sg));
        }
    }

    fn walk<'a>(node: &'a Node, levels: &[&str], depth: usize, dollar: bool, visit: &mut dyn FnMut(TrieMatch<'a>)) {
        #[cfg(test)]
        tests::count_node_visit();
        let wildcards_ok = !(depth == 0 && dollar);
        if wildcards_ok && let Some(hash) = node.children.get("#") {
            Self::visit_node(hash, visit);
        }
        let Some((level, rest)) = levels.split_first() else {
            Self::visit_node(node, visit);
            return;
        };
        if wildcards_ok && let Some(plus) = node.children.get("+") {
            Self::walk(plus, rest, depth + 1, dollar, visit);
        }
        if *level != "+"
            && *level != "#"
            && let Some(child) = node.children.get(*level)
        {
            Self::walk(child, rest, depth + 1, dollar, visit);
        }
    }

    pub fn subscription_count(&self) -> usize {
        self.subscriptions
    }

    pub fn shared_subscription_count(&self) -> usize {
        self.shared_subscriptions
    }

    /// Every filter with at least one subscriber, as `(filter, share group)`.
    pub fn filters(&self) -> Vec<(String, Option<String>)> {
        let mut out = Vec::new();
        Self::collect(&self.root, &mut Vec::new(), &mut out);
        out
    }

    fn collect(node: &Node, path: &mut Vec<String>, out: &mut Vec<(String, Option<String>)>) {
        if !node.subscribers.is_empty() {
            out.push((path.join("/"), None));
        }
        for g in node.groups.keys() {
            out.push((path.join("/"), Some(g.to_string())));
        }
        for (level, child) in &node.children {
            path.push(level.to_string());
            Self::collect(child, path, out);
            path.pop();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rmqtt_codec::types::QoS;
    use std::cell::Cell;

    thread_local! {
        /// Trie nodes looked at by `matches` on this thread (tests only: the hot path has no counter).
        static NODES_VISITED: Cell<usize> = const { Cell::new(0) };
    }

    pub(super) fn count_node_visit() {
        NODES_VISITED.with(|n| n.set(n.get() + 1));
    }

    /// The matches of `topic` and the number of nodes visited to find them.
    fn matched_with_work(t: &TopicTrie, topic: &str) -> (Vec<String>, usize) {
        NODES_VISITED.with(|n| n.set(0));
        let found = matched(t, topic);
        (found, NODES_VISITED.with(Cell::get))
    }

    fn spec(s: &str) -> FilterSpec {
        FilterSpec::parse(s, 32).unwrap()
    }

    fn matched(t: &TopicTrie, topic: &str) -> Vec<String> {
        let mut v = Vec::new();
        t.matches(topic, &mut |m| match m {
            TrieMatch::Direct(c, _) => v.push(c.to_string()),
            TrieMatch::Shared(g, _) => v.push(format!("share:{g}")),
        });
        v.sort();
        v
    }

    #[test]
    fn wildcards_and_dollar_topics() {
        let mut t = TopicTrie::default();
        let o = SubOptions::new(QoS::AtLeastOnce);
        for (f, c) in [("a/b", "c1"), ("a/+", "c2"), ("#", "c3"), ("a/#", "c4"), ("$SYS/#", "c5"), ("+/b", "c6")] {
            t.subscribe(&spec(f), &ClientId::from(c), o);
        }
        assert_eq!(matched(&t, "a/b"), vec!["c1", "c2", "c3", "c4", "c6"]);
        assert_eq!(matched(&t, "a"), vec!["c3", "c4"]);
        assert_eq!(matched(&t, "$SYS/x"), vec!["c5"]);
        assert_eq!(matched(&t, "$SYS/b"), vec!["c5"]);
        assert_eq!(t.subscription_count(), 6);
        assert!(t.unsubscribe(&spec("a/+"), "c2"));
        assert!(!t.unsubscribe(&spec("a/+"), "c2"));
        assert_eq!(matched(&t, "a/b"), vec!["c1", "c3", "c4", "c6"]);
    }

    #[test]
    fn share_group_round_robin_survives_member_leaving() {
        let mut t = TopicTrie::default();
        let o = SubOptions::new(QoS::AtMostOnce);
        for c in ["m1", "m2", "m3"] {
            t.subscribe(&spec("$share/g/x/+"), &ClientId::from(c), o);
        }
        let pick = |t: &TopicTrie| {
            let mut who = String::new();
            t.matches("x/1", &mut |m| {
                if let TrieMatch::Shared(_, g) = m {
                    who = g.pick(&|_| true).unwrap().0.to_string();
                }
            });
            who
        };
        let picks: Vec<String> = (0..6).map(|_| pick(&t)).collect();
        for c in ["m1", "m2", "m3"] {
            assert_eq!(picks.iter().filter(|p| *p == c).count(), 2);
        }
        t.unsubscribe(&spec("$share/g/x/+"), "m2");
        let picks: Vec<String> = (0..4).map(|_| pick(&t)).collect();
        assert!(picks.iter().all(|p| p == "m1" || p == "m3"));
        assert_eq!(t.shared_subscription_count(), 2);
    }

    #[test]
    fn pruning_leaves_no_empty_nodes() {
        let mut t = TopicTrie::default();
        t.subscribe(&spec("a/b/c"), &ClientId::from("c"), SubOptions::new(QoS::AtMostOnce));
        t.unsubscribe(&spec("a/b/c"), "c");
        assert!(t.root.is_empty());
        assert!(t.filters().is_empty());
    }

    #[test]
    fn matching_work_does_not_grow_with_the_number_of_unrelated_subscriptions() {
        let o = SubOptions::new(QoS::AtLeastOnce);
        let build = |unrelated: usize| {
            let mut t = TopicTrie::default();
            for (f, c) in [("a/b/c", "exact"), ("a/+/c", "plus"), ("a/#", "hash"), ("+/b/+", "plus2"), ("#", "all")] {
                t.subscribe(&spec(f), &ClientId::from(c), o);
            }
            // Unrelated filters next to every branch the topic walks: siblings of its levels,
            // under its wildcards, and elsewhere.
            for i in 0..unrelated {
                let f = match i % 6 {
                    0 => format!("other/{i}"),
                    1 => format!("a/b/x{i}"),
                    2 => format!("a/x{i}/c"),
                    3 => format!("+/x{i}/c"),
                    4 => format!("a/+/x{i}"),
                    _ => format!("x{i}/#"),
                };
                t.subscribe(&spec(&f), &ClientId::from(format!("u{i}").as_str()), o);
            }
            assert_eq!(t.subscription_count(), 5 + unrelated);
            t
        };
        let small = build(10);
        let large = build(100_000);
        for topic in ["a/b/c", "a/b", "z/b/q", "nothing/here/at/all"] {
            let (found_small, work_small) = matched_with_work(&small, topic);
            let (found_large, work_large) = matched_with_work(&large, topic);
            assert_eq!(found_small, found_large, "{topic}: the same matches");
            assert_eq!(work_small, work_large, "{topic}: nodes visited with 10 vs 100,000 unrelated subscriptions");
            assert!(work_small > 0);
        }
        assert_eq!(matched_with_work(&large, "a/b/c").0, vec!["all", "exact", "hash", "plus", "plus2"]);
    }
}
