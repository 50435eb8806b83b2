//! The controllers: one module per custom resource (its reconcile, context and error policy),
//! and the pure decisions they make (`diff`, `managed_diff`), tested without a cluster.
//!
//! Bridge, Rule and TrafficRule share one reconcile (`managed`); their modules hold only what
//! differs between them. What every controller needs besides (failure counts for the back-off,
//! Events, the clock) is here.

pub mod bridge;
pub mod broker_cluster;
pub mod diff;
pub mod managed;
pub mod managed_diff;
pub mod rule;
pub mod traffic_rule;

use std::collections::HashMap;
use std::sync::Mutex;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Resource;
use kube::runtime::events::{Event, EventType, Recorder};
use tracing::warn;

/// Consecutive failed reconciles per object key, for the error policies' back-off; a success
/// forgets the object.
#[derive(Default)]
pub struct FailureCounts(Mutex<HashMap<String, u32>>);

impl FailureCounts {
    /// Counts one more failure of `key`; returns how many in a row.
    pub fn failed(&self, key: String) -> u32 {
        // A panic while holding the lock cannot leave a count inconsistent.
        let mut counts = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let n = counts.entry(key).or_insert(0);
        *n = n.saturating_add(1);
        *n
    }

    pub fn succeeded(&self, key: &str) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).remove(key);
    }
}

/// Publishes an Event about `obj`; a failure is logged, never fails the reconcile.
pub async fn publish<K: Resource<DynamicType = ()>>(
    recorder: &Recorder,
    obj: &K,
    type_: EventType,
    reason: &str,
    action: &str,
    note: String,
) {
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(note.chars().take(1000).collect()),
        action: action.into(),
        secondary: None,
    };
    let reference = obj.object_ref(&());
    if let Err(e) = recorder.publish(&event, &reference).await {
        let name = format!("{}/{}", reference.namespace.unwrap_or_default(), reference.name.unwrap_or_default());
        warn!(kind = reference.kind.as_deref().unwrap_or_default(), object = %name, error = %e, "cannot publish an Event");
    }
}

/// Now, to the second (what the API server keeps of a `Time`).
pub fn now() -> Time {
    let now = k8s_openapi::jiff::Timestamp::now();
    Time(k8s_openapi::jiff::Timestamp::from_second(now.as_second()).unwrap_or(now))
}
