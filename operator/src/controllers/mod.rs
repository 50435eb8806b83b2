//! The controllers: one module per custom resource (its reconcile, context and error policy),
//! and the pure decisions they make (`diff`, `managed_diff`), tested without a cluster.
//!
//! Bridge, Rule and TrafficRule share one reconcile (`managed`); their modules hold only what
//! differs between them.

pub mod bridge;
pub mod broker_cluster;
pub mod diff;
pub mod managed;
pub mod managed_diff;
pub mod rule;
pub mod traffic_rule;
