//! The decisions of the Bridge, Rule and TrafficRule controllers as pure functions: the status
//! that follows from what each broker said, and whether a deletion cleans the brokers.
//!
//! Tested without a cluster; `managed.rs` does the I/O around them.

use crds::managed::{CONDITION_READY, CONDITION_SYNCED, DeletionPolicy, ManagedStatus, NodeResult};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use super::diff::condition_from;

/// What happened with one broker pod this pass.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeOutcome {
    /// The pod is not Ready: not contacted.
    NotReady,
    /// The broker already had the object as the spec says: nothing written.
    InSync,
    /// The object was written (it was missing or differed).
    Written,
    /// The broker refused the object (HTTP 4xx); its message.
    Rejected(String),
    /// The broker's API failed (unreachable, timeout, 5xx); why.
    Failed(String),
}

/// One broker pod and what happened with it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeReport {
    pub pod: String,
    pub outcome: NodeOutcome,
}

impl NodeReport {
    pub fn applied(&self) -> bool {
        matches!(self.outcome, NodeOutcome::InSync | NodeOutcome::Written)
    }
}

/// Something that stops the controller before the brokers (the cluster is missing, scaled to
/// zero, has no Ready broker, a Secret is missing): a condition, not a hot retry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    pub reason: &'static str,
    pub message: String,
}

/// Everything the status is computed from.
#[derive(Clone, Debug)]
pub enum Observation {
    /// The brokers were visited: one report per pod, `total` = the cluster's `spec.replicas`.
    Nodes { nodes: Vec<NodeReport>, total: i32 },
    /// They were not, because of this.
    Stopped(Problem),
}

/// The status that follows from an observation. Conditions keep their `lastTransitionTime`
/// from `previous` unless their status flips, so equal observations give an equal status and
/// nothing is written. `secret_hash` is the digest of the Secret values in the desired object;
/// it is recorded once every Ready broker has the object.
pub fn status(
    previous: Option<&ManagedStatus>,
    generation: Option<i64>,
    observation: &Observation,
    secret_hash: Option<&str>,
    now: &Time,
) -> ManagedStatus {
    let previous_conditions = previous.map(|s| s.conditions.as_slice()).unwrap_or_default();
    let cond = |type_: &str, on: bool, reason: &str, message: String| {
        condition_from(previous_conditions, type_, on, reason, message, generation, now)
    };
    let kept_hash = previous.and_then(|s| s.applied_secret_hash.clone());

    let (nodes, total) = match observation {
        Observation::Stopped(p) => {
            return ManagedStatus {
                observed_generation: generation,
                conditions: vec![
                    cond(CONDITION_READY, false, p.reason, p.message.clone()),
                    cond(CONDITION_SYNCED, false, p.reason, p.message.clone()),
                ],
                nodes_applied: 0,
                nodes_total: 0,
                nodes: Vec::new(),
                applied_secret_hash: kept_hash,
            };
        }
        Observation::Nodes { nodes, total } => (nodes, *total),
    };

    let applied = nodes.iter().filter(|n| n.applied()).count() as i32;
    let rejected: Vec<(&str, &str)> = nodes
        .iter()
        .filter_map(|n| match &n.outcome {
            NodeOutcome::Rejected(m) => Some((n.pod.as_str(), m.as_str())),
            _ => None,
        })
        .collect();
    let failed: Vec<String> = nodes
        .iter()
        .filter_map(|n| match &n.outcome {
            NodeOutcome::Failed(m) => Some(format!("{}: {m}", n.pod)),
            _ => None,
        })
        .collect();
    // The broker's own words when it refuses the object (the same on every broker, usually).
    let trouble = if let Some((pod, message)) = rejected.first() {
        let others = rejected.iter().filter(|(_, m)| m != message).count();
        let message = if others == 0 { message.to_string() } else { format!("{message} (on {pod}; others differ)") };
        Some(("Rejected", message))
    } else if !failed.is_empty() {
        Some(("BrokerAPIFailed", failed.join("; ")))
    } else {
        None
    };
    let count = format!("{applied} of {total} brokers have it");
    let conditions = match &trouble {
        Some((reason, message)) => {
            vec![
                cond(CONDITION_READY, false, reason, message.clone()),
                cond(CONDITION_SYNCED, false, reason, message.clone()),
            ]
        }
        None => vec![
            if applied >= total {
                cond(CONDITION_READY, true, "Applied", count.clone())
            } else {
                cond(CONDITION_READY, false, "NotAllBrokersReady", count.clone())
            },
            cond(
                CONDITION_SYNCED,
                true,
                "Synced",
                format!("every Ready broker has generation {}", generation.unwrap_or(0)),
            ),
        ],
    };
    let nodes_out = nodes
        .iter()
        .map(|n| NodeResult {
            pod: n.pod.clone(),
            applied: n.applied(),
            error: match &n.outcome {
                NodeOutcome::NotReady => Some("pod not ready".into()),
                NodeOutcome::Rejected(m) | NodeOutcome::Failed(m) => Some(m.clone()),
                NodeOutcome::InSync | NodeOutcome::Written => None,
            },
        })
        .collect();
    ManagedStatus {
        observed_generation: generation,
        conditions,
        nodes_applied: applied,
        nodes_total: total,
        nodes: nodes_out,
        applied_secret_hash: if trouble.is_none() { secret_hash.map(str::to_string) } else { kept_hash },
    }
}

/// Whether every Ready broker must be written regardless of what it shows: the Secret values
/// changed since they were last applied (a broker masks a bridge's password, so a new one
/// cannot be seen by comparing).
pub fn secret_changed(previous: Option<&ManagedStatus>, secret_hash: Option<&str>) -> bool {
    secret_hash.is_some() && previous.and_then(|s| s.applied_secret_hash.as_deref()) != secret_hash
}

/// The referenced BrokerCluster as found when the custom resource is being deleted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClusterState {
    /// It exists and is not being deleted.
    Present,
    /// It is being deleted (its pods go with it).
    Deleting,
    /// It does not exist.
    Missing,
}

/// What the finalizer does on deletion.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cleanup {
    /// Delete the object from every Ready broker, then drop the finalizer.
    DeleteFromBrokers,
    /// Drop the finalizer without touching the brokers, for this reason.
    Skip(&'static str),
}

/// The finalizer's decision. It never waits for something that will not come back: a missing
/// or departing cluster (or namespace) lets the resource go at once.
pub fn cleanup(policy: DeletionPolicy, paused: bool, cluster: ClusterState, namespace_terminating: bool) -> Cleanup {
    if policy == DeletionPolicy::Retain {
        Cleanup::Skip("deletionPolicy is Retain: the brokers keep the object")
    } else if paused {
        Cleanup::Skip("reconciliation is paused: the brokers keep the object")
    } else if namespace_terminating {
        Cleanup::Skip("the namespace is being deleted, and the brokers with it")
    } else {
        match cluster {
            ClusterState::Present => Cleanup::DeleteFromBrokers,
            ClusterState::Deleting => Cleanup::Skip("the BrokerCluster is being deleted, and its brokers with it"),
            ClusterState::Missing => Cleanup::Skip("the BrokerCluster does not exist"),
        }
    }
}

/// The condition of `type_` in a status.
pub fn condition<'a>(status: Option<&'a ManagedStatus>, type_: &str) -> Option<&'a Condition> {
    status.and_then(|s| s.conditions.iter().find(|c| c.type_ == type_))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn time(s: &str) -> Time {
        serde_json::from_value(json!(s)).unwrap()
    }

    fn node(i: u8, outcome: NodeOutcome) -> NodeReport {
        NodeReport { pod: format!("demo-{i}"), outcome }
    }

    fn get<'a>(s: &'a ManagedStatus, t: &str) -> &'a Condition {
        condition(Some(s), t).unwrap()
    }

    #[test]
    fn all_brokers_in_sync_is_ready_and_synced() {
        let obs = Observation::Nodes {
            nodes: vec![node(0, NodeOutcome::InSync), node(1, NodeOutcome::Written), node(2, NodeOutcome::InSync)],
            total: 3,
        };
        let s = status(None, Some(2), &obs, None, &time("2026-01-01T00:00:00Z"));
        assert_eq!((s.nodes_applied, s.nodes_total, s.observed_generation), (3, 3, Some(2)));
        assert_eq!((get(&s, "Ready").status.as_str(), get(&s, "Ready").reason.as_str()), ("True", "Applied"));
        assert_eq!(get(&s, "Synced").status, "True");
        assert!(s.nodes.iter().all(|n| n.applied && n.error.is_none()));
    }

    #[test]
    fn the_same_observation_later_gives_an_equal_status() {
        let obs = Observation::Nodes { nodes: vec![node(0, NodeOutcome::InSync)], total: 1 };
        let first = status(None, Some(1), &obs, Some("h"), &time("2026-01-01T00:00:00Z"));
        let again = status(Some(&first), Some(1), &obs, Some("h"), &time("2026-01-01T00:05:00Z"));
        assert_eq!(first, again);
        // A flip gets a fresh transition time; the unchanged condition keeps its own.
        let down = Observation::Nodes { nodes: vec![node(0, NodeOutcome::NotReady)], total: 1 };
        let later = status(Some(&first), Some(1), &down, Some("h"), &time("2026-01-01T00:09:00Z"));
        assert_eq!(get(&later, "Ready").status, "False");
        assert_eq!(get(&later, "Ready").last_transition_time, time("2026-01-01T00:09:00Z"));
        assert_eq!(get(&later, "Synced").last_transition_time, time("2026-01-01T00:00:00Z"));
    }

    #[test]
    fn a_broker_refusing_the_object_shows_its_message() {
        let msg = "rawsql: expected FROM at Line: 1, Column: 8";
        let obs = Observation::Nodes {
            nodes: vec![node(0, NodeOutcome::Rejected(msg.into())), node(1, NodeOutcome::Rejected(msg.into()))],
            total: 2,
        };
        let s = status(None, Some(1), &obs, None, &time("2026-01-01T00:00:00Z"));
        for t in ["Ready", "Synced"] {
            let c = get(&s, t);
            assert_eq!((c.status.as_str(), c.reason.as_str(), c.message.as_str()), ("False", "Rejected", msg));
        }
        assert_eq!(s.nodes[1].error.as_deref(), Some(msg));
        assert_eq!(s.nodes_applied, 0);
    }

    #[test]
    fn unreachable_brokers_and_unready_pods_are_named() {
        let obs = Observation::Nodes {
            nodes: vec![node(0, NodeOutcome::InSync), node(1, NodeOutcome::Failed("cannot connect".into()))],
            total: 3,
        };
        let s = status(None, Some(1), &obs, None, &time("2026-01-01T00:00:00Z"));
        assert_eq!(get(&s, "Ready").reason, "BrokerAPIFailed");
        assert_eq!(get(&s, "Ready").message, "demo-1: cannot connect");
        let obs =
            Observation::Nodes { nodes: vec![node(0, NodeOutcome::InSync), node(1, NodeOutcome::NotReady)], total: 2 };
        let s = status(None, Some(1), &obs, None, &time("2026-01-01T00:00:00Z"));
        let (ready, synced) = (get(&s, "Ready"), get(&s, "Synced"));
        assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("False", "NotAllBrokersReady"));
        assert_eq!(ready.message, "1 of 2 brokers have it");
        assert_eq!(synced.status, "True");
        assert_eq!(
            s.nodes[1],
            NodeResult { pod: "demo-1".into(), applied: false, error: Some("pod not ready".into()) }
        );
    }

    #[test]
    fn a_problem_stops_with_its_reason() {
        let p = Problem { reason: "ClusterNotFound", message: "BrokerCluster demo not found".into() };
        let s = status(None, Some(1), &Observation::Stopped(p), None, &time("2026-01-01T00:00:00Z"));
        assert_eq!((get(&s, "Ready").reason.as_str(), get(&s, "Synced").status.as_str()), ("ClusterNotFound", "False"));
        assert_eq!((s.nodes_applied, s.nodes_total), (0, 0));
    }

    #[test]
    fn the_secret_hash_is_recorded_only_when_every_ready_broker_has_it() {
        let now = time("2026-01-01T00:00:00Z");
        assert!(secret_changed(None, Some("a")));
        assert!(!secret_changed(None, None));
        let failing = Observation::Nodes { nodes: vec![node(0, NodeOutcome::Failed("x".into()))], total: 1 };
        let s = status(None, Some(1), &failing, Some("a"), &now);
        assert_eq!(s.applied_secret_hash, None);
        assert!(secret_changed(Some(&s), Some("a")));
        let ok = Observation::Nodes { nodes: vec![node(0, NodeOutcome::Written)], total: 1 };
        let s = status(Some(&s), Some(1), &ok, Some("a"), &now);
        assert_eq!(s.applied_secret_hash.as_deref(), Some("a"));
        assert!(!secret_changed(Some(&s), Some("a")));
        assert!(secret_changed(Some(&s), Some("b")));
    }

    #[test]
    fn deletion_cleans_the_brokers_only_when_they_are_there_to_clean() {
        use ClusterState::*;
        let d = DeletionPolicy::Delete;
        assert_eq!(cleanup(d, false, Present, false), Cleanup::DeleteFromBrokers);
        assert!(
            matches!(cleanup(DeletionPolicy::Retain, false, Present, false), Cleanup::Skip(r) if r.contains("Retain"))
        );
        assert!(matches!(cleanup(d, false, Missing, false), Cleanup::Skip(_)));
        assert!(matches!(cleanup(d, false, Deleting, false), Cleanup::Skip(_)));
        assert!(matches!(cleanup(d, false, Present, true), Cleanup::Skip(r) if r.contains("namespace")));
        assert!(matches!(cleanup(d, true, Present, false), Cleanup::Skip(r) if r.contains("paused")));
    }
}
