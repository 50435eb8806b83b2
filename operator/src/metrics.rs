//! The operator's Prometheus metrics: reconciles (by result), their durations, errors (by
//! kind), admin API calls (by verb, path and outcome), writes of Bridges, Rules and
//! TrafficRules to brokers, and the custom resources it manages.

use std::sync::atomic::AtomicI64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabels {
    pub controller: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub controller: &'static str,
    pub result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub controller: &'static str,
    pub kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AdminCallLabels {
    pub verb: &'static str,
    pub path: &'static str,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WriteLabels {
    pub controller: &'static str,
    /// `put` or `delete`.
    pub op: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Every metric, registered once.
pub struct Metrics {
    registry: Registry,
    pub reconciles: Family<ResultLabels, Counter>,
    pub reconcile_duration: HistogramFamily<ControllerLabels>,
    pub errors: Family<ErrorLabels, Counter>,
    pub admin_calls: Family<AdminCallLabels, Counter>,
    pub admin_call_duration: HistogramFamily<AdminCallLabels>,
    pub managed: Family<ControllerLabels, Gauge<i64, AtomicI64>>,
    pub broker_writes: Family<WriteLabels, Counter>,
    pub leader: Gauge<i64, AtomicI64>,
}

fn duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.0, 14))
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("starling_operator");
        let reconciles = Family::<ResultLabels, Counter>::default();
        let reconcile_duration = HistogramFamily::<ControllerLabels>::new_with_constructor(duration_histogram);
        let errors = Family::<ErrorLabels, Counter>::default();
        let admin_calls = Family::<AdminCallLabels, Counter>::default();
        let admin_call_duration = HistogramFamily::<AdminCallLabels>::new_with_constructor(duration_histogram);
        let managed = Family::<ControllerLabels, Gauge<i64, AtomicI64>>::default();
        let broker_writes = Family::<WriteLabels, Counter>::default();
        let leader = Gauge::<i64, AtomicI64>::default();
        registry.register("reconciles", "Reconciles finished, by result (ok or error)", reconciles.clone());
        registry.register("reconcile_duration_seconds", "Time one reconcile took", reconcile_duration.clone());
        registry.register("reconcile_errors", "Failed reconciles, by kind of error", errors.clone());
        registry.register(
            "admin_api_calls",
            "Calls to brokers' management APIs, by verb, path and outcome (ok, http_error, connect_error, ...)",
            admin_calls.clone(),
        );
        registry.register(
            "admin_api_call_duration_seconds",
            "Time one management API call took (retries included)",
            admin_call_duration.clone(),
        );
        registry.register("managed_objects", "Custom resources currently known to the controller", managed.clone());
        registry.register(
            "broker_writes",
            "Bridges, rules and traffic rules written to (put) or removed from (delete) one broker; 0 a pass when nothing changed",
            broker_writes.clone(),
        );
        registry.register("leader", "1 while this replica holds the leader Lease", leader.clone());
        Metrics {
            registry,
            reconciles,
            reconcile_duration,
            errors,
            admin_calls,
            admin_call_duration,
            managed,
            broker_writes,
            leader,
        }
    }
}

impl Metrics {
    /// Records one finished reconcile.
    pub fn reconciled(&self, controller: &'static str, took: Duration, error: Option<&'static str>) {
        let result = if error.is_some() { "error" } else { "ok" };
        self.reconciles.get_or_create(&ResultLabels { controller, result }).inc();
        self.reconcile_duration.get_or_create(&ControllerLabels { controller }).observe(took.as_secs_f64());
        if let Some(kind) = error {
            self.errors.get_or_create(&ErrorLabels { controller, kind }).inc();
        }
    }

    /// Records one admin API call.
    pub fn admin_call(&self, labels: AdminCallLabels, took: Duration) {
        self.admin_call_duration.get_or_create(&labels).observe(took.as_secs_f64());
        self.admin_calls.get_or_create(&labels).inc();
    }

    /// Records one object written to (`put`) or removed from (`delete`) one broker.
    pub fn broker_write(&self, controller: &'static str, op: &'static str) {
        self.broker_writes.get_or_create(&WriteLabels { controller, op }).inc();
    }

    /// The Prometheus text exposition of everything.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::default();
        m.reconciled("brokercluster", Duration::from_millis(12), None);
        m.reconciled("brokercluster", Duration::from_millis(12), Some("kube"));
        m.admin_call(AdminCallLabels { verb: "PUT", path: "/api/v1/config", outcome: "ok" }, Duration::from_millis(3));
        let text = m.render();
        assert!(
            text.contains(r#"starling_operator_reconciles_total{controller="brokercluster",result="ok"} 1"#),
            "{text}"
        );
        assert!(text.contains(r#"starling_operator_reconcile_errors_total{controller="brokercluster",kind="kube"} 1"#));
        assert!(
            text.contains(
                r#"starling_operator_admin_api_calls_total{verb="PUT",path="/api/v1/config",outcome="ok"} 1"#
            )
        );
        assert!(text.ends_with("# EOF\n"));
    }
}
