//! Starling's Kubernetes operator as a library: the resource builders, the BrokerCluster
//! controller, the broker admin API client and the process around them (`operator::run`).

pub mod admin_client;
pub mod controllers;
pub mod crd;
pub mod error;
pub mod metrics;
pub mod operator;
pub mod resources;
pub mod server;

pub use error::{Error, Result};
