//! The controllers: one module per custom resource (its reconcile, context and error policy),
//! and the pure decisions they make (`diff`), tested without a cluster.

pub mod broker_cluster;
pub mod diff;
