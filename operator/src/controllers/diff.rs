//! The BrokerCluster controller's decisions as pure functions: which membership each broker
//! should have, whether a broker's settings or membership differ from the spec, and the status
//! (phase, conditions, nodes) that follows from what was observed.

use crds::broker_cluster::{BrokerCluster, BrokerClusterStatus, NodeStatus, Phase, UpdateStrategy};
use crds::{ClusterMember, ClusterMembership, Settings};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::ResourceExt;

use crate::resources::client_service::client_endpoint;
use crate::resources::{Names, selector_string};

pub const READY: &str = "Ready";
pub const PROGRESSING: &str = "Progressing";
pub const DEGRADED: &str = "Degraded";

/// The membership the operator gives broker `pod`: every pod the StatefulSet should have
/// (ordinals `0..replicas`, whether running yet or not, so a restarting pod does not change
/// everybody's list), addressed by its stable DNS name: the admin port, and the MQTT port
/// (TCP, else TLS) where a client placed on that node connects.
pub fn membership_for(bc: &BrokerCluster, pod: &str) -> ClusterMembership {
    let names = Names::of(bc);
    let ns = bc.namespace().unwrap_or_default();
    let l = &bc.spec.listeners;
    let mqtt_port = if l.mqtt.enabled { Some(l.mqtt.port) } else { l.tls.as_ref().map(|t| t.port) };
    let mut members: Vec<ClusterMember> = (0..bc.spec.replicas.max(0))
        .map(|i| {
            let name = names.pod(i);
            let host = format!("{name}.{}.{ns}.svc", names.headless_service);
            ClusterMember {
                address: format!("{host}:{}", bc.spec.admin.port),
                mqtt_address: mqtt_port.map(|p| format!("{host}:{p}")),
                tags: tags_of(bc, i),
                // Not linked yet: the operator does not configure the broker's cluster
                // listener and secret (issue 9), so the brokers run side by side.
                cluster_address: None,
                name,
            }
        })
        .collect();
    members.sort();
    let tags = members.iter().find(|m| m.name == pod).map(|m| m.tags.clone()).unwrap_or_else(|| bc.spec.tags.clone());
    ClusterMembership { node: pod.to_string(), tags, members }
}

/// The group tags of the broker with StatefulSet ordinal `i`: the cluster's `tags` and its own
/// `podTags`, sorted and without duplicates (as the broker keeps them).
fn tags_of(bc: &BrokerCluster, i: i32) -> Vec<String> {
    let own = bc.spec.pod_tags.get(&i.to_string()).into_iter().flatten();
    let mut tags: Vec<String> = bc.spec.tags.iter().chain(own).cloned().collect();
    tags.sort();
    tags.dedup();
    tags
}

/// Whether a broker's membership must be written: members or tags differ, in any order (the
/// broker stores them sorted and deduplicated; `node` is the broker's own and not compared).
pub fn membership_differs(current: &ClusterMembership, desired: &ClusterMembership) -> bool {
    let sorted = |m: &ClusterMembership| {
        let mut members = m.members.clone();
        members.sort();
        members.dedup();
        let mut tags = m.tags.clone();
        tags.sort();
        tags.dedup();
        (members, tags)
    };
    sorted(current) != sorted(desired)
}

/// A status condition; it keeps its `lastTransitionTime` from `previous` unless its status
/// flips, so equal observations give an equal status (and nothing is written).
pub fn condition_from(
    previous: &[Condition],
    type_: &str,
    on: bool,
    reason: &str,
    message: String,
    generation: Option<i64>,
    now: &Time,
) -> Condition {
    let status = if on { "True" } else { "False" };
    let last_transition_time = previous
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| now.clone());
    Condition {
        type_: type_.into(),
        status: status.into(),
        reason: reason.into(),
        message,
        observed_generation: generation,
        last_transition_time,
    }
}

/// Whether a broker's settings must be written (the spec's settings are complete: any field
/// left out there is the default, and the broker is made to match all of them).
pub fn settings_differ(current: &Settings, desired: &Settings) -> bool {
    current != desired
}

/// What the controller learnt about one broker pod.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NodeReport {
    pub pod: String,
    pub ip: Option<String>,
    /// The pod's Ready condition.
    pub pod_ready: bool,
    /// Why a container is stuck, when it is (`CrashLoopBackOff: ...`), or why the pod is not
    /// scheduled.
    pub stuck: Option<String>,
    /// What the management API said: the broker's version and connections, or the error.
    pub api: Option<Result<BrokerFacts, String>>,
}

/// A configured broker's own figures, and what was written to it this pass.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct BrokerFacts {
    pub version: String,
    pub connections: u64,
    pub wrote_membership: bool,
    pub wrote_settings: bool,
}

/// Waiting reasons that do not go away by waiting.
const STUCK_REASONS: &[&str] = &[
    "CrashLoopBackOff",
    "ImagePullBackOff",
    "ErrImagePull",
    "ErrImageNeverPull",
    "InvalidImageName",
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
];

/// The parts of a pod the controller looks at.
pub fn observe_pod(pod: &Pod) -> NodeReport {
    let status = pod.status.as_ref();
    let condition =
        |t: &str| status.and_then(|s| s.conditions.as_ref()).and_then(|cs| cs.iter().find(|c| c.type_ == t));
    let pod_ready = pod.metadata.deletion_timestamp.is_none() && condition("Ready").is_some_and(|c| c.status == "True");
    let waiting = status
        .and_then(|s| s.container_statuses.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|c| c.state.as_ref().and_then(|s| s.waiting.as_ref()))
        .find(|w| w.reason.as_deref().is_some_and(|r| STUCK_REASONS.contains(&r)))
        .map(|w| match (&w.reason, &w.message) {
            (Some(r), Some(m)) if !m.is_empty() => format!("{r}: {m}"),
            (r, _) => r.clone().unwrap_or_default(),
        });
    let unschedulable = condition("PodScheduled")
        .filter(|c| c.status == "False" && c.reason.as_deref() == Some("Unschedulable"))
        .map(|c| format!("Unschedulable: {}", c.message.clone().unwrap_or_default()));
    NodeReport {
        pod: pod.name_any(),
        ip: status.and_then(|s| s.pod_ip.clone()),
        pod_ready,
        stuck: waiting.or(unschedulable),
        api: None,
    }
}

/// Something that stops the controller before the brokers, e.g. a missing admin Secret.
#[derive(Clone, Debug, PartialEq)]
pub struct Problem {
    pub reason: &'static str,
    pub message: String,
}

/// Everything the status is computed from.
#[derive(Clone, Debug, Default)]
pub struct Observed<'a> {
    pub stateful_set: Option<&'a StatefulSet>,
    pub nodes: &'a [NodeReport],
    pub problem: Option<Problem>,
}

/// The status that follows from `observed`. Conditions keep their `lastTransitionTime` from
/// `bc.status` unless their status flips, so the same observations give an equal status and
/// nothing is written (a status write with a fresh timestamp every pass would be a write on
/// every pass).
pub fn status(bc: &BrokerCluster, observed: &Observed<'_>, now: &Time) -> BrokerClusterStatus {
    let desired = bc.spec.replicas;
    let generation = bc.metadata.generation;
    let previous = bc.status.as_ref().map(|s| s.conditions.as_slice()).unwrap_or_default();

    let sts_status = observed.stateful_set.and_then(|s| s.status.clone()).unwrap_or_default();
    let sts_generation = observed.stateful_set.and_then(|s| s.metadata.generation);
    let replicas = sts_status.replicas;
    let ready = sts_status.ready_replicas.unwrap_or(0);
    let updated = sts_status.updated_replicas.unwrap_or(0);
    let revisions_differ = bc.spec.update_strategy == UpdateStrategy::RollingUpdate
        && sts_status.update_revision.is_some()
        && sts_status.current_revision != sts_status.update_revision;
    let sts_behind = observed.stateful_set.is_none() || sts_status.observed_generation < sts_generation;

    let nodes: Vec<NodeStatus> = observed.nodes.iter().map(node_status).collect();
    let configured = nodes.iter().filter(|n| n.ready).count() as i32;

    // Degraded: what waiting does not fix, most basic first.
    let failing: Vec<String> =
        observed.nodes.iter().filter_map(|n| n.stuck.as_ref().map(|s| format!("{}: {s}", n.pod))).collect();
    let api_errors: Vec<String> = observed
        .nodes
        .iter()
        .filter_map(|n| match &n.api {
            Some(Err(e)) => Some(format!("{}: {e}", n.pod)),
            _ => None,
        })
        .collect();
    let degraded = if let Some(p) = &observed.problem {
        Some((p.reason, p.message.clone()))
    } else if !failing.is_empty() {
        Some(("BrokerPodsFailing", failing.join("; ")))
    } else if !api_errors.is_empty() {
        Some(("AdminAPIFailed", api_errors.join("; ")))
    } else {
        None
    };

    let progressing = if observed.problem.is_some() {
        None
    } else if sts_behind {
        Some(("Applying", "the StatefulSet has not caught up with the spec yet".to_string()))
    } else if replicas < desired {
        Some(("ScalingUp", format!("{replicas} of {desired} brokers exist")))
    } else if replicas > desired {
        Some(("ScalingDown", format!("{replicas} brokers exist, {desired} wanted")))
    } else if revisions_differ || updated < desired {
        Some(("RollingUpdate", format!("{updated} of {desired} brokers run the current pod template")))
    } else if ready < desired {
        Some(("WaitingForBrokers", format!("{ready} of {desired} brokers ready")))
    } else if configured < desired {
        Some(("Configuring", format!("{configured} of {desired} brokers configured through their API")))
    } else {
        None
    };

    let is_ready = degraded.is_none() && progressing.is_none();
    let phase = match (&degraded, is_ready) {
        (Some(_), _) => Phase::Degraded,
        (None, true) => Phase::Ready,
        (None, false) if ready == 0 => Phase::Pending,
        (None, false) => Phase::Progressing,
    };

    let cond = |type_: &str, on: bool, reason: &str, message: String| {
        condition_from(previous, type_, on, reason, message, generation, now)
    };
    let conditions = vec![
        if is_ready {
            cond(READY, true, "AllBrokersReady", format!("{desired} of {desired} brokers ready and configured"))
        } else {
            let reason = if degraded.is_some() { "Degraded" } else { "NotAllBrokersReady" };
            cond(READY, false, reason, format!("{configured} of {desired} brokers ready and configured"))
        },
        match &progressing {
            Some((reason, message)) => cond(PROGRESSING, true, reason, message.clone()),
            None => cond(PROGRESSING, false, "Stable", format!("{replicas} brokers on the current pod template")),
        },
        match &degraded {
            Some((reason, message)) => cond(DEGRADED, true, reason, message.clone()),
            None => cond(DEGRADED, false, "AsExpected", String::new()),
        },
    ];

    BrokerClusterStatus {
        observed_generation: generation,
        replicas,
        ready_replicas: ready,
        selector: Some(selector_string(bc)),
        phase: Some(phase),
        conditions,
        nodes,
        endpoint: Some(client_endpoint(bc)),
        admin_secret: Some(Names::admin_secret(bc)),
    }
}

fn node_status(n: &NodeReport) -> NodeStatus {
    let (facts, error) = match &n.api {
        Some(Ok(f)) => (Some(f), None),
        Some(Err(e)) => (None, Some(e.clone())),
        None => (None, None),
    };
    let message = n.stuck.clone().or(error).or_else(|| (!n.pod_ready).then(|| "pod not ready".to_string()));
    NodeStatus {
        pod: n.pod.clone(),
        ip: n.ip.clone(),
        ready: n.pod_ready && facts.is_some(),
        version: facts.map(|f| f.version.clone()).filter(|v| !v.is_empty()),
        connections: facts.map(|f| f.connections),
        message,
    }
}

/// The condition of `type_` in a status.
pub fn condition<'a>(status: Option<&'a BrokerClusterStatus>, type_: &str) -> Option<&'a Condition> {
    status.and_then(|s| s.conditions.iter().find(|c| c.type_ == type_))
}

/// Per-object exponential back-off after failed reconciles: 5 s, 10 s, 20 s, ... up to 5 min.
pub fn backoff_delay(failures: u32) -> std::time::Duration {
    let secs = 5u64.saturating_mul(1u64 << failures.saturating_sub(1).min(10));
    std::time::Duration::from_secs(secs.min(300))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::testing::cluster;
    use k8s_openapi::api::apps::v1::StatefulSetStatus;
    use k8s_openapi::api::core::v1::{ContainerState, ContainerStateWaiting, ContainerStatus, PodCondition, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use serde_json::json;

    fn time(s: &str) -> Time {
        serde_json::from_value(json!(s)).unwrap()
    }

    fn sts(generation: i64, observed: i64, replicas: i32, ready: i32, updated: i32, revs: (&str, &str)) -> StatefulSet {
        StatefulSet {
            metadata: ObjectMeta { generation: Some(generation), ..ObjectMeta::default() },
            status: Some(StatefulSetStatus {
                observed_generation: Some(observed),
                replicas,
                ready_replicas: Some(ready),
                updated_replicas: Some(updated),
                current_revision: Some(revs.0.into()),
                update_revision: Some(revs.1.into()),
                ..StatefulSetStatus::default()
            }),
            ..StatefulSet::default()
        }
    }

    fn ready_node(i: i32, connections: u64) -> NodeReport {
        NodeReport {
            pod: format!("demo-{i}"),
            ip: Some(format!("10.244.0.{}", 10 + i)),
            pod_ready: true,
            stuck: None,
            api: Some(Ok(BrokerFacts { version: "0.1.0".into(), connections, ..BrokerFacts::default() })),
        }
    }

    #[test]
    fn membership_lists_every_ordinal_by_dns_name() {
        let bc = cluster("demo", json!({"replicas": 3, "admin": {"port": 9081}}));
        let m = membership_for(&bc, "demo-1");
        assert_eq!(m.node, "demo-1");
        let addrs: Vec<&str> = m.members.iter().map(|m| m.address.as_str()).collect();
        assert_eq!(
            addrs,
            [
                "demo-0.demo-headless.mqtt.svc:9081",
                "demo-1.demo-headless.mqtt.svc:9081",
                "demo-2.demo-headless.mqtt.svc:9081"
            ]
        );
        assert_eq!(m.members[0].mqtt_address.as_deref(), Some("demo-0.demo-headless.mqtt.svc:1883"));
        assert_eq!(m.validate(), Ok(()));
    }

    #[test]
    fn membership_carries_the_cluster_and_pod_group_tags() {
        let bc = cluster("demo", json!({"replicas": 3, "tags": ["eu", "zone-a"], "podTags": {"1": ["gold", "eu"]}}));
        let m = membership_for(&bc, "demo-1");
        assert_eq!(m.tags, ["eu", "gold", "zone-a"]);
        let tags: Vec<&[String]> = m.members.iter().map(|m| m.tags.as_slice()).collect();
        assert_eq!(tags, [&["eu", "zone-a"][..], &["eu", "gold", "zone-a"], &["eu", "zone-a"]]);
        assert_eq!(membership_for(&bc, "demo-0").tags, ["eu", "zone-a"]);
        assert_eq!(m.validate(), Ok(()));
        let untagged = membership_for(&cluster("demo", json!({"replicas": 2})), "demo-0");
        assert!(untagged.tags.is_empty() && untagged.members.iter().all(|m| m.tags.is_empty()));
    }

    #[test]
    fn membership_compares_as_sets_and_ignores_the_node() {
        let bc = cluster("demo", json!({"replicas": 3}));
        let desired = membership_for(&bc, "demo-0");
        let mut current = desired.clone();
        current.members.reverse();
        current.node = "demo-0".into();
        assert!(!membership_differs(&current, &desired));
        current.members.pop();
        assert!(membership_differs(&current, &desired), "a missing member is a difference");
        let fresh = ClusterMembership { node: "demo-0".into(), ..ClusterMembership::default() };
        assert!(membership_differs(&fresh, &desired), "a new broker knows nobody");
        let scaled = membership_for(&cluster("demo", json!({"replicas": 5})), "demo-0");
        assert!(membership_differs(&desired, &scaled));
    }

    #[test]
    fn settings_differ_on_any_field() {
        let a = Settings::default();
        assert!(!settings_differ(&a, &a.clone()));
        let mut b = a.clone();
        b.limits.keepalive_multiplier = 2.0;
        assert!(settings_differ(&a, &b));
        let mut c = a.clone();
        c.allow_anonymous = false;
        assert!(settings_differ(&a, &c));
    }

    #[test]
    fn all_ready_is_ready_and_the_same_observation_gives_an_equal_status() {
        let mut bc = cluster("demo", json!({"replicas": 3}));
        let s = sts(1, 1, 3, 3, 3, ("r1", "r1"));
        let nodes: Vec<NodeReport> = (0..3).map(|i| ready_node(i, 5)).collect();
        let observed = Observed { stateful_set: Some(&s), nodes: &nodes, problem: None };
        let first = status(&bc, &observed, &time("2026-01-01T00:00:00Z"));
        assert_eq!(first.phase, Some(Phase::Ready));
        assert_eq!((first.replicas, first.ready_replicas), (3, 3));
        let ready = first.conditions.iter().find(|c| c.type_ == READY).unwrap();
        assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("True", "AllBrokersReady"));
        assert_eq!(first.endpoint.as_deref(), Some("demo.mqtt.svc:1883"));
        assert_eq!(first.nodes[2].connections, Some(5));
        assert_eq!(
            first.selector.as_deref(),
            Some("app.kubernetes.io/instance=demo,app.kubernetes.io/name=starling-broker")
        );

        bc.status = Some(first.clone());
        let again = status(&bc, &observed, &time("2026-01-01T00:05:00Z"));
        assert_eq!(again, first, "no fresh timestamps when nothing changed");
    }

    #[test]
    fn transitions_move_the_timestamp_of_the_flipped_condition_only() {
        let mut bc = cluster("demo", json!({"replicas": 3}));
        let s = sts(1, 1, 3, 3, 3, ("r1", "r1"));
        let nodes: Vec<NodeReport> = (0..3).map(|i| ready_node(i, 0)).collect();
        let t0 = time("2026-01-01T00:00:00Z");
        bc.status = Some(status(&bc, &Observed { stateful_set: Some(&s), nodes: &nodes, problem: None }, &t0));

        let scaling = sts(2, 2, 3, 3, 3, ("r1", "r1"));
        bc.spec.replicas = 5;
        let t1 = time("2026-01-01T00:01:00Z");
        let st = status(&bc, &Observed { stateful_set: Some(&scaling), nodes: &nodes, problem: None }, &t1);
        assert_eq!(st.phase, Some(Phase::Progressing));
        let c = |t: &str| st.conditions.iter().find(|c| c.type_ == t).unwrap().clone();
        assert_eq!(
            (c(PROGRESSING).reason.as_str(), c(PROGRESSING).last_transition_time.clone()),
            ("ScalingUp", t1.clone())
        );
        assert_eq!((c(READY).status.as_str(), c(READY).last_transition_time.clone()), ("False", t1));
        assert_eq!(c(DEGRADED).last_transition_time, t0, "Degraded stayed False");
    }

    #[test]
    fn progress_reasons() {
        let bc = cluster("demo", json!({"replicas": 3}));
        let reason = |s: &StatefulSet, nodes: &[NodeReport]| {
            let st =
                status(&bc, &Observed { stateful_set: Some(s), nodes, problem: None }, &time("2026-01-01T00:00:00Z"));
            let c = st.conditions.iter().find(|c| c.type_ == PROGRESSING).unwrap().reason.clone();
            (st.phase.unwrap(), c)
        };
        let none: Vec<NodeReport> = Vec::new();
        assert_eq!(reason(&sts(1, 0, 0, 0, 0, ("r1", "r1")), &none), (Phase::Pending, "Applying".into()));
        assert_eq!(reason(&sts(1, 1, 3, 0, 3, ("r1", "r1")), &none), (Phase::Pending, "WaitingForBrokers".into()));
        assert_eq!(reason(&sts(1, 1, 3, 3, 1, ("r1", "r2")), &none), (Phase::Progressing, "RollingUpdate".into()));
        let two: Vec<NodeReport> = (0..2).map(|i| ready_node(i, 0)).collect();
        assert_eq!(reason(&sts(1, 1, 3, 3, 3, ("r1", "r1")), &two), (Phase::Progressing, "Configuring".into()));
        assert_eq!(reason(&sts(1, 1, 4, 3, 3, ("r1", "r1")), &two), (Phase::Progressing, "ScalingDown".into()));
    }

    #[test]
    fn stuck_pods_api_errors_and_problems_degrade_with_a_reason() {
        let bc = cluster("demo", json!({"replicas": 2}));
        let s = sts(1, 1, 2, 1, 2, ("r1", "r1"));
        let t = time("2026-01-01T00:00:00Z");
        let mut nodes = vec![ready_node(0, 0), ready_node(1, 0)];
        nodes[1].pod_ready = false;
        nodes[1].api = None;
        nodes[1].stuck = Some("CrashLoopBackOff: back-off 10s".into());
        let st = status(&bc, &Observed { stateful_set: Some(&s), nodes: &nodes, problem: None }, &t);
        assert_eq!(st.phase, Some(Phase::Degraded));
        let d = condition(Some(&st), DEGRADED).unwrap();
        assert_eq!(
            (d.reason.as_str(), d.message.as_str()),
            ("BrokerPodsFailing", "demo-1: CrashLoopBackOff: back-off 10s")
        );
        assert_eq!(st.nodes[1].message.as_deref(), Some("CrashLoopBackOff: back-off 10s"));

        nodes[1] = ready_node(1, 0);
        nodes[1].api = Some(Err("HTTP 401: bad credentials".into()));
        let st = status(&bc, &Observed { stateful_set: Some(&s), nodes: &nodes, problem: None }, &t);
        assert_eq!(condition(Some(&st), DEGRADED).unwrap().reason, "AdminAPIFailed");
        assert!(!st.nodes[1].ready);

        let problem = Problem { reason: "AdminSecretMissing", message: "Secret mine not found".into() };
        let st = status(&bc, &Observed { stateful_set: None, nodes: &[], problem: Some(problem) }, &t);
        let d = condition(Some(&st), DEGRADED).unwrap();
        assert_eq!((d.status.as_str(), d.reason.as_str()), ("True", "AdminSecretMissing"));
        assert_eq!(st.phase, Some(Phase::Degraded));
    }

    #[test]
    fn pods_are_observed_for_readiness_and_stuck_containers() {
        let pod: Pod = Pod {
            metadata: ObjectMeta { name: Some("demo-0".into()), ..ObjectMeta::default() },
            status: Some(PodStatus {
                pod_ip: Some("10.244.0.7".into()),
                conditions: Some(vec![PodCondition {
                    type_: "Ready".into(),
                    status: "False".into(),
                    ..Default::default()
                }]),
                container_statuses: Some(vec![ContainerStatus {
                    name: "broker".into(),
                    state: Some(ContainerState {
                        waiting: Some(ContainerStateWaiting {
                            reason: Some("ErrImageNeverPull".into()),
                            message: Some("image not present".into()),
                        }),
                        ..ContainerState::default()
                    }),
                    ..ContainerStatus::default()
                }]),
                ..PodStatus::default()
            }),
            ..Pod::default()
        };
        let r = observe_pod(&pod);
        assert_eq!((r.pod.as_str(), r.ip.as_deref(), r.pod_ready), ("demo-0", Some("10.244.0.7"), false));
        assert_eq!(r.stuck.as_deref(), Some("ErrImageNeverPull: image not present"));
    }

    #[test]
    fn backoff_doubles_up_to_five_minutes() {
        let secs: Vec<u64> = (1..=8).map(|n| backoff_delay(n).as_secs()).collect();
        assert_eq!(secs, [5, 10, 20, 40, 80, 160, 300, 300]);
        assert_eq!(backoff_delay(u32::MAX).as_secs(), 300);
    }
}
